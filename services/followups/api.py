"""HTTP API of followups: the owner's list, escalations, the NPS report, and feedback from customers."""

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.followups import domain, service, store
from services.followups.domain import Contact, FeedbackLinkUnknown, FeedbackLinkUsed, Kind, Status
from services.followups.jobs import BREACHED
from services.followups.settings import FollowupsSettings, FollowupsUnit, settings_of
from services.followups.store import FollowUp
from services.followups.tokens import InvalidToken, TokenClaims, read_token
from shared.events import FeedbackReceived, describe
from shared.http import calling_key, error, field_error
from shared.service import Runtime, runtime
from shared.types import Id, WholeFloats

BAD_BODY = error("The body is not UTF-8 text.")


Rating = Annotated[int, Field(ge=1, le=5, strict=True), WholeFloats]
api = APIRouter(tags=["followups"])
public = APIRouter(tags=["feedback"])
Rt = Annotated[Runtime, Depends(runtime)]

# --- the owner's list --------------------------------------------------------------------------


class Person(BaseModel):
    """Who to call or write to, from their latest order."""

    first_name: str | None
    last_name: str | None
    phone: str | None
    email: str | None
    city: str | None
    region: str | None


class FollowupOut(BaseModel):
    """A follow-up; what happened to it since it was planned comes only as far as anything did."""

    followup_id: str
    kind: Kind
    channel: Literal["email", "person"]
    customer_id: str
    order_id: str | None
    due_at: datetime
    status: Status
    created_at: datetime
    attempts: int
    code: str | None = None
    cancelled_because: str | None = None
    sent_at: datetime | None = None
    locale: str | None = None
    done_at: datetime | None = None
    note: str | None = None
    last_error: str | None = None
    customer: Person | None = Field(description="For a person's task: who to call or write to.")


class Followups(BaseModel):
    followups: list[FollowupOut]


@api.get("/followups", response_model_exclude_unset=True)
async def list_followups(
    rt: Rt,
    status_: Annotated[
        Literal["due"] | Status | None,
        Query(alias="status", description="`due`: pending and due now; or a stored status."),
    ] = None,
    kind: Annotated[Kind | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    customer_id: Annotated[Id | None, Query(description="Only this customer's follow-ups.")] = None,
    order: Annotated[
        Literal["soonest", "latest"], Query(description="By due time, soonest or latest first.")
    ] = "soonest",
) -> Followups:
    """Follow-ups soonest first; calls and notes come with the customer's name, phone and town."""
    due = status_ == "due"
    found = await store.followups(
        rt,
        status=None if status_ == "due" else status_,
        kind=kind,
        due_by=rt.now() if due else None,
        limit=limit,
        customer_id=customer_id,
        latest_first=order == "latest",
    )
    contacts = await store.contacts(rt, (f.customer_id for f in found))
    return Followups(followups=[_followup(f, contacts.get(f.customer_id)) for f in found])


class Done(BaseModel):
    note: str = Field("", max_length=5000, description="What the customer said, for the record.")


class Marked(BaseModel):
    followup_id: str
    status: Literal["done"]


@api.post(
    "/followups/{followup_id}/done", responses={400: BAD_BODY, 404: error("No pending task for a person with this id.")}
)
async def mark_done(followup_id: str, done: Done, rt: Rt) -> Marked:
    """A person did it (a call, a handwritten note)."""
    if not await store.mark_done(rt, followup_id, rt.now(), done.note):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"followup_id: no pending task {followup_id!r} for a person")
    return Marked(followup_id=followup_id, status="done")


# --- escalations -----------------------------------------------------------------------------------


class EscalationOut(BaseModel):
    escalation_id: str
    feedback_id: str
    customer_id: str
    order_id: str | None
    due_by: datetime
    seconds_left: int = Field(description="Negative once the SLA is breached.")
    breached: bool
    resolved_at: datetime | None
    note: str | None


class Escalations(BaseModel):
    escalations: list[EscalationOut]


