"""MongoDB for loyalty: the only code that knows its collections and the shape of their documents.

Collections:
- members: one document per member: what the ledger records per key, balance,
  tier, and the replay's checkpoint after the latest fact (domain.Checkpoint),
  which is all an in-order fact needs.
- member_facts: the members' history, one document per fact (a purchase, refund,
  cancellation, activity, redemption, or the owner's adjustment with their words in `note`;
  `_id` {member, fact: "<kind>:<id>"},
  `kind`, the fact's fields under `fact`), so no document grows with a member's
  orders; read by `_id.member` (indexed), all of a batch's late members in one
  query, only to replay a member in full when a fact arrives out of order. Histories
  stored as one document per member (`_id` the customer id, a list per kind) are
  split once as the service starts (`split_member_histories`).
- ledger: append-only entries, one per change of a key.
- config: the shop's rules (one document, `_id: "rules"`).
- campaigns, rewards: what the owner configured.
- redemption_requests: Idempotency-Key → first answer, of a redemption (`redeemed` / `not_enough_points`)
  or of an adjustment (`adjusted`, with the owner's words).
- erased: sha256 of erased customer ids, so late events do not bring them back (shared/erasure.py).

Every document has named fields; money and multipliers are decimal strings, so they come back exactly.
"""

import ast
import functools
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pymongo import (
    ASCENDING,
    DESCENDING,
    DeleteMany,
    DeleteOne,
    IndexModel,
    InsertOne,
    ReplaceOne,
    UpdateMany,
    UpdateOne,
)
from pymongo.asynchronous.client_session import AsyncClientSession

from services.loyalty.domain import (
    FACT_KINDS,
    Activity,
    Adjusted,
    Adjustment,
    AdjustmentRequest,
    Campaign,
    Cancellation,
    Checkpoint,
    Decision,
    EntryKind,
    Fact,
    Facts,
    FirstAnswer,
    History,
    LedgerEntry,
    Line,
    Lot,
    Member,
    NotEnoughPoints,
    Purchase,
    PurchaseAward,
    Reason,
    Redeemed,
    Redemption,
    RedemptionRequest,
    Refund,
    Reward,
    Rules,
    Scheme,
    Tier,
    TimelinePosition,
    checkpoint_after,
    fact_kind,
    seen_id,
)
from services.loyalty.settings import LoyaltyUnit
from shared.erasure import customer_erased, erased_alias, forget_sent_events, mark_erased, preload_customers
from shared.events import Envelope
from shared.leases import claim
from shared.mongo import Database
from shared.service import Runtime
from shared.settings import ServiceSettings

MEMBERS = "members"
MEMBER_FACTS = "member_facts"
LEDGER = "ledger"
CONFIG = "config"
CAMPAIGNS = "campaigns"
REWARDS = "rewards"
REDEMPTION_REQUESTS = "redemption_requests"


async def ensure_indexes(db: Database, settings: ServiceSettings) -> None:  # runs as the service starts
    await db[MEMBERS].create_indexes(
        [
            IndexModel([("next_review_at", ASCENDING)], partialFilterExpression={"next_review_at": {"$type": "date"}}),
            IndexModel([("tier", ASCENDING), ("qualifying_points", DESCENDING), ("_id", ASCENDING)]),  # GET /members
        ]
    )
    await db[LEDGER].create_indexes([IndexModel([("customer_id", ASCENDING), ("at", DESCENDING)])])
    await db[CAMPAIGNS].create_indexes([IndexModel([("ends_at", ASCENDING)])])
    await db[MEMBER_FACTS].create_indexes([IndexModel([("_id.member", ASCENDING)])])
    await move_inline_facts(db)
    await split_member_histories(db)


