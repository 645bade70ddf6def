"""Follow-up use cases: plan follow-ups from the shop's events, take feedback, escalate, erase.

Planning is order-tolerant: each event records what it tells (an order placed,
fulfilled or refunded; a customer's contact) and then `plan_order` creates
whatever the known facts call for, under deterministic ids, so a duplicate or a
late event plans nothing twice and a refund heard of first still cancels.
"""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from pymongo import DeleteOne, UpdateMany, UpdateOne

from services.followups import domain
from services.followups.settings import FollowupsUnit, followups_settings
from services.followups.store import (
    CANCELLED,
    CUSTOMERS,
    ESCALATIONS,
    FEEDBACK,
    FOLLOWUPS,
    ORDERS,
    PENDING,
)
from shared.erasure import customer_erased, erased_alias, forget_sent_events, mark_erased, preload_customers
from shared.events import (
    CustomerErasedEvent,
    Envelope,
    FeedbackEscalated,
    FeedbackReceived,
    OrderFulfilledEvent,
    OrderPlacedEvent,
    OrderRefundedEvent,
    ReferralInvitedEvent,
)
from shared.mongo import as_stored

SOURCE = "followups"
log = structlog.get_logger("rapport.followups")


def now() -> datetime:
    return datetime.now(UTC)


# --- hearing of orders ----------------------------------------------------------------------


async def prefetch_followups(unit: FollowupsUnit, events: list[Envelope[Any]]) -> None:
    """Read what a whole batch touches (customers, orders, the follow-ups it may plan) in a few queries."""
    customers = {_customer_of(event) for event in events}
    await preload_customers(unit, CUSTOMERS, customers)
    ordered = [e.data.order_id for e in events if isinstance(e, OrderPlacedEvent | OrderFulfilledEvent)]
    refunded = [e.data.order_id for e in events if isinstance(e, OrderRefundedEvent)]
    await unit.preload(ORDERS, [*ordered, *refunded])
    planned = [f"{kind}:{order_id}" for order_id in [*ordered, *refunded] for kind in ("thank_you", "feedback_request")]
    planned += [f"call:{customer}" for customer in customers]
    planned += [f"referral_invite:{e.id}" for e in events if isinstance(e, ReferralInvitedEvent)]
    await unit.preload(FOLLOWUPS, planned)


def _customer_of(event: Envelope[Any]) -> str:
    if isinstance(event, OrderPlacedEvent):
        return event.data.customer.customer_id
    customer_id: str = event.data.customer_id
    return customer_id


async def note_order_placed(unit: FollowupsUnit, event: OrderPlacedEvent) -> None:
    data = event.data
    customer_id = data.customer.customer_id
    if await customer_erased(unit, CUSTOMERS, customer_id):
        return
    placed_at = as_stored(data.placed_at)
    customer = await unit.find_one(CUSTOMERS, {"_id": customer_id}) or {"_id": customer_id, "first_order_at": None}
    customer = dict(customer)
    if customer.get("contact_at") is None or placed_at >= customer["contact_at"]:
        contact = data.customer.model_dump(
            include={"email", "first_name", "last_name", "locale", "city", "region", "phone"}
        )
        customer |= {"contact": contact, "contact_at": placed_at}
    if customer["first_order_at"] is None or placed_at < customer["first_order_at"]:
        customer["first_order_at"] = placed_at
    unit.replace(CUSTOMERS, customer)
    order = await _order(unit, data.order_id, customer_id)
    order["placed_at"] = placed_at
    unit.replace(ORDERS, order)
    await plan_order(unit, order)


async def note_order_fulfilled(unit: FollowupsUnit, event: OrderFulfilledEvent) -> None:
    data = event.data
    if await customer_erased(unit, CUSTOMERS, data.customer_id):
        return
    order = await _order(unit, data.order_id, data.customer_id)
    fulfilled_at = as_stored(data.fulfilled_at)
    if order.get("fulfilled_at") is None or fulfilled_at < order["fulfilled_at"]:
        order["fulfilled_at"] = fulfilled_at
    unit.replace(ORDERS, order)
    await plan_order(unit, order)


