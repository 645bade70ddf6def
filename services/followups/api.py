"""HTTP API of followups: the owner's list, escalations, the NPS report, and feedback from customers."""

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel, Field, ValidationError
from pymongo.errors import DuplicateKeyError

from services.followups import domain, service
from services.followups.jobs import BREACHED
from services.followups.settings import FollowupsUnit, followups_settings
from services.followups.store import CUSTOMERS, DONE, ESCALATIONS, FEEDBACK, FOLLOWUPS, PENDING, SENT
from services.followups.tokens import InvalidToken, read_token
from shared.events import describe
from shared.http import Credentials, is_admin
from shared.service import Runtime, runtime

api = APIRouter(tags=["followups"])
public = APIRouter(tags=["feedback"])
Rt = Annotated[Runtime, Depends(runtime)]

# --- the owner's list --------------------------------------------------------------------------


@api.get("/followups")
async def list_followups(
    rt: Rt,
    status_: Annotated[
        Literal["due", "pending", "sent", "failed", "cancelled", "done"] | None,
        Query(alias="status", description="`due`: pending and due now; or a stored status."),
    ] = None,
    kind: Annotated[Literal["thank_you", "call", "feedback_request", "referral_invite"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Follow-ups soonest first; calls and notes come with the customer's name, phone and town."""
    query: dict[str, Any] = {}
    if status_ == "due":
        query |= {"status": PENDING, "due_at": {"$lte": service.now()}}
    elif status_ is not None:
        query["status"] = status_
    if kind is not None:
        query["kind"] = kind
    found = await rt.db[FOLLOWUPS].find(query, sort=[("due_at", 1)], limit=limit).to_list()
    contacts = {
        c["_id"]: c.get("contact")
        async for c in rt.db[CUSTOMERS].find({"_id": {"$in": list({f["customer_id"] for f in found})}})
    }
    return {"followups": [_followup(f, contacts.get(f["customer_id"])) for f in found]}


class Done(BaseModel):
    note: str = Field("", max_length=5000, description="What the customer said, for the record.")


@api.post("/followups/{followup_id}/done")
async def mark_done(followup_id: str, done: Done, rt: Rt) -> dict[str, Any]:
    """A person did it (a call, a handwritten note)."""
    found = await rt.db[FOLLOWUPS].find_one_and_update(
        {"_id": followup_id, "channel": "person", "status": PENDING},
        {"$set": {"status": DONE, "done_at": service.now(), "note": done.note}},
    )
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"followup_id: no pending task {followup_id!r} for a person")
    return {"followup_id": followup_id, "status": DONE}


# --- escalations -----------------------------------------------------------------------------------


@api.get("/escalations")
async def list_escalations(rt: Rt, open_: Annotated[bool, Query(alias="open")] = True) -> dict[str, Any]:
    """Escalations soonest-due first, with the time left (negative once the SLA is breached)."""
    query = {"resolved_at": None} if open_ else {"resolved_at": {"$ne": None}}
    moment = service.now()
    found = await rt.db[ESCALATIONS].find(query, sort=[("due_by", 1)], limit=500).to_list()
    return {
        "escalations": [
            {
                "escalation_id": e["_id"],
                "feedback_id": e["feedback_id"],
                "customer_id": e["customer_id"],
                "order_id": e["order_id"],
                "due_by": e["due_by"],
                "seconds_left": round(domain.sla_time_left(e["due_by"], moment).total_seconds()),
                "breached": e["breached_at"] is not None or e["due_by"] < (e["resolved_at"] or moment),
                "resolved_at": e["resolved_at"],
                "note": e.get("note"),
            }
            for e in found
        ]
    }


class Resolution(BaseModel):
    note: str = Field(min_length=1, max_length=5000, description="What was done for the customer.")


@api.post("/escalations/{escalation_id}/resolve")
async def resolve_escalation(escalation_id: str, resolution: Resolution, rt: Rt) -> dict[str, Any]:
    moment = service.now()
    found = await rt.db[ESCALATIONS].find_one_and_update(
        {"_id": escalation_id, "resolved_at": None}, {"$set": {"resolved_at": moment, "note": resolution.note}}
    )
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"escalation_id: no open escalation {escalation_id!r}")
    breached = found["due_by"] < moment
    if breached and found["breached_at"] is None:
        flagged = await rt.db[ESCALATIONS].update_one(
            {"_id": escalation_id, "breached_at": None}, {"$set": {"breached_at": moment}}
        )
        if flagged.modified_count:
            BREACHED.inc()
    return {"escalation_id": escalation_id, "resolved_at": moment, "breached": breached}


# --- reports ----------------------------------------------------------------------------------------


@api.get("/reports/nps")
async def nps_report(rt: Rt) -> dict[str, Any]:
    """NPS and CSAT overall and by month, promoters/passives/detractors, response rate of feedback requests."""
    points = [
        domain.FeedbackPoint(
            received_at=f["received_at"],
            overall=f["ratings"]["overall"],
            nps=f.get("nps"),
            answered_request=f.get("followup_id") is not None,
        )
        async for f in rt.db[FEEDBACK].find({}, {"received_at": 1, "ratings": 1, "nps": 1, "followup_id": 1})
    ]
    requests_sent = await rt.db[FOLLOWUPS].count_documents({"kind": "feedback_request", "status": SENT})
    return asdict(domain.nps_report(points, requests_sent))


# --- feedback -------------------------------------------------------------------------------------


class FeedbackIn(BaseModel):
    """FeedbackReceived's fields but the id and time; `token` from the request e-mail, or the admin key."""

    token: str | None = Field(None, max_length=2000)
    customer_id: str | None = Field(None, min_length=1, max_length=128)
    order_id: str | None = Field(None, min_length=1, max_length=128)
    ratings: dict[str, Any]
    nps: int | None = None
    comment: str | None = None
    channel: Literal["email", "web", "phone", "survey"] = "web"


@public.post("/feedback", status_code=status.HTTP_201_CREATED)
async def post_feedback(body: FeedbackIn, rt: Rt, credentials: Credentials) -> dict[str, Any]:
    """Feedback from a customer's link (signed token, once) or logged by the owner (admin key)."""
    settings = followups_settings(rt.settings)
    fields = body.model_dump(exclude={"token"})
    followup_id = None
    if is_admin(credentials, settings.admin_api_key):
        if body.customer_id is None:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "customer_id: required with the admin key")
    elif body.token is not None:
        claims = _claims(body.token, settings)
        if body.customer_id not in (None, claims.customer_id):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "customer_id: does not match the token")
        fields |= {"customer_id": claims.customer_id, "order_id": claims.order_id}
        followup_id = claims.followup_id
    else:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "token: a feedback token or the admin key is required")
    try:
        feedback = service.new_feedback(fields, received_at=service.now())
    except ValidationError as error:
        reason, field = describe(error)
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, {"field": field, "message": reason}) from error

    async def take(unit: FollowupsUnit) -> dict[str, Any]:
        if followup_id is not None and await unit.find_one(FEEDBACK, {"followup_id": followup_id}) is not None:
            raise HTTPException(status.HTTP_409_CONFLICT, "token: this feedback link was already used")
        return await service.take_feedback(unit, feedback, followup_id=followup_id)

    try:
        stored = await rt.transaction(take)
    except DuplicateKeyError as error:  # the same link submitted twice at once
        raise HTTPException(status.HTTP_409_CONFLICT, "token: this feedback link was already used") from error
    return {key: value for key, value in stored.items() if key != "_id"}


def _claims(token: str, settings: Any) -> Any:
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


def _followup(followup: dict[str, Any], contact: dict[str, Any] | None) -> dict[str, Any]:
    shown = {k: v for k, v in followup.items() if k not in ("_id", "lease_until", "lease_owner")}
    person = None
    if followup["channel"] == "person" and contact:
        person = {k: contact.get(k) for k in ("first_name", "last_name", "phone", "email", "city", "region")}
    return {"followup_id": followup["_id"], **shown, "customer": person}