async def move_inline_facts(db: Database) -> int:
    """Members stored before the checkpoint hold their facts inline: checkpoint them and move the facts, once.

    Each member moves in its own transaction, so replicas starting together move each one once.
    """
    moved = 0
    async for old in db[MEMBERS].find({"checkpoint": {"$exists": False}}, projection={"_id": 1}):

        async def move(session: AsyncClientSession, customer_id: Any = old["_id"]) -> int:
            doc = await db[MEMBERS].find_one({"_id": customer_id, "checkpoint": {"$exists": False}}, session=session)
            if doc is None:  # another replica moved it
                return 0
            inline: dict[str, list[dict[str, Any]]] = {kind: doc.pop(kind) for kind in FACT_KINDS if kind in doc}
            facts = _facts(inline)
            doc["checkpoint"] = _checkpoint_doc(checkpoint_after(facts))
            writes = _fact_writes(customer_id, facts.every())
            if writes:
                await db[MEMBER_FACTS].bulk_write(writes, session=session)
            await db[MEMBERS].replace_one({"_id": customer_id}, doc, session=session)
            return 1

        async with db.client.start_session() as session:
            moved += await session.with_transaction(move)
    return moved


async def split_member_histories(db: Database) -> int:
    """Histories stored as one document per member (a list per kind, growing with every order): one
    document per fact instead, once. Each member in its own transaction, so replicas starting together
    split each one once; the documents a fact gets are the same whoever writes them."""
    split = 0
    async for old in db[MEMBER_FACTS].find({"_id": {"$type": "string"}}, projection={"_id": 1}):

        async def move(session: AsyncClientSession, customer_id: Any = old["_id"]) -> int:
            doc = await db[MEMBER_FACTS].find_one({"_id": customer_id}, session=session)
            if doc is None:  # another replica split it
                return 0
            writes = _fact_writes(customer_id, _facts(doc).every())
            if writes:
                await db[MEMBER_FACTS].bulk_write(writes, session=session)
            await db[MEMBER_FACTS].delete_one({"_id": customer_id}, session=session)
            return 1

        async with db.client.start_session() as session:
            split += await session.with_transaction(move)
    return split


# --- members, their history and their ledger ------------------------------------------------------


async def preload_members(unit: LoyaltyUnit, customer_ids: Iterable[str]) -> None:
    """Read a batch's members (and the erasure marks of those without one) in one go."""
    await preload_customers(unit, MEMBERS, customer_ids)


async def preload_histories(unit: LoyaltyUnit, customer_ids: Iterable[str]) -> None:
    """Read the histories of these members in one query, for the full replays of a batch's late facts."""
    histories = _histories(unit)
    missing = list({customer_id for customer_id in customer_ids if customer_id not in histories})
    if not missing:
        return
    read: dict[str, list[dict[str, Any]]] = {customer_id: [] for customer_id in missing}
    for doc in await unit.find(MEMBER_FACTS, {"_id.member": {"$in": missing}}):
        read[doc["_id"]["member"]].append(doc)
    histories.update({customer_id: {"facts": docs} for customer_id, docs in read.items()})


# Not a collection: the histories a unit has read, by member, kept current with the facts it adds (as the
# unit keeps the documents it read by _id), so a batch reads each history once; they go with the unit.
_HISTORIES = f"{MEMBER_FACTS}:by_member"


def _histories(unit: LoyaltyUnit) -> dict[Any, dict[str, Any] | None]:
    return unit.known.setdefault(_HISTORIES, {})


async def latest_position(unit: LoyaltyUnit, customer_id: str) -> TimelinePosition | None:
    """Where the member's latest fact stands, read without decoding the rest of the member."""
    doc = await unit.find_one(MEMBERS, {"_id": customer_id})
    last = doc["checkpoint"].get("last") if doc is not None and "checkpoint" in doc else None
    return _position(last) if last is not None else None


async def find_member(unit: LoyaltyUnit, customer_id: str) -> Member | None:
    """The member; None when loyalty has no document for them (never a member, or erased)."""
    doc = await unit.find_one(MEMBERS, {"_id": customer_id})
    if doc is None:
        return None
    return Member(
        customer_id,
        recorded=dict(doc["recorded"]),
        tier=doc["tier"],
        checkpoint=_checkpoint(doc["checkpoint"]),
        qualifying_points=int(doc.get("qualifying_points", 0)),
        next_review_at=doc.get("next_review_at"),
        closed_points=int(doc.get("closed_points", 0)),
    )


async def member_erased(unit: LoyaltyUnit, customer_id: str) -> bool:
    return await customer_erased(unit, MEMBERS, customer_id)


