"""HTTP API of loyalty: members, redemptions, rules, campaigns, rewards."""

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Response, status
from pydantic import AwareDatetime, BaseModel, Field, ValidationInfo, field_validator

from services.loyalty import service
from services.loyalty.domain import Rules, Tier, next_tier
from services.loyalty.settings import LoyaltyUnit
from services.loyalty.store import CAMPAIGNS, CONFIG, LEDGER, REWARDS, load_member, rules_from_doc, rules_to_doc
from shared.service import Runtime, runtime
from shared.types import Currency

api = APIRouter(tags=["loyalty"])
Rt = Annotated[Runtime, Depends(runtime)]


# --- members -------------------------------------------------------------------------------


@api.get("/members/{customer_id}")
async def get_member(customer_id: str, rt: Rt) -> dict[str, Any]:
    """Balance, tier and progress, points expiring in the next 30 days, and the recent entries with reasons."""

    async def read(unit: LoyaltyUnit) -> dict[str, Any]:
        member = await load_member(unit, customer_id)
        if not member.exists:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"customer_id: no member {customer_id!r}")
        program = await service.PROGRAM.get(rt.db)
        rules = program.rules
        at = service.now()
        ledger = await service.ledger_with(unit, member, [], at, program)
        upcoming = next_tier(ledger.qualifying_points, rules.tiers)
        entries = await unit.find(LEDGER, {"customer_id": customer_id}, sort=[("at", -1)], limit=20)
        soon = [
            {"points": lot.remaining, "expires_at": lot.expires_at, "key": lot.key}
            for lot in ledger.expiring_between(at, at + timedelta(days=30))
        ]
        return {
            "customer_id": customer_id,
            "balance": ledger.balance,
            "tier": ledger.tier.name,
            "tier_points": ledger.qualifying_points,
            "next_tier": {"name": upcoming[0].name, "points_needed": upcoming[1]} if upcoming else None,
            "expiring_in_30_days": sum(lot["points"] for lot in soon),
            "expiring": soon,
            "recent_entries": [
                {k: e[k] for k in ("kind", "reason", "points", "balance_after", "order_id", "expires_at", "at")}
                | {"entry_id": e["_id"], "cause": e.get("cause_type")}
                for e in entries
            ],
        }

    return await rt.transaction(read)


class RedemptionIn(BaseModel):
    reward_id: str = Field(min_length=1, max_length=128, description="The reward to take.")


@api.post("/members/{customer_id}/redemptions", status_code=status.HTTP_201_CREATED)
async def redeem(
    customer_id: str,
    body: RedemptionIn,
    rt: Rt,
    response: Response,
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=200)],
) -> dict[str, Any]:
    """Redeem one reward. Retrying with the same Idempotency-Key returns the first result."""

    async def work(unit: LoyaltyUnit) -> service.RedemptionResult:
        return await service.redeem_reward(unit, customer_id, body.reward_id, idempotency_key)

    try:
        result = await rt.transaction(work)
    except service.RedemptionRefused as refused:
        raise HTTPException(refused.status, refused.detail) from refused
    if result.status != status.HTTP_201_CREATED:
        raise HTTPException(result.status, result.body["detail"])
    response.status_code = result.status
    return result.body


# --- rules -------------------------------------------------------------------------------------


class TierIn(BaseModel):
    name: str = Field(min_length=1, max_length=40)
    threshold: int = Field(ge=0, description="Purchase points in the last 365 days to hold this tier.")
    multiplier: Decimal = Field(gt=0, le=10, description="Purchase points multiplier while held.")


class RulesIn(BaseModel):
    rates: dict[Currency, Annotated[Decimal, Field(ge=0, le=1000)]] = Field(
        description="Points per unit of each currency; a currency not listed earns nothing."
    )
    tiers: list[TierIn] = Field(min_length=1, max_length=20)
    review_points: int = Field(50, ge=0, le=100_000)
    review_min_chars: int = Field(20, ge=0, le=5000)
    survey_points: int = Field(20, ge=0, le=100_000)
    referrer_points: int = Field(500, ge=0, le=100_000)
    referee_points: int = Field(250, ge=0, le=100_000)
    two_sided_referrals: bool = True
    points_lifetime_days: int = Field(365, ge=1, le=3650)
    tier_window_days: int = Field(365, ge=1, le=3650)

    @field_validator("tiers")
    @classmethod
    def tiers_climb_from_zero(cls, tiers: list[TierIn]) -> list[TierIn]:
        thresholds = [t.threshold for t in tiers]
        if thresholds[0] != 0 or thresholds != sorted(set(thresholds)):
            raise ValueError("tiers must start at threshold 0 and climb strictly")
        if len({t.name for t in tiers}) != len(tiers):
            raise ValueError("tier names must be unique")
        return tiers

    def to_rules(self) -> Rules:
        return Rules(
            rates=dict(self.rates),
            tiers=tuple(Tier(t.name, t.threshold, t.multiplier) for t in self.tiers),
            **self.model_dump(exclude={"rates", "tiers"}),
        )


