"""MongoDB for loyalty: members (totals and checkpoint), their facts, the ledger, rules, campaigns, rewards.

Collections:
- members: one document per member: what the ledger records per key, balance,
  tier, and the replay's checkpoint after the latest fact (domain.Checkpoint),
  which is all an in-order fact needs.
- member_facts: one document per member: the facts heard of (purchases,
  refunds, activities, redemptions), read only to replay a member in full when
  a fact arrives out of order.
- ledger: append-only entries, one per change of a key.
- config: the shop's rules (one document, `_id: "rules"`).
- campaigns, rewards: what the owner configured.
- redemption_requests: Idempotency-Key → first result.
- erased: sha256 of erased customer ids, so late events do not bring them back.
"""

import functools
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel

from services.loyalty.domain import (
    Activity,
    Campaign,
    Checkpoint,
    Fact,
    Facts,
    Line,
    Lot,
    Order,
    Purchase,
    Redemption,
    Refund,
    Rules,
    Tier,
    fact_kind,
    replay,
)
from services.loyalty.settings import LoyaltyUnit
from shared.mongo import Database
from shared.settings import ServiceSettings

MEMBERS = "members"
MEMBER_FACTS = "member_facts"
LEDGER = "ledger"
CONFIG = "config"
CAMPAIGNS = "campaigns"
REWARDS = "rewards"
REDEMPTION_REQUESTS = "redemption_requests"


async def ensure_indexes(
    db: Database, settings: ServiceSettings
) -> None:  # the settings are for services whose indexes depend on them
    await db[MEMBERS].create_indexes(
        [IndexModel([("next_review_at", ASCENDING)], partialFilterExpression={"next_review_at": {"$type": "date"}})]
    )
    await db[LEDGER].create_indexes([IndexModel([("customer_id", ASCENDING), ("at", DESCENDING)])])
    await db[CAMPAIGNS].create_indexes([IndexModel([("ends_at", ASCENDING)])])


# --- members ----------------------------------------------------------------------------


FACT_KINDS = ("purchases", "refunds", "activities", "redemptions")


@dataclass
class Member:
    customer_id: str
    recorded: dict[str, int] = field(default_factory=dict)  # what the ledger says per key
    tier: str = "bronze"
    checkpoint: Checkpoint = field(default_factory=Checkpoint)
    exists: bool = False
    # Facts a member document written before member_facts still holds itself; moved there on its next save.
    unmoved: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def balance(self) -> int:
        return sum(self.recorded.values())


async def load_member(unit: LoyaltyUnit, customer_id: str) -> Member:
    doc = await unit.find_one(MEMBERS, {"_id": customer_id})
    if doc is None:
        return Member(customer_id)
    member = Member(customer_id, recorded=dict(doc["recorded"]), tier=doc["tier"], exists=True)
    if "checkpoint" in doc:
        member.checkpoint = _checkpoint(doc["checkpoint"])
    else:  # written before the checkpoint, with the facts inline: the checkpoint is their replay's
        member.unmoved = {kind: doc[kind] for kind in FACT_KINDS if doc.get(kind)}
        member.checkpoint = replay(_facts(member.unmoved), datetime.now(UTC)).checkpoint
    return member


async def load_facts(unit: LoyaltyUnit, member: Member) -> Facts:
    doc = await unit.find_one(MEMBER_FACTS, {"_id": member.customer_id}) or {}
    return _facts({kind: [*member.unmoved.get(kind, []), *doc.get(kind, [])] for kind in FACT_KINDS})


def _facts(doc: Mapping[str, list[dict[str, Any]]]) -> Facts:
    return Facts(
        purchases=tuple(_purchase(p) for p in doc.get("purchases", [])),
        refunds=tuple(_refund(r) for r in doc.get("refunds", [])),
        activities=tuple(_activity(a) for a in doc.get("activities", [])),
        redemptions=tuple(_redemption(r) for r in doc.get("redemptions", [])),
    )


