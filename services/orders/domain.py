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
- Contact details come from the latest order (by `placed_at`, then order id);
  an order kept anonymous (its customer was erased) gives none.
- An order told twice (a webhook and the backend) keeps the latest telling (by
  event time, then event id), whatever order they arrive in; the earliest
  fulfilment counts; each refund id counts once.
- A cancelled order stays in the customer's history, marked, but counts for
  nothing: no line, so no order count, spend, average or segment from it. The
  first cancellation told stands; one heard of before its order still leaves
  the order cancelled when it arrives.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from services.orders.insight import History, Rfm
from shared.erasure import erased_alias, is_alias

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
class Refund:
    refund_id: str
    amount: Decimal
    currency: str
    refunded_at: datetime
    reason: str | None = None


@dataclass(frozen=True)
class Cancellation:
    cancelled_at: datetime
    reason: str | None = None


@dataclass(frozen=True, order=True)
class Telling:
    """When an event told of an order, and which event: the latest telling stands."""

    at: datetime
    event_id: str


@dataclass(frozen=True, order=True)
class OrderRef:
    """An order by when it was placed, then its id: the latest one gives the customer's contact."""

    placed_at: datetime
    order_id: str


# The customer's contact details as an order gives them (e-mail, name, locale, town, phone, …).
Contact = Mapping[str, Any]


@dataclass(frozen=True)
class Customer:
    """A customer's profile: one line per placed order, the contact of the latest, the last scoring round."""

    customer_id: str  # or the anonymous alias of an erased customer
    lines: tuple[OrderLine, ...] = ()
    contact: Contact | None = None
    contact_from: OrderRef | None = None
    rfm: Rfm | None = None  # None until the first scoring round after their first order
    scored_at: datetime | None = None


def telling_stands(told_before: Telling | None, telling: Telling) -> bool:
    """Whether this telling of an order replaces the one before: the later event does, whenever it arrives."""
    return told_before is None or telling > told_before


def fulfilment_counts(fulfilled_at: datetime | None, told: datetime) -> bool:
    """Whether a fulfilment time replaces the one known: the earliest fulfilment is the one that counts."""
    return fulfilled_at is None or told < fulfilled_at


def refund_is_new(refunds: Iterable[Refund], refund_id: str) -> bool:
    """Whether this refund is not counted yet: each refund id counts once, however often it is told."""
    return all(refund.refund_id != refund_id for refund in refunds)


def cancellation_is_new(cancelled: Cancellation | None) -> bool:
    """Whether a cancellation changes the order: the first one told stands, however often it is told again."""
    return cancelled is None


def refunded_of(total: Decimal, currency: str, refunds: Iterable[Refund]) -> Decimal:
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


def gives_contact(candidate: OrderRef, current: OrderRef | None) -> bool:
    """Whether the order gives the contact details: the latest order does.

    The same order told again gives them again, so a corrected telling refreshes them.
    """
    return current is None or candidate >= current


def with_order(customer: Customer, line: OrderLine, contact: Contact | None) -> Customer:
    """The customer once this order counts: its line replaces the order's earlier one; the latest order's contact.

    `contact` is None for an order kept anonymous (its customer was erased): it gives no contact.
    """
    lines = replacing(customer.lines, line)
    source = OrderRef(line.placed_at, line.order_id)
    if contact is None or not gives_contact(source, customer.contact_from):
        return replace(customer, lines=tuple(lines))
    return replace(customer, lines=tuple(lines), contact=contact, contact_from=source)


def without_order(customer: Customer, order_id: str) -> Customer:
    """The customer once this order counts for nothing (it was cancelled): its line goes, the contact stays."""
    return replace(customer, lines=tuple(line for line in customer.lines if line.order_id != order_id))


def records_owner(customer_id: str, *, erased: bool) -> str:
    """Whom a customer's records belong to: the customer, or their anonymous alias once erased."""
    return erased_alias(customer_id) if erased else customer_id


def reason_kept(reason: str | None, owner: str, customer_id: str) -> str | None:
    """A refund's or cancellation's reason, kept for the customer's own records; none for an erased customer's
    (free text may name them)."""
    return reason if owner == customer_id else None


def erased(customer: Customer, alias: str) -> Customer:
    """What is kept of an erased customer, under their alias: the orders and scores, not who they are."""
    return replace(customer, customer_id=alias, contact=None, contact_from=None)


def rescored(scored: Mapping[str, Rfm | None], scores: Mapping[str, Rfm]) -> dict[str, Rfm]:
    """The customers whose scores or segment changed since the last round (most hold from one to the next)."""
    return {customer_id: rfm for customer_id, rfm in scores.items() if scored.get(customer_id) != rfm}


@dataclass(frozen=True)
class SegmentChange:
    """A customer the scoring round moved to another segment (or gave their first): CustomerSegmentChanged."""

    customer_id: str
    from_segment: str | None  # None the first time the customer is scored
    to_segment: str


def segment_changes(scored: Mapping[str, Rfm | None], scores: Mapping[str, Rfm]) -> list[SegmentChange]:
    """Whose segment this round changed; a change of scores within a segment is none, nor an erased customer's.

    An erased customer's profile lives on under an anonymous alias: nobody is there to call or win back.
    """
    changes = []
    for customer_id, rfm in scores.items():
        before = scored.get(customer_id)
        was = None if before is None else before.segment
        if was != rfm.segment and not is_alias(customer_id):
            changes.append(SegmentChange(customer_id, was, rfm.segment))
    return changes


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


# --- finding a customer --------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchTerms:
    """What a search box's text can be: an e-mail, a phone number, an order number or id, or a name."""

    emails: tuple[str, ...]
    phones: tuple[str, ...]
    order_numbers: tuple[str, ...]
    first_names: tuple[str, ...]  # prefixes, as typed and capitalised
    last_names: tuple[str, ...]
    full_name: tuple[tuple[str, ...], tuple[str, ...]] | None  # (first-name prefixes, last-name prefixes)


def search_terms(text: str) -> SearchTerms:
    """Read a search box the way the owner types into it: "jana@…", "+421 900…", "#1001", "Nová", "Jana Nová"."""
    typed = " ".join(text.split())
    if "@" in typed:
        return SearchTerms((typed, typed.lower()), (), (), (), (), None)
    digits = typed.replace(" ", "").replace("-", "").replace("(", "").replace(")", "")
    phones = (typed, digits) if digits.lstrip("+").isdigit() and len(digits) >= 6 else ()
    numbers = (typed, typed.lstrip("#"), f"#{typed.lstrip('#')}") if typed else ()
    words = typed.split(" ")
    if len(words) >= 2:
        first, last = words[0], words[-1]
        return SearchTerms((), phones, numbers, (), (), (_spellings(first), _spellings(last)))
    names = _spellings(typed) if typed and not typed.startswith("#") else ()
    return SearchTerms((), phones, numbers, names, names, None)


def _spellings(word: str) -> tuple[str, ...]:
    """A name prefix as typed and as names are written (capitalised), so the index serves both."""
    return tuple(dict.fromkeys((word, word[:1].upper() + word[1:], word.capitalize())))
