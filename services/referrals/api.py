"""HTTP API of referrals: codes, what became of each code, affiliates and their commissions, the program's stats."""

import re
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from pydantic import BaseModel, BeforeValidator, ConfigDict, EmailStr, Field, WithJsonSchema

from services.referrals import domain, service, store
from services.referrals.domain import (
    Affiliate,
    Code,
    CodeLimits,
    CodeStatus,
    Conversion,
    Outcome,
    Program,
    Referral,
    Refusal,
    RefusalReason,
)
from services.referrals.settings import ReferralsUnit
from shared.http import ADMIN_ONLY, NOTHING_HELD, error, field_error, nothing_held
from shared.service import Runtime, runtime
from shared.types import Id, Timestamp, WholeFloats

api = APIRouter(tags=["referrals"])
Rt = Annotated[Runtime, Depends(runtime)]
CustomerId = Annotated[str, Path(min_length=1, max_length=128, description="The shop's id of the customer.")]
TypedCode = Annotated[str, Path(min_length=1, max_length=200, description="A code, spelt however the customer did.")]
Limit = Annotated[int, Query(ge=1, le=500)]
NO_CODE = error("No referral code is known under this spelling.")
NO_AFFILIATE = error("No affiliate with this id.")
BAD_BODY = error("The body is not UTF-8 text.")


MaxConversions = Annotated[int, Field(ge=1, le=10_000_000, strict=True), WholeFloats]


# --- what the API answers ------------------------------------------------------------------------


class CodeOut(BaseModel):
    """A code, its limits and status; a code nobody was given shows only as `unknown`."""

    code: str
    program: Program | None
    referrer_customer_id: str | None = None
    affiliate_id: str | None = None
    status: CodeStatus | Literal["unknown"]
    created_at: datetime | None = None
    expires_at: datetime | None = None
    max_conversions: int | None = None
    conversions: int


class ContestOut(BaseModel):
    reason: RefusalReason
    order_id: str
    at: datetime


class ReferralOut(BaseModel):
    """An order that carried a code, and what was decided on it; amounts are decimal strings."""

    order_id: str
    referral_id: str
    code: str
    program: Program | None
    referrer_customer_id: str | None
    affiliate_id: str | None
    referee_customer_id: str
    placed_at: datetime
    order_total: str
    currency: str
    outcome: Outcome
    reason: RefusalReason | None
    contested: ContestOut | None


class Clawback(BaseModel):
    refund_id: str
    refunded: str
    refunded_at: datetime
    clawback: str


class CommissionOut(ReferralOut):
    """A conversion with its commission; the commission fields are null when the code earns none."""

    commission_rate: str | None
    commission: str | None
    clawbacks: list[Clawback] | None
    contest_clawback: str | None
    clawed_back: str | None
    commission_due: str | None


class CodeIssued(BaseModel):
    customer_id: str
    code: str
    issued: bool = Field(description="Issued now (201), or the one they already had (200).")


class CodePage(CodeOut):
    refusals: dict[str, int] = Field(description="Refused orders by reason.")
    contested: int
    referrals: list[ReferralOut]


class Refusals(BaseModel):
    refusals: list[ReferralOut]


class Totals(BaseModel):
    earned: str
    clawed_back: str
    due: str


class AffiliateFields(BaseModel):
    affiliate_id: str
    name: str
    email: str
    customer_id: str | None
    commission_rate: str | None = Field(description="Null: DEFAULT_COMMISSION_RATE applies.")
    created_at: datetime


class AffiliateOut(AffiliateFields):
    code: str


class Affiliates(BaseModel):
    affiliates: list[AffiliateOut]


class EnrolledAffiliate(AffiliateFields):
    code: CodeOut


class AffiliateAccount(EnrolledAffiliate):
    totals: dict[str, Totals] = Field(description="Commission by currency.")


class Commissions(BaseModel):
    affiliate_id: str
    totals: dict[str, Totals]
    commissions: list[CommissionOut]


