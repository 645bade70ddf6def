"""Loyalty use cases: hear of a fact, replay the member, append what changed, publish it."""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter
from pymongo import DeleteMany, DeleteOne, InsertOne, UpdateMany

from services.loyalty.domain import Entry, Fact, Ledger, Redemption, entries_to_append, facts_of, replay
from services.loyalty.store import (
    LEDGER,
    MEMBERS,
    REDEMPTION_REQUESTS,
    REWARDS,
    Member,
    Program,
    ProgramCache,
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
    PointsAwardedEvent,
    PointsExpired,
    PointsExpiredEvent,
    PointsRedeemed,
    PointsRedeemedEvent,
    PointsReversed,
    PointsReversedEvent,
    ReferralConvertedEvent,
    TierChanged,
    TierChangedEvent,
)
from shared.mongo import as_stored
from shared.unit import Unit

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


async def prefetch_members(unit: Unit, events: list[Envelope[Any]]) -> None:
    """Read the members (and erasure marks) a whole batch touches in two queries."""
    await preload_customers(unit, MEMBERS, (customer for event in events for customer in _customers_of(event)))


def _customers_of(event: Envelope[Any]) -> list[str]:
    data = event.data
    if isinstance(event, OrderPlacedEvent):
        return [event.data.customer.customer_id]
    if isinstance(event, ReferralConvertedEvent):
        return [event.data.referrer_customer_id, event.data.referee_customer_id]
    return [data.customer_id] if hasattr(data, "customer_id") else []


async def award_purchase_points(unit: Unit, event: OrderPlacedEvent) -> None:
    order = event.data
    program = await PROGRAM.get(unit.db)
    if order.currency not in program.rules.rates:
        unit.on_commit(UNRATED_ORDERS.labels(currency=order.currency).inc)
        log.info("order_in_unrated_currency", order_id=order.order_id, currency=order.currency)
    await hear(unit, event, program)


async def reverse_refunded_points(unit: Unit, event: OrderRefundedEvent) -> None:
    await hear(unit, event, await PROGRAM.get(unit.db))


async def award_feedback_points(unit: Unit, event: FeedbackReceivedEvent) -> None:
    await hear(unit, event, await PROGRAM.get(unit.db))


async def award_referral_points(unit: Unit, event: ReferralConvertedEvent) -> None:
    await hear(unit, event, await PROGRAM.get(unit.db))


async def hear(unit: Unit, event: Envelope[Any], program: Program) -> None:
    """Add what the event tells to each member it concerns and settle them; a repeat changes nothing."""
    told: dict[str, list[Fact]] = {}
    for customer_id, fact in facts_of(event.data, program.rules, program.campaigns):
        told.setdefault(customer_id, []).append(fact)
    for customer_id, facts in told.items():
        member = await _member_unless_erased(unit, customer_id)
        grown = member.facts.adding(*facts) if member is not None else None
        if member is None or grown is None:
            continue
        member.facts = grown
        await settle(unit, member, cause=event)


async def _member_unless_erased(unit: Unit, customer_id: str) -> Member | None:
    """The member, new or known; None for an erased customer (their document is gone, so check only then)."""
    member = await load_member(unit, customer_id)
    if not member.exists and await is_erased(unit, customer_id):
        return None
    return member


async def erase_member(unit: Unit, event: CustomerErasedEvent) -> None:
    """Forget who the member is; the ledger's anonymous totals stay for the shop's books."""
    customer_id = event.data.customer_id
    anonymous = erased_alias(customer_id)
    mark_erased(unit, customer_id, as_stored(event.data.requested_at))
    unit.write(MEMBERS, DeleteOne({"_id": customer_id}))
    unit.write(LEDGER, UpdateMany({"customer_id": customer_id}, {"$set": {"customer_id": anonymous}}))
    unit.write(REDEMPTION_REQUESTS, DeleteMany({"customer_id": customer_id}))
    forget_sent_events(unit, customer_id)  # PointsAwarded and the rest name the member
    log.info("member_erased")


# --- scheduled: expiry and tier review ---------------------------------------------------------


async def review_member(unit: Unit, customer_id: str, at: datetime | None = None) -> None:
    """Expire what is due and move the tier as the 365-day window slides."""
    member = await load_member(unit, customer_id)
    if member.exists:
        await settle(unit, member, cause=None, at=at)


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


async def redeem_reward(unit: Unit, customer_id: str, reward_id: str, idempotency_key: str) -> RedemptionResult:
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


