"""HTTP API of referrals: codes, what became of each code, affiliates and their commissions, the program's stats."""

from dataclasses import asdict
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field
from pymongo.errors import BulkWriteError

from services.referrals import domain, service
from services.referrals.settings import ReferralsUnit
from services.referrals.store import AFFILIATES, CODES, CONVERTED, CUSTOMERS, INVITATIONS, REFERRALS, REFUSED, code_from
from shared.mongo import as_stored
from shared.service import Runtime, runtime
from shared.types import Id

api = APIRouter(tags=["referrals"])
Rt = Annotated[Runtime, Depends(runtime)]
CustomerId = Annotated[str, Path(min_length=1, max_length=128, description="The shop's id of the customer.")]
TypedCode = Annotated[str, Path(min_length=1, max_length=200, description="A code, spelt however the customer did.")]
Limit = Annotated[int, Query(ge=1, le=500)]


# --- codes ---------------------------------------------------------------------------------------


@api.post("/referrers/{customer_id}/code")
async def issue_code(customer_id: CustomerId, rt: Rt, response: Response) -> dict[str, Any]:
    """The customer's referral code: issued now (201), or the one they already have (200)."""

    async def work(unit: ReferralsUnit) -> tuple[str, bool]:
        return await service.issue_code(unit, customer_id)

    try:
        try:
            code, issued = await rt.transaction(work)
        except BulkWriteError as error:
            if not _duplicate_key(error):
                raise
            code, issued = await rt.transaction(work)  # a concurrent request issued it first: now it is there
    except service.CustomerWasErased as erased:
        raise HTTPException(status.HTTP_409_CONFLICT, f"customer_id: {customer_id!r} was erased") from erased
    response.status_code = status.HTTP_201_CREATED if issued else status.HTTP_200_OK
    return {"customer_id": customer_id, "code": code, "issued": issued}


@api.get("/referrals/{code}")
async def get_code(code: TypedCode, rt: Rt, limit: Limit = 100) -> dict[str, Any]:
    """A code, its limits and status, its conversions and refusals (with reasons), newest orders first."""
    canonical = domain.normalize_code(code)
    found = await rt.db[CODES].find_one({"_id": canonical})
    referrals = await rt.db[REFERRALS].find({"code": canonical}, sort=[("placed_at", -1)], limit=limit).to_list()
    if found is None and not referrals:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"code: no referral code {code!r}")
    outcomes = await rt.db[REFERRALS].aggregate(
        [
            {"$match": {"code": canonical}},
            {"$group": {"_id": {"outcome": "$outcome", "reason": "$reason"}, "count": {"$sum": 1}}},
        ]
    )
    refusals = {row["_id"]["reason"]: row["count"] async for row in outcomes if row["_id"]["outcome"] == REFUSED}
    contested = await rt.db[REFERRALS].count_documents({"code": canonical, "contested": {"$ne": None}})
    return _code(found, canonical) | {
        "refusals": refusals,
        "contested": contested,
        "referrals": [_referral(r) for r in referrals],
    }


class LimitsIn(BaseModel):
    """A code's limits; a field left out stays as it is, null lifts the limit."""

    model_config = ConfigDict(extra="forbid")
    expires_at: AwareDatetime | None = Field(None, description="Orders placed after this do not convert.")
    max_conversions: int | None = Field(None, ge=1, le=10_000_000, strict=True, description="Conversions allowed.")


@api.patch("/referrals/{code}")
async def set_code_limits(code: TypedCode, body: LimitsIn, rt: Rt) -> dict[str, Any]:
    """Cap a code's conversions and/or let it expire."""
    if not body.model_fields_set:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "expires_at: give expires_at and/or max_conversions")
    limits = body.model_dump(include=body.model_fields_set)
    if limits.get("expires_at") is not None:
        limits["expires_at"] = as_stored(limits["expires_at"])
    canonical = domain.normalize_code(code)

    async def work(unit: ReferralsUnit) -> dict[str, Any] | None:
        return await service.set_code_limits(unit, canonical, limits)

    changed = await rt.transaction(work)
    if changed is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"code: no referral code {code!r}")
    return _code(changed, canonical)


