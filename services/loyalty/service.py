"""Loyalty use cases: hear of a fact, replay the member, append what changed, publish it.

A fact later than the member's latest continues the replay from the member's
checkpoint; an earlier one replays the member's facts in full (domain.py).
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter
from pymongo import DeleteMany, DeleteOne, InsertOne, UpdateMany

from services.loyalty.domain import (
    Entry,
    Fact,
    Ledger,
    Redemption,
    continue_replay,
    entries_to_append,
    fact_moment,
    facts_of,
    replay,
)
from services.loyalty.settings import LoyaltyUnit
from services.loyalty.store import (
    LEDGER,
    MEMBER_FACTS,
    MEMBERS,
    REDEMPTION_REQUESTS,
    REWARDS,
    Member,
    Program,
    ProgramCache,
    load_facts,
    load_member,
    save_member,
)
from shared.erasure import erased_alias, forget_sent_events, is_erased, mark_erased, preload_customers
from shared.events import (
    CustomerErasedEvent,
    Envelope,
    FeedbackReceivedEvent,
    OrderPlacedEvent,
    OrderRefundedEvent,
    PointsAwarded,
    PointsExpired,
    PointsRedeemed,
    PointsReversed,
    ReferralConvertedEvent,
    TierChanged,
)
from shared.mongo import as_stored

SOURCE = "loyalty"
log = structlog.get_logger("rapport.loyalty")

PROGRAM = ProgramCache()
METRICS = CollectorRegistry()
UNRATED_ORDERS = Counter(
    "loyalty_orders_in_unrated_currency",
    "Orders that earned no purchase points because their currency has no rate.",
    ["currency"],
    registry=METRICS,
)


def now() -> datetime:
    return datetime.now(UTC)


# --- event use cases -----------------------------------------------------------------------


async def prefetch_members(unit: LoyaltyUnit, events: list[Envelope[Any]]) -> None:
    """Read the members (and erasure marks) a whole batch touches in two queries, and in a third the
    facts of those an event comes too late for (before their latest fact), whose replay needs them."""
    program = await PROGRAM.get(unit.db)
    told = [
        (customer_id, fact)
        for event in events
        if not isinstance(event, CustomerErasedEvent)
        for customer_id, fact in facts_of(event.data, program.rules, program.campaigns)
    ]
    await preload_customers(unit, MEMBERS, (customer_id for customer_id, _ in told))
    latest: dict[str, datetime] = {}  # each member's latest fact so far, the batch's in the order they come
    late = set()
    for customer_id, fact in told:
        if customer_id not in latest:
            doc = await unit.find_one(MEMBERS, {"_id": customer_id})  # preloaded: no round trip
            last = (doc.get("checkpoint") or {}).get("last") if doc is not None else None  # none before checkpoints
            if last is not None:
                latest[customer_id] = last["at"]
        moment = fact_moment(fact)
        if customer_id in latest and moment <= latest[customer_id]:
            late.add(customer_id)
        latest[customer_id] = max(moment, latest.get(customer_id, moment))
    await unit.preload(MEMBER_FACTS, late)


async def award_purchase_points(unit: LoyaltyUnit, event: OrderPlacedEvent) -> None:
    order = event.data
    program = await PROGRAM.get(unit.db)
    if order.currency not in program.rules.rates:
        unit.on_commit(UNRATED_ORDERS.labels(currency=order.currency).inc)
        log.info("order_in_unrated_currency", order_id=order.order_id, currency=order.currency)
    await hear(unit, event, program)


async def reverse_refunded_points(unit: LoyaltyUnit, event: OrderRefundedEvent) -> None:
    await hear(unit, event, await PROGRAM.get(unit.db))


async def award_feedback_points(unit: LoyaltyUnit, event: FeedbackReceivedEvent) -> None:
    await hear(unit, event, await PROGRAM.get(unit.db))


async def award_referral_points(unit: LoyaltyUnit, event: ReferralConvertedEvent) -> None:
    await hear(unit, event, await PROGRAM.get(unit.db))


async def hear(unit: LoyaltyUnit, event: Envelope[Any], program: Program) -> None:
    """Add what the event tells to each member it concerns and settle them; a repeat changes nothing."""
    told: dict[str, list[Fact]] = {}
    for customer_id, fact in facts_of(event.data, program.rules, program.campaigns):
        told.setdefault(customer_id, []).append(fact)
    at = now()
    for customer_id, facts in told.items():
        member = await _member_unless_erased(unit, customer_id)
        new = member.checkpoint.unheard(facts) if member is not None else []
        if member is None or not new:
            continue
        ledger = await ledger_with(unit, member, new, at, program)
        settle(unit, member, ledger, new, cause=event, at=at)


async def ledger_with(unit: LoyaltyUnit, member: Member, new: list[Fact], at: datetime, program: Program) -> Ledger:
    """What the member's ledger should say at `at` once the `new` facts (not heard of before) are added."""
    tiers = program.rules.tiers
    continued = continue_replay(member.checkpoint, member.recorded, new, at, tiers)
    if continued is not None:
        return continued
    known = await load_facts(unit, member)  # a fact came before the latest: replay them all
    return replay(known.adding(*new) or known, at, tiers)