async def _redeem(unit: Unit, customer_id: str, reward_id: str) -> RedemptionResult:
    reward = await unit.find_one(REWARDS, {"_id": reward_id, "active": True})
    if reward is None:
        raise RedemptionRefused(404, f"reward_id: no active reward {reward_id!r}")
    member = await load_member(unit, customer_id)
    at, price = now(), int(reward["points_price"])
    redemption = Redemption(str(uuid.uuid4()), reward_id, price, at)
    with_redemption = member.facts.adding(redemption)
    assert with_redemption is not None  # a fresh id is never known
    ledger = replay(with_redemption, at, (await PROGRAM.get(unit.db)).rules.tiers)
    if ledger.balance < 0:  # spending changes nothing else at the same moment
        balance = ledger.balance + price
        detail = f"balance {balance} does not cover {price} points for {reward['name']!r}"
        return RedemptionResult(409, {"detail": detail, "balance": balance, "points_price": price})
    member.facts = with_redemption
    await settle(unit, member, cause=None, at=at, ledger=ledger)
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


# --- the one way state changes: replay, append the difference, publish ----------------------------


async def settle(
    unit: Unit,
    member: Member,
    *,
    cause: Envelope[Any] | None,
    at: datetime | None = None,
    ledger: Ledger | None = None,
) -> Ledger:
    """Append what the member's facts say beyond what the ledger records (`ledger`: their replay at `at`)."""
    moment = at or now()
    if ledger is None:
        ledger = replay(member.facts, moment, (await PROGRAM.get(unit.db)).rules.tiers)
    entries = entries_to_append(ledger, member.recorded)
    balance = member.balance
    expired = 0
    for entry in entries:
        balance += entry.points
        member.recorded[entry.key] = member.recorded.get(entry.key, 0) + entry.points
        entry_id = str(uuid.uuid4())
        unit.write(LEDGER, InsertOne(_ledger_doc(entry_id, member.customer_id, entry, balance, cause, moment)))
        if entry.kind == "expire":
            expired -= entry.points
        else:
            unit.publish(_event_for(entry, entry_id, member, balance, ledger.tier.name, cause))
    if expired > 0:
        unit.publish(
            PointsExpiredEvent.new(
                PointsExpired(customer_id=member.customer_id, points=expired, balance=balance),
                source=SOURCE,
                subject=member.customer_id,
                cause=cause,
            )
        )
    if ledger.tier.name != member.tier:
        unit.publish(
            TierChangedEvent.new(
                TierChanged(customer_id=member.customer_id, from_tier=member.tier, to_tier=ledger.tier.name),
                source=SOURCE,
                subject=member.customer_id,
                cause=cause,
            )
        )
        log.info("tier_changed", customer_id=member.customer_id, from_tier=member.tier, to_tier=ledger.tier.name)
    member.tier = ledger.tier.name
    save_member(
        unit, member, qualifying_points=ledger.qualifying_points, next_review_at=ledger.next_review_at, now=moment
    )
    return ledger


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
    entry: Entry, entry_id: str, member: Member, balance: int, tier: str, cause: Envelope[Any] | None
) -> Envelope[Any]:
    customer_id = member.customer_id
    if entry.kind == "redeem":
        redemption_id = entry.key.split(":", 1)[1]
        reward_id = next(r.reward_id for r in member.facts.redemptions if r.redemption_id == redemption_id)
        data: Any = PointsRedeemed(
            redemption_id=redemption_id,
            customer_id=customer_id,
            reward_id=reward_id,
            points=-entry.points,
            balance=balance,
        )
        return PointsRedeemedEvent.new(data, source=SOURCE, subject=customer_id, cause=cause)
    if entry.points > 0:
        data = PointsAwarded(
            entry_id=entry_id,
            customer_id=customer_id,
            points=entry.points,
            reason=entry.reason,  # type: ignore[arg-type]
            order_id=entry.order_id,
            balance=balance,
            tier=tier,
            expires_at=entry.expires_at,
        )
        return PointsAwardedEvent.new(data, source=SOURCE, subject=customer_id, cause=cause)
    data = PointsReversed(
        entry_id=entry_id,
        customer_id=customer_id,
        points=-entry.points,
        reason="refund" if entry.kind == "reverse" else "adjustment",
        order_id=entry.order_id,
        balance=balance,
    )
    return PointsReversedEvent.new(data, source=SOURCE, subject=customer_id, cause=cause)