@api.get("/refusals")
async def list_refusals(
    rt: Rt, reason: Annotated[str | None, Query(description="Only this reason.")] = None, limit: Limit = 100
) -> dict[str, Any]:
    """Orders whose code was refused, newest first, with the reason."""
    query: dict[str, Any] = {"outcome": REFUSED}
    if reason is not None:
        if reason not in domain.REFUSAL_REASONS:
            detail = f"reason: {reason!r} is not one of {', '.join(domain.REFUSAL_REASONS)}"
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)
        query["reason"] = reason
    found = await rt.db[REFERRALS].find(query, sort=[("placed_at", -1)], limit=limit).to_list()
    return {"refusals": [_referral(r) for r in found]}


# --- affiliates ----------------------------------------------------------------------------------------


class AffiliateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, description="The affiliate's name or business.")
    email: EmailStr = Field(description="How to reach them; their own orders under it earn nothing.")
    customer_id: Id | None = Field(None, description="Their own customer account, if any: its orders earn nothing.")
    commission_rate: Decimal | None = Field(
        None, ge=0, le=1, description="Share of an order's total, 0.10 = 10 %; default DEFAULT_COMMISSION_RATE."
    )
    expires_at: AwareDatetime | None = Field(None, description="Orders placed after this earn nothing.")
    max_conversions: int | None = Field(None, ge=1, le=10_000_000, strict=True, description="Conversions paid.")


@api.post("/affiliates", status_code=status.HTTP_201_CREATED)
async def enrol_affiliate(body: AffiliateIn, rt: Rt) -> dict[str, Any]:
    """A new affiliate with their code."""

    async def work(unit: ReferralsUnit) -> dict[str, Any]:
        return await service.enrol_affiliate(
            unit,
            name=body.name,
            email=str(body.email),
            customer_id=body.customer_id,
            commission_rate=body.commission_rate,
            expires_at=as_stored(body.expires_at) if body.expires_at is not None else None,
            max_conversions=body.max_conversions,
        )

    affiliate = await rt.transaction(work)
    code = await rt.db[CODES].find_one({"_id": affiliate["code"]})
    return _affiliate(affiliate) | {"code": _code(code, affiliate["code"])}


@api.get("/affiliates")
async def list_affiliates(rt: Rt, limit: Limit = 100) -> dict[str, Any]:
    found = await rt.db[AFFILIATES].find({}, sort=[("created_at", 1)], limit=limit).to_list()
    return {"affiliates": [_affiliate(a) for a in found]}


@api.get("/affiliates/{affiliate_id}")
async def get_affiliate(affiliate_id: str, rt: Rt) -> dict[str, Any]:
    """An affiliate, their code and what they have earned (per currency)."""
    affiliate = await _found_affiliate(rt, affiliate_id)
    code = await rt.db[CODES].find_one({"_id": affiliate["code"]})
    earned = await _commissions(rt, affiliate_id)
    return _affiliate(affiliate) | {"code": _code(code, affiliate["code"]), "totals": _totals(earned)}


@api.get("/affiliates/{affiliate_id}/commissions")
async def list_commissions(affiliate_id: str, rt: Rt, limit: Limit = 100) -> dict[str, Any]:
    """Each conversion's commission, what refunds (or a contest) clawed back and what is due; newest first."""
    await _found_affiliate(rt, affiliate_id)
    earned = await _commissions(rt, affiliate_id)
    return {
        "affiliate_id": affiliate_id,
        "totals": _totals(earned),
        "commissions": [_commission(r) for r in earned[:limit]],
    }


async def _found_affiliate(rt: Runtime, affiliate_id: str) -> dict[str, Any]:
    affiliate = await rt.db[AFFILIATES].find_one({"_id": affiliate_id})
    if affiliate is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"affiliate_id: no affiliate {affiliate_id!r}")
    return affiliate


async def _commissions(rt: Runtime, affiliate_id: str) -> list[dict[str, Any]]:
    found = rt.db[REFERRALS].find({"affiliate_id": affiliate_id, "outcome": CONVERTED}, sort=[("placed_at", -1)])
    return await found.to_list()


