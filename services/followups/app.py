"""The followups service: thank-you notes, calls, feedback requests, NPS and escalations."""

from services.followups.handlers import HANDLERS
from shared.events import FeedbackEscalatedEvent, FeedbackReceivedEvent, FollowUpSentEvent
from shared.service import ServiceSpec

SPEC = ServiceSpec(
    name="followups",
    handlers=HANDLERS,
    publishes=(FeedbackReceivedEvent, FeedbackEscalatedEvent, FollowUpSentEvent),
)
