"""Loyalty use cases: load the member, let the domain decide, save the decision, publish its events.

Each reads downward: store (load) → domain (decide) → store (save) → unit.publish (outbox).
"""

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

from services.loyalty import domain, store
from services.loyalty.domain import (
    Adjusted,
    AdjustmentRequest,
    Campaign,
    Decision,
    Fact,
    Member,
    NotEnoughPoints,
    RedemptionOutcome,
    RedemptionRequest,
    Reward,
    Rules,
    Scheme,
    Standing,
    TimelinePosition,
    UnknownCampaign,
    UnknownMember,
    UnknownReward,
)
from services.loyalty.settings import LoyaltyUnit
from services.loyalty.store import RecordedEntry
from shared.events import (
    CustomerErasedEvent,
    Envelope,
    FeedbackReceivedEvent,
    OrderCancelledEvent,
    OrderPlacedEvent,
    OrderRefundedEvent,
    ReferralConvertedEvent,
    TierChanged,
)
from shared.mongo import as_stored

log = structlog.get_logger("rapport.loyalty")

METRICS = CollectorRegistry()
UNRATED_ORDERS = Counter(
    "loyalty_orders_in_unrated_currency",
    "Orders that earned no purchase points because their currency has no rate.",
    ["currency"],
    registry=METRICS,
)


def _new_entry_id() -> str:
    return str(uuid.uuid4())


class _WorkedOut:
    """The scheme and each event's facts as the batch's prefetch worked them out, so each handler reads them."""

    def __init__(self) -> None:
        # by unit (one batch's) and event id, so two services in one process never read each other's
        self._by_event: dict[tuple[int, str], tuple[Scheme, dict[str, list[Fact]]]] = {}

    def keep(self, unit: LoyaltyUnit, event_id: str, scheme: Scheme, facts: dict[str, list[Fact]]) -> None:
        if len(self._by_event) > 10_000:  # a batch whose handlers never ran (it failed) leaves its events here
            self._by_event.clear()
        self._by_event[id(unit), event_id] = (scheme, facts)

    def take(self, unit: LoyaltyUnit, event_id: str) -> tuple[Scheme, dict[str, list[Fact]]] | None:
        return self._by_event.pop((id(unit), event_id), None)


_WORKED_OUT = _WorkedOut()


async def _facts_by_member(unit: LoyaltyUnit, event: Envelope[Any]) -> tuple[Scheme, dict[str, list[Fact]]]:
    worked_out = _WORKED_OUT.take(unit, event.id)
    if worked_out is not None:
        return worked_out
    scheme = await store.SCHEMES.get(unit)
    return scheme, domain.facts_by_member(event.data, scheme)


# --- event use cases -----------------------------------------------------------------------


async def prefetch_members(unit: LoyaltyUnit, events: list[Envelope[Any]]) -> None:
    """Read the members (and erasure marks) a whole batch touches in two queries, and in a third the
    histories of those an event comes too late for (before their latest fact), whose replay needs them."""
    scheme = await store.SCHEMES.get(unit)
    facts_in_batch: list[tuple[str, Fact]] = []
    for event in events:
        if isinstance(event, CustomerErasedEvent):
            continue
        by_member = domain.facts_by_member(event.data, scheme)
        _WORKED_OUT.keep(unit, event.id, scheme, by_member)
        facts_in_batch += [(customer_id, fact) for customer_id, facts in by_member.items() for fact in facts]
    await store.preload_members(unit, (customer_id for customer_id, _ in facts_in_batch))
    latest: dict[str, TimelinePosition | None] = {}  # each member's latest fact so far, the batch's as they come
    late = set()
    for customer_id, fact in facts_in_batch:
        if customer_id not in latest:
            latest[customer_id] = await store.latest_position(unit, customer_id)  # preloaded: no round trip
        if domain.comes_before(fact, latest[customer_id]):
            late.add(customer_id)
        else:
            latest[customer_id] = domain.timeline_position(fact)
    await store.preload_histories(unit, late)