class MonthStats(BaseModel):
    month: str = Field(examples=["2026-11"])
    invitations: int
    conversions: int
    conversion_rate: Decimal | None
    k_factor: Decimal | None


class ProgramStats(BaseModel):
    invitations: int
    codes_shared: int
    conversions: int
    conversion_rate: Decimal | None = Field(description="Conversions per invitation.")
    invitations_per_customer: Decimal | None
    k_factor: Decimal | None = Field(description="Invitations per customer × conversion rate.")
    refusals: dict[str, int]
    months: list[MonthStats]
    customers: int
    codes_issued: int
    affiliate_conversions: int
    contested: dict[str, int]


# --- codes ---------------------------------------------------------------------------------------


@api.post(
    "/referrers/{customer_id}/code",
    responses={
        200: {"description": "The code the customer already has."},
        201: {"model": CodeIssued, "description": "A code issued now."},
        409: error("The customer was erased."),
    },
)
async def issue_code(customer_id: CustomerId, rt: Rt, response: Response) -> CodeIssued:
    """The customer's referral code: issued now (201), or the one they already have (200)."""

    async def work(unit: ReferralsUnit) -> tuple[str, bool]:
        return await service.issue_code(unit, customer_id)

    try:
        # A concurrent request may issue it first: then the second run finds it.
        code, issued = await store.once_more_if_raced(lambda: rt.transaction(work))
    except domain.CustomerWasErased as erased:
        raise HTTPException(status.HTTP_409_CONFLICT, f"customer_id: {customer_id!r} was erased") from erased
    response.status_code = status.HTTP_201_CREATED if issued else status.HTTP_200_OK
    return CodeIssued(customer_id=customer_id, code=code, issued=issued)


@api.get("/referrals/{code}", responses={404: NO_CODE})
async def get_code(code: TypedCode, rt: Rt, limit: Limit = 100) -> CodePage:
    """A code, its limits and status, its conversions and refusals (with reasons), newest orders first."""
    canonical = domain.normalize_code(code)

    async def read(unit: ReferralsUnit) -> tuple[Code | None, list[Referral], dict[str, int], int]:
        return (
            await store.find_code(unit, canonical),
            await store.referrals_of_code(unit, canonical, limit),
            await store.refusals_of_code(unit, canonical),
            await store.contested_of_code(unit, canonical),
        )

    found, referrals, refusals, contested = await rt.transaction(read)
    if found is None and not referrals:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"code: no referral code {code!r}")
    return CodePage(
        **_code(found, canonical, rt.now()).model_dump(),
        refusals=refusals,
        contested=contested,
        referrals=[_referral(r) for r in referrals],
    )


class LimitsIn(BaseModel):
    """A code's limits; a field left out stays as it is, null lifts the limit."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})
    expires_at: Timestamp | None = Field(None, description="Orders placed after this do not convert.")
    max_conversions: MaxConversions | None = Field(None, description="Conversions allowed.")


@api.patch("/referrals/{code}", responses={400: BAD_BODY, 404: NO_CODE})
async def set_code_limits(code: TypedCode, body: LimitsIn, rt: Rt) -> CodeOut:
    """Cap a code's conversions and/or let it expire."""
    if not body.model_fields_set:
        raise field_error("expires_at", "give expires_at and/or max_conversions", {})
    limits = CodeLimits()
    if "expires_at" in body.model_fields_set:
        limits["expires_at"] = body.expires_at
    if "max_conversions" in body.model_fields_set:
        limits["max_conversions"] = body.max_conversions
    canonical = domain.normalize_code(code)

    async def work(unit: ReferralsUnit) -> Code:
        return await service.set_code_limits(unit, canonical, limits)

    try:
        changed = await rt.transaction(work)
    except domain.NoSuchCode as unknown:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"code: no referral code {code!r}") from unknown
    return _code(changed, canonical, rt.now())


@api.get("/refusals")
async def list_refusals(
    rt: Rt, reason: Annotated[RefusalReason | None, Query(description="Only this reason.")] = None, limit: Limit = 100
) -> Refusals:
    """Orders whose code was refused, newest first, with the reason."""

    async def read(unit: ReferralsUnit) -> list[Refusal]:
        return await store.refusals(unit, reason, limit)

    return Refusals(refusals=[_referral(r) for r in await rt.transaction(read)])