@api.get("/escalations")
async def list_escalations(rt: Rt, open_: Annotated[bool, Query(alias="open")] = True) -> Escalations:
    """Escalations soonest-due first, with the time left (negative once the SLA is breached)."""
    moment = rt.now()
    found = await store.escalations(rt, resolved=not open_)
    return Escalations(
        escalations=[
            EscalationOut(
                escalation_id=e.escalation_id,
                feedback_id=e.feedback_id,
                customer_id=e.customer_id,
                order_id=e.order_id,
                due_by=e.due_by,
                seconds_left=round(domain.sla_time_left(e.due_by, moment).total_seconds()),
                breached=domain.is_breached(
                    e.due_by, resolved_at=e.resolved_at, flagged=e.breached_at is not None, now=moment
                ),
                resolved_at=e.resolved_at,
                note=e.note,
            )
            for e in found
        ]
    )


class Resolution(BaseModel):
    note: str = Field(min_length=1, max_length=5000, description="What was done for the customer.")


class Resolved(BaseModel):
    escalation_id: str
    resolved_at: datetime
    breached: bool


@api.post(
    "/escalations/{escalation_id}/resolve", responses={400: BAD_BODY, 404: error("No open escalation with this id.")}
)
async def resolve_escalation(escalation_id: str, resolution: Resolution, rt: Rt) -> Resolved:
    moment = rt.now()
    found = await store.resolve_escalation(rt, escalation_id, moment, resolution.note)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"escalation_id: no open escalation {escalation_id!r}")
    flagged = found.breached_at is not None
    breached = domain.is_breached(found.due_by, resolved_at=moment, flagged=flagged, now=moment)
    if breached and not flagged and await store.flag_breached(rt, escalation_id, moment):
        BREACHED.inc()
    return Resolved(escalation_id=escalation_id, resolved_at=moment, breached=breached)


# --- reports ----------------------------------------------------------------------------------------


class NpsFigures(BaseModel):
    responses: int
    nps_answers: int
    promoters: int
    passives: int
    detractors: int
    nps: float | None = Field(description="−100…100; null without NPS answers.")
    csat: float | None = Field(description="Percent of responses rated 4 or 5 overall; null without responses.")


class MonthlyNps(NpsFigures):
    month: str = Field(examples=["2026-11"])


class NpsReport(NpsFigures):
    response_rate: float | None = Field(description="Answered requests ÷ requests sent; null when none were sent.")
    months: list[MonthlyNps]


@api.get("/reports/nps")
async def nps_report(rt: Rt) -> NpsReport:
    """NPS and CSAT overall and by month, promoters/passives/detractors, response rate of feedback requests."""
    report = domain.nps_report(await store.feedback_points(rt), await store.feedback_requests_sent(rt))
    return NpsReport.model_validate(asdict(report))


# --- feedback -------------------------------------------------------------------------------------


class ReceivedFeedback(FeedbackReceived):
    followup_id: str | None = Field(description="The feedback request it answered, if any.")


class FeedbackList(BaseModel):
    feedback: list[ReceivedFeedback]


