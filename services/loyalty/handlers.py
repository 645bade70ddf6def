"""Subscribers of the loyalty service: read the event, call the use case, nothing else."""

from services.loyalty import service
from services.loyalty.settings import LoyaltyUnit
from shared.consumer import Handlers
from shared.events import (
    CustomerErasedEvent,
    FeedbackReceivedEvent,
    OrderCancelledEvent,
    OrderPlacedEvent,
    OrderRefundedEvent,
    ReferralConvertedEvent,
)


async def on_order_placed(event: OrderPlacedEvent, unit: LoyaltyUnit) -> None:
    await service.award_purchase_points(unit, event)


async def on_order_refunded(event: OrderRefundedEvent, unit: LoyaltyUnit) -> None:
    await service.reverse_refunded_points(unit, event)


async def on_order_cancelled(event: OrderCancelledEvent, unit: LoyaltyUnit) -> None:
    await service.take_back_cancelled_points(unit, event)


async def on_feedback_received(event: FeedbackReceivedEvent, unit: LoyaltyUnit) -> None:
    await service.award_feedback_points(unit, event)


async def on_referral_converted(event: ReferralConvertedEvent, unit: LoyaltyUnit) -> None:
    await service.award_referral_points(unit, event)


async def on_customer_erased(event: CustomerErasedEvent, unit: LoyaltyUnit) -> None:
    await service.erase_member(unit, event)


HANDLERS: Handlers = {
    OrderPlacedEvent: on_order_placed,
    OrderRefundedEvent: on_order_refunded,
    OrderCancelledEvent: on_order_cancelled,
    FeedbackReceivedEvent: on_feedback_received,
    ReferralConvertedEvent: on_referral_converted,
    CustomerErasedEvent: on_customer_erased,
}