def _totals(conversions: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Commission earned, clawed back and due, per currency."""
    totals: dict[str, dict[str, Decimal]] = {}
    for c in conversions:
        sums = totals.setdefault(c["currency"], dict.fromkeys(("earned", "clawed_back", "due"), Decimal("0.00")))
        sums["earned"] += Decimal(c["commission"])
        sums["clawed_back"] += Decimal(c["clawed_back"])
        sums["due"] += Decimal(c["commission_due"])
    return {currency: {k: str(v) for k, v in sums.items()} for currency, sums in totals.items()}


# --- stats ------------------------------------------------------------------------------------------------


@api.get("/stats")
async def program_stats(rt: Rt) -> dict[str, Any]:
    """Invitations, codes issued and shared, conversions, conversion rate, refusals by reason, K-factor by month."""
    invitations = [doc["at"] async for doc in rt.db[INVITATIONS].find({}, {"at": 1})]
    converted = rt.db[REFERRALS].find({"outcome": CONVERTED, "program": "customer"}, {"placed_at": 1})
    conversions = [doc["placed_at"] async for doc in converted]
    by_reason = await rt.db[REFERRALS].aggregate(
        [{"$match": {"outcome": REFUSED}}, {"$group": {"_id": "$reason", "count": {"$sum": 1}}}]
    )
    refusals = {row["_id"]: row["count"] async for row in by_reason}
    customers = await rt.db[CUSTOMERS].count_documents({"first_order": {"$ne": None}})
    # A code is shared once someone other than its referrer ordered with it.
    shared = await rt.db[REFERRALS].aggregate(
        [
            {"$match": {"program": "customer", "reason": {"$ne": domain.OWN_ORDER}}},
            {"$group": {"_id": "$code"}},
            {"$count": "codes"},
        ]
    )
    codes_shared = next(iter(await shared.to_list()), {"codes": 0})["codes"]
    report = domain.program_stats(invitations, conversions, refusals, customers, codes_shared)
    contested = await rt.db[REFERRALS].aggregate(
        [{"$match": {"contested": {"$ne": None}}}, {"$group": {"_id": "$contested.reason", "count": {"$sum": 1}}}]
    )
    return asdict(report) | {
        "customers": customers,
        "codes_issued": await rt.db[CODES].count_documents({"program": "customer"}),
        "affiliate_conversions": await rt.db[REFERRALS].count_documents({"outcome": CONVERTED, "program": "affiliate"}),
        "contested": {row["_id"]: row["count"] async for row in contested},
    }


def _duplicate_key(error: BulkWriteError) -> bool:
    return any(failed.get("code") == 11000 for failed in error.details.get("writeErrors", []))


# --- views ---------------------------------------------------------------------------------------------------


def _code(doc: dict[str, Any] | None, canonical: str) -> dict[str, Any]:
    if doc is None:
        return {"code": canonical, "program": None, "status": "unknown", "conversions": 0}
    state = "revoked" if doc["revoked_at"] is not None else domain.code_status(code_from(doc), service.now())
    return {
        "code": doc["_id"],
        "program": doc["program"],
        "referrer_customer_id": doc["referrer_customer_id"],
        "affiliate_id": doc["affiliate_id"],
        "status": state,
        "created_at": doc["created_at"],
        "expires_at": doc["expires_at"],
        "max_conversions": doc["max_conversions"],
        "conversions": doc["conversions"],
    }


def _referral(doc: dict[str, Any]) -> dict[str, Any]:
    shown = (
        "referral_id",
        "code",
        "program",
        "referrer_customer_id",
        "affiliate_id",
        "referee_customer_id",
        "placed_at",
        "order_total",
        "currency",
        "outcome",
        "reason",
        "contested",
    )
    return {"order_id": doc["_id"], **{key: doc.get(key) for key in shown}}


def _commission(doc: dict[str, Any]) -> dict[str, Any]:
    shown = ("commission_rate", "commission", "clawbacks", "contest_clawback", "clawed_back", "commission_due")
    return _referral(doc) | {key: doc.get(key) for key in shown}


def _affiliate(doc: dict[str, Any]) -> dict[str, Any]:
    shown = ("name", "email", "customer_id", "commission_rate", "code", "created_at")
    return {"affiliate_id": doc["_id"], **{key: doc[key] for key in shown}}