async def _member_unless_erased(unit: LoyaltyUnit, customer_id: str) -> Member | None:
    """The member, new or known; None for an erased customer (their document is gone, so check only then)."""
    member = await load_member(unit, customer_id)
    if not member.exists and await is_erased(unit, customer_id):
        return None
    return member


async def erase_member(unit: LoyaltyUnit, event: CustomerErasedEvent) -> None:
    """Forget who the member is; the ledger's anonymous totals stay for the shop's books."""
    customer_id = event.data.customer_id
    anonymous = erased_alias(customer_id)
    mark_erased(unit, customer_id, as_stored(event.data.requested_at))
    unit.write(MEMBERS, DeleteOne({"_id": customer_id}))
    unit.write(MEMBER_FACTS, DeleteOne({"_id": customer_id}))
    unit.write(LEDGER, UpdateMany({"customer_id": customer_id}, {"$set": {"customer_id": anonymous}}))
    unit.write(REDEMPTION_REQUESTS, DeleteMany({"customer_id": customer_id}))
    forget_sent_events(unit, customer_id)  # PointsAwarded and the rest name the member
    log.info("member_erased")


# --- scheduled: expiry and tier review ---------------------------------------------------------


async def review_member(unit: LoyaltyUnit, customer_id: str, at: datetime | None = None) -> None:
    """Expire what is due and move the tier as the 365-day window slides."""
    member = await load_member(unit, customer_id)
    if not member.exists:
        return
    moment = at or now()
    ledger = await ledger_with(unit, member, [], moment, await PROGRAM.get(unit.db))
    settle(unit, member, ledger, [], at=moment)


# --- redemption ----------------------------------------------------------------------------------


class RedemptionRefused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class RedemptionResult:
    status: int
    body: dict[str, Any]


async def redeem_reward(unit: LoyaltyUnit, customer_id: str, reward_id: str, idempotency_key: str) -> RedemptionResult:
    """Spend points on a reward once per Idempotency-Key; never below zero."""
    request_id = f"{customer_id}:{idempotency_key}"
    first = await unit.find_one(REDEMPTION_REQUESTS, {"_id": request_id})
    if first is not None:
        if first["reward_id"] != reward_id:
            raise RedemptionRefused(422, "Idempotency-Key: already used for another reward")
        return RedemptionResult(first["status"], first["body"])
    result = await _redeem(unit, customer_id, reward_id)
    unit.write(
        REDEMPTION_REQUESTS,
        InsertOne(
            {
                "_id": request_id,
                "customer_id": customer_id,
                "reward_id": reward_id,
                "status": result.status,
                "body": result.body,
                "at": now(),
            }
        ),
    )
    return result


