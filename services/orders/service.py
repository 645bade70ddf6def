"""Orders use cases: hear of orders, fulfilments and refunds; keep each customer's profile; erase on request.

Every event rewrites the order it is about and then the customer's profile from
the order's line, so duplicates and any arrival order converge (see domain.py).
"""

from datetime import UTC, datetime
from typing import Any

import structlog
from pymongo import DeleteOne, UpdateMany

from services.orders.domain import gives_contact, replacing, stats_of
from services.orders.settings import OrdersUnit
from services.orders.store import (
    CUSTOMERS,
    ORDERS,
    contact_from,
    lines_of,
    new_order,
    new_profile,
    order_line,
    with_lines,
)
from shared.erasure import erased_alias, forget_sent_events, is_alias, is_erased, mark_erased, preload_customers
from shared.events import (
    CustomerErased,
    Envelope,
    OrderFulfilledEvent,
    OrderPlacedEvent,
    OrderRefundedEvent,
)
from shared.mongo import as_stored

SOURCE = "orders"
log = structlog.get_logger("rapport.orders")


def now() -> datetime:
    return datetime.now(UTC)


async def prefetch_orders(unit: OrdersUnit, events: list[Envelope[Any]]) -> None:
    """Read the orders, profiles and erasure marks a whole batch touches in three queries."""
    await unit.preload(ORDERS, (event.data.order_id for event in events))
    await preload_customers(unit, CUSTOMERS, (_customer_of(event) for event in events))


def _customer_of(event: Envelope[Any]) -> str:
    if isinstance(event, OrderPlacedEvent):
        return event.data.customer.customer_id
    customer_id: str = event.data.customer_id
    return customer_id


async def record_order_placed(unit: OrdersUnit, event: OrderPlacedEvent) -> None:
    data = event.data
    owner = await _owner(unit, data.customer.customer_id)
    order = await _order(unit, data.order_id, owner)
    telling = (as_stored(event.time), event.id)
    told_before = _as_key(order.get("placed_by"))
    if order["placed"] is not None and told_before is not None and told_before >= telling:
        return  # told again (say by a webhook and the backend): the latest telling stands, whenever it arrives
    placed = data.model_dump(mode="python")
    placed["placed_at"] = as_stored(data.placed_at)
    placed["total"] = str(data.total)
    placed["line_items"] = [item | {"unit_price": str(item["unit_price"])} for item in placed["line_items"]]
    if owner != data.customer.customer_id:  # erased before this order arrived: keep it anonymous
        placed["customer"] = {"customer_id": owner}
        placed["shipping_address"] = None
    order["placed"] = placed
    order["placed_by"] = {"at": telling[0], "id": event.id}
    await _save(unit, order)
    log.info("order_recorded", order_id=data.order_id, customer_id=owner)


async def record_fulfilment(unit: OrdersUnit, event: OrderFulfilledEvent) -> None:
    data = event.data
    order = await _order(unit, data.order_id, await _owner(unit, data.customer_id))
    fulfilled_at = as_stored(data.fulfilled_at)
    if order["fulfilled_at"] is not None and order["fulfilled_at"] <= fulfilled_at:
        return  # the earliest fulfilment is the one that counts
    order["fulfilled_at"] = fulfilled_at
    await _save(unit, order)


async def record_refund(unit: OrdersUnit, event: OrderRefundedEvent) -> None:
    data = event.data
    order = await _order(unit, data.order_id, await _owner(unit, data.customer_id))
    if any(refund["refund_id"] == data.refund_id for refund in order["refunds"]):
        return
    order["refunds"].append(
        {
            "refund_id": data.refund_id,
            "amount": str(data.amount),
            "currency": data.currency,
            "refunded_at": as_stored(data.refunded_at),
            "reason": data.reason,
        }
    )
    await _save(unit, order)
    log.info("refund_recorded", order_id=data.order_id, refund_id=data.refund_id, amount=str(data.amount))


async def _owner(unit: OrdersUnit, customer_id: str) -> str:
    """Whom the customer's records belong to: the customer, or their anonymous alias once erased."""
    if await unit.find_one(CUSTOMERS, {"_id": customer_id}) is not None:
        return customer_id
    return erased_alias(customer_id) if await is_erased(unit, customer_id) else customer_id


async def _order(unit: OrdersUnit, order_id: str, owner: str) -> dict[str, Any]:
    found = await unit.find_one(ORDERS, {"_id": order_id})
    return dict(found) if found is not None else new_order(order_id, owner)


async def _save(unit: OrdersUnit, order: dict[str, Any]) -> None:
    """Store the order and bring its customer's profile up to date with it."""
    unit.replace(ORDERS, order)
    line = order_line(order)
    if line is None:
        return  # a fulfilment or refund heard of before its order: it counts once the order arrives
    customer_id = order["customer_id"]
    profile = await unit.find_one(CUSTOMERS, {"_id": customer_id}) or new_profile(customer_id)
    lines = replacing(lines_of(profile), line)
    profile = with_lines(profile, lines, stats_of(lines))
    if not is_alias(customer_id) and gives_contact((line.placed_at, line.order_id), _as_key(profile["contact_from"])):
        source = {"at": line.placed_at, "id": line.order_id}
        profile = profile | {"contact": contact_from(order), "contact_from": source}
    unit.replace(CUSTOMERS, profile)


def _as_key(source: dict[str, Any] | None) -> tuple[datetime, str] | None:
    """A (time, id) pair stored as a document, comparable again."""
    return None if source is None else (source["at"], source["id"])


# --- erasure -------------------------------------------------------------------------------------


async def erase_customer(unit: OrdersUnit, customer_id: str, requested_at: datetime) -> bool:
    """Remove the customer's personal data; keep their orders and stats under an anonymous alias.

    Publishes CustomerErased so every other service does the same. False when the
    customer was erased before (nothing is published again).
    """
    if await is_erased(unit, customer_id):
        return False
    alias = erased_alias(customer_id)
    profile = await unit.find_one(CUSTOMERS, {"_id": customer_id})
    if profile is not None:
        unit.write(CUSTOMERS, DeleteOne({"_id": customer_id}))
        unit.replace(CUSTOMERS, profile | {"_id": alias, "contact": None, "contact_from": None})
    unit.write(
        ORDERS,
        UpdateMany(
            {"customer_id": customer_id, "placed": {"$ne": None}},
            {"$set": {"placed.customer": {"customer_id": alias}, "placed.shipping_address": None}},
        ),
        UpdateMany({"customer_id": customer_id}, {"$set": {"customer_id": alias}}),
    )
    forget_sent_events(unit, customer_id)
    mark_erased(unit, customer_id, requested_at)
    unit.publish(CustomerErased(customer_id=customer_id, requested_at=requested_at), subject=customer_id)
    log.info("customer_erased", alias=alias)
    return True