# --- affiliates ----------------------------------------------------------------------------------------


_WRITTEN_RATE = re.compile(r"(0(\.[0-9]+)?|1(\.0+)?)")


def _written_rate(value: Any) -> Any:
    # Decimal() would also read "1e-1", " .5" or "NaN": a rate comes as a number, or written as 0.10.
    if isinstance(value, str) and not _WRITTEN_RATE.fullmatch(value):
        raise ValueError(f"a share from 0 to 1 written like 0.10, not {value!r}")
    return value


Rate = Annotated[
    Decimal,
    Field(ge=0, le=1),
    BeforeValidator(_written_rate),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 1},
                {"type": "string", "pattern": f"^{_WRITTEN_RATE.pattern}$"},
            ]
        }
    ),
]


# Mail can reach the address: its domain ends in a top-level domain of letters that is not a special-use name.
Reachable = Annotated[
    EmailStr,
    WithJsonSchema(
        {
            "type": "string",
            "format": "email",
            "maxLength": 254,
            "pattern": r"\.(?!(arpa|invalid|local|localhost|onion|test)$)[^.@]*[A-Za-z]$",
        }
    ),
]


class AffiliateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, description="The affiliate's name or business.")
    email: Reachable = Field(description="How to reach them; their own orders under it earn nothing.")
    customer_id: Id | None = Field(None, description="Their own customer account, if any: its orders earn nothing.")
    commission_rate: Rate | None = Field(
        None, description="Share of an order's total, 0.10 = 10 %; default DEFAULT_COMMISSION_RATE."
    )
    expires_at: Timestamp | None = Field(None, description="Orders placed after this earn nothing.")
    max_conversions: MaxConversions | None = Field(None, description="Conversions paid.")


@api.post("/affiliates", status_code=status.HTTP_201_CREATED, responses={400: BAD_BODY})
async def enrol_affiliate(body: AffiliateIn, rt: Rt) -> EnrolledAffiliate:
    """A new affiliate with their code."""

    async def work(unit: ReferralsUnit) -> domain.Enrolled:
        return await service.enrol_affiliate(
            unit,
            name=body.name,
            email=str(body.email),
            customer_id=body.customer_id,
            commission_rate=body.commission_rate,
            expires_at=body.expires_at,
            max_conversions=body.max_conversions,
        )

    enrolled = await rt.transaction(work)
    return EnrolledAffiliate(
        **_affiliate_fields(enrolled.affiliate), code=_code(enrolled.code, enrolled.code.code, rt.now())
    )


@api.get("/affiliates")
async def list_affiliates(rt: Rt, limit: Limit = 100) -> Affiliates:
    async def read(unit: ReferralsUnit) -> list[Affiliate]:
        return await store.affiliates(unit, limit)

    return Affiliates(affiliates=[_affiliate(a) for a in await rt.transaction(read)])


@api.get("/affiliates/{affiliate_id}", responses={404: NO_AFFILIATE})
async def get_affiliate(affiliate_id: str, rt: Rt) -> AffiliateAccount:
    """An affiliate, their code and what they have earned (per currency)."""

    async def read(unit: ReferralsUnit) -> tuple[Affiliate | None, Code | None, list[Conversion]]:
        affiliate = await store.find_affiliate(unit, affiliate_id)
        if affiliate is None:
            return None, None, []
        return (
            affiliate,
            await store.find_code(unit, affiliate.code),
            await store.affiliate_conversions(unit, affiliate_id),
        )

    affiliate, code, earned = await rt.transaction(read)
    if affiliate is None:
        raise _no_affiliate(affiliate_id)
    return AffiliateAccount(
        **_affiliate_fields(affiliate), code=_code(code, affiliate.code, rt.now()), totals=_totals(earned)
    )