async def note_order_refunded(unit: FollowupsUnit, event: OrderRefundedEvent) -> None:
    """A refund cancels what is still pending for the order, and what would be planned for it later."""
    data = event.data
    order = await _order(unit, data.order_id, data.customer_id)
    order["refunded"] = True
    unit.replace(ORDERS, order)
    # What can be planned for an order has a deterministic id (store.py), so the batch prefetch has read it.
    for followup_id in _planned_for(data.order_id, data.customer_id):
        followup = await unit.find_one(FOLLOWUPS, {"_id": followup_id})
        if followup is None or followup["order_id"] != data.order_id or followup["status"] != PENDING:
            continue
        change = {"status": CANCELLED, "cancelled_because": "refunded"}
        unit.update(FOLLOWUPS, followup | change, UpdateOne({"_id": followup_id, "status": PENDING}, {"$set": change}))
    log.info("followups_cancelled_for_refund", order_id=data.order_id)


def _planned_for(order_id: str, customer_id: str) -> tuple[str, ...]:
    """The ids of every follow-up that can be planned for an order (the call is the customer's, tied to an order)."""
    return (f"thank_you:{order_id}", f"feedback_request:{order_id}", f"call:{customer_id}")


async def plan_order(unit: FollowupsUnit, order: dict[str, Any]) -> None:
    """Plan what the order's known milestones call for (each at most once)."""
    settings = followups_settings(unit.settings)
    order_id, customer_id = order["_id"], order["customer_id"]
    if order.get("placed_at") is not None:
        due = domain.thank_you_due(order["placed_at"], timedelta(seconds=settings.thank_you_delay_seconds))
        await _plan(unit, f"thank_you:{order_id}", "thank_you", "email", customer_id, order_id, due, order)
    fulfilled_at = order.get("fulfilled_at")
    if fulfilled_at is None:
        return
    due = domain.feedback_request_due(fulfilled_at, timedelta(days=settings.feedback_request_delay_days))
    await _plan(unit, f"feedback_request:{order_id}", "feedback_request", "email", customer_id, order_id, due, order)
    call_id = f"call:{customer_id}"
    if await unit.find_one(FOLLOWUPS, {"_id": call_id}) is None and await _is_early_customer(
        unit, customer_id, settings.call_customers
    ):
        due = domain.call_due(fulfilled_at, timedelta(days=settings.call_delay_days))
        await _plan(unit, call_id, "call", "person", customer_id, order_id, due, order)


async def _plan(
    unit: FollowupsUnit,
    followup_id: str,
    kind: str,
    channel: str,
    customer_id: str,
    order_id: str | None,
    due_at: datetime,
    order: dict[str, Any] | None = None,
    **details: Any,
) -> None:
    if await unit.find_one(FOLLOWUPS, {"_id": followup_id}) is not None:
        return
    refunded = order is not None and order.get("refunded", False)
    unit.replace(
        FOLLOWUPS,
        {
            "_id": followup_id,
            "kind": kind,
            "channel": channel,
            "customer_id": customer_id,
            "order_id": order_id,
            "due_at": due_at,
            "status": CANCELLED if refunded else PENDING,
            "created_at": now(),
            "attempts": 0,
            "lease_until": None,
            **details,
        },
    )
    log.info("followup_planned", followup_id=followup_id, due_at=due_at.isoformat(), cancelled=refunded)


# Per database and number of early customers: a first-order time from which on no customer can be one of
# the shop's first N, because N customers are known to have ordered before it. It never has to move later:
# customers are only added (erasure keeps when they first ordered), and first orders only move earlier.
_NOT_EARLY_FROM: dict[tuple[str, int], datetime] = {}


async def _is_early_customer(unit: FollowupsUnit, customer_id: str, first: int) -> bool:
    """Whether the customer is one of the shop's first `first` customers (by first order, as far as known)."""
    customer = await unit.find_one(CUSTOMERS, {"_id": customer_id})
    if customer is None or customer.get("first_order_at") is None:
        return False  # their order is not known yet; planning runs again when it arrives
    first_order_at = customer["first_order_at"]
    known = (unit.db.name, first)
    if known in _NOT_EARLY_FROM and first_order_at >= _NOT_EARLY_FROM[known]:
        return False  # the count below would say so; an established shop skips it for nearly every customer
    await unit.flush()
    earlier = await unit.db[CUSTOMERS].count_documents(
        {"first_order_at": {"$lt": first_order_at}}, session=unit.session
    )
    if earlier >= first:

        def remember() -> None:  # once the customers the count saw (this batch's too) are committed
            _NOT_EARLY_FROM[known] = min(first_order_at, _NOT_EARLY_FROM.get(known, first_order_at))

        unit.on_commit(remember)
    return earlier < first


