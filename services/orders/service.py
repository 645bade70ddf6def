"""Orders use cases: record orders, fulfilments and refunds; keep each customer's profile; erase on request.

Every event rewrites the order it is about and then the customer's profile from
the order's line, so duplicates and any arrival order converge (see domain.py).
"""

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import structlog

from services.orders import domain, store
from services.orders.domain import Refund, Telling
from services.orders.insight import Rfm
from services.orders.settings import OrdersUnit
from services.orders.store import Order
from shared.erasure import erased_alias
from shared.events import (
    CustomerErased,
    CustomerSegmentChanged,
    Envelope,
    OrderFulfilledEvent,
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


async def _owner(unit: OrdersUnit, customer_id: str) -> str:
    """Whom the customer's records belong to: the customer, or their anonymous alias once erased."""
    return domain.records_owner(customer_id, erased=await store.customer_is_erased(unit, customer_id))


async def _save(unit: OrdersUnit, order: Order) -> None:
    """Store the order and bring its customer's profile up to date with it."""
    store.save_order(unit, order)
    line = order.line
    if line is None:
        return  # a fulfilment or refund heard of before its order: it counts once the order arrives
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