@api.get("/affiliates/{affiliate_id}/commissions", responses={404: NO_AFFILIATE})
async def list_commissions(affiliate_id: str, rt: Rt, limit: Limit = 100) -> Commissions:
    """Each conversion's commission, what refunds (or a contest) clawed back and what is due; newest first."""

    async def read(unit: ReferralsUnit) -> list[Conversion] | None:
        if await store.find_affiliate(unit, affiliate_id) is None:
            return None
        return await store.affiliate_conversions(unit, affiliate_id)

    earned = await rt.transaction(read)
    if earned is None:
        raise _no_affiliate(affiliate_id)
    return Commissions(
        affiliate_id=affiliate_id, totals=_totals(earned), commissions=[_commission(c) for c in earned[:limit]]
    )


def _no_affiliate(affiliate_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"affiliate_id: no affiliate {affiliate_id!r}")


def _totals(conversions: list[Conversion]) -> dict[str, Totals]:
    """Commission earned, clawed back and due, per currency."""
    return {
        currency: Totals(earned=str(sums.earned), clawed_back=str(sums.clawed_back), due=str(sums.due))
        for currency, sums in domain.commission_totals(conversions).items()
    }


# --- stats ------------------------------------------------------------------------------------------------


@api.get("/stats")
async def program_stats(rt: Rt) -> ProgramStats:
    """Invitations, codes issued and shared, conversions, conversion rate, refusals by reason, K-factor by month."""

    async def read(unit: ReferralsUnit) -> ProgramStats:
        customers = await store.customers_who_ordered(unit)
        report = domain.program_stats(
            await store.invitation_times(unit),
            await store.customer_conversion_times(unit),
            await store.refusals_by_reason(unit),
            customers,
            await store.codes_shared(unit),
        )
        return ProgramStats(
            **asdict(report),
            customers=customers,
            codes_issued=await store.customer_codes_issued(unit),
            affiliate_conversions=await store.affiliate_conversions_count(unit),
            contested=await store.contested_by_reason(unit),
        )

    return await rt.transaction(read)


# --- views ---------------------------------------------------------------------------------------------------


def _code(code: Code | None, canonical: str, now: datetime) -> CodeOut:
    if code is None:
        return CodeOut(code=canonical, program=None, status="unknown", conversions=0)
    return CodeOut(
        code=code.code,
        program=code.program,
        referrer_customer_id=code.referrer_customer_id,
        affiliate_id=code.affiliate_id,
        status=domain.code_status(code, now),
        created_at=code.created_at,
        expires_at=code.expires_at,
        max_conversions=code.max_conversions,
        conversions=code.conversions,
    )


def _referral_fields(referral: Referral) -> dict[str, Any]:
    contest = referral.contest if isinstance(referral, Conversion) else None
    return {
        "order_id": referral.order_id,
        "referral_id": referral.referral_id,
        "code": referral.code,
        "program": referral.program,
        "referrer_customer_id": referral.referrer_customer_id,
        "affiliate_id": referral.affiliate_id,
        "referee_customer_id": referral.referee_customer_id,
        "placed_at": referral.placed_at,
        "order_total": str(referral.order_total),
        "currency": referral.currency,
        "outcome": referral.outcome,
        "reason": referral.reason if isinstance(referral, Refusal) else None,
        "contested": None
        if contest is None
        else ContestOut(reason=contest.reason, order_id=contest.order_id, at=contest.at),
    }


def _referral(referral: Referral) -> ReferralOut:
    return ReferralOut(**_referral_fields(referral))


def _commission(conversion: Conversion) -> CommissionOut:
    earned = conversion.commission
    if earned is None:
        return CommissionOut(**_referral_fields(conversion) | dict.fromkeys(_COMMISSION_FIELDS))
    amounts = dict(earned.taken.by_refund)
    return CommissionOut(
        **_referral_fields(conversion),
        commission_rate=str(earned.rate),
        commission=str(earned.earned),
        clawbacks=[
            Clawback(
                refund_id=refund.refund_id,
                refunded=str(refund.amount),
                refunded_at=refund.refunded_at,
                clawback=str(amounts[refund.refund_id]),
            )
            for refund in earned.refunds
        ],
        contest_clawback=str(earned.taken.contested),
        clawed_back=str(earned.taken.total),
        commission_due=str(earned.due),
    )


