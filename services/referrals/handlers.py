"""Subscribers of the referrals service: read the event, call the use case, nothing else."""

from services.referrals import service
from services.referrals.settings import ReferralsUnit
from shared.consumer import Handlers
from shared.events import (
    CustomerErasedEvent,
    FeedbackReceivedEvent,
    OrderCancelledEvent,
    OrderPlacedEvent,
    OrderRefundedEvent,
)


async def on_order_placed(event: OrderPlacedEvent, unit: ReferralsUnit) -> None:
    await service.record_order(unit, event)


async def on_order_refunded(event: OrderRefundedEvent, unit: ReferralsUnit) -> None:
    await service.claw_back_commission(unit, event)


async def on_order_cancelled(event: OrderCancelledEvent, unit: ReferralsUnit) -> None:
    await service.contest_cancelled_order(unit, event)


async def on_feedback_received(event: FeedbackReceivedEvent, unit: ReferralsUnit) -> None:
    await service.invite_promoter(unit, event)


async def on_customer_erased(event: CustomerErasedEvent, unit: ReferralsUnit) -> None:
    await service.erase_customer(unit, event)


HANDLERS: Handlers = {
    OrderPlacedEvent: on_order_placed,
    OrderRefundedEvent: on_order_refunded,
    OrderCancelledEvent: on_order_cancelled,
    FeedbackReceivedEvent: on_feedback_received,
    CustomerErasedEvent: on_customer_erased,
}
