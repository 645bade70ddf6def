"""The referrals service: codes, attribution, affiliates and the K-factor."""

from services.referrals.api import api
from services.referrals.handlers import HANDLERS
from services.referrals.service import METRICS, prefetch_referrals
from services.referrals.store import ensure_indexes
from shared.events import ReferralConvertedEvent, ReferralInvitedEvent
from shared.service import ServiceSpec

SPEC = ServiceSpec(
    name="referrals",
    source="referrals",
    handlers=HANDLERS,
    publishes=(ReferralInvitedEvent, ReferralConvertedEvent),
    api=api,
    ensure_indexes=ensure_indexes,
    metrics=METRICS,
    prefetch=prefetch_referrals,
)
