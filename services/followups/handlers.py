"""Subscribers of the followups service: read the event, call the use case, nothing else."""

import structlog

from shared.events import (
    CustomerErasedEvent,
    OrderFulfilledEvent,
    OrderPlacedEvent,
    OrderRefundedEvent,
    ReferralInvitedEvent,
)
from shared.unit import Unit

log = structlog.get_logger("rapport.followups")


async def on_order_placed(event: OrderPlacedEvent, unit: Unit) -> None:
    log.info("order_placed_received", order_id=event.data.order_id, customer_id=event.data.customer.customer_id)


async def on_order_fulfilled(event: OrderFulfilledEvent, unit: Unit) -> None:
    log.info("order_fulfilled_received", order_id=event.data.order_id, customer_id=event.data.customer_id)


async def on_order_refunded(event: OrderRefundedEvent, unit: Unit) -> None:
    log.info("order_refunded_received", order_id=event.data.order_id, refund_id=event.data.refund_id)


async def on_referral_invited(event: ReferralInvitedEvent, unit: Unit) -> None:
    log.info("referral_invited_received", customer_id=event.data.customer_id)


async def on_customer_erased(event: CustomerErasedEvent, unit: Unit) -> None:
    log.info("customer_erased_received", customer_id=event.data.customer_id)


HANDLERS = {
    OrderPlacedEvent: on_order_placed,
    OrderFulfilledEvent: on_order_fulfilled,
    OrderRefundedEvent: on_order_refunded,
    ReferralInvitedEvent: on_referral_invited,
    CustomerErasedEvent: on_customer_erased,
}
