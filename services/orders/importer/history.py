"""A historic order as the contract's events, or the reason it is skipped. Pure, no I/O.

What counts is what a live webhook would have counted (docs/orders.md, "Importing a shop's history"):

- Shopify: an order counts once it was paid or authorised — Financial Status `paid`, `partially_paid`,
  `authorized`, `partially_refunded` or `refunded`. `pending` and `expired` (never paid) are skipped,
  as is `voided` unless the order was cancelled (an authorisation given back). Test orders — paid
  through Shopify's test gateway, Payment Method `bogus` — are skipped.
- WooCommerce: `processing`, `completed` and `refunded` count; `pending`, `on-hold` (awaiting
  payment), `failed`, `cancelled` (WooCommerce cancels unpaid orders), `checkout-draft` and `trash`
  are skipped.

Each counted order becomes, with its true dates and the envelope's `time` the fact's own time:

    OrderPlaced     placed_at = Created at / date            id <platform>:order:<id>:placed
    OrderFulfilled  fulfilled_at = Fulfilled at / date_completed        …:fulfilled
    OrderCancelled  cancelled_at = Cancelled at (Shopify)               …:cancelled
    OrderRefunded   the Refunded Amount / refunded_total, once          …:refunded

(ids as the webhook translation gives the same facts, so an order both imported and delivered by a
webhook is applied once). A cancelled order is told as placed and cancelled, not also refunded: a
cancellation takes back everything the order counted for. Neither export dates its refunds: a refund
is dated at the order's last dated fact (fulfilment, else payment, else placing) and so never before
the order.

An export taken after the shop's webhooks were connected holds orders they told already: `--placed-before`
(the moment they were connected) leaves those to them. A refund of an older order that a webhook told in
between waits for its order in the webhook intake and is matched there against the history's sum
(platforms/lifecycle.py), so it is not counted twice either.

Customers: WooCommerce's customer_id when the order has one (0 is a guest); Shopify's export names no
customer, so the customer id is the one the optional customers export gives the order's e-mail, else
"guest:" + the e-mail lower-cased — the id the webhook translation gives a guest checkout, so a
customer's history and their later orders meet in one profile. An order with no e-mail (a POS sale,
an admin order) still counts: its customer is the platform's, else "guest:<platform>:order:<id>",
with a stand-in address at no-email.example that no service mails.

A line with no sku gets "no-sku:" + its name's words, lower-cased and joined by hyphens, as a stable
stand-in; lines of one sku, name and price are merged; an order with no line (or over the contract's
500) is skipped.
"""

import functools
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from services.orders.importer.exports import HistoricAddress, HistoricLine, HistoricOrder
from services.orders.platforms.common import anonymous_guest_id, guest_id, history_refund_id, stand_in_sku
from shared.events import (
    Customer,
    Envelope,
    LineItem,
    OrderCancelled,
    OrderCancelledEvent,
    OrderFulfilled,
    OrderFulfilledEvent,
    OrderPlaced,
    OrderPlacedEvent,
    OrderRefunded,
    OrderRefundedEvent,
    ShippingAddress,
    describe,
    no_email_for,
)
from shared.types import Country

E = TypeVar("E", bound=Envelope[Any])

SOURCE = "orders"
TOLD_BY_WEBHOOKS = "placed once the webhooks were connected (--placed-before)"
MAX_LINE_ITEMS = 500
_ID_LENGTH = 128
_COUNTRY: TypeAdapter[str] = TypeAdapter(Country)
_SHOPIFY_COUNTED = {"paid", "partially_paid", "authorized", "partially_refunded", "refunded"}
_SHOPIFY_TEST_GATEWAYS = ("bogus",)
_WOOCOMMERCE_COUNTED = {"processing", "completed", "refunded"}
_WOOCOMMERCE_REASONS = {
    "pending": "unpaid (pending payment)",
    "on-hold": "unpaid (on hold, awaiting payment)",
    "failed": "payment failed",
    "cancelled": "cancelled before payment",
    "checkout-draft": "unpaid (checkout draft)",
    "trash": "deleted (in the trash)",
}


@dataclass(frozen=True)
class Outcome:
    """What one historic order became: its events, or why it was skipped (a short reason for the summary)."""

    order: HistoricOrder
    customer_id: str | None = None
    events: tuple[Envelope[Any], ...] = ()
    skipped: str | None = None


