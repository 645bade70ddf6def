"""Follow-up use cases: plan follow-ups from the shop's events, take feedback, escalate, erase.

Planning is order-tolerant: each event records what it tells (an order placed,
fulfilled or refunded; a customer's contact) and then `plan_order` plans
whatever the known facts call for, under deterministic ids, so a duplicate or a
late event plans nothing twice and a refund heard of first still cancels.
"""

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from services.followups import domain, store
from services.followups.settings import FollowupsUnit
from shared.erasure import erased_alias, rename_audit_targets
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

log = structlog.get_logger("rapport.followups")


# --- hearing of orders ----------------------------------------------------------------------


async def prefetch_followups(unit: FollowupsUnit, events: list[Envelope[Any]]) -> None:
    """Read what a whole batch touches (customers, orders, the follow-ups it may plan) in a few queries."""
    customers = {_customer_of(event) for event in events}
    orders = [e.data.order_id for e in events if isinstance(e, OrderPlacedEvent | OrderFulfilledEvent)]
    orders += [e.data.order_id for e in events if isinstance(e, OrderRefundedEvent)]
    planned = [
        followup_id
        for order_id in orders
        for followup_id in (domain.thank_you_id(order_id), domain.feedback_request_id(order_id))
    ]
    planned += [domain.call_id(customer) for customer in customers]
    planned += [domain.referral_invite_id(e.id) for e in events if isinstance(e, ReferralInvitedEvent)]
    await store.preload(unit, customers, orders, planned)
    await store.preload_consents(unit, _marketing_answers(events))


def _customer_of(event: Envelope[Any]) -> str:
    if isinstance(event, OrderPlacedEvent):
        return event.data.customer.customer_id
    customer_id: str = event.data.customer_id
    return customer_id


async def note_order_placed(unit: FollowupsUnit, event: OrderPlacedEvent) -> None:
    data = event.data
    customer_id = data.customer.customer_id
    if await store.customer_is_erased(unit, customer_id):
        return
    placed_at = as_stored(data.placed_at)
    contact = data.customer.model_dump(
        include={"email", "first_name", "last_name", "locale", "city", "region", "phone"}
    )
    customer = await store.get_customer(unit, customer_id)
    store.save_customer(unit, domain.with_order_placed(customer, contact, placed_at))
    await _note_marketing_answer(unit, customer_id, data.customer.accepts_marketing, placed_at)
    order = replace(
        await store.get_order(unit, data.order_id, customer_id),
        placed_at=placed_at,
        total=data.total,
        currency=data.currency,
    )
    store.save_order(unit, order)
    await plan_order(unit, order)
    await _cancel_if_fully_refunded(unit, order)


async def note_order_fulfilled(unit: FollowupsUnit, event: OrderFulfilledEvent) -> None:
    data = event.data
    if await store.customer_is_erased(unit, data.customer_id):
        return
    order = await store.get_order(unit, data.order_id, data.customer_id)
    order = domain.with_fulfilment(order, as_stored(data.fulfilled_at))
    store.save_order(unit, order)
    await plan_order(unit, order)


async def note_order_refunded(unit: FollowupsUnit, event: OrderRefundedEvent) -> None:
    """A refund that makes the order's refunds whole cancels what is still pending for it, and what would be
    planned for it later; a partial refund cancels nothing."""
    data = event.data
    if await store.customer_is_erased(unit, data.customer_id):
        return  # what was pending for them was cancelled at the erasure; nothing new is kept about them
    order = domain.with_refund(
        await store.get_order(unit, data.order_id, data.customer_id), data.refund_id, data.amount, data.currency
    )
    store.save_order(unit, order)
    await _cancel_if_fully_refunded(unit, order)


async def _cancel_if_fully_refunded(unit: FollowupsUnit, order: domain.Order) -> None:
    """Once the refunds are whole (a last refund, or the order's total heard after its refunds), cancel what is
    still pending for the order; a partial refund cancels nothing."""
    if not domain.is_fully_refunded(order):
        return
    # What can be planned for an order has a deterministic id, so the batch prefetch has read it.
    for followup_id in domain.planned_for(order.order_id, order.customer_id):
        followup = await store.find_followup(unit, followup_id)
        if followup is not None and domain.refund_cancels(order.order_id, followup.order_id, followup.status):
            await store.cancel_pending(unit, followup_id, because="refunded")
    log.info("followups_cancelled_for_refund", order_id=order.order_id)


async def plan_order(unit: FollowupsUnit, order: domain.Order) -> None:
    """Plan what the order's known milestones call for (each at most once)."""
    settings = unit.settings
    schedule = domain.Schedule(
        thank_you_delay=timedelta(seconds=settings.thank_you_delay_seconds),
        feedback_request_delay=timedelta(days=settings.feedback_request_delay_days),
        call_delay=timedelta(days=settings.call_delay_days),
    )
    early = (
        domain.may_call_for(order)
        and await store.find_followup(unit, domain.call_id(order.customer_id)) is None
        and await _is_early_customer(unit, order.customer_id)
    )
    for planned in domain.plans_for_order(order, schedule, early_customer=early):
        await _plan(unit, planned)


async def _plan(unit: FollowupsUnit, planned: domain.Plan) -> None:
    if await store.plan(unit, planned):
        log.info(
            "followup_planned",
            followup_id=planned.followup_id,
            due_at=planned.due_at.isoformat(),
            cancelled=planned.status == "cancelled",
        )


