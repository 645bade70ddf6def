"""A minimal service built from the shared plumbing, to test the plumbing itself.

On OrderPlaced it counts the order in MongoDB and publishes PointsAwarded through
the outbox; an order id starting with "boom" makes its handler fail.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter
from pymongo import UpdateOne

from shared.events import OrderPlacedEvent, PointsAwarded, PointsAwardedEvent
from shared.service import Runtime, ServiceSpec
from shared.unit import Unit


async def on_order_placed(event: OrderPlacedEvent, unit: Unit) -> None:
    order = event.data
    if order.order_id.startswith("boom"):
        raise RuntimeError(f"cannot handle {order.order_id}")
    unit.write("orders_seen", UpdateOne({"_id": order.order_id}, {"$inc": {"applied": 1}}, upsert=True))
    unit.publish(
        PointsAwarded(
            entry_id=f"le_{order.order_id}",
            customer_id=order.customer.customer_id,
            points=int(order.total),
            reason="purchase",
            order_id=order.order_id,
            balance=int(order.total),
            tier="bronze",
            expires_at=order.placed_at + timedelta(days=365),
        ),
        subject=order.customer.customer_id,
        cause=event,
    )


api = APIRouter()


@api.get("/orders-seen/{order_id}")
async def orders_seen(order_id: str) -> dict[str, Any]:
    return {"order_id": order_id, "checked_at": datetime.now(UTC).isoformat()}


def probe_spec(name: str) -> ServiceSpec:
    return ServiceSpec(
        name=name, handlers={OrderPlacedEvent: on_order_placed}, publishes=(PointsAwardedEvent,), api=api
    )


async def applied_count(rt: Runtime, order_id: str) -> int:
    """How many times the probe's handler applied this order (1 when idempotency holds)."""
    doc = await rt.db.orders_seen.find_one({"_id": order_id})
    return int(doc["applied"]) if doc else 0
