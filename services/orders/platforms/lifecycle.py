"""An order's life as the platforms tell it, told once to the others: a pure rule, no I/O.

The platforms tell an order's story many times over: Shopify sends orders/create, orders/paid and
orders/updated for one payment, WooCommerce the whole order on every change, either may send a topic
twice, late, or before the one it follows. `decide` keeps, per platform order, what was already told
(`KnownOrder`) and turns each webhook's `OrderNews` into the events that are new:

- **placed** once, the first time the order counts: paid or authorised (the platforms' statuses are read in
  shopify.py and woocommerce.py), not cancelled;
- **fulfilled** once, after it was placed; a fulfilment heard of before the order counts waits for it;
- **refunded** once per refund id, after it was placed, in the order's own currency (a refund paid back in
  the customer's presentment currency is converted at the order's own rate, its two totals); a refund
  heard of before the order counts waits for it, with the date it was first seen when it has none. A shop's
  imported history told the refunds of an old order in one sum, under no refund id (an export names none,
  importer/history.py): the first refunds a webhook later tells about that order are matched against that
  sum, oldest first, and only what goes beyond it is told, so a refund is not counted twice;
- **cancelled** once, when an order that was placed is cancelled, fails or is deleted; after that nothing
  more is told about the order (a restored order stays cancelled here: the contract has no way back, and
  every service has already reversed it). A cancellation of an order that never counted is no event; when
  the platform never revives cancelled orders (Shopify), the order will never count.

Event ids are `<platform>:order:<id>:placed|fulfilled|cancelled` and `<platform>:refund:<id>`, the same
however often the webhook arrives, so an event told twice is one event in every inbox.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from functools import partial

from services.orders.platforms.common import OrderNews, RefundNews, Translation, in_minor_units
from shared.events import OrderCancelled, OrderFulfilled, OrderRefunded


@dataclass(frozen=True)
class KnownOrder:
    """What Rapport has told the others about one platform order, and what waits for it to count."""

    key: str  # "<platform>:order:<id>"
    order_id: str
    shop: str | None = None
    customer_id: str | None = None
    currency: str | None = None
    total: Decimal | None = None
    presentment: tuple[str, Decimal] | None = None  # the customer's currency and total, when not the shop's
    placed: bool = False
    fulfilled: bool = False
    cancelled: bool = False  # told as cancelled, or cancelled for good before it counted: nothing more is told
    waiting_fulfilment: datetime | None = None
    waiting_refunds: tuple[RefundNews, ...] = ()  # each with the date it was first seen
    refunds: Mapping[str, datetime] = field(default_factory=dict)  # refund id → the date it was told with
    # How much of the imported history's refund sum webhook refunds have been matched against so far.
    matched_with_history: Decimal = Decimal(0)


def known_order_key(platform: str, order_id: str) -> str:
    return f"{platform}:order:{order_id}"


@dataclass(frozen=True)
class Decision:
    known: KnownOrder
    events: tuple[Translation, ...]
    note: str | None = None  # why nothing was told, when nothing was


def decide(
    known: KnownOrder,
    news: OrderNews,
    *,
    at: datetime,
    shop: str | None = None,
    told_by_history: Decimal = Decimal(0),
) -> Decision:
    """What this webhook adds to the order's story: the order as now known, and the events to tell.

    `told_by_history`: the refunds a shop's imported history told of this order, in one sum (orders' own record).
    """
    if known.cancelled:
        return Decision(known, (), "the order was cancelled before: nothing more is told about it")
    if news.order is not None:
        order = news.order
        known = replace(
            known,
            shop=known.shop or shop,
            customer_id=order.customer.customer_id,
            currency=order.currency,
            total=order.total,
            presentment=news.presentment,
        )
    events: list[Translation] = []
    for step in (_placing, _fulfilling, partial(_refunding, told_by_history=told_by_history), _cancelling):
        known, told = step(known, news, at)
        events.extend(told)
    if events:
        return Decision(known, tuple(events))
    return Decision(known, (), None if known.placed else "the order does not count yet: not paid or authorised")


Step = tuple[KnownOrder, list[Translation]]


def _placing(known: KnownOrder, news: OrderNews, at: datetime) -> Step:
    if news.order is None or not news.counts or news.cancelled_at is not None or known.placed:
        return known, []
    return replace(known, placed=True), [Translation(f"{known.key}:placed", news.order)]


def _fulfilling(known: KnownOrder, news: OrderNews, at: datetime) -> Step:
    fulfilled_at = _earliest(known.waiting_fulfilment, news.fulfilled_at)
    if fulfilled_at is None or known.fulfilled:
        return known, []
    if not known.placed:
        return replace(known, waiting_fulfilment=fulfilled_at), []
    return replace(known, fulfilled=True, waiting_fulfilment=None), [_fulfilled(known, fulfilled_at)]


def _refunding(known: KnownOrder, news: OrderNews, at: datetime, *, told_by_history: Decimal) -> Step:
    first_seen = news.changed_at or at
    heard = {refund.refund_id: refund for refund in known.waiting_refunds}
    for refund in news.refunds:
        if refund.refund_id not in heard and refund.refund_id not in known.refunds:
            heard[refund.refund_id] = refund if refund.refunded_at else replace(refund, refunded_at=first_seen)
    if not known.placed:
        return replace(known, waiting_refunds=tuple(heard.values())), []
    told = dict(known.refunds) | {refund.refund_id: refund.refunded_at or first_seen for refund in heard.values()}
    events: list[Translation] = []
    matched = known.matched_with_history
    for refund in sorted(heard.values(), key=lambda refund: refund.refunded_at or first_seen):
        amount, currency = in_order_currency(known, refund)
        # What the history told already, when it was told in this currency (an export has one per order).
        left = max(told_by_history - matched, Decimal(0)) if currency == known.currency else Decimal(0)
        covered = min(amount, left)
        matched += covered
        if amount - covered > 0:
            events.append(_refunded(known, refund, amount - covered, currency))
    return replace(known, refunds=told, waiting_refunds=(), matched_with_history=matched), events


def _cancelling(known: KnownOrder, news: OrderNews, at: datetime) -> Step:
    cancelled_at = at if news.removed else news.cancelled_at
    if cancelled_at is None:
        return known, []
    if not known.placed:  # it never counted: nothing to take back, and it may yet be paid, unless never revived
        return replace(known, cancelled=news.cancellation_final), []
    reason = "deleted" if news.removed else news.cancel_reason
    return replace(known, cancelled=True), [_cancelled(known, cancelled_at, reason)]


def _earliest(one: datetime | None, other: datetime | None) -> datetime | None:
    return min((moment for moment in (one, other) if moment is not None), default=None)


def _customer(known: KnownOrder) -> str:
    if known.customer_id is None:  # placed implies the whole order was heard of, with its customer
        raise ValueError(f"{known.key} has no customer yet")
    return known.customer_id


def _fulfilled(known: KnownOrder, fulfilled_at: datetime) -> Translation:
    data = OrderFulfilled(order_id=known.order_id, customer_id=_customer(known), fulfilled_at=fulfilled_at)
    return Translation(f"{known.key}:fulfilled", data)


def _refunded(known: KnownOrder, refund: RefundNews, amount: Decimal, currency: str) -> Translation:
    """The refund as told: `amount` in the order's currency, less what the imported history told already."""
    data = OrderRefunded(
        refund_id=refund.refund_id,
        order_id=known.order_id,
        customer_id=_customer(known),
        amount=amount,
        currency=currency,
        refunded_at=refund.refunded_at,
        reason=refund.reason,
    )
    platform = known.key.split(":", 1)[0]
    return Translation(f"{platform}:refund:{refund.refund_id}", data)


def in_order_currency(known: KnownOrder, refund: RefundNews) -> tuple[Decimal, str]:
    """The refund in the currency the order was told in, so it reduces the totals the order raised.

    Paid back in the customer's presentment currency, it is converted at the order's own rate (its shop
    total over its presentment total); in a currency the order knows nothing of, it stays as it is.
    """
    if known.currency is None or refund.currency == known.currency:
        return refund.amount, refund.currency
    if known.presentment is not None and known.total is not None:
        currency, presentment_total = known.presentment
        if refund.currency == currency and presentment_total > 0:
            return in_minor_units(refund.amount * known.total / presentment_total, known.currency), known.currency
    return refund.amount, refund.currency


def _cancelled(known: KnownOrder, cancelled_at: datetime, reason: str | None) -> Translation:
    data = OrderCancelled(
        order_id=known.order_id,
        customer_id=_customer(known),
        cancelled_at=cancelled_at,
        reason=reason[:500] if reason else None,
    )
    return Translation(f"{known.key}:cancelled", data)