@dataclass
class Tally:
    """The summary of an import: what was read, what became events, what was skipped and why."""

    rows: int = 0
    orders: int = 0
    fulfilments: int = 0
    refunds: int = 0
    cancellations: int = 0
    customers: set[str] = field(default_factory=set)
    skipped: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: Outcome, rows: int) -> None:
        self.rows += rows
        if outcome.skipped is not None:
            self.skipped[outcome.skipped] += 1
            return
        self.orders += 1
        if outcome.customer_id is not None:
            self.customers.add(outcome.customer_id)
        kinds = Counter(type(event) for event in outcome.events)
        self.fulfilments += kinds[OrderFulfilledEvent]
        self.refunds += kinds[OrderRefundedEvent]
        self.cancellations += kinds[OrderCancelledEvent]


def translate(
    order: HistoricOrder, customer_ids: Mapping[str, str] | None = None, *, placed_before: datetime | None = None
) -> Outcome:
    """The events a historic order stands for, marked `imported`, or the reason it is skipped.

    `placed_before`: when the shop's webhooks were connected before the export was taken. An order placed since
    then was told by them, refunds one by one; its export row gives them as one sum, which would count twice.
    """
    if placed_before is not None and order.placed_at >= placed_before:
        return Outcome(order, skipped=TOLD_BY_WEBHOOKS)
    reason = _why_skipped(order)
    if reason is not None:
        return Outcome(order, skipped=reason)
    customer_id = customer_id_of(order, customer_ids or {})
    lines = merged_lines(order.lines)
    if not lines:
        return Outcome(order, skipped="no line items")
    if len(lines) > MAX_LINE_ITEMS:
        return Outcome(order, skipped=f"over {MAX_LINE_ITEMS} line items")
    placed_id = f"{order.platform}:order:{order.order_id}:placed"
    try:
        placed = OrderPlaced(
            order_id=order.order_id,
            customer=_customer(order, customer_id),
            placed_at=order.placed_at,
            currency=order.currency,
            total=order.total,
            line_items=lines,
            discount_codes=list(order.discount_codes),
            referral_code=order.referral_code,
            shipping_address=_shipping_address(order.shipping),
            order_number=order.order_number,
        )
    except ValidationError as error:
        return Outcome(order, skipped=f"not a valid order: {describe(error)[0]}")
    events: list[Envelope[Any]] = [_imported(OrderPlacedEvent, placed, placed_id, order.placed_at, placed_id)]
    if order.fulfilled_at is not None:
        fulfilled = OrderFulfilled(order_id=order.order_id, customer_id=customer_id, fulfilled_at=order.fulfilled_at)
        events.append(_imported(OrderFulfilledEvent, fulfilled, _id(order, "fulfilled"), order.fulfilled_at, placed_id))
    if order.cancelled_at is not None:
        cancelled = OrderCancelled(order_id=order.order_id, customer_id=customer_id, cancelled_at=order.cancelled_at)
        events.append(_imported(OrderCancelledEvent, cancelled, _id(order, "cancelled"), order.cancelled_at, placed_id))
    elif order.refunded > 0:
        refunded_at = refund_date(order)
        refund = OrderRefunded(
            refund_id=history_refund_id(order.order_id),
            order_id=order.order_id,
            customer_id=customer_id,
            amount=min(order.refunded, order.total),
            currency=order.currency,
            refunded_at=refunded_at,
        )
        events.append(_imported(OrderRefundedEvent, refund, _id(order, "refunded"), refunded_at, placed_id))
    return Outcome(order, customer_id, tuple(events))


def less_what_was_told(outcome: Outcome, told: Mapping[str, Decimal]) -> Outcome:
    """The order's history refund less what the webhooks already told of its refunds (per currency, the refunds
    orders recorded under the platform's refund ids); no refund event when they told all of it."""
    events: list[Envelope[Any]] = []
    for event in outcome.events:
        if not isinstance(event, OrderRefundedEvent) or event.data.refund_id != history_refund_id(event.data.order_id):
            events.append(event)
            continue
        left = event.data.amount - told.get(event.data.currency, Decimal(0))
        if left > 0:
            events.append(event.model_copy(update={"data": event.data.model_copy(update={"amount": left})}))
    return replace(outcome, events=tuple(events))


