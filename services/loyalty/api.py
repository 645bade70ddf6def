"""HTTP API of loyalty: members, redemptions, rules, campaigns, rewards.

Routes turn a request into a use case call and its answer or refusal into HTTP; the status codes live here.
"""

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import pycountry
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Response, status
from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema

from services.loyalty import service, store
from services.loyalty.domain import (
    MAX_ADJUSTMENT,
    MAX_NOTE_CHARS,
    Adjusted,
    Campaign,
    EmptyCampaignWindow,
    EntryKind,
    IdempotencyKeyReused,
    NoAdjustment,
    NotEnoughPoints,
    Reason,
    RedemptionOutcome,
    Reward,
    Rules,
    Tier,
    TiersOutOfOrder,
    UnknownCampaign,
    UnknownMember,
    UnknownReward,
    points_by_month,
)
from services.loyalty.settings import LoyaltyUnit
from services.loyalty.store import MemberRecords, RecordedEntry
from shared.http import ADMIN_ONLY, NOTHING_HELD, error, field_error, nothing_held
from shared.service import Runtime, runtime
from shared.types import Currency, Timestamp, WholeFloats

api = APIRouter(tags=["loyalty"])
Rt = Annotated[Runtime, Depends(runtime)]
NO_MEMBER = error("No member with this customer id.")
NO_REWARD = error("No active reward with this id.")
NO_CAMPAIGN = error("No campaign with this id.")
BAD_BODY = error("The body is not JSON.")


def _written_as(pattern: str, minimum: float, maximum: float, *, above: bool) -> Any:
    """A decimal within bounds, sent as a number or as a plain decimal string the pattern spells out."""
    written = re.compile(pattern)

    def plain(value: Any) -> Any:
        # Decimal() would also read "", " 2", "1e1" or "NaN": a string comes written like 1.5.
        if isinstance(value, str) and not written.fullmatch(value):
            raise ValueError(f"a decimal written like 1.5, from {minimum} to {maximum}, not {value!r}")
        return value

    low = {"exclusiveMinimum": minimum} if above else {"minimum": minimum}
    return (
        BeforeValidator(plain),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "number", **low, "maximum": maximum},
                    {"type": "string", "pattern": f"^({pattern})$"},
                ]
            }
        ),
    )


# The string patterns admit exactly the bounds of the number: (0, 10], (1, 10] and [0, 1000].
_TIER_MULTIPLIER = _written_as(r"10(\.0+)?|[1-9](\.[0-9]+)?|0\.[0-9]*[1-9][0-9]*", 0, 10, above=True)
_CAMPAIGN_MULTIPLIER = _written_as(r"10(\.0+)?|[2-9](\.[0-9]+)?|1\.[0-9]*[1-9][0-9]*", 1, 10, above=True)
_RATE = _written_as(r"1000(\.0+)?|(0|[1-9][0-9]{0,2})(\.[0-9]+)?", 0, 1000, above=False)
TierMultiplier = Annotated[Decimal, Field(gt=0, le=10), *_TIER_MULTIPLIER]
CampaignMultiplier = Annotated[Decimal, Field(gt=1, le=10), *_CAMPAIGN_MULTIPLIER]
Rate = Annotated[Decimal, Field(ge=0, le=1000), *_RATE]
# The schema names every currency the Currency type knows, so a code it refuses is schema-invalid too.
_CURRENCIES = sorted(currency.alpha_3 for currency in pycountry.currencies)
PointsPrice = Annotated[int, Field(gt=0, le=10_000_000, strict=True), WholeFloats]
Points = Annotated[int, Field(ge=0, le=100_000, strict=True), WholeFloats]
Days = Annotated[int, Field(ge=1, le=3650, strict=True), WholeFloats]
Threshold = Annotated[int, Field(ge=0, le=1_000_000_000_000, strict=True), WholeFloats]


# --- members -------------------------------------------------------------------------------


class NextTier(BaseModel):
    name: str
    points_needed: int


class ExpiringPoints(BaseModel):
    points: int
    expires_at: datetime
    key: str


class EntryOut(BaseModel):
    """A ledger entry with its reason and the event type that caused it."""

    kind: EntryKind
    reason: Reason
    points: int
    balance_after: int
    order_id: str | None
    expires_at: datetime | None
    at: datetime
    entry_id: str
    cause: str | None


def _entry(entry: RecordedEntry) -> EntryOut:
    return EntryOut(
        kind=entry.kind,
        reason=entry.reason,
        points=entry.points,
        balance_after=entry.balance_after,
        order_id=entry.order_id,
        expires_at=entry.expires_at,
        at=entry.at,
        entry_id=entry.entry_id,
        cause=entry.cause_type,
    )


