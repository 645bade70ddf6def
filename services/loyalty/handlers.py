"""Subscribers of the loyalty service: read the event, call the use case, nothing else."""

import structlog

from shared.events import (
    CustomerErasedEvent,
    FeedbackReceivedEvent,
    OrderPlacedEvent,
    OrderRefundedEvent,
    ReferralConvertedEvent,
)
from shared.unit import Unit

log = structlog.get_logger("rapport.loyalty")


async def on_order_placed(event: OrderPlacedEvent, unit: Unit) -> None:
    log.info("order_placed_received", order_id=event.data.order_id, customer_id=event.data.customer.customer_id)


async def on_order_refunded(event: OrderRefundedEvent, unit: Unit) -> None:
    log.info("order_refunded_received", order_id=event.data.order_id, refund_id=event.data.refund_id)


async def on_feedback_received(event: FeedbackReceivedEvent, unit: Unit) -> None:
    log.info("feedback_received", feedback_id=event.data.feedback_id, customer_id=event.data.customer_id)


async def on_referral_converted(event: ReferralConvertedEvent, unit: Unit) -> None:
    log.info("referral_converted_received", referral_id=event.data.referral_id)


async def on_customer_erased(event: CustomerErasedEvent, unit: Unit) -> None:
    log.info("customer_erased_received", customer_id=event.data.customer_id)


HANDLERS = {
    OrderPlacedEvent: on_order_placed,
    OrderRefundedEvent: on_order_refunded,
    FeedbackReceivedEvent: on_feedback_received,
    ReferralConvertedEvent: on_referral_converted,
    CustomerErasedEvent: on_customer_erased,
}
