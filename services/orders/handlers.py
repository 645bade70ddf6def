"""Subscribers of the orders service: read the event, call the use case, nothing else."""

from services.orders import service
from services.orders.settings import OrdersUnit
from shared.consumer import Handlers
from shared.events import OrderCancelledEvent, OrderFulfilledEvent, OrderPlacedEvent, OrderRefundedEvent


async def on_order_placed(event: OrderPlacedEvent, unit: OrdersUnit) -> None:
    await service.record_order_placed(unit, event)


async def on_order_fulfilled(event: OrderFulfilledEvent, unit: OrdersUnit) -> None:
    await service.record_fulfilment(unit, event)


async def on_order_refunded(event: OrderRefundedEvent, unit: OrdersUnit) -> None:
    await service.record_refund(unit, event)


async def on_order_cancelled(event: OrderCancelledEvent, unit: OrdersUnit) -> None:
    await service.record_cancellation(unit, event)


HANDLERS: Handlers = {
    OrderPlacedEvent: on_order_placed,
    OrderFulfilledEvent: on_order_fulfilled,
    OrderRefundedEvent: on_order_refunded,
    OrderCancelledEvent: on_order_cancelled,
}
