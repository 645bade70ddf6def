"""Follow-up use cases: plan follow-ups from the shop's events, take feedback, escalate, erase.

Planning is order-tolerant: each event records what it tells (an order placed,
fulfilled or refunded; a customer's contact) and then `plan_order` plans
whatever the known facts call for, under deterministic ids, so a duplicate or a
late event plans nothing twice and a refund heard of first still cancels.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from services.followups import domain, store
from services.followups.settings import FollowupsUnit
from shared.erasure import erased_alias, rename_audit_targets
from shared.events import (
    CustomerErasedEvent,
    CustomerSegmentChangedEvent,
    Envelope,
    FeedbackEscalated,
    FeedbackReceived,
    OrderCancelledEvent,
    OrderFulfilledEvent,
    OrderPlacedEvent,
    OrderRefundedEvent,
    PointsAwardedEvent,
    PointsExpiredEvent,
    PointsRedeemedEvent,
    PointsReversedEvent,
    ReferralConvertedEvent,
    ReferralInvitedEvent,
    TierChangedEvent,
)
from shared.mongo import as_stored

log = structlog.get_logger("rapport.followups")


# --- hearing of orders ----------------------------------------------------------------------


async def prefetch_followups(unit: FollowupsUnit, events: list[Envelope[Any]]) -> None:
    """Read what a whole batch touches (customers, orders, the follow-ups it may plan) in a few queries."""
    customers = {_customer_of(event) for event in events}
    orders = [
        e.data.order_id
        for e in events
        if isinstance(e, OrderPlacedEvent | OrderFulfilledEvent | OrderRefundedEvent | OrderCancelledEvent)
    ]
    planned = [
        followup_id
        for order_id in orders
        for followup_id in (domain.thank_you_id(order_id), domain.feedback_request_id(order_id))
    ]
    planned += [domain.call_id(customer) for customer in customers]
    planned += [domain.referral_invite_id(e.id) for e in events if isinstance(e, ReferralInvitedEvent)]
    await store.preload(unit, customers, orders, planned)


def _customer_of(event: Envelope[Any]) -> str:
    if isinstance(event, OrderPlacedEvent):
        return event.data.customer.customer_id
    if isinstance(event, ReferralConvertedEvent):
        return event.data.referrer_customer_id
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
    order = domain.with_placement(
        await store.get_order(unit, data.order_id, customer_id),
        placed_at,
        data.total,
        data.currency,
        data.order_number,
        imported=bool(event.imported),
    )
    store.save_order(unit, order)
    await plan_order(unit, order)
    await _cancel_if_taken_back(unit, order)


async def note_order_fulfilled(unit: FollowupsUnit, event: OrderFulfilledEvent) -> None:
    data = event.data
    if await store.customer_is_erased(unit, data.customer_id):
        return
    order = await store.get_order(unit, data.order_id, data.customer_id)
    order = domain.with_fulfilment(order, as_stored(data.fulfilled_at), imported=bool(event.imported))
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
    await _cancel_if_taken_back(unit, order)


async def note_order_cancelled(unit: FollowupsUnit, event: OrderCancelledEvent) -> None:
    """A cancelled order is like one refunded in full: what is pending for it, and what would be planned for it
    later, is cancelled."""
    data = event.data
    order = domain.with_cancellation(
        await store.get_order(unit, data.order_id, data.customer_id), as_stored(data.cancelled_at)
    )
    store.save_order(unit, order)
    await _cancel_if_taken_back(unit, order)


async def _cancel_if_taken_back(unit: FollowupsUnit, order: domain.Order) -> None:
    """Once the order is cancelled or its refunds are whole (a last refund, or the order's total heard after its
    refunds), cancel what is still pending for it; a partial refund cancels nothing."""
    if not domain.is_taken_back(order):
        return
    because = "cancelled" if order.cancelled_at is not None else "refunded"
    # What can be planned for an order has a deterministic id, so the batch prefetch has read it.
    for followup_id in domain.planned_for(order.order_id, order.customer_id):
        followup = await store.find_followup(unit, followup_id)
        if followup is not None and domain.refund_cancels(order.order_id, followup.order_id, followup.status):
            await store.cancel_pending(unit, followup_id, because=because)
    log.info("followups_cancelled_for_order", order_id=order.order_id, because=because)


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
    """Invite the happy customer to refer friends (not for an invitation from the shop's history); the brief
    keeps their code either way."""
    data = event.data
    if await store.customer_is_erased(unit, data.customer_id):
        return
    told_at = as_stored(event.time)
    await _follow_standing(unit, event, data.customer_id, lambda s: domain.with_referral_code(s, data.code, told_at))
    if not event.imported:
        await _plan(unit, domain.referral_invitation(event.id, data.customer_id, data.code, unit.now()))


# --- what the other services tell of the customer: the brief's figures, reviews and win-backs ---------------


async def note_points(
    unit: FollowupsUnit, event: PointsAwardedEvent | PointsReversedEvent | PointsRedeemedEvent | PointsExpiredEvent
) -> None:
    """The balance after the latest points event; points that will expire; the tier an award reports."""
    data = event.data
    told_at = as_stored(event.time)
    now = unit.now()

    def change(standing: domain.Standing) -> domain.Standing:
        standing = domain.with_balance(standing, data.balance, told_at)
        if isinstance(event, PointsAwardedEvent):
            awarded = event.data
            standing = domain.with_tier(standing, awarded.tier, told_at)
            if awarded.expires_at is not None:
                award = domain.Award(awarded.entry_id, awarded.points, as_stored(awarded.expires_at))
                standing = domain.with_award(standing, award, now)
        return standing

    await _follow_standing(unit, event, data.customer_id, change)


async def note_tier_changed(unit: FollowupsUnit, event: TierChangedEvent) -> None:
    data = event.data
    told_at = as_stored(event.time)
    await _follow_standing(unit, event, data.customer_id, lambda s: domain.with_tier(s, data.to_tier, told_at))


async def note_segment_changed(unit: FollowupsUnit, event: CustomerSegmentChangedEvent) -> None:
    data = event.data
    scored_at = as_stored(data.scored_at)
    await _follow_standing(unit, event, data.customer_id, lambda s: domain.with_segment(s, data.to_segment, scored_at))


async def note_referral_converted(unit: FollowupsUnit, event: ReferralConvertedEvent) -> None:
    """A friend the customer referred ordered: counted once per conversion (an affiliate is no customer here)."""
    data = event.data
    if data.program != "customer":
        return
    told_at = as_stored(data.converted_at)

    def change(standing: domain.Standing) -> domain.Standing:
        standing = domain.with_friend_converted(standing, data.referral_id)
        return domain.with_referral_code(standing, data.code, told_at)

    await _follow_standing(unit, event, data.referrer_customer_id, change)


async def _follow_standing(
    unit: FollowupsUnit,
    event: Envelope[Any],
    customer_id: str,
    change: Callable[[domain.Standing], domain.Standing],
) -> None:
    """Keep what the event tells of the customer, then open the review or win-back call their standing calls for
    (an event of the shop's history only keeps it: the review job plans once the import has settled)."""
    if await store.customer_is_erased(unit, customer_id):
        return
    now = unit.now()
    standing = change(await store.get_standing(unit, customer_id))
    if event.imported:
        standing = replace(standing, last_imported_at=now)
    await _attend(unit, standing, now, may_plan=not event.imported)


async def _attend(unit: FollowupsUnit, standing: domain.Standing, now: datetime, *, may_plan: bool) -> None:
    latest_review = domain.review_id(standing.customer_id, standing.reviews_opened)
    review_pending = standing.reviews_opened > 0 and await store.task_is_pending(unit, latest_review)
    attention = domain.attend(
        standing, unit.settings.account_rules, now, may_plan=may_plan, review_pending=review_pending
    )
    store.save_standing(unit, attention.standing)
    for planned in attention.plans:
        await _plan(unit, planned)


async def attend_to_account(unit: FollowupsUnit, customer_id: str, now: datetime) -> None:
    """The review job's look at one customer: a review due, or a win-back call an import left waiting."""
    standing = await store.get_standing(unit, customer_id)
    await _attend(unit, standing, now, may_plan=domain.import_settled(standing, unit.settings.account_rules, now))


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


# --- the relationship log: what the owner writes down ------------------------------------------------------


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


async def _not_erased(unit: FollowupsUnit, customer_id: str) -> None:
    if await store.customer_is_erased(unit, customer_id):
        raise domain.CustomerErased(customer_id)


async def write_note(unit: FollowupsUnit, customer_id: str, text: str, author: str) -> store.Note:
    await _not_erased(unit, customer_id)
    note = store.Note(_new_id("note"), customer_id, text, author, unit.now())
    store.add_note(unit, note)
    log.info("note_written", note_id=note.note_id)
    return note


async def note_fact(
    unit: FollowupsUnit, customer_id: str, kind: domain.FactKind, value: str, author: str
) -> store.Fact:
    await _not_erased(unit, customer_id)
    fact = store.Fact(_new_id("fact"), customer_id, kind, value, author, unit.now())
    store.save_fact(unit, fact)
    return fact


async def change_fact(
    unit: FollowupsUnit, customer_id: str, fact_id: str, kind: domain.FactKind, value: str, author: str
) -> store.Fact | None:
    """The fact as edited; None when the customer has no such fact."""
    found = await store.find_fact(unit, customer_id, fact_id)
    if found is None:
        return None
    fact = replace(found, kind=kind, value=value, changed_at=unit.now(), changed_by=author)
    store.save_fact(unit, fact)
    return fact


async def remove_fact(unit: FollowupsUnit, customer_id: str, fact_id: str) -> bool:
    if await store.find_fact(unit, customer_id, fact_id) is None:
        return False
    store.remove_fact(unit, fact_id)
    return True


@dataclass(frozen=True)
class CallLogged:
    call: store.CallRecord
    task: store.FollowUp | None  # the call task as the outcome left it
    after: domain.AfterCall | None


async def record_call(
    unit: FollowupsUnit,
    customer_id: str,
    outcome: domain.CallOutcome,
    summary: str,
    author: str,
    followup_id: str | None,
) -> CallLogged:
    """Log how a call went; for a call task, complete it or try again later (domain.after_call).

    Raises NoSuchTask when `followup_id` names no pending call task of this customer.
    """
    await _not_erased(unit, customer_id)
    now = unit.now()
    task = None
    after = None
    if followup_id is not None:
        task = await store.pending_task(unit, customer_id, followup_id, domain.CALL_TASKS)
        if task is None:
            raise domain.NoSuchTask(followup_id)
        after = domain.after_call(outcome, task.attempts, now, unit.settings.call_policy)
        note = f"{outcome}: {summary}" if summary else outcome
        if after.due_at is None:
            store.finish_task(unit, task, now, note)
            task = replace(task, status="done", done_at=now, note=note, attempts=after.attempts)
        else:
            store.reschedule_task(unit, task, after.due_at, after.attempts, note)
            task = replace(task, due_at=after.due_at, attempts=after.attempts, note=note)
    call = store.CallRecord(_new_id("call"), customer_id, followup_id, outcome, summary, author, now)
    store.add_call(unit, call)
    log.info("call_logged", call_id=call.call_id, outcome=outcome, followup_id=followup_id)
    return CallLogged(call, task, after)


async def add_task(unit: FollowupsUnit, customer_id: str, title: str, due_at: datetime) -> store.FollowUp:
    """A task the owner adds by hand for a customer."""
    await _not_erased(unit, customer_id)
    planned = domain.hand_task(_new_id("task"), customer_id, title, as_stored(due_at))
    await _plan(unit, planned)
    found = await store.find_followup(unit, planned.followup_id)
    assert found is not None  # planned just now, in this unit
    return found


async def record_review(
    unit: FollowupsUnit,
    customer_id: str,
    *,
    needs: str,
    went_well: str,
    went_badly: str,
    next_step: str,
    author: str,
) -> store.Review:
    """The owner's key-account review: closes the open review task, and the next falls due a period later."""
    await _not_erased(unit, customer_id)
    now = unit.now()
    standing = await store.get_standing(unit, customer_id)
    task = await store.open_review_task(unit, customer_id, standing.reviews_opened)
    if task is not None:
        store.finish_task(unit, task, now, next_step)
    review = store.Review(
        _new_id("review"),
        customer_id,
        None if task is None else task.followup_id,
        needs,
        went_well,
        went_badly,
        next_step,
        author,
        now,
    )
    store.add_review(unit, review)
    store.save_standing(unit, domain.after_review(standing, unit.settings.account_rules, now))
    log.info("account_reviewed", review_id=review.review_id)
    return review
