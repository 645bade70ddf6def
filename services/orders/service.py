"""Orders use cases: record orders, fulfilments, refunds and cancellations; keep each customer's profile; tell
what the platforms' webhooks say; erase on request.

Every event rewrites the order it is about and then the customer's profile from
the order's line, so duplicates and any arrival order converge (see domain.py).
"""

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

import structlog

from services.orders import domain, store
from services.orders.domain import Cancellation, Refund, Telling
from services.orders.insight import Rfm
from services.orders.platforms import OrderNews, PrivacyRequest, decide, known_order_key
from services.orders.settings import OrdersUnit
from services.orders.store import DataRequest, Order
from shared.erasure import erased_alias
from shared.events import (
    CustomerErased,
    CustomerSegmentChanged,
    Envelope,
    OrderCancelledEvent,
    OrderFulfilledEvent,
    OrderPlaced,
    OrderPlacedEvent,
    OrderRefundedEvent,
)
from shared.mongo import as_stored

log = structlog.get_logger("rapport.orders")


async def prefetch_orders(unit: OrdersUnit, events: list[Envelope[Any]]) -> None:
    """Read the orders, profiles and erasure marks a whole batch touches in three queries."""
    await store.preload(unit, [event.data.order_id for event in events], [_customer_of(event) for event in events])


def _customer_of(event: Envelope[Any]) -> str:
    if isinstance(event, OrderPlacedEvent):
        return event.data.customer.customer_id
    customer_id: str = event.data.customer_id
    return customer_id


async def record_order_placed(unit: OrdersUnit, event: OrderPlacedEvent) -> None:
    data = event.data
    customer_id = data.customer.customer_id
    owner = await _owner(unit, customer_id)
    order = await store.get_order(unit, data.order_id, owner)
    telling = Telling(as_stored(event.time), event.id)
    if not domain.telling_stands(order.told, telling):
        return  # told again (say by a webhook and the backend): the latest telling stands, whenever it arrives
    anonymous_as = owner if owner != customer_id else None  # erased before this order arrived: keep it anonymous
    await _save(unit, store.placing(order, data, telling, anonymous_as=anonymous_as))
    log.info("order_recorded", order_id=data.order_id, customer_id=owner)


async def record_fulfilment(unit: OrdersUnit, event: OrderFulfilledEvent) -> None:
    data = event.data
    order = await store.get_order(unit, data.order_id, await _owner(unit, data.customer_id))
    fulfilled_at = as_stored(data.fulfilled_at)
    if not domain.fulfilment_counts(order.fulfilled_at, fulfilled_at):
        return
    await _save(unit, replace(order, fulfilled_at=fulfilled_at))


async def record_refund(unit: OrdersUnit, event: OrderRefundedEvent) -> None:
    data = event.data
    owner = await _owner(unit, data.customer_id)
    order = await store.get_order(unit, data.order_id, owner)
    if not domain.refund_is_new(order.refunds, data.refund_id):
        return
    reason = domain.reason_kept(data.reason, owner, data.customer_id)
    refund = Refund(data.refund_id, data.amount, data.currency, as_stored(data.refunded_at), reason)
    await _save(unit, replace(order, refunds=(*order.refunds, refund)))
    log.info("refund_recorded", order_id=data.order_id, refund_id=data.refund_id, amount=str(data.amount))


async def record_cancellation(unit: OrdersUnit, event: OrderCancelledEvent) -> None:
    data = event.data
    owner = await _owner(unit, data.customer_id)
    order = await store.get_order(unit, data.order_id, owner)
    if not domain.cancellation_is_new(order.cancelled):
        return
    reason = domain.reason_kept(data.reason, owner, data.customer_id)
    await _save(unit, replace(order, cancelled=Cancellation(as_stored(data.cancelled_at), reason)))
    log.info("order_cancelled", order_id=data.order_id)


async def _owner(unit: OrdersUnit, customer_id: str) -> str:
    """Whom the customer's records belong to: the customer, or their anonymous alias once erased."""
    return domain.records_owner(customer_id, erased=await store.customer_is_erased(unit, customer_id))


async def _save(unit: OrdersUnit, order: Order) -> None:
    """Store the order and bring its customer's profile up to date with it."""
    store.save_order(unit, order)
    line = order.line
    if order.cancelled is not None and order.placed is not None:
        customer = await store.get_customer(unit, order.customer_id)
        store.save_customer(unit, domain.without_order(customer, order.order_id))
        return
    if line is None:
        return  # a fulfilment, refund or cancellation heard of before its order: it counts once the order arrives
    customer = await store.get_customer(unit, order.customer_id)
    store.save_customer(unit, domain.with_order(customer, line, order.contact))