async def _redeem(unit: LoyaltyUnit, customer_id: str, reward_id: str) -> RedemptionResult:
    reward = await unit.find_one(REWARDS, {"_id": reward_id, "active": True})
    if reward is None:
        raise RedemptionRefused(404, f"reward_id: no active reward {reward_id!r}")
    member = await load_member(unit, customer_id)
    at, price = as_stored(now()), int(reward["points_price"])
    redemption = Redemption(str(uuid.uuid4()), reward_id, price, at)
    ledger = await ledger_with(unit, member, [redemption], at, await PROGRAM.get(unit.db))
    if ledger.balance < 0:  # spending changes nothing else at the same moment
        balance = ledger.balance + price
        detail = f"balance {balance} does not cover {price} points for {reward['name']!r}"
        return RedemptionResult(409, {"detail": detail, "balance": balance, "points_price": price})
    settle(unit, member, ledger, [redemption], at=at)
    return RedemptionResult(
        201,
        {
            "redemption_id": redemption.redemption_id,
            "customer_id": customer_id,
            "reward_id": reward_id,
            "points": price,
            "balance": ledger.balance,
        },
    )


# --- the one way state changes: append the difference, publish it, keep the facts ------------------


def settle(
    unit: LoyaltyUnit,
    member: Member,
    ledger: Ledger,
    new: list[Fact],
    *,
    at: datetime,
    cause: Envelope[Any] | None = None,
) -> None:
    """Append what `ledger` (the member's replay at `at`, with the `new` facts) says beyond what is recorded."""
    entries = entries_to_append(ledger, member.recorded)
    redemptions = {fact.redemption_id: fact for fact in new if isinstance(fact, Redemption)}
    balance = member.balance
    expired = 0
    for entry in entries:
        balance += entry.points
        member.recorded[entry.key] = member.recorded.get(entry.key, 0) + entry.points
        entry_id = str(uuid.uuid4())
        unit.write(LEDGER, InsertOne(_ledger_doc(entry_id, member.customer_id, entry, balance, cause, at)))
        if entry.kind == "expire":
            expired -= entry.points
        else:
            unit.publish(
                _event_for(entry, entry_id, member.customer_id, balance, ledger.tier.name, redemptions),
                subject=member.customer_id,
                cause=cause,
            )
    if expired > 0:
        unit.publish(
            PointsExpired(customer_id=member.customer_id, points=expired, balance=balance),
            subject=member.customer_id,
            cause=cause,
        )
    if ledger.tier.name != member.tier:
        unit.publish(
            TierChanged(customer_id=member.customer_id, from_tier=member.tier, to_tier=ledger.tier.name),
            subject=member.customer_id,
            cause=cause,
        )
        log.info("tier_changed", customer_id=member.customer_id, from_tier=member.tier, to_tier=ledger.tier.name)
    member.tier = ledger.tier.name
    member.checkpoint = ledger.checkpoint
    save_member(
        unit, member, new, qualifying_points=ledger.qualifying_points, next_review_at=ledger.next_review_at, now=at
    )


def _ledger_doc(
    entry_id: str, customer_id: str, entry: Entry, balance: int, cause: Envelope[Any] | None, at: datetime
) -> dict[str, Any]:
    return {
        "_id": entry_id,
        "customer_id": customer_id,
        "kind": entry.kind,
        "reason": entry.reason,
        "key": entry.key,
        "points": entry.points,
        "balance_after": balance,
        "order_id": entry.order_id,
        "expires_at": entry.expires_at if entry.kind == "earn" else None,
        "cause_event_id": cause.id if cause is not None else None,
        "cause_type": cause.type if cause is not None else None,
        "at": at,
    }


def _event_for(
    entry: Entry,
    entry_id: str,
    customer_id: str,
    balance: int,
    tier: str,
    redemptions: dict[str, Redemption],  # the new ones: a redemption's entry is appended once, when it is new
) -> PointsRedeemed | PointsAwarded | PointsReversed:
    if entry.kind == "redeem":
        redemption_id = entry.key.split(":", 1)[1]
        return PointsRedeemed(
            redemption_id=redemption_id,
            customer_id=customer_id,
            reward_id=redemptions[redemption_id].reward_id,
            points=-entry.points,
            balance=balance,
        )
    if entry.points > 0:
        return PointsAwarded(
            entry_id=entry_id,
            customer_id=customer_id,
            points=entry.points,
            reason=entry.reason,
            order_id=entry.order_id,
            balance=balance,
            tier=tier,
            expires_at=entry.expires_at,
        )
    return PointsReversed(
        entry_id=entry_id,
        customer_id=customer_id,
        points=-entry.points,
        reason="refund" if entry.kind == "reverse" else "adjustment",
        order_id=entry.order_id,
        balance=balance,
    )
