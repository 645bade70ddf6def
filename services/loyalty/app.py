"""The loyalty service: points ledger, tiers, campaigns and rewards."""

from services.loyalty.handlers import HANDLERS
from shared.events import (
    PointsAwardedEvent,
    PointsExpiredEvent,
    PointsRedeemedEvent,
    PointsReversedEvent,
    TierChangedEvent,
)
from shared.service import ServiceSpec

SPEC = ServiceSpec(
    name="loyalty",
    handlers=HANDLERS,
    publishes=(PointsAwardedEvent, PointsReversedEvent, PointsRedeemedEvent, PointsExpiredEvent, TierChangedEvent),
)