_COMMISSION_FIELDS = ("commission_rate", "commission", "clawbacks", "contest_clawback", "clawed_back", "commission_due")


def _affiliate_fields(affiliate: Affiliate) -> dict[str, Any]:
    return {
        "affiliate_id": affiliate.affiliate_id,
        "name": affiliate.name,
        "email": affiliate.email,
        "customer_id": affiliate.customer_id,
        "commission_rate": None if affiliate.commission_rate is None else str(affiliate.commission_rate),
        "created_at": affiliate.created_at,
    }


def _affiliate(affiliate: Affiliate) -> AffiliateOut:
    return AffiliateOut(**_affiliate_fields(affiliate), code=affiliate.code)


# --- a customer's data (GDPR Art. 15 and 20) ---------------------------------------------------------


class ReferredOut(ReferralOut):
    """The order they were referred on, with the identities it was placed under (kept to contest it later)."""

    referee_email: str | None = Field(description="Their e-mail as the referral compares it.")
    referee_address: str | None = Field(description="Their shipping address as the referral compares it.")


class ReferralCustomer(BaseModel):
    first_order_id: str | None
    first_order_at: datetime | None
    emails: list[str] = Field(description="The e-mail identities their orders were placed under.")
    addresses: list[str] = Field(description="The shipping-address identities their orders were placed under.")
    code: str | None
    last_invited_at: datetime | None


class InvitationOut(BaseModel):
    feedback_id: str
    code: str
    at: datetime


class ReferralsExport(BaseModel):
    """Everything referrals holds on the customer."""

    customer_id: str
    customer: ReferralCustomer | None
    codes: list[CodeOut]
    as_referrer: list[ReferralOut] = Field(description="Orders placed with their code: converted or refused.")
    as_referee: list[ReferredOut] = Field(description="Their own orders that carried someone's code.")
    invitations: list[InvitationOut]
    affiliates: list[AffiliateOut] = Field(description="Affiliate accounts enrolled under their customer id.")
    commissions: list[CommissionOut] = Field(description="Those accounts' conversions, with commission.")


@api.get("/customers/{customer_id}/export", openapi_extra=ADMIN_ONLY, responses={404: NOTHING_HELD})
async def export_customer(customer_id: CustomerId, rt: Rt) -> ReferralsExport:
    """Everything referrals holds on the customer, for their copy of their data (read in one transaction, audited)."""

    async def read(unit: ReferralsUnit) -> tuple[store.CustomerRecords, bool]:
        return await store.customer_records(unit, customer_id), await store.customer_was_erased(unit, customer_id)

    records, erased = await rt.transaction(read)
    if records.empty:
        raise nothing_held(customer_id, erased=erased)
    now, customer = rt.now(), records.customer
    return ReferralsExport(
        customer_id=customer_id,
        customer=None
        if customer is None
        else ReferralCustomer(
            first_order_id=None if customer.first_order is None else customer.first_order.order_id,
            first_order_at=None if customer.first_order is None else customer.first_order.placed_at,
            emails=list(customer.emails),
            addresses=list(customer.addresses),
            code=customer.code,
            last_invited_at=customer.last_invited_at,
        ),
        codes=[_code(code, code.code, now) for code in records.codes],
        as_referrer=[_referral(referral) for referral in records.as_referrer],
        as_referee=[
            ReferredOut(
                **_referral_fields(referral),
                referee_email=referral.referee_email if isinstance(referral, Conversion) else None,
                referee_address=referral.referee_address if isinstance(referral, Conversion) else None,
            )
            for referral in records.as_referee
        ],
        invitations=[InvitationOut(feedback_id=i.feedback_id, code=i.code, at=i.at) for i in records.invitations],
        affiliates=[_affiliate(affiliate) for affiliate in records.affiliates],
        commissions=[_commission(conversion) for conversion in records.commissions],
    )