async def _is_early_customer(unit: FollowupsUnit, customer_id: str) -> bool:
    """Whether the customer is one of the shop's first customers (by first order, as far as known)."""
    customer = await store.find_customer(unit, customer_id)
    if customer is None or customer.first_order_at is None:
        return False  # their order is not known yet; planning runs again when it arrives
    first = unit.settings.call_customers
    return domain.is_early_customer(await store.customers_before(unit, customer.first_order_at, first), first)


# --- the happy moment ---------------------------------------------------------------------------


async def plan_referral_invitation(unit: FollowupsUnit, event: ReferralInvitedEvent) -> None:
    data = event.data
    if await store.customer_is_erased(unit, data.customer_id):
        return
    await _plan(unit, domain.referral_invitation(event.id, data.customer_id, data.code, unit.now()))


# --- feedback and escalations -----------------------------------------------------------------


@dataclass(frozen=True)
class FeedbackTaken:
    feedback: FeedbackReceived
    followup_id: str | None  # the feedback request whose link it came through
    escalation_id: str | None  # the escalation it opened, if it was unhappy


def new_feedback(data: dict[str, Any], received_at: datetime) -> FeedbackReceived:
    """Feedback as the contract has it, with a fresh id; raises ValidationError naming a bad field.

    Its time is kept as the store keeps it, so the escalation's deadline and the stored feedback agree.
    """
    return FeedbackReceived(feedback_id=f"fb_{uuid.uuid4().hex[:16]}", received_at=as_stored(received_at), **data)


async def take_feedback(
    unit: FollowupsUnit, feedback: FeedbackReceived, *, followup_id: str | None = None
) -> FeedbackTaken:
    """Store feedback, publish FeedbackReceived, and open an escalation when it is unhappy.

    Raises FeedbackLinkUsed when the feedback came through a link that was used before, FeedbackLinkUnknown
    when the link names no feedback request planned for that customer and order (an erased customer's among them),
    CustomerWasErased when the shop logs feedback for an erased customer.
    """
    if followup_id is None and await store.customer_is_erased(unit, feedback.customer_id):
        raise domain.CustomerWasErased(feedback.customer_id)
    if followup_id is not None:
        planned = await store.find_followup(unit, followup_id)
        if planned is None or not domain.link_fits(
            planned.customer_id, planned.order_id, feedback.customer_id, feedback.order_id
        ):
            raise domain.FeedbackLinkUnknown
        if await store.link_used(unit, followup_id):
            raise domain.FeedbackLinkUsed
    store.save_feedback(unit, feedback, followup_id)
    received = unit.publish(feedback, subject=feedback.customer_id)
    sla = timedelta(minutes=unit.settings.escalation_sla_minutes)
    escalation = domain.escalation_for(feedback, f"esc_{uuid.uuid4().hex[:16]}", sla)
    if escalation is not None:
        store.open_escalation(unit, escalation)
        escalated = FeedbackEscalated(
            escalation_id=escalation.escalation_id,
            feedback_id=escalation.feedback_id,
            customer_id=escalation.customer_id,
            order_id=escalation.order_id,
            due_by=escalation.due_by,
        )
        unit.publish(escalated, subject=feedback.customer_id, cause=received)
        log.info("feedback_escalated", escalation_id=escalation.escalation_id, due_by=escalation.due_by.isoformat())
    log.info("feedback_received", feedback_id=feedback.feedback_id, overall=feedback.ratings.overall, nps=feedback.nps)
    return FeedbackTaken(feedback, followup_id, None if escalation is None else escalation.escalation_id)


# --- what mail customers agreed to ------------------------------------------------------------


def _marketing_answers(events: list[Envelope[Any]]) -> list[str]:
    """The customers whose orders in the batch say whether they accept marketing."""
    return [
        e.data.customer.customer_id
        for e in events
        if isinstance(e, OrderPlacedEvent) and e.data.customer.accepts_marketing is not None
    ]


async def _note_marketing_answer(unit: FollowupsUnit, customer_id: str, accepts: bool | None, at: datetime) -> None:
    if accepts is None:
        return  # the order does not say: the last answer stands (or MARKETING_CONSENT_DEFAULT)
    consent = await store.get_consent(unit, customer_id)
    store.save_consent(unit, domain.with_marketing_answer(consent, accepts, at))


async def unsubscribe(unit: FollowupsUnit, customer_id: str) -> None:
    """The customer asked for no more relationship mail (one click, or the page): recorded once, for good.

    Their address goes on the suppression list too. An erased customer's link stores nothing: the erasure
    already ended all mail to them.
    """
    if await store.customer_is_erased(unit, customer_id):
        return
    now = unit.now()
    store.save_consent(unit, domain.unsubscribed(await store.get_consent(unit, customer_id), now))
    customer = await store.find_customer(unit, customer_id)
    email = None if customer is None or customer.contact is None else customer.contact.get("email")
    if isinstance(email, str) and email:
        store.unsubscribe_address(unit, email, now)
    log.info("customer_unsubscribed", customer_id=customer_id)


# --- erasure ------------------------------------------------------------------------------------


async def erase_customer(unit: FollowupsUnit, event: CustomerErasedEvent) -> None:
    """Forget the customer's contact, cancel their pending messages, keep feedback scores anonymously."""
    customer_id = event.data.customer_id
    alias = erased_alias(customer_id)
    customer = await store.find_customer(unit, customer_id)
    kept = None if customer is None else domain.erased(customer, alias)
    store.forget_customer(unit, customer_id, alias, kept, as_stored(event.data.requested_at))
    renamed = await store.rename_call_task(unit, customer_id, alias)  # cancelled and re-keyed to the alias by now
    if renamed is not None:
        rename_audit_targets(unit, *renamed)
    log.info("customer_erased", alias=alias)
