"""What a shop owner learns from order history: RFM segments and the retention report, no I/O.

Scores are relative to the shop's own customers (quintiles by rank), because "a
lot" for a tea shop is not a lot for an electronics shop. Only customers with at
least one order take part in scores and in the report; a customer known only
from a refund or a sign-up has no history to judge yet. docs/orders.md explains
the rules in the shop owner's words.
"""

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from statistics import fmean, median

DAY = timedelta(days=1)
CENT = Decimal("0.01")
SCORES = 5  # quintiles


@dataclass(frozen=True)
class History:
    """What insight needs to know of one customer."""

    customer_id: str
    order_times: tuple[datetime, ...]  # placed_at of each of the customer's orders (aware datetimes, any order)
    net_spent: Mapping[str, Decimal]  # currency -> order totals minus refunds (may be {} )


# --- RFM scores and segments ---------------------------------------------------------------


@dataclass(frozen=True)
class Rfm:
    """One customer's scores, 1 (worst fifth of the shop's customers) to 5 (best fifth)."""

    recency: int
    frequency: int
    monetary: int
    segment: str


@dataclass(frozen=True)
class Segment:
    """A block of the R×F grid, score bounds inclusive."""

    name: str
    recency: tuple[int, int]
    frequency: tuple[int, int]

    def covers(self, recency: int, frequency: int) -> bool:
        return self.recency[0] <= recency <= self.recency[1] and self.frequency[0] <= frequency <= self.frequency[1]


# The widely used R×F grid; monetary is reported but does not change the name.
SEGMENT_GRID = (
    Segment("champions", recency=(5, 5), frequency=(4, 5)),
    Segment("loyal", recency=(3, 4), frequency=(4, 5)),
    Segment("potential_loyalists", recency=(4, 5), frequency=(2, 3)),
    Segment("new", recency=(5, 5), frequency=(1, 1)),
    Segment("promising", recency=(4, 4), frequency=(1, 1)),
    Segment("need_attention", recency=(3, 3), frequency=(3, 3)),
    Segment("about_to_sleep", recency=(3, 3), frequency=(1, 2)),
    Segment("cant_lose", recency=(1, 2), frequency=(5, 5)),
    Segment("at_risk", recency=(1, 2), frequency=(3, 4)),
    Segment("hibernating", recency=(1, 2), frequency=(1, 2)),
)
SEGMENTS = tuple(segment.name for segment in SEGMENT_GRID)
# Names stored before the contract fixed them (DESIGN.md §7 says `cant_lose`): read as today's names.
RENAMED_SEGMENTS = {"cannot_lose": "cant_lose"}


def segment_named(stored: str) -> str:
    """A stored segment name as the contract names it today."""
    return RENAMED_SEGMENTS.get(stored, stored)


def segment_for(recency: int, frequency: int) -> str:
    """The segment of an R and an F score (each 1–5); the grid covers every pair exactly once."""
    return next(segment.name for segment in SEGMENT_GRID if segment.covers(recency, frequency))