@api.get("/feedback")
async def list_feedback(
    rt: Rt,
    since: Annotated[datetime | None, Query(description="Only feedback received at or after this moment.")] = None,
    customer_id: Annotated[Id | None, Query(description="Only this customer's feedback.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> FeedbackList:
    """Feedback received, latest first (the owner's console shows today's, and each customer's)."""
    found = await store.feedback_received(rt, since=since, customer_id=customer_id, limit=limit)
    return FeedbackList(
        feedback=[ReceivedFeedback(**feedback.model_dump(), followup_id=followup_id) for feedback, followup_id in found]
    )


class RatingsIn(BaseModel):
    product: Rating | None = Field(None, description="How the customer rates the product, 1–5.")
    service: Rating | None = Field(None, description="How the customer rates the service, 1–5.")
    overall: Rating = Field(description="Overall rating, 1–5.")


def _given(field: str) -> dict[str, Any]:
    return {"required": [field], "properties": {field: {"type": "string"}}}


class FeedbackIn(BaseModel):
    """FeedbackReceived's fields but the id and time; `token` from the request e-mail, or `customer_id` with a key.

    With an API key, the shop logs it for `customer_id`; otherwise (or when it names no customer) the token says
    whose feedback it is.
    """

    model_config = ConfigDict(json_schema_extra={"anyOf": [_given("token"), _given("customer_id")]})
    token: str | None = Field(None, max_length=2000, description="From the feedback request e-mail.")
    customer_id: Id | None = Field(None, description="Whose feedback the shop logs; with a token, the token's.")
    order_id: Id | None = None
    ratings: RatingsIn
    nps: Annotated[int, Field(ge=0, le=10, strict=True), WholeFloats] | None = None
    comment: str | None = Field(None, max_length=5000)
    channel: Literal["email", "web", "phone", "survey"] = "web"


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its `$defs` put in place: in the OpenAPI document `#/$defs/...` resolves nowhere."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


class FeedbackOut(FeedbackReceived):
    """The stored feedback, the feedback request it answered and the escalation it opened."""

    followup_id: str | None
    escalation_id: str | None


@public.post(
    "/feedback",
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inlined(FeedbackIn.model_json_schema())}},
        }
    },
    responses={
        409: error("This feedback link was already used."),
        410: error("The feedback link has expired."),
        422: {
            "description": "A field of the body is wrong: `loc` names it.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
        },
    },
)
async def post_feedback(request: Request, rt: Rt) -> FeedbackOut:
    """Feedback from a customer's link (signed token, once) or logged by the shop (an API key with write scope)."""
    settings = settings_of(rt)
    key = calling_key(request)  # checked by the guard already when the request carried one
    try:
        raw = await request.json()
    except ValueError:
        raw = None
    # Who is asking comes first: without a key or a token, the body's shape is none of the caller's business.
    if key is None and not (isinstance(raw, dict) and isinstance(raw.get("token"), str)):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "token: a feedback token or an API key is required")
    try:
        body = FeedbackIn.model_validate(raw)
    except ValidationError as error:
        errors = error.errors(include_url=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from error
    fields = body.model_dump(exclude={"token"})
    followup_id = None
    if key is None or body.customer_id is None:  # not the shop logging it for a customer: the token says whose
        if body.token is None:  # (without a key, the check above asked for one)
            raise field_error("customer_id", "required with an API key, unless a token says whose feedback it is")
        claims = _claims(body.token, settings)
        if body.customer_id not in (None, claims.customer_id):
            raise field_error("customer_id", "does not match the token", body.customer_id)
        if body.order_id not in (None, claims.order_id):
            raise field_error("order_id", "does not match the token", body.order_id)
        fields |= {"customer_id": claims.customer_id, "order_id": claims.order_id}
        followup_id = claims.followup_id
    try:
        feedback = service.new_feedback(fields, received_at=rt.now())
    except ValidationError as invalid:
        reason, field = describe(invalid)
        raise field_error(field or "", reason) from invalid

    async def take(unit: FollowupsUnit) -> service.FeedbackTaken:
        return await service.take_feedback(unit, feedback, followup_id=followup_id)

    try:
        taken = await store.once_per_link(rt, take)
    except FeedbackLinkUsed as used:
        raise HTTPException(status.HTTP_409_CONFLICT, "token: this feedback link was already used") from used
    except FeedbackLinkUnknown as unknown:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "token: names no feedback request of this shop") from unknown
    return FeedbackOut(**taken.feedback.model_dump(), followup_id=taken.followup_id, escalation_id=taken.escalation_id)


def _claims(token: str, settings: FollowupsSettings) -> TokenClaims:
    if settings.feedback_token_secret is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "token: feedback links are off (no secret configured)")
    try:
        return read_token(
            settings.feedback_token_secret.get_secret_value(),
            token,
            max_age_seconds=settings.feedback_token_days * 24 * 3600,
        )
    except InvalidToken as invalid:
        code = status.HTTP_410_GONE if invalid.reason == "expired" else status.HTTP_401_UNAUTHORIZED
        raise HTTPException(code, f"token: {invalid.reason}") from invalid


def _followup(followup: FollowUp, contact: Contact | None) -> FollowupOut:
    person = None
    if followup.channel == "person" and contact:
        person = Person(**{k: contact.get(k) for k in ("first_name", "last_name", "phone", "email", "city", "region")})
    # What happened to it since it was planned, as far as anything did.
    happened = {
        "code": followup.code,
        "cancelled_because": followup.cancelled_because,
        "sent_at": followup.sent_at,
        "locale": followup.locale,
        "done_at": followup.done_at,
        "note": followup.note,
        "last_error": followup.last_error,
    }
    return FollowupOut(
        followup_id=followup.followup_id,
        kind=followup.kind,
        channel=followup.channel,
        customer_id=followup.customer_id,
        order_id=followup.order_id,
        due_at=followup.due_at,
        status=followup.status,
        created_at=followup.created_at,
        attempts=followup.attempts,
        customer=person,
        **{k: v for k, v in happened.items() if v is not None},
    )