@api.get("/rules")
async def get_rules(rt: Rt) -> dict[str, Any]:
    return rules_to_doc((await service.PROGRAM.get(rt.db)).rules)


@api.put("/rules")
async def put_rules(body: RulesIn, rt: Rt) -> dict[str, Any]:
    doc = rules_to_doc(body.to_rules())
    await rt.db[CONFIG].replace_one({"_id": "rules"}, {"_id": "rules", **doc}, upsert=True)
    service.PROGRAM.clear()
    return rules_to_doc(rules_from_doc(doc))


# --- campaigns -----------------------------------------------------------------------------------


class CampaignIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    multiplier: Decimal = Field(gt=1, le=10, description="×2 doubles the points of what it covers.")
    categories: list[Annotated[str, Field(max_length=200)]] = Field(default_factory=list, max_length=200)
    skus: list[Annotated[str, Field(max_length=128)]] = Field(default_factory=list, max_length=1000)
    bonus_lifetime_days: int = Field(30, ge=1, le=3650, description="Days the bonus part lives.")

    @field_validator("ends_at")
    @classmethod
    def ends_after_it_starts(cls, ends_at: datetime, info: ValidationInfo) -> datetime:
        starts_at = info.data.get("starts_at")
        if starts_at is not None and ends_at <= starts_at:
            raise ValueError("ends_at must be after starts_at")
        return ends_at


@api.get("/campaigns")
async def list_campaigns(rt: Rt) -> list[dict[str, Any]]:
    return [_public(doc) async for doc in rt.db[CAMPAIGNS].find({}).sort("starts_at", 1)]


@api.post("/campaigns", status_code=status.HTTP_201_CREATED)
async def create_campaign(body: CampaignIn, rt: Rt) -> dict[str, Any]:
    campaign_id = f"cmp_{uuid.uuid4().hex[:12]}"
    doc = {
        "_id": campaign_id,
        "campaign_id": campaign_id,
        **body.model_dump(mode="python", exclude={"multiplier"}),
        "multiplier": str(body.multiplier),
        "active": True,
    }
    await rt.db[CAMPAIGNS].insert_one(doc)
    service.PROGRAM.clear()
    return _public(doc)


@api.delete("/campaigns/{campaign_id}")
async def end_campaign(campaign_id: str, rt: Rt) -> dict[str, Any]:
    """Stop a campaign for orders from now on; points already earned stay."""
    ended = await _deactivate(rt, CAMPAIGNS, "campaign_id", campaign_id)
    service.PROGRAM.clear()
    return ended


# --- rewards ----------------------------------------------------------------------------------------


class RewardIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    points_price: int = Field(gt=0, le=10_000_000, strict=True, description="Points a member spends on it.")
    description: str | None = Field(None, max_length=2000)


@api.get("/rewards")
async def list_rewards(rt: Rt) -> list[dict[str, Any]]:
    return [_public(doc) async for doc in rt.db[REWARDS].find({"active": True}).sort("points_price", 1)]


@api.post("/rewards", status_code=status.HTTP_201_CREATED)
async def create_reward(body: RewardIn, rt: Rt) -> dict[str, Any]:
    reward_id = f"rw_{uuid.uuid4().hex[:12]}"
    doc = {"_id": reward_id, "reward_id": reward_id, **body.model_dump(), "active": True}
    await rt.db[REWARDS].insert_one(doc)
    return _public(doc)


@api.delete("/rewards/{reward_id}")
async def retire_reward(reward_id: str, rt: Rt) -> dict[str, Any]:
    """Take a reward out of the catalogue; redemptions already made stay."""
    return await _deactivate(rt, REWARDS, "reward_id", reward_id)


async def _deactivate(rt: Runtime, collection: str, field: str, key: str) -> dict[str, Any]:
    done = await rt.db[collection].find_one_and_update({"_id": key}, {"$set": {"active": False}}, return_document=True)
    if done is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{field}: no such {collection[:-1]} {key!r}")
    return _public(done)


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "_id"}