async def history(unit: LoyaltyUnit, member: Member) -> History:
    """Every fact known of the member and, when the member document keeps only the ledger keys that can
    still change, what the ledger records per key (summed from its entries)."""
    await preload_histories(unit, [member.customer_id])
    read = _histories(unit)[member.customer_id]
    facts = _history_facts(read["facts"] if read is not None else [])
    if member.checkpoint.folded_window_days is None:
        return History(facts)
    recorded: dict[str, int] = {}
    for entry in await unit.find(LEDGER, {"customer_id": member.customer_id}, projection={"key": 1, "points": 1}):
        recorded[entry["key"]] = recorded.get(entry["key"], 0) + entry["points"]
    return History(facts, recorded)


@dataclass(frozen=True)
class MemberSummary:
    customer_id: str
    tier: str
    balance: int
    qualifying_points: int


async def members_of_tier(rt: Runtime, tier: str | None, *, limit: int, offset: int) -> list[MemberSummary]:
    """Members (of one tier, or all), most points toward their tier first."""
    query = {} if tier is None else {"tier": tier}
    order = [("tier", ASCENDING), ("qualifying_points", DESCENDING), ("_id", ASCENDING)]
    found = rt.db[MEMBERS].find(
        query, {"tier": 1, "balance": 1, "qualifying_points": 1}, sort=order, skip=offset, limit=limit
    )
    return [
        MemberSummary(doc["_id"], doc["tier"], int(doc["balance"]), int(doc.get("qualifying_points") or 0))
        async for doc in found
    ]


async def tier_sizes(rt: Runtime) -> dict[str, int]:
    """How many members hold each tier."""
    counted = await rt.db[MEMBERS].aggregate([{"$group": {"_id": "$tier", "members": {"$sum": 1}}}])
    return {doc["_id"]: int(doc["members"]) async for doc in counted}


async def points_sums(rt: Runtime) -> dict[tuple[str, EntryKind], int]:
    """The ledger's points summed per month (UTC) of the entry and kind, signed as stored."""
    month = {"$dateToString": {"format": "%Y-%m", "date": "$at"}}
    summed = await rt.db[LEDGER].aggregate(
        [{"$group": {"_id": {"month": month, "kind": "$kind"}, "points": {"$sum": "$points"}}}]
    )
    return {(doc["_id"]["month"], EntryKind(doc["_id"]["kind"])): int(doc["points"]) async for doc in summed}


def save_decision(unit: LoyaltyUnit, decision: Decision, *, cause: Envelope[Any] | None, at: datetime) -> None:
    """Append the decision's ledger entries, store the member and add the new facts to their history."""
    member = decision.member
    unit.write(LEDGER, *(InsertOne(_ledger_doc(member.customer_id, e, cause, at)) for e in decision.entries))
    unit.replace(
        MEMBERS,
        {
            "_id": member.customer_id,
            "balance": member.balance,
            "tier": member.tier,
            "qualifying_points": member.qualifying_points,
            "recorded": dict(member.recorded),
            "closed_points": member.closed_points,
            "checkpoint": _checkpoint_doc(member.checkpoint),
            "next_review_at": member.next_review_at,
            "lease_until": None,
            "updated_at": at,
        },
    )
    unit.write(MEMBER_FACTS, *_fact_writes(member.customer_id, decision.facts))
    read = _histories(unit).get(member.customer_id)
    if read is not None:
        read["facts"].extend(_fact_document(member.customer_id, fact) for fact in decision.facts)


def erase_member(unit: LoyaltyUnit, customer_id: str, at: datetime) -> None:
    """Delete who the member is and what they bought; their ledger stays, under an anonymous alias."""
    mark_erased(unit, customer_id, at)
    unit.write(MEMBERS, DeleteOne({"_id": customer_id}))
    unit.write(MEMBER_FACTS, DeleteMany({"_id.member": customer_id}), DeleteOne({"_id": customer_id}))  # and old shape
    _histories(unit).pop(customer_id, None)
    unit.write(LEDGER, UpdateMany({"customer_id": customer_id}, {"$set": {"customer_id": erased_alias(customer_id)}}))
    unit.write(REDEMPTION_REQUESTS, DeleteMany({"customer_id": customer_id}))
    forget_sent_events(unit, customer_id)  # PointsAwarded and the rest name the member