async def award_purchase_points(unit: LoyaltyUnit, event: OrderPlacedEvent) -> None:
    scheme, by_member = await _facts_by_member(unit, event)
    order = event.data
    if order.currency not in scheme.rules.rates:
        unit.on_commit(UNRATED_ORDERS.labels(currency=order.currency).inc)
        log.info("order_in_unrated_currency", order_id=order.order_id, currency=order.currency)
    await _update_members(unit, event, scheme, by_member)


async def reverse_refunded_points(unit: LoyaltyUnit, event: OrderRefundedEvent) -> None:
    await _update_members(unit, event, *await _facts_by_member(unit, event))


async def take_back_cancelled_points(unit: LoyaltyUnit, event: OrderCancelledEvent) -> None:
    """A cancelled order gives back what it still counted for, and counts towards no tier any more."""
    await _update_members(unit, event, *await _facts_by_member(unit, event))


async def award_feedback_points(unit: LoyaltyUnit, event: FeedbackReceivedEvent) -> None:
    await _update_members(unit, event, *await _facts_by_member(unit, event))


async def award_referral_points(unit: LoyaltyUnit, event: ReferralConvertedEvent) -> None:
    await _update_members(unit, event, *await _facts_by_member(unit, event))


async def _update_members(
    unit: LoyaltyUnit, event: Envelope[Any], scheme: Scheme, by_member: dict[str, list[Fact]]
) -> None:
    """Let each member the event concerns learn what it says of them; a repeat changes nothing."""
    at = unit.now()
    for customer_id, facts in by_member.items():
        member = await store.find_member(unit, customer_id)
        if member is None:
            if await store.member_erased(unit, customer_id):  # a late event must not bring them back
                continue
            member = Member(customer_id)
        history = await store.history(unit, member) if domain.needs_history(member, facts) else None
        decision = domain.decide(member, facts, history, scheme.rules.tiers, at, _new_entry_id)
        if decision is not None:
            _keep(unit, decision, cause=event, at=at)


async def erase_member(unit: LoyaltyUnit, event: CustomerErasedEvent) -> None:
    """Forget who the member is; the ledger's anonymous totals stay for the shop's books."""
    store.erase_member(unit, event.data.customer_id, as_stored(event.data.requested_at))
    log.info("member_erased")


# --- scheduled: expiry and tier review ---------------------------------------------------------


async def review_member(unit: LoyaltyUnit, customer_id: str, at: datetime | None = None) -> None:
    """Expire what is due and move the tier as the tier window slides."""
    member = await store.find_member(unit, customer_id)
    if member is None:
        return
    moment = at or unit.now()
    scheme = await store.SCHEMES.get(unit)
    _keep(unit, domain.review(member, scheme.rules.tiers, moment, _new_entry_id), cause=None, at=moment)


# --- redemption and the member page ------------------------------------------------------------


async def redeem_reward(unit: LoyaltyUnit, customer_id: str, reward_id: str, idempotency_key: str) -> RedemptionOutcome:
    """Spend points on a reward once per Idempotency-Key; never below zero (a refusal is an answer too)."""
    first = await store.first_answer(unit, customer_id, idempotency_key)
    if first is not None:
        return domain.answer_again(first, reward_id)
    reward = await store.active_reward(unit, reward_id)
    if reward is None:
        raise UnknownReward(reward_id)
    member = await store.find_member(unit, customer_id) or Member(customer_id)
    at = as_stored(unit.now())
    redemption = domain.redemption_of(reward, str(uuid.uuid4()), at)
    history = await store.history(unit, member) if domain.needs_history(member, [redemption]) else None
    scheme = await store.SCHEMES.get(unit)
    outcome = domain.redeem(member, redemption, reward, history, scheme.rules.tiers, _new_entry_id)
    if isinstance(outcome, NotEnoughPoints):
        answer: RedemptionOutcome = outcome
    else:
        decision, answer = outcome
        _keep(unit, decision, cause=None, at=at)
    store.keep_answer(unit, customer_id, idempotency_key, RedemptionRequest(reward_id, answer), at)
    return answer


