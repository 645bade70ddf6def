"""The followups service: thank-you notes, calls, feedback requests, NPS and escalations; the relationship log,
the brief, key-account reviews and win-back calls."""

from services.followups.api import api, public
from services.followups.handlers import HANDLERS
from services.followups.jobs import METRICS, run_scheduler
from services.followups.service import prefetch_followups
from services.followups.store import ensure_indexes
from shared.events import FeedbackEscalatedEvent, FeedbackReceivedEvent, FollowUpSentEvent
from shared.service import ServiceSpec

SPEC = ServiceSpec(
    name="followups",
    source="followups",
    handlers=HANDLERS,
    publishes=(FeedbackReceivedEvent, FeedbackEscalatedEvent, FollowUpSentEvent),
    api=api,
    public_api=public,
    ensure_indexes=ensure_indexes,
    background=(run_scheduler,),
    metrics=METRICS,
    prefetch=prefetch_followups,
)