def told_by_webhooks(order_id: str, refunds: Iterable[Mapping[str, Any]]) -> dict[str, Decimal]:
    """What orders recorded as refunded of an order under the platform's own refund ids, per currency (its
    `GET /orders/{order_id}` refunds), leaving out what a history told (`history_refund_id`)."""
    told: dict[str, Decimal] = {}
    for refund in refunds:
        if refund["refund_id"] != history_refund_id(order_id):
            told[refund["currency"]] = told.get(refund["currency"], Decimal(0)) + Decimal(refund["amount"])
    return told


def _why_skipped(order: HistoricOrder) -> str | None:
    if order.platform == "shopify":
        if any(gateway in (order.payment_method or "").lower() for gateway in _SHOPIFY_TEST_GATEWAYS):
            return "test order (Shopify's test gateway)"
        if order.status == "voided" and order.cancelled_at is None:
            return "payment voided"
        if order.status not in _SHOPIFY_COUNTED and order.status != "voided":
            return f"unpaid (financial status {order.status or 'empty'})"
    elif order.status not in _WOOCOMMERCE_COUNTED:
        return _WOOCOMMERCE_REASONS.get(order.status, f"not paid (status {order.status or 'empty'})")
    return None


def customer_id_of(order: HistoricOrder, customer_ids: Mapping[str, str]) -> str:
    """The platform's customer id when the export (or the customers export) gives one, else the guest id;
    a guest with no e-mail is a customer of this one order."""
    email = (order.email or "").strip().lower()
    known = order.platform_customer_id or customer_ids.get(email)
    if known:
        return known
    return (guest_id(email) if email else anonymous_guest_id(order.platform, order.order_id))[:_ID_LENGTH]


def merged_lines(lines: tuple[HistoricLine, ...]) -> list[LineItem]:
    """The order's lines with a sku each; lines of one sku, name and price add up; empty lines are left out."""
    merged: dict[tuple[str, str, Decimal], int] = {}
    for line in lines:
        if line.quantity < 1:
            continue  # removed when the order was edited
        name = line.name[:200] or (line.sku or "")
        sku = (line.sku or stand_in_sku(name))[:_ID_LENGTH]
        key = (sku, name, line.unit_price)
        merged[key] = merged.get(key, 0) + line.quantity
    return [
        LineItem(sku=sku, name=name, quantity=quantity, unit_price=price)
        for (sku, name, price), quantity in merged.items()
    ]


def refund_date(order: HistoricOrder) -> datetime:
    """Neither export dates its refunds: the order's last dated fact, so a refund never comes before its order."""
    return max(moment for moment in (order.placed_at, order.paid_at, order.fulfilled_at) if moment is not None)


def _customer(order: HistoricOrder, customer_id: str) -> Customer:
    place = order.shipping if order.shipping.city or order.shipping.country else order.billing
    return Customer(
        customer_id=customer_id,
        email=order.email or no_email_for(customer_id),
        first_name=_short(order.first_name),
        last_name=_short(order.last_name),
        phone=order.phone[:40] if order.phone else None,
        city=_short(place.city),
        region=_short(place.region),
        country=_known_country(place.country),
        accepts_marketing=order.accepts_marketing,
    )


def _shipping_address(address: HistoricAddress) -> ShippingAddress | None:
    if not (address.line1 and address.postal_code and address.city and address.country):
        return None  # the contract's address needs all four; the order does not
    try:
        return ShippingAddress(
            line1=address.line1[:200],
            line2=_short(address.line2),
            postal_code=address.postal_code[:20],
            city=address.city[:200],
            region=_short(address.region),
            country=address.country,
        )
    except ValidationError:
        return None  # an address the contract refuses (a country code it does not know) costs the address only


@functools.lru_cache(maxsize=512)
def _known_country(code: str | None) -> str | None:
    # A country the contract does not know costs the profile its country, not the order.
    try:
        return _COUNTRY.validate_python(code) if code else None
    except ValidationError:
        return None


def _short(text: str | None) -> str | None:
    return text[:200] if text else None


def _id(order: HistoricOrder, fact: str) -> str:
    return f"{order.platform}:order:{order.order_id}:{fact}"


def _imported(event: type[E], data: Any, event_id: str, time: datetime, placed_id: str) -> E:
    return event(
        id=event_id,
        source=SOURCE,
        time=time,
        subject=data.customer.customer_id if isinstance(data, OrderPlaced) else data.customer_id,
        correlationid=placed_id,
        imported=True,
        data=data,
    )
