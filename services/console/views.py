"""What the console's pages show, put together from the services' answers (no I/O: tested without services)."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.console import domain
from services.console.calls import Reading


def parse_time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def person_name(contact: dict[str, Any] | None, fallback: str) -> str:
    """The customer as the owner knows them: their name, else their e-mail, else the customer id."""
    if not contact:
        return fallback
    name = " ".join(part for part in (contact.get("first_name"), contact.get("last_name")) if part)
    return name or contact.get("email") or fallback


@dataclass(frozen=True)
class Brief:
    """What to mention on a call (followups' brief): who, personal facts, last order, tier and points, feedback."""

    customer_id: str
    name: str
    phone: str | None
    email: str | None
    city: str | None
    orders_count: int | None = None
    last_order_at: datetime | None = None
    last_order_total: tuple[str, str] | None = None  # amount, currency
    segment: str | None = None
    tier: str | None = None
    balance: int | None = None
    expiring: tuple[tuple[int, datetime], ...] = ()
    facts: tuple[tuple[str, str], ...] = ()  # kind, value
    last_note: str | None = None
    last_call: tuple[str, str] | None = None  # outcome, summary
    last_feedback: str | None = None
    referral_code: str | None = None
    missing: tuple[str, ...] = ()  # services that did not answer


def brief_of(customer_id: str, person: dict[str, Any] | None, brief: Reading) -> Brief:
    """The brief followups gives (GET /customers/{id}/brief); without it, who to call from the task itself."""
    contact: dict[str, Any] = dict(person or {})
    if not brief.ok:
        missing = (brief.service,) if brief.problem == "unavailable" else ()
        return Brief(
            customer_id,
            person_name(contact, customer_id),
            contact.get("phone"),
            contact.get("email"),
            contact.get("city"),
            missing=missing,
        )
    data = brief.data
    contact = {
        **contact,
        **{k: data.get(k) for k in ("first_name", "last_name", "phone", "email", "city") if data.get(k)},
    }
    orders = data.get("orders") or {}
    last = orders.get("last_order") or {}
    loyalty = data.get("loyalty") or {}
    expiring: tuple[tuple[int, datetime], ...] = ()
    first_expiry = parse_time(loyalty.get("points_expiring_from"))
    if loyalty.get("points_expiring") and first_expiry is not None:
        expiring = ((loyalty["points_expiring"], first_expiry),)
    feedback = data.get("latest_feedback")
    notes, calls = data.get("notes") or [], data.get("calls") or []
    return Brief(
        customer_id=customer_id,
        name=person_name(contact, customer_id),
        phone=contact.get("phone"),
        email=contact.get("email"),
        city=contact.get("city"),
        orders_count=orders.get("count"),
        last_order_at=parse_time(last.get("placed_at")),
        last_order_total=(last["total"], last["currency"]) if last.get("total") and last.get("currency") else None,
        segment=(data.get("account") or {}).get("segment"),
        tier=loyalty.get("tier"),
        balance=loyalty.get("balance"),
        expiring=expiring,
        facts=tuple((fact["kind"], fact["value"]) for fact in data.get("facts") or []),
        last_note=notes[0]["text"] if notes else None,
        last_call=(calls[0]["outcome"], calls[0]["summary"]) if calls else None,
        last_feedback=(feedback.get("comment") or f"{feedback['overall']}/5") if feedback else None,
        referral_code=(data.get("referrals") or {}).get("code"),
    )


@dataclass(frozen=True)
class EscalationRow:
    escalation_id: str
    customer_id: str
    name: str
    order_id: str | None
    due_by: datetime | None
    minutes_left: int
    urgency: domain.Urgency


def escalation_rows(escalations: list[dict[str, Any]], names: dict[str, str]) -> list[EscalationRow]:
    """Open escalations, fewest minutes left first (breached ones at the top)."""
    rows = [
        EscalationRow(
            escalation_id=e["escalation_id"],
            customer_id=e["customer_id"],
            name=names.get(e["customer_id"], e["customer_id"]),
            order_id=e.get("order_id"),
            due_by=parse_time(e.get("due_by")),
            minutes_left=int(e["seconds_left"] // 60),
            urgency=domain.urgency(e["seconds_left"], e["breached"]),
        )
        for e in escalations
        if e.get("resolved_at") is None
    ]
    return sorted(rows, key=lambda row: row.minutes_left)


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    kind: str  # the message id suffix: order, refund, points, followup, feedback, escalation, referral
    text: str
    detail: str = ""


@dataclass
class Timeline:
    entries: list[TimelineEntry] = field(default_factory=list)

    def add(self, at: datetime | None, kind: str, text: str, detail: str = "") -> None:
        if at is not None:
            self.entries.append(TimelineEntry(at, kind, text, detail))

    def latest_first(self) -> list[TimelineEntry]:
        return sorted(self.entries, key=lambda entry: entry.at, reverse=True)


def _remembered(timeline: Timeline, brief: dict[str, Any]) -> None:
    """The relationship log's calls, notes and reviews (followups' brief)."""
    for call in brief.get("calls") or []:
        timeline.add(parse_time(call["at"]), "call", call["outcome"], call.get("summary") or "")
    for note in brief.get("notes") or []:
        timeline.add(parse_time(note["at"]), "note", note.get("author") or "", note["text"])
    for review in brief.get("reviews") or []:
        timeline.add(parse_time(review["at"]), "review", review.get("author") or "", review.get("next_step") or "")


def timeline_of(
    profile: Reading, member: Reading, followups: Reading, feedback: Reading, memory: Reading | None = None
) -> list[TimelineEntry]:
    """Everything about a customer the services know, latest first."""
    timeline = Timeline()
    if memory is not None and memory.ok:
        _remembered(timeline, memory.data)
    if profile.ok:
        for order in profile.data.get("orders", []):
            items = ", ".join(f"{item['quantity']}× {item['name']}" for item in order.get("items", []))
            timeline.add(parse_time(order.get("placed_at")), "order", order["order_id"], items)
            timeline.add(parse_time(order.get("fulfilled_at")), "fulfilled", order["order_id"])
            for refund in order.get("refunds", []):
                timeline.add(parse_time(refund["refunded_at"]), "refund", order["order_id"], refund.get("reason") or "")
    if member.ok:
        for entry in member.data.get("recent_entries", []):
            sign = "+" if entry["points"] >= 0 and entry["kind"] != "reverse" else ""
            timeline.add(parse_time(entry["at"]), "points", f"{sign}{entry['points']}", entry["reason"])
    if followups.ok:
        for followup in followups.data.get("followups", []):
            moment = parse_time(followup.get("done_at") or followup.get("sent_at")) or parse_time(followup["due_at"])
            timeline.add(moment, f"followup.{followup['kind']}", followup["status"], followup.get("note") or "")
    if feedback.ok:
        for given in feedback.data.get("feedback", []):
            nps = f", NPS {given['nps']}" if given.get("nps") is not None else ""
            score = f"{given['ratings']['overall']}/5{nps}"
            timeline.add(parse_time(given["received_at"]), "feedback", score, given.get("comment") or "")
    return timeline.latest_first()
