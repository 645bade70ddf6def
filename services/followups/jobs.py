"""The scheduler: send the e-mails that are due, safely in any number of replicas; flag breached escalations;
open the key-account reviews (and the win-back calls an import left waiting) that fall due.

Each due e-mail is claimed with an atomic find-and-update that sets a lease, so
replicas never send the same one at once, and one whose replica died is taken
up again when its lease runs out. After the SMTP server accepts a message it is
marked sent and FollowUpSent goes out through the outbox in one transaction; a
failed send is retried with back-off (the lease doubles as the back-off) and,
after `SEND_ATTEMPTS`, marked failed with its error — visible, never dropped.
Time is a parameter (`at`), so tests run "14 days later" without waiting.
"""

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

from services.followups import domain, messages, service, store
from services.followups.domain import Contact
from services.followups.mail import SmtpServer, email_of
from services.followups.settings import FollowupsSettings, FollowupsUnit, settings_of
from services.followups.store import FollowUp
from services.followups.tokens import issue_token
from shared.events import FollowUpSent
from shared.service import Runtime

log = structlog.get_logger("rapport.followups.scheduler")

METRICS = CollectorRegistry()
SENT_TOTAL = Counter("followups_sent", "Follow-up e-mails accepted by the SMTP server.", ["kind"], registry=METRICS)
SEND_FAILURES = Counter("followups_send_failures", "Failed send attempts (retried).", ["kind"], registry=METRICS)
GAVE_UP = Counter("followups_failed", "Follow-ups marked failed after the last attempt.", ["kind"], registry=METRICS)
BREACHED = Counter("followups_escalations_breached", "Escalations not resolved within their SLA.", registry=METRICS)


class NotSendable(Exception):
    """The follow-up cannot be written yet (say, the customer's e-mail is not known yet)."""


async def send_due(rt: Runtime, *, at: datetime | None = None, limit: int = 500) -> int:
    """Send e-mails due by `at`; return how many were handled (sent, retried or failed)."""
    settings = settings_of(rt)
    moment = at or rt.now()
    smtp = SmtpServer.from_url(settings.smtp_url)
    owner = str(uuid.uuid4())
    lease = timedelta(seconds=settings.scheduler_lease_seconds)
    handled = 0
    while handled < limit:
        followup = await store.claim_due_email(rt, moment, owner, lease)
        if followup is None:
            break
        await _send(rt, settings, smtp, followup)
        handled += 1
    return handled


async def _send(rt: Runtime, settings: FollowupsSettings, smtp: SmtpServer, followup: FollowUp) -> None:
    try:
        message, to = _message(settings, followup, await store.contact_of(rt, followup.customer_id))
        email = email_of(message, sender=settings.mail_from, to=to, followup_id=followup.followup_id, sent_at=rt.now())
        await smtp.send(email)
    except Exception as error:  # noqa: BLE001 - every failure is retried, then recorded
        await _failed(rt, settings, followup, error)
        return
    sent_at = rt.now()

    async def record(unit: FollowupsUnit) -> None:
        store.mark_sent(unit, followup, sent_at, message.locale)
        data = FollowUpSent(
            followup_id=followup.followup_id,
            kind=followup.kind,
            customer_id=followup.customer_id,
            order_id=followup.order_id,
            channel="email",
            sent_at=sent_at,
        )
        unit.publish(data, subject=followup.customer_id)

    await rt.transaction(record)
    SENT_TOTAL.labels(kind=followup.kind).inc()
    log.info("followup_sent", followup_id=followup.followup_id, kind=followup.kind, locale=message.locale)


def _message(settings: FollowupsSettings, followup: FollowUp, contact: Contact | None) -> tuple[messages.Message, str]:
    if not contact:
        raise NotSendable("the customer's contact details are not known (yet)")
    values: dict[str, Any] = {
        "first_name": contact.get("first_name"),
        "city": contact.get("city"),
        "region": contact.get("region"),
        "shop_name": settings.shop_name,
    }
    kind = followup.kind
    if kind in ("thank_you", "feedback_request"):
        values["order_id"] = followup.order_id
    if kind == "feedback_request":
        if settings.feedback_token_secret is None:
            raise NotSendable("FEEDBACK_TOKEN_SECRET is not set, so no feedback link can be signed")
        token = issue_token(
            settings.feedback_token_secret.get_secret_value(),
            followup_id=followup.followup_id,
            customer_id=followup.customer_id,
            order_id=followup.order_id,
        )
        values["feedback_url"] = f"{settings.feedback_url}?token={token}"
    if kind == "referral_invite":
        values["code"] = followup.code
        values["referral_url"] = f"{settings.referral_url}{followup.code}"
    return messages.render(kind, contact.get("locale"), **values), contact["email"]


async def _failed(rt: Runtime, settings: FollowupsSettings, followup: FollowUp, error: Exception) -> None:
    backoff = timedelta(seconds=settings.send_backoff_seconds)
    failure = domain.after_failed_send(followup.attempts, settings.send_attempts, backoff, rt.now())
    kind = followup.kind
    if failure.gave_up:
        GAVE_UP.labels(kind=kind).inc()
        log.error("followup_failed", followup_id=followup.followup_id, attempts=failure.attempts, error=repr(error))
    else:
        SEND_FAILURES.labels(kind=kind).inc()
        log.warning(
            "followup_send_failed", followup_id=followup.followup_id, attempts=failure.attempts, error=repr(error)
        )
    await store.record_failed_send(rt, followup, failure, repr(error)[:500])


async def flag_breached_escalations(rt: Runtime, *, at: datetime | None = None) -> int:
    """Mark open escalations past their deadline (once each) and count them in /metrics."""
    moment = at or rt.now()
    flagged = 0
    for escalation_id in await store.overdue_escalations(rt, moment):
        if await store.flag_breached(rt, escalation_id, moment):
            BREACHED.inc()
            flagged += 1
            log.warning("escalation_breached", escalation_id=escalation_id)
    return flagged


async def review_accounts(rt: Runtime, *, at: datetime | None = None, limit: int = 500) -> int:
    """Open the review tasks of key accounts that fall due by `at` (and win-back calls an import left waiting).

    Each customer is looked at in a transaction of its own and their task has a deterministic id, so replicas
    running this at once open each task once; returns how many customers were looked at.
    """
    moment = at or rt.now()
    due = await store.standings_to_check(rt, moment, limit)
    for customer_id in due:

        async def attend(unit: FollowupsUnit, customer_id: str = customer_id) -> None:
            await service.attend_to_account(unit, customer_id, moment)

        await rt.transaction(attend)
    return len(due)


async def run_scheduler(rt: Runtime) -> None:
    interval = settings_of(rt).scheduler_interval_seconds
    while True:
        try:
            await send_due(rt)
            await flag_breached_escalations(rt)
            await review_accounts(rt)
        except Exception as error:  # noqa: BLE001 - the next round tries again
            log.warning("scheduler_round_failed", error=repr(error))
        await asyncio.sleep(interval)
