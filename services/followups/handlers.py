"""Subscribers of the followups service: read the event, call the use case, nothing else."""

from services.followups import service
from services.followups.settings import FollowupsUnit
from shared.consumer import Handlers
from shared.events import (
    CustomerErasedEvent,
    CustomerSegmentChangedEvent,
    OrderCancelledEvent,
    OrderFulfilledEvent,
    OrderPlacedEvent,
    OrderRefundedEvent,
    PointsAwardedEvent,
    PointsExpiredEvent,
    PointsRedeemedEvent,
    PointsReversedEvent,
    ReferralConvertedEvent,
    ReferralInvitedEvent,
    TierChangedEvent,
)


async def on_order_placed(event: OrderPlacedEvent, unit: FollowupsUnit) -> None:
    await service.note_order_placed(unit, event)


async def on_order_fulfilled(event: OrderFulfilledEvent, unit: FollowupsUnit) -> None:
    await service.note_order_fulfilled(unit, event)


async def on_order_refunded(event: OrderRefundedEvent, unit: FollowupsUnit) -> None:
    await service.note_order_refunded(unit, event)


async def on_order_cancelled(event: OrderCancelledEvent, unit: FollowupsUnit) -> None:
    await service.note_order_cancelled(unit, event)


async def on_referral_invited(event: ReferralInvitedEvent, unit: FollowupsUnit) -> None:
    await service.plan_referral_invitation(unit, event)


async def on_referral_converted(event: ReferralConvertedEvent, unit: FollowupsUnit) -> None:
    await service.note_referral_converted(unit, event)


async def on_points(
    event: PointsAwardedEvent | PointsReversedEvent | PointsRedeemedEvent | PointsExpiredEvent, unit: FollowupsUnit
) -> None:
    await service.note_points(unit, event)


async def on_tier_changed(event: TierChangedEvent, unit: FollowupsUnit) -> None:
    await service.note_tier_changed(unit, event)


async def on_segment_changed(event: CustomerSegmentChangedEvent, unit: FollowupsUnit) -> None:
    await service.note_segment_changed(unit, event)


async def on_customer_erased(event: CustomerErasedEvent, unit: FollowupsUnit) -> None:
    await service.erase_customer(unit, event)


HANDLERS: Handlers = {
    OrderPlacedEvent: on_order_placed,
    OrderFulfilledEvent: on_order_fulfilled,
    OrderRefundedEvent: on_order_refunded,
    OrderCancelledEvent: on_order_cancelled,
    ReferralInvitedEvent: on_referral_invited,
    ReferralConvertedEvent: on_referral_converted,
    PointsAwardedEvent: on_points,
    PointsReversedEvent: on_points,
    PointsRedeemedEvent: on_points,
    PointsExpiredEvent: on_points,
    TierChangedEvent: on_tier_changed,
    CustomerSegmentChangedEvent: on_segment_changed,
    CustomerErasedEvent: on_customer_erased,
}
