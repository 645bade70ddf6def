"""The scheduler: send the e-mails that are due, safely in any number of replicas; flag breached escalations.

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
from pymongo import UpdateOne

from services.followups import messages
from services.followups.mail import SmtpServer, email_of
from services.followups.service import now
from services.followups.settings import FollowupsSettings, FollowupsUnit, followups_settings
from services.followups.store import CUSTOMERS, ESCALATIONS, FAILED, FOLLOWUPS, PENDING, SENT
from services.followups.tokens import issue_token
from shared.events import FollowUpSent
from shared.leases import claim
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
    settings = followups_settings(rt.settings)
    moment = at or now()
    smtp = SmtpServer.from_url(settings.smtp_url)
    owner = str(uuid.uuid4())
    handled = 0
    while handled < limit:
        task = await claim(
            rt.db[FOLLOWUPS],
            {"status": PENDING, "channel": "email", "due_at": {"$lte": moment}},
            lease=timedelta(seconds=settings.scheduler_lease_seconds),
            owner=owner,
            sort=[("due_at", 1)],
        )
        if task is None:
            break
        await _send(rt, settings, smtp, task)
        handled += 1
    return handled


async def _send(rt: Runtime, settings: FollowupsSettings, smtp: SmtpServer, task: dict[str, Any]) -> None:
    try:
        customer = await rt.db[CUSTOMERS].find_one({"_id": task["customer_id"]})
        message, to = _message(settings, task, customer)
        await smtp.send(email_of(message, sender=settings.mail_from, to=to, followup_id=task["_id"]))
    except Exception as error:  # noqa: BLE001 - every failure is retried, then recorded
        await _failed(rt, settings, task, error)
        return
    sent_at = now()

    async def record(unit: FollowupsUnit) -> None:
        # Applied only while this claim still holds the task.
        held = {"_id": task["_id"], "lease_owner": task["lease_owner"]}
        unit.write(FOLLOWUPS, UpdateOne(held, {"$set": {"status": SENT, "sent_at": sent_at, "locale": message.locale}}))
        data = FollowUpSent(
            followup_id=task["_id"],
            kind=task["kind"],
            customer_id=task["customer_id"],
            order_id=task.get("order_id"),
            channel="email",
            sent_at=sent_at,
        )
        unit.publish(data, subject=task["customer_id"])

    await rt.transaction(record)
    SENT_TOTAL.labels(kind=task["kind"]).inc()
    log.info("followup_sent", followup_id=task["_id"], kind=task["kind"], locale=message.locale)


def _message(
    settings: FollowupsSettings, task: dict[str, Any], customer: dict[str, Any] | None
) -> tuple[messages.Message, str]:
    contact = (customer or {}).get("contact")
    if not contact:
        raise NotSendable("the customer's contact details are not known (yet)")
    values: dict[str, Any] = {
        "first_name": contact.get("first_name"),
        "city": contact.get("city"),
        "region": contact.get("region"),
        "shop_name": settings.shop_name,
    }
    kind = task["kind"]
    if kind in ("thank_you", "feedback_request"):
        values["order_id"] = task["order_id"]
    if kind == "feedback_request":
        if settings.feedback_token_secret is None:
            raise NotSendable("FEEDBACK_TOKEN_SECRET is not set, so no feedback link can be signed")
        token = issue_token(
            settings.feedback_token_secret.get_secret_value(),
            followup_id=task["_id"],
            customer_id=task["customer_id"],
            order_id=task["order_id"],
        )
        values["feedback_url"] = f"{settings.feedback_url}?token={token}"
    if kind == "referral_invite":
        values["code"] = task["code"]
        values["referral_url"] = f"{settings.referral_url}{task['code']}"
    return messages.render(kind, contact.get("locale"), **values), contact["email"]


async def _failed(rt: Runtime, settings: FollowupsSettings, task: dict[str, Any], error: Exception) -> None:
    attempts = task.get("attempts", 0) + 1
    kind = task["kind"]
    change: dict[str, Any] = {"attempts": attempts, "last_error": repr(error)[:500]}
    if attempts >= settings.send_attempts:
        change["status"] = FAILED
        GAVE_UP.labels(kind=kind).inc()
        log.error("followup_failed", followup_id=task["_id"], attempts=attempts, error=repr(error))
    else:
        backoff = settings.send_backoff_seconds * 2 ** (attempts - 1)
        change["lease_until"] = now() + timedelta(seconds=backoff)
        SEND_FAILURES.labels(kind=kind).inc()
        log.warning("followup_send_failed", followup_id=task["_id"], attempts=attempts, error=repr(error))
    await rt.db[FOLLOWUPS].update_one({"_id": task["_id"], "lease_owner": task["lease_owner"]}, {"$set": change})


async def flag_breached_escalations(rt: Runtime, *, at: datetime | None = None) -> int:
    """Mark open escalations past their deadline (once each) and count them in /metrics."""
    moment = at or now()
    flagged = 0
    async for escalation in rt.db[ESCALATIONS].find(
        {"resolved_at": None, "breached_at": None, "due_by": {"$lt": moment}}, {"_id": 1}
    ):
        result = await rt.db[ESCALATIONS].update_one(
            {"_id": escalation["_id"], "breached_at": None}, {"$set": {"breached_at": moment}}
        )
        if result.modified_count:
            BREACHED.inc()
            flagged += 1
            log.warning("escalation_breached", escalation_id=escalation["_id"])
    return flagged


async def run_scheduler(rt: Runtime) -> None:
    interval = followups_settings(rt.settings).scheduler_interval_seconds
    while True:
        try:
            await send_due(rt)
            await flag_breached_escalations(rt)
        except Exception as error:  # noqa: BLE001 - the next round tries again
            log.warning("scheduler_round_failed", error=repr(error))
        await asyncio.sleep(interval)
