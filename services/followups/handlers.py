"""Subscribers of the followups service: read the event, call the use case, nothing else."""

from services.followups import service
from services.followups.settings import FollowupsUnit
from shared.consumer import Handlers
from shared.events import (
    CustomerErasedEvent,
    OrderFulfilledEvent,
    OrderPlacedEvent,
    OrderRefundedEvent,
    ReferralInvitedEvent,
)


async def on_order_placed(event: OrderPlacedEvent, unit: FollowupsUnit) -> None:
    await service.note_order_placed(unit, event)


async def on_order_fulfilled(event: OrderFulfilledEvent, unit: FollowupsUnit) -> None:
    await service.note_order_fulfilled(unit, event)


async def on_order_refunded(event: OrderRefundedEvent, unit: FollowupsUnit) -> None:
    await service.note_order_refunded(unit, event)


async def on_referral_invited(event: ReferralInvitedEvent, unit: FollowupsUnit) -> None:
    await service.plan_referral_invitation(unit, event)


async def on_customer_erased(event: CustomerErasedEvent, unit: FollowupsUnit) -> None:
    await service.erase_customer(unit, event)


HANDLERS: Handlers = {
    OrderPlacedEvent: on_order_placed,
    OrderFulfilledEvent: on_order_fulfilled,
    OrderRefundedEvent: on_order_refunded,
    ReferralInvitedEvent: on_referral_invited,
    CustomerErasedEvent: on_customer_erased,
}