def save_member(
    unit: LoyaltyUnit,
    member: Member,
    new_facts: list[Fact],
    *,
    qualifying_points: int,
    next_review_at: datetime | None,
    now: datetime,
) -> None:
    """Store the member's totals and checkpoint, and append the new facts to their facts."""
    unit.replace(
        MEMBERS,
        {
            "_id": member.customer_id,
            "balance": member.balance,
            "tier": member.tier,
            "qualifying_points": qualifying_points,
            "recorded": member.recorded,
            "checkpoint": _checkpoint_doc(member.checkpoint),
            "next_review_at": next_review_at,
            "lease_until": None,
            "updated_at": now,
        },
    )
    appended = {kind: list(docs) for kind, docs in member.unmoved.items()}
    for fact in new_facts:
        appended.setdefault(fact_kind(fact), []).append(fact_doc(fact))
    unit.append(MEMBER_FACTS, member.customer_id, appended)
    member.unmoved = {}


# The checkpoint as stored: lists, not maps, since order ids may hold any character; money as decimal strings.


def _checkpoint_doc(checkpoint: Checkpoint) -> dict[str, Any]:
    last = checkpoint.last
    return {
        "last": {"at": last[0], "kind": last[1], "id": last[2]} if last is not None else None,
        "seen": list(checkpoint.seen),
        "lots": [[lot.key, lot.earned_at, lot.expires_at, lot.remaining, lot.order_id] for lot in checkpoint.lots],
        "orders": [
            [order_id, o.placed_at, str(o.total), o.points, o.window_days, str(o.refunded), o.reversed]
            for order_id, o in checkpoint.orders.items()
        ],
        "pending_refunds": [
            [r.refund_id, r.order_id, str(r.amount), r.refunded_at]
            for refunds in checkpoint.pending_refunds.values()
            for r in refunds
        ],
    }


def _checkpoint(doc: dict[str, Any]) -> Checkpoint:
    last = doc["last"]
    pending: dict[str, list[Refund]] = {}
    for refund_id, order_id, amount, refunded_at in doc["pending_refunds"]:
        pending.setdefault(order_id, []).append(Refund(refund_id, order_id, Decimal(amount), refunded_at))
    return Checkpoint(
        last=(last["at"], last["kind"], last["id"]) if last is not None else None,
        seen=set(doc["seen"]),
        lots=[Lot(*lot) for lot in doc["lots"]],
        orders={
            order_id: Order(placed_at, Decimal(total), points, window_days, Decimal(refunded), reversed_)
            for order_id, placed_at, total, points, window_days, refunded, reversed_ in doc["orders"]
        },
        pending_refunds=pending,
    )