class MemberOut(BaseModel):
    customer_id: str
    balance: int
    tier: str
    tier_points: int
    next_tier: NextTier | None
    expiring_in_30_days: int
    expiring: list[ExpiringPoints]
    recent_entries: list[EntryOut]


class MemberSummaryOut(BaseModel):
    customer_id: str
    tier: str
    balance: int
    tier_points: int = Field(description="Purchase points in the tier window (what the tier is decided on).")


class MembersPage(BaseModel):
    members: list[MemberSummaryOut]
    limit: int
    offset: int


@api.get("/members")
async def list_members(
    rt: Rt,
    tier: Annotated[str | None, Query(min_length=1, max_length=40, description="Only members of this tier.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> MembersPage:
    """Members of one tier (or all, by tier), most points toward their tier first (the console's lists by tier)."""
    found = await store.members_of_tier(rt, tier, limit=limit, offset=offset)
    members = [MemberSummaryOut(**vars(m) | {"tier_points": m.qualifying_points}) for m in found]
    return MembersPage(members=members, limit=limit, offset=offset)


class TierSizes(BaseModel):
    tiers: dict[str, int] = Field(description="Members per tier.")


@api.get("/reports/tiers")
async def tier_report(rt: Rt) -> TierSizes:
    """How many members hold each tier."""
    return TierSizes(tiers=await store.tier_sizes(rt))


class PointsMonthOut(BaseModel):
    month: str = Field(examples=["2026-03"])
    issued: int = Field(description="Points earned in the month (purchases, reviews, surveys, referrals).")
    taken_back: int = Field(description="Points taken back for refunds and cancellations.")
    corrected: int = Field(description="Corrections of earlier entries, with their sign.")
    redeemed: int = Field(description="Points spent on rewards.")
    expired: int = Field(description="Points that reached the end of their lifetime unspent.")
    outstanding: int = Field(description="Points held by members at the end of the month.")


class PointsReport(BaseModel):
    months: list[PointsMonthOut] = Field(description="Every month with a ledger entry, oldest first.")


@api.get("/reports/points")
async def points_report(rt: Rt) -> PointsReport:
    """Points issued, taken back, redeemed and expired per month, and outstanding at each month's end."""
    months = points_by_month(await store.points_sums(rt))
    return PointsReport(months=[PointsMonthOut(**vars(month)) for month in months])


@api.get("/members/{customer_id}", responses={404: NO_MEMBER})
async def get_member(customer_id: str, rt: Rt) -> MemberOut:
    """Balance, tier and progress, points expiring in the next 30 days, and the recent entries with reasons."""

    async def read(unit: LoyaltyUnit) -> service.MemberPage:
        return await service.member_page(unit, customer_id)

    try:
        page = await rt.transaction(read)
    except UnknownMember as unknown:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"customer_id: {unknown}") from unknown
    standing = page.standing
    upcoming = standing.next_tier
    return MemberOut(
        customer_id=customer_id,
        balance=standing.balance,
        tier=standing.tier.name,
        tier_points=standing.tier_points,
        next_tier=NextTier(name=upcoming[0].name, points_needed=upcoming[1]) if upcoming else None,
        expiring_in_30_days=standing.points_expiring_soon,
        expiring=[
            ExpiringPoints(points=lot.remaining, expires_at=lot.expires_at, key=lot.key)
            for lot in standing.expiring_soon
        ],
        recent_entries=[_entry(entry) for entry in page.recent_entries],
    )


class RedemptionIn(BaseModel):
    reward_id: str = Field(min_length=1, max_length=128, description="The reward to take.")


class RedemptionOut(BaseModel):
    """A redemption made: the points spent and the balance after."""

    redemption_id: str
    customer_id: str
    reward_id: str
    points: int
    balance: int


@api.post(
    "/members/{customer_id}/redemptions",
    status_code=status.HTTP_201_CREATED,
    responses={
        400: BAD_BODY,
        404: NO_REWARD,
        409: error("The balance does not cover the price, or the Idempotency-Key was used for another reward."),
    },
)
async def redeem(
    customer_id: str,
    body: RedemptionIn,
    rt: Rt,
    response: Response,
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=200)],
) -> RedemptionOut:
    """Redeem one reward. Retrying with the same Idempotency-Key returns the first result."""

    async def work(unit: LoyaltyUnit) -> RedemptionOutcome:
        return await service.redeem_reward(unit, customer_id, body.reward_id, idempotency_key)

    try:
        outcome = await rt.transaction(work)
    except UnknownReward as unknown:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"reward_id: {unknown}") from unknown
    except IdempotencyKeyReused as reused:
        raise HTTPException(status.HTTP_409_CONFLICT, f"Idempotency-Key: {reused}") from reused
    if isinstance(outcome, NotEnoughPoints):
        detail = f"balance {outcome.balance} does not cover {outcome.points_price} points for {outcome.reward_name!r}"
        raise HTTPException(status.HTTP_409_CONFLICT, detail)
    response.status_code = status.HTTP_201_CREATED
    return RedemptionOut(
        redemption_id=outcome.redemption_id,
        customer_id=outcome.customer_id,
        reward_id=outcome.reward_id,
        points=outcome.points,
        balance=outcome.balance,
    )