@dataclass(frozen=True)
class RecordedEntry:
    """A ledger entry as stored, with what caused it."""

    entry_id: str
    kind: EntryKind
    reason: Reason
    points: int
    balance_after: int
    order_id: str | None
    expires_at: datetime | None
    at: datetime
    cause_type: str | None


async def recent_entries(unit: LoyaltyUnit, customer_id: str, limit: int = 20) -> list[RecordedEntry]:
    docs = await unit.find(LEDGER, {"customer_id": customer_id}, sort=[("at", -1)], limit=limit)
    return [_recorded_entry(doc) for doc in docs]


def _recorded_entry(doc: Mapping[str, Any]) -> RecordedEntry:
    return RecordedEntry(
        entry_id=doc["_id"],
        kind=EntryKind(doc["kind"]),
        reason=Reason(doc["reason"]),
        points=doc["points"],
        balance_after=doc["balance_after"],
        order_id=doc["order_id"],
        expires_at=doc["expires_at"],
        at=doc["at"],
        cause_type=doc.get("cause_type"),
    )


@dataclass(frozen=True)
class MemberRecords:
    """Everything loyalty holds on one customer (their export): the member, their whole ledger, their history."""

    member: Member | None
    ledger: list[RecordedEntry]  # oldest first
    facts: Facts  # what they bought, had refunded, did for points and redeemed, and the owner's adjustments


async def member_records(unit: LoyaltyUnit, customer_id: str) -> MemberRecords:
    ledger = await unit.find(LEDGER, {"customer_id": customer_id}, sort=[("at", 1), ("_id", 1)])
    await preload_histories(unit, [customer_id])
    read = _histories(unit)[customer_id]
    return MemberRecords(
        member=await find_member(unit, customer_id),
        ledger=[_recorded_entry(doc) for doc in ledger],
        facts=_history_facts(read["facts"] if read is not None else []),
    )


async def claim_member_due(rt: Runtime, at: datetime, *, lease: timedelta, owner: str) -> str | None:
    """Hold one member whose points expire or whose tier window slides by `at`; None when none is due."""
    claimed = await claim(
        rt.db[MEMBERS], {"next_review_at": {"$lte": at}}, lease=lease, owner=owner, projection={"_id": 1}
    )
    return str(claimed["_id"]) if claimed is not None else None


def _ledger_doc(customer_id: str, entry: LedgerEntry, cause: Envelope[Any] | None, at: datetime) -> dict[str, Any]:
    return {
        "_id": entry.entry_id,
        "customer_id": customer_id,
        "kind": str(entry.kind),
        "reason": str(entry.reason),
        "key": entry.key,
        "points": entry.points,
        "balance_after": entry.balance_after,
        "order_id": entry.order_id,
        "expires_at": entry.expires_at,
        "cause_event_id": cause.id if cause is not None else None,
        "cause_type": cause.type if cause is not None else None,
        "at": at,
    }


# The checkpoint as stored. Lists of named documents, not maps, since order ids may hold any character.
# Checkpoints stored before they had named fields hold positional lists; `_checkpoint` still reads them.


def _checkpoint_doc(checkpoint: Checkpoint) -> dict[str, Any]:
    last = checkpoint.last
    return {
        "last": {"at": last[0], "rank": last[1], "id": last[2]} if last is not None else None,
        "seen": list(checkpoint.seen),
        "lots": [
            {
                "key": lot.key,
                "earned_at": lot.earned_at,
                "expires_at": lot.expires_at,
                "remaining": lot.remaining,
                "order_id": lot.order_id,
            }
            for lot in checkpoint.lots
        ],
        "purchases": [
            {
                "order_id": order_id,
                "placed_at": award.placed_at,
                "total": str(award.total),
                "points": award.points,
                "window_days": award.window_days,
                "refunded": str(award.refunded),
                "reversed": award.reversed,
                "refund_ids": award.refund_ids,
                "cancelled": award.cancelled,
            }
            for order_id, award in checkpoint.purchases.items()
        ],
        "pending_refunds": [_refund_doc(r) for refunds in checkpoint.pending_refunds.values() for r in refunds],
        "pending_cancellations": [_cancellation_doc(c) for c in checkpoint.pending_cancellations.values()],
        "folded_window_days": checkpoint.folded_window_days,
    }


