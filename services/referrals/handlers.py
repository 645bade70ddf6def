"""Subscribers of the referrals service: read the event, call the use case, nothing else."""

import structlog

from shared.events import CustomerErasedEvent, FeedbackReceivedEvent, OrderPlacedEvent, OrderRefundedEvent
from shared.unit import Unit

log = structlog.get_logger("rapport.referrals")


async def on_order_placed(event: OrderPlacedEvent, unit: Unit) -> None:
    log.info("order_placed_received", order_id=event.data.order_id, referral_code=event.data.referral_code)


async def on_order_refunded(event: OrderRefundedEvent, unit: Unit) -> None:
    log.info("order_refunded_received", order_id=event.data.order_id, refund_id=event.data.refund_id)


async def on_feedback_received(event: FeedbackReceivedEvent, unit: Unit) -> None:
    log.info("feedback_received", feedback_id=event.data.feedback_id, nps=event.data.nps)


async def on_customer_erased(event: CustomerErasedEvent, unit: Unit) -> None:
    log.info("customer_erased_received", customer_id=event.data.customer_id)


HANDLERS = {
    OrderPlacedEvent: on_order_placed,
    OrderRefundedEvent: on_order_refunded,
    FeedbackReceivedEvent: on_feedback_received,
    CustomerErasedEvent: on_customer_erased,
}
