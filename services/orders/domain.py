"""Rules of the orders service: what each order counts for in its customer's profile. No I/O.

A profile is derived from the customer's placed orders alone (`OrderLine`s), so
it comes out the same whatever order the events arrived in and however often:
the store keeps one line per order, replaced as the order's facts grow, and
`stats_of` computes everything else from the lines.

- Net spent per currency = order totals − refunds, where an order's refunds count
  in the order's currency and never past its total (a refund in another currency
  is kept on the order but not subtracted: there is no exchange rate to apply).
- Average order value per currency = order totals (before refunds) ÷ orders in
  that currency: what a customer spends when they buy.
- Contact details come from the latest order (by `placed_at`, then order id).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from services.orders.insight import History

CENT = Decimal("0.01")


@dataclass(frozen=True)
class OrderLine:
    """What a customer's profile keeps of one placed order."""

    order_id: str
    placed_at: datetime
    currency: str
    total: Decimal
    refunded: Decimal  # in the order's currency, never more than the total

    @property
    def net(self) -> Decimal:
        return self.total - self.refunded


@dataclass(frozen=True)
class RefundLine:
    refund_id: str
    amount: Decimal
    currency: str


def refunded_of(total: Decimal, currency: str, refunds: Iterable[RefundLine]) -> Decimal:
    """What the refunds of an order take back: those in its currency, at most its total."""
    return min(total, sum((r.amount for r in refunds if r.currency == currency), Decimal(0)))


@dataclass(frozen=True)
class Stats:
    orders_count: int
    first_order_at: datetime | None
    last_order_at: datetime | None
    total_spent: dict[str, Decimal]  # net of refunds, per currency
    refunded: dict[str, Decimal]
    average_order_value: dict[str, Decimal]


def stats_of(lines: Sequence[OrderLine]) -> Stats:
    gross: dict[str, Decimal] = {}
    refunded: dict[str, Decimal] = {}
    counts: dict[str, int] = {}
    for line in lines:
        gross[line.currency] = gross.get(line.currency, Decimal(0)) + line.total
        refunded[line.currency] = refunded.get(line.currency, Decimal(0)) + line.refunded
        counts[line.currency] = counts.get(line.currency, 0) + 1
    times = [line.placed_at for line in lines]
    return Stats(
        orders_count=len(lines),
        first_order_at=min(times, default=None),
        last_order_at=max(times, default=None),
        total_spent={c: _cents(gross[c] - refunded[c]) for c in sorted(gross)},
        refunded={c: _cents(refunded[c]) for c in sorted(refunded)},
        average_order_value={c: _cents(gross[c] / counts[c]) for c in sorted(gross)},
    )


def history_of(customer_id: str, lines: Sequence[OrderLine]) -> History:
    """The customer as the RFM and retention rules see them."""
    stats = stats_of(lines)
    return History(
        customer_id=customer_id,
        order_times=tuple(line.placed_at for line in lines),
        net_spent=stats.total_spent,
    )


def replacing(lines: Sequence[OrderLine], line: OrderLine) -> list[OrderLine]:
    """The lines with `line` in place of the same order's earlier line, ordered by when they were placed."""
    kept = [existing for existing in lines if existing.order_id != line.order_id]
    return sorted([*kept, line], key=lambda each: (each.placed_at, each.order_id))


def gives_contact(candidate: tuple[datetime, str], current: tuple[datetime, str] | None) -> bool:
    """Whether the order (placed at, order id) gives the contact details: the latest order does.

    The same order told again gives them again, so a corrected telling refreshes them.
    """
    return current is None or candidate >= current


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)
