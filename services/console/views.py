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
    """What to mention on a call: who, their last order, tier and points (expiring soon), segment, last feedback."""

    customer_id: str
    name: str
    phone: str | None
    email: str | None
    city: str | None
    orders_count: int | None = None
    last_order_at: datetime | None = None
    last_order_items: tuple[str, ...] = ()
    last_order_total: tuple[str, str] | None = None  # amount, currency
    segment: str | None = None
    tier: str | None = None
    balance: int | None = None
    expiring: tuple[tuple[int, datetime], ...] = ()
    facts: tuple[str, ...] = ()
    last_feedback: str | None = None
    missing: tuple[str, ...] = ()  # services that did not answer


def brief_of(
    customer_id: str, person: dict[str, Any] | None, profile: Reading, member: Reading, feedback: Reading | None = None
) -> Brief:
    contact: dict[str, Any] = dict(person or {})
    missing = [r.service for r in (profile, member, feedback) if r is not None and r.problem == "unavailable"]
    facts: dict[str, Any] = {}
    if profile.ok:
        contact = {**(profile.data.get("contact") or {}), **{k: v for k, v in contact.items() if v}}
        orders = profile.data.get("orders") or []
        latest = orders[0] if orders else None
        facts |= {
            "orders_count": profile.data.get("orders_count"),
            "last_order_at": parse_time(profile.data.get("last_order_at")),
            "segment": profile.data.get("segment"),
        }
        if latest:
            facts["last_order_items"] = tuple(f"{item['quantity']}× {item['name']}" for item in latest["items"])
            if latest.get("total") and latest.get("currency"):
                facts["last_order_total"] = (latest["total"], latest["currency"])
    if member.ok:
        facts |= {
            "tier": member.data.get("tier"),
            "balance": member.data.get("balance"),
            "expiring": tuple((e["points"], parse_time(e["expires_at"])) for e in member.data.get("expiring", [])[:3]),
        }
    if feedback is not None and feedback.ok and feedback.data.get("feedback"):
        latest_feedback = feedback.data["feedback"][0]
        facts["last_feedback"] = latest_feedback.get("comment") or f"{latest_feedback['ratings']['overall']}/5"
    return Brief(
        customer_id=customer_id,
        name=person_name(contact, customer_id),
        phone=contact.get("phone"),
        email=contact.get("email"),
        city=contact.get("city"),
        missing=tuple(missing),
        **facts,
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


def timeline_of(profile: Reading, member: Reading, followups: Reading, feedback: Reading) -> list[TimelineEntry]:
    """Everything about a customer the services know, latest first."""
    timeline = Timeline()
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
