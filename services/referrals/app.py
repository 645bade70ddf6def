"""The referrals service: codes, attribution, affiliates and the K-factor."""

from services.referrals.handlers import HANDLERS
from shared.events import ReferralConvertedEvent, ReferralInvitedEvent
from shared.service import ServiceSpec

SPEC = ServiceSpec(
    name="referrals",
    handlers=HANDLERS,
    publishes=(ReferralInvitedEvent, ReferralConvertedEvent),
)