# --- segments -----------------------------------------------------------------------------------


async def record_scores(
    unit: OrdersUnit, scores: Mapping[str, Rfm], before: Mapping[str, Rfm | None], at: datetime
) -> None:
    """Keep a scoring round's new scores and tell the other services whose segment changed (CustomerSegmentChanged)."""
    store.save_scores(unit, scores, at)
    for change in domain.segment_changes(before, scores):
        moved = CustomerSegmentChanged(
            customer_id=change.customer_id,
            from_segment=change.from_segment,
            to_segment=change.to_segment,
            scored_at=at,
        )
        unit.publish(moved, subject=change.customer_id)
        log.info("segment_changed", customer_id=change.customer_id, to_segment=change.to_segment)


# --- erasure -------------------------------------------------------------------------------------


async def erase_customer(unit: OrdersUnit, customer_id: str, requested_at: datetime) -> bool:
    """Remove the customer's personal data; keep their orders and stats under an anonymous alias.

    Publishes CustomerErased so every other service does the same. False when the
    customer was erased before (nothing is published again).
    """
    if await store.customer_is_erased(unit, customer_id):
        return False
    alias = erased_alias(customer_id)
    customer = await store.find_customer(unit, customer_id)
    kept = None if customer is None else domain.erased(customer, alias)
    store.forget_customer(unit, customer_id, alias, kept, requested_at)
    erasure = CustomerErased(customer_id=customer_id, requested_at=requested_at)
    unit.publish(erasure, subject=customer_id, forget_once_sent=True)  # it names whom it erases
    log.info("customer_erased", alias=alias)
    return True


# --- platform webhooks ---------------------------------------------------------------------------


async def tell_order_news(unit: OrdersUnit, news: OrderNews, shop: str | None) -> str | None:
    """Tell the others what this webhook adds to the order's story (each fact once); why nothing, if nothing."""
    known = await store.get_known_order(unit, known_order_key(news.platform, news.order_id), news.order_id)
    # A refund is matched against the refunds an imported history told of the order (platforms/lifecycle.py).
    history = await store.history_refunded(unit, news.order_id) if news.refunds or known.waiting_refunds else Decimal(0)
    decision = decide(known, news, at=unit.now(), shop=shop, told_by_history=history)
    kept = decision.known
    if kept.customer_id is not None and kept.customer_id != known.customer_id:
        # A customer erased before this webhook is kept under their alias here too (a guest id is an e-mail).
        kept = replace(kept, customer_id=await _owner(unit, kept.customer_id))
    store.save_known_order(unit, kept)
    for told in decision.events:
        data = told.data
        subject = data.customer.customer_id if isinstance(data, OrderPlaced) else data.customer_id
        unit.publish(data, subject=subject, event_id=told.event_id)
    log.info("order_news_told", key=kept.key, events=[told.event_id for told in decision.events])
    return decision.note


SHOP_ERASURE_BATCH = 100


async def erase_shop_customers(unit: OrdersUnit, shop: str) -> int:
    """Erase a batch of the customers whose orders came from this shop; how many (0: none is left).

    A shop's every customer would make one transaction too large: the caller runs batches until none is left.
    """
    customer_ids = await store.customers_of_shop(unit, shop, limit=SHOP_ERASURE_BATCH)
    for customer_id in customer_ids:
        await erase_customer(unit, customer_id, unit.now())
    return len(customer_ids)


async def answer_privacy_request(unit: OrdersUnit, request: PrivacyRequest) -> str | None:
    """A platform's privacy request: erase a customer, or keep a data request (a shop: `erase_shop_customers`)."""
    now = unit.now()
    if request.topic == "customers/redact":
        account, *also = request.customer_ids or ("",)
        # The account id is erased whatever we know of it; the same person's guest checkouts if we have any.
        for customer_id in [account, *[other for other in also if await store.find_customer(unit, other)]]:
            if customer_id:
                await erase_customer(unit, customer_id, now)
        return None
    if request.topic != "customers/data_request":
        raise ValueError(f"{request.topic} is not answered here (a shop is erased by erase_shop_customers)")
    customer_id = request.customer_ids[0] if request.customer_ids else ""
    request_id = request.request_id or f"{customer_id}:{now.isoformat()}"
    store.record_data_request(
        unit, DataRequest(f"shopify:{request.shop}:{request_id}", request.shop, customer_id, request.orders, now)
    )
    log.info("data_request_recorded", shop=request.shop, request_id=request_id)
    return "recorded: the shop owner fulfils it with the customer's export"