async def _order(unit: FollowupsUnit, order_id: str, customer_id: str) -> dict[str, Any]:
    found = await unit.find_one(ORDERS, {"_id": order_id})
    return dict(found) if found is not None else {"_id": order_id, "customer_id": customer_id}


# --- the happy moment ---------------------------------------------------------------------------


async def plan_referral_invitation(unit: FollowupsUnit, event: ReferralInvitedEvent) -> None:
    data = event.data
    if await customer_erased(unit, CUSTOMERS, data.customer_id):
        return
    await _plan(
        unit, f"referral_invite:{event.id}", "referral_invite", "email", data.customer_id, None, now(), code=data.code
    )


# --- feedback and escalations -----------------------------------------------------------------


def new_feedback(data: dict[str, Any], received_at: datetime) -> FeedbackReceived:
    """Feedback as the contract has it, with a fresh id; raises ValidationError naming a bad field."""
    return FeedbackReceived(feedback_id=f"fb_{uuid.uuid4().hex[:16]}", received_at=received_at, **data)


async def take_feedback(
    unit: FollowupsUnit, feedback: FeedbackReceived, *, followup_id: str | None = None
) -> dict[str, Any]:
    """Store feedback, publish FeedbackReceived, and open an escalation when it is unhappy."""
    settings = followups_settings(unit.settings)
    received_at = feedback.received_at
    stored = feedback.model_dump(mode="python") | {
        "_id": feedback.feedback_id,
        "followup_id": followup_id,
        "received_at": as_stored(received_at),
    }
    unit.replace(FEEDBACK, stored)
    subject = feedback.customer_id
    received = unit.publish(feedback, subject=subject)
    escalation = None
    if domain.is_detractor_feedback(feedback.ratings.overall, feedback.nps):
        due_by = domain.escalation_due(as_stored(received_at), timedelta(minutes=settings.escalation_sla_minutes))
        escalation = {
            "_id": f"esc_{uuid.uuid4().hex[:16]}",
            "feedback_id": feedback.feedback_id,
            "customer_id": subject,
            "order_id": feedback.order_id,
            "due_by": due_by,
            "opened_at": as_stored(received_at),
            "resolved_at": None,
            "breached_at": None,
        }
        unit.replace(ESCALATIONS, escalation)
        data_out = FeedbackEscalated(
            escalation_id=escalation["_id"],
            feedback_id=feedback.feedback_id,
            customer_id=subject,
            order_id=feedback.order_id,
            due_by=due_by,
        )
        unit.publish(data_out, subject=subject, cause=received)
        log.info("feedback_escalated", escalation_id=escalation["_id"], due_by=due_by.isoformat())
    log.info("feedback_received", feedback_id=feedback.feedback_id, overall=feedback.ratings.overall, nps=feedback.nps)
    return stored | {"escalation_id": escalation["_id"] if escalation else None}


# --- erasure ------------------------------------------------------------------------------------


async def erase_customer(unit: FollowupsUnit, event: CustomerErasedEvent) -> None:
    """Forget the customer's contact, cancel their pending messages, keep feedback scores anonymously."""
    customer_id = event.data.customer_id
    alias = erased_alias(customer_id)
    mark_erased(unit, customer_id, as_stored(event.data.requested_at))
    customer = await unit.find_one(CUSTOMERS, {"_id": customer_id})
    if customer is not None:  # keep when they first ordered (who counts as an early customer), not who they are
        unit.write(CUSTOMERS, DeleteOne({"_id": customer_id}))
        unit.replace(CUSTOMERS, {"_id": alias, "first_order_at": customer.get("first_order_at")})
    unit.write(ORDERS, UpdateMany({"customer_id": customer_id}, {"$set": {"customer_id": alias}}))
    unit.write(
        FOLLOWUPS,
        UpdateMany(
            {"customer_id": customer_id, "status": PENDING},
            {"$set": {"status": CANCELLED, "cancelled_because": "customer erased"}},
        ),
        UpdateMany({"customer_id": customer_id}, {"$set": {"customer_id": alias}}),
    )
    unit.write(FEEDBACK, UpdateMany({"customer_id": customer_id}, {"$set": {"customer_id": alias, "comment": None}}))
    unit.write(ESCALATIONS, UpdateMany({"customer_id": customer_id}, {"$set": {"customer_id": alias, "note": None}}))
    forget_sent_events(unit, customer_id)  # FeedbackReceived carries the customer's own words
    log.info("customer_erased", alias=alias)