def _jsonable(value: Any) -> Any:
    """Decimals as strings, sets as sorted lists: what MongoDB can store and give back exactly."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (frozenset, set)):
        return sorted(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# Facts as stored: written by fact_doc, read back by _purchase, _refund, _activity and _redemption.
# Money and multipliers are decimal strings, so they come back exactly.


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
        return {
            "refund_id": fact.refund_id,
            "order_id": fact.order_id,
            "amount": str(fact.amount),
            "refunded_at": fact.refunded_at,
        }
    if isinstance(fact, Activity):
        return {
            "key": fact.key,
            "reason": fact.reason,
            "points": fact.points,
            "at": fact.at,
            "lifetime_days": fact.lifetime_days,
            "order_id": fact.order_id,
        }
    return {"redemption_id": fact.redemption_id, "reward_id": fact.reward_id, "points": fact.points, "at": fact.at}


def _tier_doc(tier: Tier) -> dict[str, Any]:
    return {"name": tier.name, "threshold": tier.threshold, "multiplier": str(tier.multiplier)}


def _campaign_doc(campaign: Campaign) -> dict[str, Any]:
    return {
        "campaign_id": campaign.campaign_id,
        "name": campaign.name,
        "starts_at": campaign.starts_at,
        "ends_at": campaign.ends_at,
        "multiplier": str(campaign.multiplier),
        "categories": sorted(campaign.categories),
        "skus": sorted(campaign.skus),
        "bonus_lifetime_days": campaign.bonus_lifetime_days,
    }


def _tier(doc: dict[str, Any]) -> Tier:
    return _tier_of(doc["name"], int(doc["threshold"]), doc["multiplier"])


@functools.lru_cache(maxsize=256)
def _tier_of(name: str, threshold: int, multiplier: str) -> Tier:
    """Every purchase carries the tier table it was earned under; most carry the same one, so build each once."""
    return Tier(name, threshold, Decimal(multiplier))


def campaign_from_doc(doc: dict[str, Any]) -> Campaign:
    return Campaign(
        campaign_id=doc["campaign_id"],
        name=doc["name"],
        starts_at=doc["starts_at"],
        ends_at=doc["ends_at"],
        multiplier=Decimal(doc["multiplier"]),
        categories=frozenset(doc.get("categories", [])),
        skus=frozenset(doc.get("skus", [])),
        bonus_lifetime_days=int(doc.get("bonus_lifetime_days", 30)),
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
        campaigns=tuple(campaign_from_doc(c) for c in doc["campaigns"]),
        lifetime_days=int(doc["lifetime_days"]),
        tier_window_days=int(doc["tier_window_days"]),
    )


def _refund(doc: dict[str, Any]) -> Refund:
    return Refund(doc["refund_id"], doc["order_id"], Decimal(doc["amount"]), doc["refunded_at"])


def _activity(doc: dict[str, Any]) -> Activity:
    return Activity(
        doc["key"], doc["reason"], int(doc["points"]), doc["at"], int(doc["lifetime_days"]), doc.get("order_id")
    )


def _redemption(doc: dict[str, Any]) -> Redemption:
    return Redemption(doc["redemption_id"], doc["reward_id"], int(doc["points"]), doc["at"])


# --- rules and campaigns, cached briefly ------------------------------------------------------


def rules_to_doc(rules: Rules) -> dict[str, Any]:
    doc: dict[str, Any] = _jsonable(asdict(rules))
    return doc


def rules_from_doc(doc: dict[str, Any] | None) -> Rules:
    """The stored rules; what the document does not say keeps its default."""
    if doc is None:
        return Rules()
    plain = {f.name: doc[f.name] for f in fields(Rules) if f.name in doc and f.name not in {"rates", "tiers"}}
    return Rules(
        rates={currency: Decimal(rate) for currency, rate in doc.get("rates", {}).items()},
        tiers=tuple(_tier(t) for t in doc.get("tiers", [])) or Rules().tiers,
        **plain,
    )


@dataclass
class Program:
    """The rules and campaigns in force, as one value handlers read."""

    rules: Rules
    campaigns: tuple[Campaign, ...]


class ProgramCache:
    """Rules and campaigns change rarely and are read for every order: keep them a few seconds.

    A change through this replica's API clears it at once; other replicas see it
    within `ttl_seconds`.
    """

    def __init__(self, ttl_seconds: float = 5.0) -> None:
        self._ttl = ttl_seconds
        self._loaded: dict[str, tuple[float, Program]] = {}  # by database: one process may serve several shops

    def clear(self) -> None:
        self._loaded.clear()

    async def get(self, db: Database) -> Program:
        loaded = self._loaded.get(db.name)
        if loaded is None or time.monotonic() - loaded[0] > self._ttl:
            rules = rules_from_doc(await db[CONFIG].find_one({"_id": "rules"}))
            campaigns = tuple([campaign_from_doc(doc) async for doc in db[CAMPAIGNS].find({"active": True})])
            loaded = (time.monotonic(), Program(rules, campaigns))
            self._loaded[db.name] = loaded
        return loaded[1]