# Points given (> 0) or taken (< 0) by hand: never 0, which the schema says too.
AdjustedPoints = Annotated[
    int,
    Field(ge=-MAX_ADJUSTMENT, le=MAX_ADJUSTMENT, strict=True, json_schema_extra={"not": {"const": 0}}),
    WholeFloats,
]


class AdjustmentIn(BaseModel):
    points: AdjustedPoints = Field(description="Points to give (positive) or take (negative); not 0.")
    reason: str = Field(
        min_length=1,
        max_length=MAX_NOTE_CHARS,
        pattern=r"[^ \t\r\n]",  # something besides domain.BLANK, the same in every regex engine
        description="Why, in the owner's words (kept with the member's history; erased with the customer).",
    )


class AdjustmentOut(BaseModel):
    """An adjustment made: the points given (or taken, negative) and the balance after."""

    adjustment_id: str
    customer_id: str
    points: int
    reason: str
    balance: int


@api.post(
    "/members/{customer_id}/adjustments",
    status_code=status.HTTP_201_CREATED,
    responses={
        400: BAD_BODY,
        404: NO_MEMBER,
        409: error("The Idempotency-Key was used for another adjustment or for a redemption."),
    },
)
async def adjust_points(
    customer_id: str,
    body: AdjustmentIn,
    rt: Rt,
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=200)],
) -> AdjustmentOut:
    """Give or take points by hand with the owner's reason (the balance may go below zero; no tier counts it).
    Retrying with the same Idempotency-Key returns the first result."""

    async def work(unit: LoyaltyUnit) -> Adjusted:
        return await service.adjust_points(unit, customer_id, body.points, body.reason, idempotency_key)

    try:
        adjusted = await rt.transaction(work)
    except UnknownMember as unknown:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"customer_id: {unknown}") from unknown
    except IdempotencyKeyReused as reused:
        raise HTTPException(status.HTTP_409_CONFLICT, f"Idempotency-Key: {reused}") from reused
    except NoAdjustment as refused:
        raise field_error(refused.field, str(refused)) from refused
    return AdjustmentOut(
        adjustment_id=adjusted.adjustment_id,
        customer_id=adjusted.customer_id,
        points=adjusted.points,
        reason=adjusted.note,
        balance=adjusted.balance,
    )


# --- rules -------------------------------------------------------------------------------------


class TierIn(BaseModel):
    name: str = Field(min_length=1, max_length=40)
    threshold: Threshold = Field(description="Purchase points in the last 365 days to hold this tier.")
    multiplier: TierMultiplier = Field(description="Purchase points multiplier while held.")


class RulesIn(BaseModel):
    rates: dict[Currency, Rate] = Field(
        description="Points per unit of each currency; a currency not listed earns nothing.",
        json_schema_extra={"propertyNames": {"enum": _CURRENCIES, "description": "ISO 4217 code."}},
    )
    tiers: list[TierIn] = Field(min_length=1, max_length=20)
    review_points: Points = 50
    review_min_chars: Annotated[int, Field(ge=0, le=5000, strict=True), WholeFloats] = 20
    survey_points: Points = 20
    referrer_points: Points = 500
    referee_points: Points = 250
    two_sided_referrals: bool = Field(True, strict=True)
    points_lifetime_days: Days = 365
    tier_window_days: Days = 365

    def to_rules(self) -> Rules:
        return Rules(
            rates=dict(self.rates),
            tiers=tuple(Tier(t.name, t.threshold, t.multiplier) for t in self.tiers),
            **self.model_dump(exclude={"rates", "tiers"}),
        )