async def adjust_points(unit: LoyaltyUnit, customer_id: str, points: int, note: str, idempotency_key: str) -> Adjusted:
    """Give (points > 0) or take (points < 0) points by hand, in the owner's words, once per Idempotency-Key."""
    first = await store.first_answer(unit, customer_id, idempotency_key)
    if first is not None:
        return domain.adjustment_again(first, points, note)
    member = await store.find_member(unit, customer_id)
    if member is None:
        raise UnknownMember(customer_id)
    scheme = await store.SCHEMES.get(unit)
    adjustment = domain.adjustment_of(str(uuid.uuid4()), points, note, unit.now(), scheme.rules)
    history = await store.history(unit, member) if domain.needs_history(member, [adjustment]) else None
    decision, adjusted = domain.adjust(member, adjustment, history, scheme.rules.tiers, _new_entry_id)
    _keep(unit, decision, cause=None, at=adjustment.at)
    store.keep_answer(unit, customer_id, idempotency_key, AdjustmentRequest(points, note, adjusted), adjustment.at)
    log.info("points_adjusted", points=points)
    return adjusted


@dataclass(frozen=True)
class MemberPage:
    standing: Standing
    recent_entries: list[RecordedEntry]


async def member_page(unit: LoyaltyUnit, customer_id: str) -> MemberPage:
    """Where the member stands now, and their latest ledger entries."""
    member = await store.find_member(unit, customer_id)
    if member is None:
        raise UnknownMember(customer_id)
    scheme = await store.SCHEMES.get(unit)
    standing = domain.standing(member, scheme.rules.tiers, unit.now())
    return MemberPage(standing, await store.recent_entries(unit, customer_id))


async def member_records(unit: LoyaltyUnit, customer_id: str) -> tuple[store.MemberRecords, bool]:
    """Everything loyalty holds on the customer (their export), and whether they were erased."""
    return await store.member_records(unit, customer_id), await store.member_erased(unit, customer_id)


# --- what the owner configures: rules, campaigns, rewards --------------------------------------------


async def current_rules(unit: LoyaltyUnit) -> Rules:
    return (await store.SCHEMES.get(unit)).rules


async def set_rules(unit: LoyaltyUnit, rules: Rules) -> Rules:
    domain.check_tiers(rules.tiers)
    store.save_rules(unit, rules)
    return rules


async def campaigns(unit: LoyaltyUnit) -> list[Campaign]:
    return await store.all_campaigns(unit)


async def start_campaign(unit: LoyaltyUnit, campaign: Campaign) -> Campaign:
    """Add a campaign; it gets its id here."""
    domain.check_window(campaign)
    started = replace(campaign, campaign_id=f"cmp_{uuid.uuid4().hex[:12]}", active=True)
    store.add_campaign(unit, started)
    return started


async def end_campaign(unit: LoyaltyUnit, campaign_id: str) -> Campaign:
    ended = await store.end_campaign(unit, campaign_id)
    if ended is None:
        raise UnknownCampaign(campaign_id)
    return ended


async def rewards(unit: LoyaltyUnit) -> list[Reward]:
    return await store.active_rewards(unit)


async def add_reward(unit: LoyaltyUnit, name: str, points_price: int, description: str | None) -> Reward:
    reward = Reward(f"rw_{uuid.uuid4().hex[:12]}", name, points_price, description)
    store.add_reward(unit, reward)
    return reward


async def retire_reward(unit: LoyaltyUnit, reward_id: str) -> Reward:
    retired = await store.retire_reward(unit, reward_id)
    if retired is None:
        raise UnknownReward(reward_id)
    return retired


# --- the one way a decision is kept ----------------------------------------------------------------


def _keep(unit: LoyaltyUnit, decision: Decision, *, cause: Envelope[Any] | None, at: datetime) -> None:
    """Save the decision and publish its events, in this unit's transaction (the outbox)."""
    store.save_decision(unit, decision, cause=cause, at=at)
    customer_id = decision.member.customer_id
    for event in decision.events:
        unit.publish(event, subject=customer_id, cause=cause)
        if isinstance(event, TierChanged):
            log.info("tier_changed", customer_id=customer_id, from_tier=event.from_tier, to_tier=event.to_tier)