def _checkpoint(doc: dict[str, Any]) -> Checkpoint:
    last = doc["last"]
    pending: dict[str, list[Refund]] = {}
    for stored in doc["pending_refunds"]:
        refund = (
            _refund(stored) if isinstance(stored, dict) else _refund(dict(zip(_REFUND_FIELDS, stored, strict=True)))
        )
        pending.setdefault(refund.order_id, []).append(refund)
    purchases = (
        doc["purchases"] if "purchases" in doc else [dict(zip(_AWARD_FIELDS, o, strict=True)) for o in doc["orders"]]
    )
    return Checkpoint(
        last=_position(last) if last is not None else None,
        seen=set(doc["seen"]),
        lots=[_lot(lot if isinstance(lot, dict) else dict(zip(_LOT_FIELDS, lot, strict=True))) for lot in doc["lots"]],
        purchases={p["order_id"]: _award(p) for p in purchases},
        pending_refunds=pending,
        folded_window_days=doc.get("folded_window_days"),
        pending_cancellations={
            c.order_id: c for c in (_cancellation(stored) for stored in doc.get("pending_cancellations", []))
        },
    )


# The order of the fields in the positional lists the checkpoint was first stored as.
_LOT_FIELDS = ("key", "earned_at", "expires_at", "remaining", "order_id")
_AWARD_FIELDS = ("order_id", "placed_at", "total", "points", "window_days", "refunded", "reversed")
_REFUND_FIELDS = ("refund_id", "order_id", "amount", "refunded_at")


def _position(doc: dict[str, Any]) -> TimelinePosition:
    return doc["at"], int(doc["rank"] if "rank" in doc else doc["kind"]), doc["id"]


def _lot(doc: dict[str, Any]) -> Lot:
    return Lot(doc["key"], doc["earned_at"], doc["expires_at"], int(doc["remaining"]), doc["order_id"])


def _award(doc: dict[str, Any]) -> PurchaseAward:
    return PurchaseAward(
        placed_at=doc["placed_at"],
        total=Decimal(doc["total"]),
        points=int(doc["points"]),
        window_days=int(doc["window_days"]),
        refunded=Decimal(doc["refunded"]),
        reversed=int(doc["reversed"]),
        refund_ids=list(doc.get("refund_ids", [])),
        cancelled=bool(doc.get("cancelled", False)),
    )


# Facts as stored: one document per fact (`_fact_document`), the fact's fields written by fact_doc, read back
# by _history_facts; `_facts` reads the lists of the older shapes (inline in members, one document per member).


def _fact_document(customer_id: str, fact: Fact) -> dict[str, Any]:
    return {"_id": {"member": customer_id, "fact": seen_id(fact)}, "kind": fact_kind(fact), "fact": fact_doc(fact)}


def _fact_writes(customer_id: str, facts: Iterable[Fact]) -> list[ReplaceOne[Any]]:
    """Keep each fact in its own document; the same fact written twice is still one document."""
    docs = [_fact_document(customer_id, fact) for fact in facts]
    return [ReplaceOne({"_id": doc["_id"]}, doc, upsert=True) for doc in docs]


def _history_facts(docs: Iterable[Mapping[str, Any]]) -> Facts:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc["fact"])
    return _facts(by_kind)


def _facts(doc: Mapping[str, list[dict[str, Any]]]) -> Facts:
    return Facts(
        purchases=tuple(_purchase(p) for p in doc.get("purchases", [])),
        refunds=tuple(_refund(r) for r in doc.get("refunds", [])),
        activities=tuple(_activity(a) for a in doc.get("activities", [])),
        redemptions=tuple(_redemption(r) for r in doc.get("redemptions", [])),
        cancellations=tuple(_cancellation(c) for c in doc.get("cancellations", [])),
        adjustments=tuple(_adjustment(a) for a in doc.get("adjustments", [])),
    )