def _rules_body(rules: Rules) -> dict[str, Any]:
    """The rules as GET and PUT /rules answer them: money and multipliers as decimal strings."""
    return RulesIn(
        rates=rules.rates,
        tiers=[TierIn(name=t.name, threshold=t.threshold, multiplier=t.multiplier) for t in rules.tiers],
        review_points=rules.review_points,
        review_min_chars=rules.review_min_chars,
        survey_points=rules.survey_points,
        referrer_points=rules.referrer_points,
        referee_points=rules.referee_points,
        two_sided_referrals=rules.two_sided_referrals,
        points_lifetime_days=rules.points_lifetime_days,
        tier_window_days=rules.tier_window_days,
    ).model_dump(mode="json")


@api.get("/rules")
async def get_rules(rt: Rt) -> dict[str, Any]:
    return _rules_body(await rt.transaction(service.current_rules))


@api.put(
    "/rules",
    responses={400: BAD_BODY, 409: error("The tiers do not climb from threshold 0, or two share a name.")},
)
async def put_rules(body: RulesIn, rt: Rt) -> dict[str, Any]:
    rules = body.to_rules()

    async def work(unit: LoyaltyUnit) -> Rules:
        return await service.set_rules(unit, rules)

    try:
        return _rules_body(await rt.transaction(work))
    except TiersOutOfOrder as disorder:
        # One tier against another is beyond what the schema can say, so it is no 422.
        raise HTTPException(status.HTTP_409_CONFLICT, f"tiers: {disorder}") from disorder


# --- campaigns -----------------------------------------------------------------------------------


class CampaignIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    starts_at: Timestamp
    ends_at: Timestamp
    multiplier: CampaignMultiplier = Field(description="×2 doubles the points of what it covers.")
    categories: list[Annotated[str, Field(max_length=200)]] = Field(default_factory=list, max_length=200)
    skus: list[Annotated[str, Field(max_length=128)]] = Field(default_factory=list, max_length=1000)
    bonus_lifetime_days: Days = Field(30, description="Days the bonus part lives.")

    def to_campaign(self) -> Campaign:
        return Campaign(
            campaign_id="",  # the use case names it
            name=self.name,
            starts_at=self.starts_at,
            ends_at=self.ends_at,
            multiplier=self.multiplier,
            categories=frozenset(self.categories),
            skus=frozenset(self.skus),
            bonus_lifetime_days=self.bonus_lifetime_days,
        )


class CampaignOut(BaseModel):
    """A campaign; the multiplier is a decimal string."""

    campaign_id: str
    name: str
    starts_at: datetime
    ends_at: datetime
    categories: list[str]
    skus: list[str]
    bonus_lifetime_days: int
    multiplier: str
    active: bool


def _campaign_body(campaign: Campaign) -> CampaignOut:
    return CampaignOut(
        campaign_id=campaign.campaign_id,
        name=campaign.name,
        starts_at=campaign.starts_at,
        ends_at=campaign.ends_at,
        categories=sorted(campaign.categories),
        skus=sorted(campaign.skus),
        bonus_lifetime_days=campaign.bonus_lifetime_days,
        multiplier=str(campaign.multiplier),
        active=campaign.active,
    )


@api.get("/campaigns")
async def list_campaigns(rt: Rt) -> list[CampaignOut]:
    return [_campaign_body(campaign) for campaign in await rt.transaction(service.campaigns)]


@api.post(
    "/campaigns",
    status_code=status.HTTP_201_CREATED,
    responses={400: BAD_BODY, 409: error("The campaign's window is empty: ends_at is not after starts_at.")},
)
async def create_campaign(body: CampaignIn, rt: Rt) -> CampaignOut:
    async def work(unit: LoyaltyUnit) -> Campaign:
        return await service.start_campaign(unit, body.to_campaign())

    try:
        return _campaign_body(await rt.transaction(work))
    except EmptyCampaignWindow as empty:
        # One field against another is beyond what the schema can say, so it is no 422.
        raise HTTPException(status.HTTP_409_CONFLICT, f"ends_at: {empty}") from empty


@api.delete("/campaigns/{campaign_id}", responses={404: NO_CAMPAIGN})
async def end_campaign(campaign_id: str, rt: Rt) -> CampaignOut:
    """Stop a campaign for orders from now on; points already earned stay."""

    async def work(unit: LoyaltyUnit) -> Campaign:
        return await service.end_campaign(unit, campaign_id)

    try:
        return _campaign_body(await rt.transaction(work))
    except UnknownCampaign as unknown:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"campaign_id: {unknown}") from unknown


# --- rewards ----------------------------------------------------------------------------------------


class RewardIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    points_price: PointsPrice = Field(description="Points a member spends on it.")
    description: str | None = Field(None, max_length=2000)