def quintile_score(worse: int, customers: int) -> int:
    """1 + floor(5 × worse / customers), where `worse` counts customers with a strictly worse value.

    Ties share the worse score, so a base where everyone is alike (or of one customer) scores 1.
    Since worse ≤ customers − 1 the score never passes 5; the cap only guards misuse.
    """
    return min(SCORES, 1 + SCORES * worse // customers)


def days_since_last_order(history: History, now: datetime) -> int:
    """Whole days from the latest order to `now`; an order stamped after `now` counts as today."""
    last = max(_aware(moment) for moment in history.order_times)
    # The shop's clock may run a little ahead of ours; that is not a negative absence.
    return max(_aware(now) - last, timedelta(0)) // DAY


def score_rfm(histories: Sequence[History], now: datetime, currency: str) -> dict[str, Rfm]:
    """R, F and M scores and the segment of every customer with an order, by customer id.

    Recency: days since the last order (fewer is better). Frequency: number of orders.
    Monetary: net spent in the shop's reporting `currency`; other currencies are not converted,
    so a customer without spend in it counts as 0.
    """
    buyers = sorted((h for h in histories if h.order_times), key=lambda h: h.customer_id)
    # Negated so that, like orders and spend, a higher value is better.
    recency = _scores([-days_since_last_order(h, now) for h in buyers])
    frequency = _scores([len(h.order_times) for h in buyers])
    monetary = _scores([h.net_spent.get(currency, Decimal(0)) for h in buyers])
    return {
        h.customer_id: Rfm(r, f, m, segment_for(r, f))
        for h, r, f, m in zip(buyers, recency, frequency, monetary, strict=True)
    }


def _scores(values: Sequence[int] | Sequence[Decimal]) -> list[int]:
    """The quintile score of each value among all of them, higher values better."""
    ranked = sorted(values)
    return [quintile_score(bisect_left(ranked, value), len(ranked)) for value in values]


# --- retention report ----------------------------------------------------------------------


@dataclass(frozen=True)
class Cohort:
    """Customers whose first order fell in one calendar month (UTC)."""

    month: str  # "2026-03"
    customers: int
    retention: tuple[float, ...]  # k -> share of the cohort that ordered in month + k, up to the current month


@dataclass(frozen=True)
class LifetimeValue:
    """Net spent in one currency by the customers who bought in it."""

    customers: int
    average: Decimal
    total: Decimal


@dataclass(frozen=True)
class RetentionReport:
    customers: int
    repeat_customers: int
    repeat_purchase_rate: float
    days_to_second_order: float | None  # mean over repeat customers
    median_days_to_second_order: float | None
    cohorts: tuple[Cohort, ...]  # oldest first
    lifetime_value: dict[str, LifetimeValue]  # by currency


def lifetime_value_of(history: History) -> dict[str, Decimal]:
    """One customer's historic lifetime value per currency: net spent, to the cent."""
    return {currency: _to_cents(spent) for currency, spent in sorted(history.net_spent.items())}


def retention_report(histories: Sequence[History], now: datetime) -> RetentionReport:
    """How many customers come back, how soon, by cohort of first month, and what they are worth."""
    buyers = [h for h in histories if h.order_times]
    times = [sorted(_aware(moment) for moment in h.order_times) for h in buyers]
    gaps = [(mine[1] - mine[0]) / DAY for mine in times if len(mine) >= 2]
    return RetentionReport(
        customers=len(buyers),
        repeat_customers=len(gaps),
        repeat_purchase_rate=round(len(gaps) / len(buyers), 4) if buyers else 0.0,
        days_to_second_order=round(fmean(gaps), 1) if gaps else None,
        median_days_to_second_order=round(median(gaps), 1) if gaps else None,
        cohorts=_cohorts(times, _month(_aware(now))),
        lifetime_value=_lifetime_values(buyers),
    )


def _cohorts(times: Sequence[Sequence[datetime]], current_month: int) -> tuple[Cohort, ...]:
    months_ordered_by_cohort: dict[int, list[set[int]]] = {}
    for mine in times:
        months_ordered_by_cohort.setdefault(_month(mine[0]), []).append({_month(moment) for moment in mine})
    cohorts = []
    for first, members in sorted(months_ordered_by_cohort.items()):
        # At least month 0, even when the first order is stamped after the current month.
        span = max(current_month - first, 0) + 1
        retention = tuple(round(sum(first + k in months for months in members) / len(members), 4) for k in range(span))
        cohorts.append(Cohort(_month_name(first), len(members), retention))
    return tuple(cohorts)


def _lifetime_values(buyers: Sequence[History]) -> dict[str, LifetimeValue]:
    spent_by_currency: dict[str, list[Decimal]] = {}
    for history in buyers:
        for currency, spent in lifetime_value_of(history).items():
            spent_by_currency.setdefault(currency, []).append(spent)
    # Totals add the per-customer cents, so they equal the sum of the customers' profiles.
    return {
        currency: LifetimeValue(len(spent), _to_cents(sum(spent, Decimal(0)) / len(spent)), sum(spent, Decimal(0)))
        for currency, spent in sorted(spent_by_currency.items())
    }


def _month(moment: datetime) -> int:
    """Months since year 0 of the calendar month (UTC) that `moment` falls in."""
    utc = moment.astimezone(UTC)
    return utc.year * 12 + utc.month - 1


def _month_name(month: int) -> str:
    return f"{month // 12:04d}-{month % 12 + 1:02d}"


def _to_cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def _aware(moment: datetime) -> datetime:
    # A naive time would be read as the server's local time and shift days and months silently.
    if moment.utcoffset() is None:
        raise ValueError(f"times must be timezone-aware, got {moment.isoformat()}")
    return moment