def fact_doc(fact: Fact) -> dict[str, Any]:
    if isinstance(fact, Purchase):
        return {
            "order_id": fact.order_id,
            "placed_at": fact.placed_at,
            "currency": fact.currency,
            "total": str(fact.total),
            "lines": [{"sku": line.sku, "category": line.category, "amount": str(line.amount)} for line in fact.lines],
            "rate": str(fact.rate) if fact.rate is not None else None,
            "tiers": [_tier_doc(tier) for tier in fact.tiers],
            "campaigns": [_campaign_doc(campaign) for campaign in fact.campaigns],
            "lifetime_days": fact.lifetime_days,
            "tier_window_days": fact.tier_window_days,
        }
    if isinstance(fact, Refund):
        return _refund_doc(fact)
    if isinstance(fact, Cancellation):
        return _cancellation_doc(fact)
    if isinstance(fact, Activity):
        return {
            "key": fact.key,
            "reason": str(fact.reason),
            "points": fact.points,
            "at": fact.at,
            "lifetime_days": fact.lifetime_days,
            "order_id": fact.order_id,
        }
    if isinstance(fact, Adjustment):
        return {
            "adjustment_id": fact.adjustment_id,
            "points": fact.points,
            "note": fact.note,
            "at": fact.at,
            "lifetime_days": fact.lifetime_days,
        }
    return {"redemption_id": fact.redemption_id, "reward_id": fact.reward_id, "points": fact.points, "at": fact.at}


def _refund_doc(refund: Refund) -> dict[str, Any]:
    return {
        "refund_id": refund.refund_id,
        "order_id": refund.order_id,
        "amount": str(refund.amount),
        "refunded_at": refund.refunded_at,
    }


def _cancellation_doc(cancellation: Cancellation) -> dict[str, Any]:
    return {"order_id": cancellation.order_id, "cancelled_at": cancellation.cancelled_at}


def _cancellation(doc: dict[str, Any]) -> Cancellation:
    return Cancellation(doc["order_id"], doc["cancelled_at"])


def _tier_doc(tier: Tier) -> dict[str, Any]:
    return {"name": tier.name, "threshold": tier.threshold, "multiplier": str(tier.multiplier)}


def _tier(doc: dict[str, Any]) -> Tier:
    return _tier_of(doc["name"], int(doc["threshold"]), doc["multiplier"])


@functools.lru_cache(maxsize=256)
def _tier_of(name: str, threshold: int, multiplier: str) -> Tier:
    """Every purchase carries the tier table it was earned under; most carry the same one, so build each once."""
    return Tier(name, threshold, Decimal(multiplier))


def _campaign_doc(campaign: Campaign) -> dict[str, Any]:
    """A campaign as the campaigns collection and every purchase it ran for keep it: the one encoder."""
    return {
        "campaign_id": campaign.campaign_id,
        "name": campaign.name,
        "starts_at": campaign.starts_at,
        "ends_at": campaign.ends_at,
        "multiplier": str(campaign.multiplier),
        "categories": sorted(campaign.categories),
        "skus": sorted(campaign.skus),
        "bonus_lifetime_days": campaign.bonus_lifetime_days,
        "active": campaign.active,
    }


def _campaign(doc: dict[str, Any]) -> Campaign:
    return Campaign(
        campaign_id=doc["campaign_id"],
        name=doc["name"],
        starts_at=doc["starts_at"],
        ends_at=doc["ends_at"],
        multiplier=Decimal(doc["multiplier"]),
        categories=frozenset(doc.get("categories", [])),
        skus=frozenset(doc.get("skus", [])),
        bonus_lifetime_days=int(doc.get("bonus_lifetime_days", 30)),
        active=bool(doc.get("active", True)),
    )


def _purchase(doc: dict[str, Any]) -> Purchase:
    return Purchase(
        order_id=doc["order_id"],
        placed_at=doc["placed_at"],
        currency=doc["currency"],
        total=Decimal(doc["total"]),
        lines=tuple(Line(line["sku"], line.get("category"), Decimal(line["amount"])) for line in doc["lines"]),
        rate=Decimal(doc["rate"]) if doc.get("rate") is not None else None,
        tiers=tuple(_tier(t) for t in doc["tiers"]),
        campaigns=tuple(_campaign(c) for c in doc["campaigns"]),
        lifetime_days=int(doc["lifetime_days"]),
        tier_window_days=int(doc["tier_window_days"]),
    )