class RewardOut(BaseModel):
    reward_id: str
    name: str
    points_price: int
    description: str | None
    active: bool


def _reward_body(reward: Reward) -> RewardOut:
    return RewardOut(
        reward_id=reward.reward_id,
        name=reward.name,
        points_price=reward.points_price,
        description=reward.description,
        active=reward.active,
    )


@api.get("/rewards")
async def list_rewards(rt: Rt) -> list[RewardOut]:
    return [_reward_body(reward) for reward in await rt.transaction(service.rewards)]


@api.post("/rewards", status_code=status.HTTP_201_CREATED, responses={400: BAD_BODY})
async def create_reward(body: RewardIn, rt: Rt) -> RewardOut:
    async def work(unit: LoyaltyUnit) -> Reward:
        return await service.add_reward(unit, body.name, body.points_price, body.description)

    return _reward_body(await rt.transaction(work))


@api.delete("/rewards/{reward_id}", responses={404: NO_REWARD})
async def retire_reward(reward_id: str, rt: Rt) -> RewardOut:
    """Take a reward out of the catalogue; redemptions already made stay."""

    async def work(unit: LoyaltyUnit) -> Reward:
        return await service.retire_reward(unit, reward_id)

    try:
        return _reward_body(await rt.transaction(work))
    except UnknownReward as unknown:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"reward_id: no such reward {unknown.reward_id!r}") from unknown


# --- a customer's data (GDPR Art. 15 and 20) ---------------------------------------------------------


class MemberStanding(BaseModel):
    balance: int
    tier: str
    tier_points: int = Field(description="Purchase points in the tier window, as of the last change.")


class PurchaseOut(BaseModel):
    order_id: str
    placed_at: datetime
    currency: str
    total: str


class PointsRefundOut(BaseModel):
    refund_id: str
    order_id: str
    amount: str
    refunded_at: datetime


class ActivityOut(BaseModel):
    """Points earned for a review, a survey answer or a referral."""

    reason: Reason
    points: int
    at: datetime
    order_id: str | None


class RedemptionRecord(BaseModel):
    redemption_id: str
    reward_id: str
    points: int
    at: datetime


class AdjustmentRecord(BaseModel):
    """Points the owner gave (or took, negative) by hand, in their words."""

    adjustment_id: str
    points: int
    reason: str
    at: datetime


class LoyaltyExport(BaseModel):
    """Everything loyalty holds on the customer: the member, the whole ledger, the history it was worked out from."""

    customer_id: str
    member: MemberStanding | None
    ledger: list[EntryOut] = Field(description="Every entry, oldest first.")
    purchases: list[PurchaseOut]
    refunds: list[PointsRefundOut]
    activities: list[ActivityOut]
    redemptions: list[RedemptionRecord]
    adjustments: list[AdjustmentRecord]


@api.get("/customers/{customer_id}/export", openapi_extra=ADMIN_ONLY, responses={404: NOTHING_HELD})
async def export_customer(customer_id: str, rt: Rt) -> LoyaltyExport:
    """Everything loyalty holds on the customer, for their copy of their data (read in one transaction, audited)."""

    async def read(unit: LoyaltyUnit) -> tuple[MemberRecords, bool]:
        return await service.member_records(unit, customer_id)

    records, erased = await rt.transaction(read)
    member, facts = records.member, records.facts
    if member is None and not records.ledger:
        raise nothing_held(customer_id, erased=erased)
    return LoyaltyExport(
        customer_id=customer_id,
        member=None
        if member is None
        else MemberStanding(balance=member.balance, tier=member.tier, tier_points=member.qualifying_points),
        ledger=[_entry(entry) for entry in records.ledger],
        purchases=[
            PurchaseOut(order_id=p.order_id, placed_at=p.placed_at, currency=p.currency, total=str(p.total))
            for p in facts.purchases
        ],
        refunds=[
            PointsRefundOut(refund_id=r.refund_id, order_id=r.order_id, amount=str(r.amount), refunded_at=r.refunded_at)
            for r in facts.refunds
        ],
        activities=[
            ActivityOut(reason=a.reason, points=a.points, at=a.at, order_id=a.order_id) for a in facts.activities
        ],
        redemptions=[
            RedemptionRecord(redemption_id=r.redemption_id, reward_id=r.reward_id, points=r.points, at=r.at)
            for r in facts.redemptions
        ],
        adjustments=[
            AdjustmentRecord(adjustment_id=a.adjustment_id, points=a.points, reason=a.note, at=a.at)
            for a in facts.adjustments
        ],
    )
