"""The loyalty service: points ledger, tiers, campaigns and rewards."""

from services.loyalty.api import api
from services.loyalty.handlers import HANDLERS
from services.loyalty.jobs import expire_points_regularly
from services.loyalty.service import METRICS, prefetch_members
from services.loyalty.store import ensure_indexes
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
    source="loyalty",
    handlers=HANDLERS,
    publishes=(PointsAwardedEvent, PointsReversedEvent, PointsRedeemedEvent, PointsExpiredEvent, TierChangedEvent),
    api=api,
    ensure_indexes=ensure_indexes,
    background=(expire_points_regularly,),
    metrics=METRICS,
    prefetch=prefetch_members,
)