def _refund(doc: dict[str, Any]) -> Refund:
    return Refund(doc["refund_id"], doc["order_id"], Decimal(doc["amount"]), doc["refunded_at"])


def _activity(doc: dict[str, Any]) -> Activity:
    return Activity(
        doc["key"], Reason(doc["reason"]), int(doc["points"]), doc["at"], int(doc["lifetime_days"]), doc.get("order_id")
    )


def _redemption(doc: dict[str, Any]) -> Redemption:
    return Redemption(doc["redemption_id"], doc["reward_id"], int(doc["points"]), doc["at"])


def _adjustment(doc: dict[str, Any]) -> Adjustment:
    return Adjustment(doc["adjustment_id"], int(doc["points"]), doc["note"], doc["at"], int(doc["lifetime_days"]))


# --- redemption requests: the first answer per Idempotency-Key (redemptions and adjustments) --------------


async def first_answer(unit: LoyaltyUnit, customer_id: str, idempotency_key: str) -> FirstAnswer | None:
    doc = await unit.find_one(REDEMPTION_REQUESTS, {"_id": f"{customer_id}:{idempotency_key}"})
    if doc is None:
        return None
    adjusted = doc.get("adjusted")
    if adjusted is not None:
        outcome = Adjusted(customer_id=customer_id, **adjusted)
        return AdjustmentRequest(outcome.points, outcome.note, outcome)
    if "status" in doc:  # stored before answers had named fields: the HTTP status and body
        return RedemptionRequest(doc["reward_id"], _answer_stored_as_http(doc["status"], doc["body"]))
    redeemed, refused = doc.get("redeemed"), doc.get("not_enough_points")
    if redeemed is not None:
        return RedemptionRequest(doc["reward_id"], Redeemed(customer_id=customer_id, **redeemed))
    return RedemptionRequest(doc["reward_id"], NotEnoughPoints(**(refused or {})))


def keep_answer(unit: LoyaltyUnit, customer_id: str, idempotency_key: str, request: FirstAnswer, at: datetime) -> None:
    if isinstance(request, AdjustmentRequest):
        adjusted = request.outcome
        unit.write(
            REDEMPTION_REQUESTS,
            InsertOne(
                {
                    "_id": f"{customer_id}:{idempotency_key}",
                    "customer_id": customer_id,
                    "adjusted": {
                        "adjustment_id": adjusted.adjustment_id,
                        "points": adjusted.points,
                        "note": adjusted.note,
                        "balance": adjusted.balance,
                    },
                    "at": at,
                }
            ),
        )
        return
    outcome = request.outcome
    redeemed = (
        {
            "redemption_id": outcome.redemption_id,
            "reward_id": outcome.reward_id,
            "points": outcome.points,
            "balance": outcome.balance,
        }
        if isinstance(outcome, Redeemed)
        else None
    )
    refused = asdict(outcome) if isinstance(outcome, NotEnoughPoints) else None
    doc = {
        "_id": f"{customer_id}:{idempotency_key}",
        "customer_id": customer_id,
        "reward_id": request.reward_id,
        "redeemed": redeemed,
        "not_enough_points": refused,
        "at": at,
    }
    unit.write(REDEMPTION_REQUESTS, InsertOne(doc))


def _answer_stored_as_http(status: int, body: dict[str, Any]) -> Redeemed | NotEnoughPoints:
    if status == 201:
        return Redeemed(body["redemption_id"], body["customer_id"], body["reward_id"], body["points"], body["balance"])
    # "balance 0 does not cover 100 points for 'Free shipping'": the reward's name is the repr at the end
    name = ast.literal_eval(body["detail"].split(" points for ", 1)[1])
    return NotEnoughPoints(int(body["balance"]), int(body["points_price"]), str(name))


# --- rewards ----------------------------------------------------------------------------------------


def _reward_doc(reward: Reward) -> dict[str, Any]:
    return {"_id": reward.reward_id, **asdict(reward)}


def _reward(doc: dict[str, Any]) -> Reward:
    return Reward(doc["reward_id"], doc["name"], int(doc["points_price"]), doc.get("description"), doc["active"])


async def active_reward(unit: LoyaltyUnit, reward_id: str) -> Reward | None:
    doc = await unit.find_one(REWARDS, {"_id": reward_id})
    return _reward(doc) if doc is not None and doc["active"] else None


async def active_rewards(unit: LoyaltyUnit) -> list[Reward]:
    return [_reward(doc) for doc in await unit.find(REWARDS, {"active": True}, sort=[("points_price", 1)])]


def add_reward(unit: LoyaltyUnit, reward: Reward) -> None:
    unit.write(REWARDS, InsertOne(_reward_doc(reward)))


async def retire_reward(unit: LoyaltyUnit, reward_id: str) -> Reward | None:
    """Take the reward out of the catalogue; None when there is no such reward."""
    doc = await unit.find_one(REWARDS, {"_id": reward_id})
    if doc is None:
        return None
    retired = _reward(doc | {"active": False})
    unit.update(REWARDS, _reward_doc(retired), UpdateOne({"_id": reward_id}, {"$set": {"active": False}}))
    return retired


# --- the scheme: rules and campaigns -----------------------------------------------------------------


async def all_campaigns(unit: LoyaltyUnit) -> list[Campaign]:
    return [_campaign(doc) for doc in await unit.find(CAMPAIGNS, {}, sort=[("starts_at", 1)])]


def add_campaign(unit: LoyaltyUnit, campaign: Campaign) -> None:
    unit.write(CAMPAIGNS, InsertOne({"_id": campaign.campaign_id, **_campaign_doc(campaign)}))
    unit.on_commit(SCHEMES.clear)


async def end_campaign(unit: LoyaltyUnit, campaign_id: str) -> Campaign | None:
    """Stop the campaign for orders from now on; None when there is no such campaign."""
    doc = await unit.find_one(CAMPAIGNS, {"_id": campaign_id})
    if doc is None:
        return None
    ended = _campaign(doc | {"active": False})
    unit.update(
        CAMPAIGNS,
        {"_id": campaign_id, **_campaign_doc(ended)},
        UpdateOne({"_id": campaign_id}, {"$set": {"active": False}}),
    )
    unit.on_commit(SCHEMES.clear)
    return ended


def save_rules(unit: LoyaltyUnit, rules: Rules) -> None:
    unit.replace(CONFIG, {"_id": "rules", **_rules_doc(rules)})
    unit.on_commit(SCHEMES.clear)


def _rules_doc(rules: Rules) -> dict[str, Any]:
    doc = asdict(rules)
    doc["rates"] = {currency: str(rate) for currency, rate in rules.rates.items()}
    doc["tiers"] = [_tier_doc(tier) for tier in rules.tiers]
    return doc


def _rules(doc: dict[str, Any] | None) -> Rules:
    """The stored rules; what the document does not say keeps its default."""
    if doc is None:
        return Rules()
    plain = {f.name: doc[f.name] for f in fields(Rules) if f.name in doc and f.name not in {"rates", "tiers"}}
    return Rules(
        rates={currency: Decimal(rate) for currency, rate in doc.get("rates", {}).items()},
        tiers=tuple(_tier(t) for t in doc.get("tiers", [])) or Rules().tiers,
        **plain,
    )


class SchemeCache:
    """Rules and campaigns change rarely and are read for every order: keep them a few seconds.

    A change through this replica's API clears it once committed; other replicas
    see it within `ttl_seconds`.
    """

    def __init__(self, ttl_seconds: float = 5.0) -> None:
        self._ttl = ttl_seconds
        self._loaded: dict[str, tuple[float, Scheme]] = {}  # by database: one process may serve several shops

    def clear(self) -> None:
        self._loaded.clear()

    async def get(self, unit: LoyaltyUnit) -> Scheme:
        loaded = self._loaded.get(unit.db.name)
        if loaded is None or time.monotonic() - loaded[0] > self._ttl:
            rules = _rules(await unit.find_one(CONFIG, {"_id": "rules"}))
            campaigns = tuple(_campaign(doc) for doc in await unit.find(CAMPAIGNS, {"active": True}))
            loaded = (time.monotonic(), Scheme(rules, campaigns))
            self._loaded[unit.db.name] = loaded
        return loaded[1]


SCHEMES = SchemeCache()
