"""HTTP API of followups: the owner's list, escalations, the NPS report, and feedback from customers."""

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.followups import domain, service, store
from services.followups.domain import Contact, FeedbackLinkUnknown, FeedbackLinkUsed, Kind, Status
from services.followups.jobs import BREACHED
from services.followups.settings import FollowupsSettings, FollowupsUnit, settings_of
from services.followups.store import FollowUp
from services.followups.tokens import InvalidToken, TokenClaims, read_token
from shared.audit import current_call
from shared.events import FeedbackReceived, describe
from shared.http import ADMIN_ONLY, NOTHING_HELD, calling_key, error, field_error, nothing_held
from shared.service import Runtime, runtime
from shared.types import Id, Timestamp, WholeFloats

T = TypeVar("T")

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
    title: str | None = Field(None, description="What a person's task says to do (by hand, a review, a win-back).")
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

    async def finish(unit: FollowupsUnit) -> None:  # in a unit, so the audit trail records who did it
        await service.mark_done(unit, followup_id, done.note)

    try:
        await rt.transaction(finish)
    except domain.NoSuchTask as missing:  # raised inside: the refused call leaves no audit record
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"followup_id: no pending task {followup_id!r} for a person"
        ) from missing
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
    return Escalations(escalations=[_escalation(e, moment) for e in found])


def _escalation(e: store.EscalationRecord, moment: datetime) -> EscalationOut:
    return EscalationOut(
        escalation_id=e.escalation_id,
        feedback_id=e.feedback_id,
        customer_id=e.customer_id,
        order_id=e.order_id,
        due_by=e.due_by,
        seconds_left=round(domain.sla_time_left(e.due_by, moment).total_seconds()),
        breached=domain.is_breached(e.due_by, resolved_at=e.resolved_at, flagged=e.breached_at is not None, now=moment),
        resolved_at=e.resolved_at,
        note=e.note,
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

    async def resolve(unit: FollowupsUnit) -> store.EscalationRecord:  # in a unit: the audit trail records who
        found = await store.resolve_escalation(unit, escalation_id, moment, resolution.note)
        if found is None:
            raise domain.NoSuchEscalation(escalation_id)  # raised inside: the refused call leaves no audit record
        return found

    try:
        found = await rt.transaction(resolve)
    except domain.NoSuchEscalation as missing:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"escalation_id: no open escalation {escalation_id!r}"
        ) from missing
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


class MailDayOut(BaseModel):
    day: date
    sent: int = Field(description="E-mails that went out that day (UTC).")
    failed: int = Field(description="E-mails given up on that day, after their last attempt.")


class MailReport(BaseModel):
    days: list[MailDayOut] = Field(description="Oldest first, today last.")
    sent: int
    failed: int


@api.get("/reports/mail")
async def mail_report(
    rt: Rt, days: Annotated[int, Query(ge=1, le=92, description="How many days, today included.")] = 14
) -> MailReport:
    """E-mails sent and failed per day (UTC): what the shop's customers were sent, from followups' own records."""
    today = rt.now().astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    since = datetime(first.year, first.month, first.day, tzinfo=UTC)
    counted = domain.mail_by_day(await store.mail_counted(rt, since), first, days)
    return MailReport(
        days=[MailDayOut(day=d.day, sent=d.sent, failed=d.failed) for d in counted],
        sent=sum(d.sent for d in counted),
        failed=sum(d.failed for d in counted),
    )


# --- feedback -------------------------------------------------------------------------------------


class ReceivedFeedback(FeedbackReceived):
    followup_id: str | None = Field(description="The feedback request it answered, if any.")


class FeedbackList(BaseModel):
    feedback: list[ReceivedFeedback]


@api.get("/feedback/received")
async def list_feedback(
    rt: Rt,
    since: Annotated[
        Timestamp | None, Query(description="Only feedback received at or after this moment (RFC 3339).")
    ] = None,
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
        409: error("This feedback link was already used, or the customer was erased."),
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
    except domain.CustomerWasErased as erased:
        raise HTTPException(status.HTTP_409_CONFLICT, f"customer_id: {feedback.customer_id!r} was erased") from erased
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
        "title": followup.title,
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


# --- the relationship log and the brief (DESIGN.md §1: remember personal facts and what each customer said) ---

CustomerId = Annotated[str, Path(min_length=1, max_length=128, description="The shop's id of the customer.")]
Limit = Annotated[int, Query(ge=1, le=200, description="How many to return.")]
Offset = Annotated[int, Query(ge=0, le=100_000, description="How many to skip (newest first).")]
ERASED = error("The customer was erased: nothing more is kept about them.")
Text = Annotated[str, Field(min_length=1, max_length=5000)]
ShortText = Annotated[str, Field(min_length=1, max_length=500)]


def _author() -> str:
    """Who is writing: the person the console acts for (X-Rapport-Actor), else the API key's name."""
    call = current_call.get()
    if call is None:
        return "unknown"
    return call.actor.split("/", 1)[-1]


def _next(offset: int, limit: int, got: int) -> int | None:
    return offset + limit if got == limit else None


class NoteIn(BaseModel):
    text: Text = Field(description="What the owner wants to remember, in their words.")


class NoteOut(BaseModel):
    note_id: str
    customer_id: str
    text: str
    author: str = Field(description="Who wrote it: the person the console acted for, or the API key's name.")
    at: datetime


class NotesPage(BaseModel):
    notes: list[NoteOut]
    next_offset: int | None = Field(description="`offset` for the next page; null on the last page.")


class FactIn(BaseModel):
    kind: domain.FactKind
    value: ShortText = Field(examples=["Daughter Lili starts school in September"])


class FactOut(BaseModel):
    fact_id: str
    customer_id: str
    kind: domain.FactKind
    value: str
    author: str
    at: datetime
    changed_at: datetime | None
    changed_by: str | None


class Facts(BaseModel):
    facts: list[FactOut]


class CallIn(BaseModel):
    outcome: domain.CallOutcome
    summary: str = Field("", max_length=5000, description="What was said (or why nobody answered).")
    followup_id: str | None = Field(
        None, max_length=300, description="The call task it answers (a `call` or `win_back` task), if any."
    )


class CallOut(BaseModel):
    call_id: str
    customer_id: str
    followup_id: str | None
    outcome: domain.CallOutcome
    summary: str
    author: str
    at: datetime


class TaskAfterCall(BaseModel):
    followup_id: str
    status: Literal["pending", "done"]
    due_at: datetime = Field(description="When to call again, while pending.")
    attempts: int = Field(description="Calls tried so far.")
    gave_up: bool = Field(description="Closed because the last try went unanswered.")


class CallLogged(BaseModel):
    call: CallOut
    task: TaskAfterCall | None = Field(description="The call task as the outcome left it; null without one.")


class CallsPage(BaseModel):
    calls: list[CallOut]
    next_offset: int | None


class TaskIn(BaseModel):
    title: ShortText = Field(examples=["Send Eva the new tea catalogue"])
    due_at: Timestamp = Field(description="When it is due (RFC 3339 with offset).")


class TasksPage(BaseModel):
    tasks: list[FollowupOut]
    next_offset: int | None


class ReviewIn(BaseModel):
    needs: Text = Field(description="What the customer needs now.")
    went_well: str = Field("", max_length=5000, description="What went well since the last review.")
    went_badly: str = Field("", max_length=5000, description="What went badly since the last review.")
    next_step: Text = Field(description="The next step agreed.")


class ReviewOut(BaseModel):
    review_id: str
    customer_id: str
    followup_id: str | None = Field(description="The review task it closed, if one was open.")
    needs: str
    went_well: str
    went_badly: str
    next_step: str
    author: str
    at: datetime


class ReviewsPage(BaseModel):
    reviews: list[ReviewOut]
    next_offset: int | None


async def _in_unit(rt: Runtime, work: Callable[[FollowupsUnit], Awaitable[T]]) -> T:
    """Run a change of the log in one transaction with its audit record; a refusal, raised inside, leaves none."""
    try:
        return await rt.transaction(work)
    except domain.CustomerErased as gone:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "customer_id: erased; nothing more is kept about them") from gone
    except domain.NoSuchFact as missing:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"fact_id: the customer has no fact {missing.args[0]!r}"
        ) from missing


@api.get("/customers/{customer_id}/notes", openapi_extra=ADMIN_ONLY)
async def list_notes(customer_id: CustomerId, rt: Rt, limit: Limit = 50, offset: Offset = 0) -> NotesPage:
    """The owner's notes about the customer, newest first."""
    found = await store.notes(rt, customer_id, limit=limit, offset=offset)
    return NotesPage(notes=[NoteOut(**vars(n)) for n in found], next_offset=_next(offset, limit, len(found)))


@api.post(
    "/customers/{customer_id}/notes",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=ADMIN_ONLY,
    responses={400: BAD_BODY, 404: ERASED},
)
async def write_note(customer_id: CustomerId, note: NoteIn, rt: Rt) -> NoteOut:
    """Write a note about the customer; its author is the acting person (X-Rapport-Actor) or the key."""
    author = _author()

    async def write(unit: FollowupsUnit) -> store.Note:
        return await service.write_note(unit, customer_id, note.text, author)

    return NoteOut(**vars(await _in_unit(rt, write)))


@api.get("/customers/{customer_id}/facts", openapi_extra=ADMIN_ONLY)
async def list_facts(customer_id: CustomerId, rt: Rt) -> Facts:
    """The customer's personal facts (birthday, family, interests, …), oldest noted first."""
    return Facts(facts=[FactOut(**vars(f)) for f in await store.facts(rt, customer_id)])


@api.post(
    "/customers/{customer_id}/facts",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=ADMIN_ONLY,
    responses={400: BAD_BODY, 404: ERASED},
)
async def note_fact(customer_id: CustomerId, fact: FactIn, rt: Rt) -> FactOut:
    author = _author()

    async def note(unit: FollowupsUnit) -> store.Fact:
        return await service.note_fact(unit, customer_id, fact.kind, fact.value, author)

    return FactOut(**vars(await _in_unit(rt, note)))


NO_FACT = error("The customer has no fact with this id.")


@api.put("/customers/{customer_id}/facts/{fact_id}", openapi_extra=ADMIN_ONLY, responses={400: BAD_BODY, 404: NO_FACT})
async def change_fact(customer_id: CustomerId, fact_id: str, fact: FactIn, rt: Rt) -> FactOut:
    """Edit a personal fact (its kind and value)."""
    author = _author()

    async def change(unit: FollowupsUnit) -> store.Fact:
        return await service.change_fact(unit, customer_id, fact_id, fact.kind, fact.value, author)

    return FactOut(**vars(await _in_unit(rt, change)))


@api.delete(
    "/customers/{customer_id}/facts/{fact_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    openapi_extra=ADMIN_ONLY,
    responses={404: NO_FACT},
)
async def remove_fact(customer_id: CustomerId, fact_id: str, rt: Rt) -> None:
    """Remove a personal fact."""

    async def remove(unit: FollowupsUnit) -> None:
        await service.remove_fact(unit, customer_id, fact_id)

    await _in_unit(rt, remove)


@api.get("/customers/{customer_id}/calls", openapi_extra=ADMIN_ONLY)
async def list_calls(customer_id: CustomerId, rt: Rt, limit: Limit = 50, offset: Offset = 0) -> CallsPage:
    """How the customer's calls went, newest first."""
    found = await store.calls(rt, customer_id, limit=limit, offset=offset)
    return CallsPage(calls=[CallOut(**vars(c)) for c in found], next_offset=_next(offset, limit, len(found)))


@api.post(
    "/customers/{customer_id}/calls",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=ADMIN_ONLY,
    responses={
        400: BAD_BODY,
        404: error("No pending call task of this customer under followup_id, or the customer was erased."),
    },
)
async def record_call(customer_id: CustomerId, call: CallIn, rt: Rt) -> CallLogged:
    """Log a call's outcome; for a call task, reached or wrong number completes it, no answer or voicemail tries
    again CALL_RETRY_DAYS later, until CALL_ATTEMPTS tries were made."""
    author = _author()

    async def record(unit: FollowupsUnit) -> service.CallLogged:
        return await service.record_call(unit, customer_id, call.outcome, call.summary, author, call.followup_id)

    try:
        logged = await _in_unit(rt, record)
    except domain.NoSuchTask as missing:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"followup_id: no pending call task {call.followup_id!r} of this customer"
        ) from missing
    task = None
    if logged.task is not None and logged.after is not None:
        task = TaskAfterCall(
            followup_id=logged.task.followup_id,
            status=logged.after.status,
            due_at=logged.task.due_at,
            attempts=logged.after.attempts,
            gave_up=logged.after.gave_up,
        )
    return CallLogged(call=CallOut(**vars(logged.call)), task=task)


@api.get("/customers/{customer_id}/tasks", openapi_extra=ADMIN_ONLY)
async def list_tasks(
    customer_id: CustomerId,
    rt: Rt,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> TasksPage:
    """The customer's tasks for a person (calls, notes, reviews, win-backs, tasks added by hand), soonest first."""
    found = await store.tasks_of(rt, customer_id, status=status_, limit=limit, offset=offset)
    contact = await store.contact_of(rt, customer_id)
    return TasksPage(tasks=[_followup(f, contact) for f in found], next_offset=_next(offset, limit, len(found)))


@api.post(
    "/customers/{customer_id}/tasks",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=ADMIN_ONLY,
    responses={400: BAD_BODY, 404: ERASED},
)
async def add_task(customer_id: CustomerId, task: TaskIn, rt: Rt) -> FollowupOut:
    """Add a task by hand (a title and a due time); it is listed with the others (`GET /followups?kind=task`)."""

    async def add(unit: FollowupsUnit) -> FollowUp:
        return await service.add_task(unit, customer_id, task.title, task.due_at)

    added = await _in_unit(rt, add)
    return _followup(added, await store.contact_of(rt, customer_id))


@api.get("/customers/{customer_id}/reviews", openapi_extra=ADMIN_ONLY)
async def list_reviews(customer_id: CustomerId, rt: Rt, limit: Limit = 50, offset: Offset = 0) -> ReviewsPage:
    """The customer's key-account reviews, newest first."""
    found = await store.reviews(rt, customer_id, limit=limit, offset=offset)
    return ReviewsPage(reviews=[ReviewOut(**vars(r)) for r in found], next_offset=_next(offset, limit, len(found)))


@api.post(
    "/customers/{customer_id}/reviews",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=ADMIN_ONLY,
    responses={400: BAD_BODY, 404: ERASED},
)
async def record_review(customer_id: CustomerId, review: ReviewIn, rt: Rt) -> ReviewOut:
    """Record a key-account review: it closes the open review task; the next falls due ACCOUNT_REVIEW_DAYS later."""
    author = _author()

    async def record(unit: FollowupsUnit) -> store.Review:
        return await service.record_review(unit, customer_id, **review.model_dump(), author=author)

    return ReviewOut(**vars(await _in_unit(rt, record)))


# --- the brief -------------------------------------------------------------------------------------------------


class LoyaltyOut(BaseModel):
    tier: str | None
    balance: int | None
    points_expiring: int = Field(description="Points that expire within POINTS_EXPIRING_DAYS (at most the balance).")
    points_expiring_from: datetime | None = Field(description="When the first of them expire.")


class LastOrder(BaseModel):
    order_id: str
    order_number: str | None = Field(description="The number the customer knows it by, when the shop said.")
    placed_at: datetime
    total: str | None = Field(description="Decimal string.")
    currency: str | None
    cancelled: bool
    refunded_in_full: bool


class OrdersOut(BaseModel):
    count: int = Field(description="Orders heard of (each once).")
    last_order: LastOrder | None


class ReferralsOut(BaseModel):
    code: str | None
    friends_converted: int


class LatestFeedback(BaseModel):
    feedback_id: str
    order_id: str | None
    overall: int
    product: int | None
    service: int | None
    nps: int | None
    comment: str | None
    channel: str
    received_at: datetime


class AccountOut(BaseModel):
    segment: str | None = Field(description="The RFM segment orders last published.")
    key_account: bool = Field(description="Segment in KEY_ACCOUNT_SEGMENTS or tier in KEY_ACCOUNT_TIERS.")
    next_review_at: datetime | None
    slipping_away: bool = Field(description="A WIN_BACK_TIERS customer in a WIN_BACK_SEGMENTS segment.")


class Brief(BaseModel):
    """What to know in the minute before calling or writing to the customer."""

    customer_id: str
    first_name: str | None
    last_name: str | None
    email: str | None
    phone: str | None
    city: str | None
    region: str | None
    language: str | None = Field(description="The customer's locale (BCP 47), from their latest order.")
    facts: list[FactOut]
    notes: list[NoteOut] = Field(description="The latest notes, newest first.")
    calls: list[CallOut] = Field(description="The latest call outcomes, newest first.")
    latest_feedback: LatestFeedback | None
    open_escalations: list[EscalationOut]
    open_tasks: list[FollowupOut] = Field(description="Pending tasks for a person, soonest first.")
    reviews: list[ReviewOut] = Field(description="Key-account review history, newest first.")
    loyalty: LoyaltyOut
    orders: OrdersOut
    referrals: ReferralsOut
    account: AccountOut


BRIEF_ITEMS = 5  # notes and calls the brief shows; the lists have their own pages


@api.get(
    "/customers/{customer_id}/brief",
    openapi_extra=ADMIN_ONLY,
    responses={404: error("Nothing is known of this customer (or they were erased).")},
)
async def brief(customer_id: CustomerId, rt: Rt) -> Brief:
    """Name, town, language, personal facts, the latest notes and calls, the latest feedback, open escalations
    and tasks, reviews, and what loyalty, orders and referrals published about the customer."""
    if await store.was_erased(rt, customer_id) or not await store.is_known(rt, customer_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"customer_id: nothing is known of {customer_id!r}")
    settings = settings_of(rt)
    moment = rt.now()
    contact = await store.contact_of(rt, customer_id) or {}
    standing = await store.standing_of(rt, customer_id) or domain.Standing(customer_id)
    rules = settings.account_rules
    expiring = domain.points_expiring(standing, moment, timedelta(days=settings.points_expiring_days))
    seen = await store.orders_seen(rt, customer_id)
    feedback = await store.latest_feedback(rt, customer_id)
    last = seen.last
    return Brief(
        customer_id=customer_id,
        first_name=contact.get("first_name"),
        last_name=contact.get("last_name"),
        email=contact.get("email"),
        phone=contact.get("phone"),
        city=contact.get("city"),
        region=contact.get("region"),
        language=contact.get("locale"),
        facts=[FactOut(**vars(f)) for f in await store.facts(rt, customer_id)],
        notes=[NoteOut(**vars(n)) for n in await store.notes(rt, customer_id, limit=BRIEF_ITEMS)],
        calls=[CallOut(**vars(c)) for c in await store.calls(rt, customer_id, limit=BRIEF_ITEMS)],
        latest_feedback=None
        if feedback is None
        else LatestFeedback(
            feedback_id=feedback.feedback_id,
            order_id=feedback.order_id,
            overall=feedback.ratings.overall,
            product=feedback.ratings.product,
            service=feedback.ratings.service,
            nps=feedback.nps,
            comment=feedback.comment,
            channel=feedback.channel,
            received_at=feedback.received_at,
        ),
        open_escalations=[_escalation(e, moment) for e in await store.open_escalations_of(rt, customer_id)],
        open_tasks=[
            _followup(f, contact) for f in await store.tasks_of(rt, customer_id, status="pending", limit=BRIEF_ITEMS)
        ],
        reviews=[ReviewOut(**vars(r)) for r in await store.reviews(rt, customer_id, limit=BRIEF_ITEMS)],
        loyalty=LoyaltyOut(
            tier=standing.tier,
            balance=standing.balance,
            points_expiring=expiring.points,
            points_expiring_from=expiring.first_at,
        ),
        orders=OrdersOut(
            count=seen.count,
            last_order=None
            if last is None or last.placed_at is None
            else LastOrder(
                order_id=last.order_id,
                order_number=last.order_number,
                placed_at=last.placed_at,
                total=None if last.total is None else str(last.total),
                currency=last.currency,
                cancelled=last.cancelled_at is not None,
                refunded_in_full=domain.is_fully_refunded(last),
            ),
        ),
        referrals=ReferralsOut(code=standing.referral_code, friends_converted=len(standing.referrals)),
        account=AccountOut(
            segment=standing.segment,
            key_account=domain.is_key_account(standing, rules),
            next_review_at=standing.review_due_at,
            slipping_away=domain.is_slipping(standing, rules),
        ),
    )


# --- a customer's data (GDPR Art. 15 and 20) ---------------------------------------------------------


class RefundHeard(BaseModel):
    refund_id: str
    amount: str
    currency: str


class OrderMilestones(BaseModel):
    """An order as followups knows it: what its follow-ups hang on."""

    order_id: str
    placed_at: datetime | None
    fulfilled_at: datetime | None
    total: str | None
    currency: str | None
    refunds: list[RefundHeard]


class EscalationExport(BaseModel):
    escalation_id: str
    feedback_id: str
    order_id: str | None
    due_by: datetime
    resolved_at: datetime | None
    breached_at: datetime | None
    note: str | None = Field(description="What was done for the customer.")


class FeedbackExport(FeedbackReceived):
    followup_id: str | None = Field(description="The feedback request whose link it came through.")


class MailConsent(BaseModel):
    accepts_marketing: bool | None = Field(description="What their latest order said (null: no order said).")
    said_at: datetime | None
    unsubscribed_at: datetime | None
    address_unsubscribed: bool = Field(description="Their e-mail address is on the suppression list.")


class StandingExport(BaseModel):
    tier: str | None
    balance: int | None
    segment: str | None
    referral_code: str | None
    friends_converted: int
    review_due_at: datetime | None


class FollowupsExport(BaseModel):
    """Everything followups holds on the customer."""

    customer_id: str
    contact: dict[str, Any] | None = Field(description="Contact details from their latest order.")
    mail: MailConsent = Field(description="What they said about mail.")
    first_order_at: datetime | None
    orders: list[OrderMilestones]
    followups: list[FollowupOut] = Field(description="Notes, e-mails, calls and tasks, with what became of each.")
    feedback: list[FeedbackExport]
    escalations: list[EscalationExport]
    notes: list[NoteOut] = Field(description="The relationship log: what the shop's people noted, oldest first.")
    facts: list[FactOut]
    calls: list[CallOut] = Field(description="Call outcomes, oldest first.")
    reviews: list[ReviewOut] = Field(description="Key-account reviews, oldest first.")
    standing: StandingExport | None = Field(description="What the other services' events told followups of them.")


@api.get("/customers/{customer_id}/export", openapi_extra=ADMIN_ONLY, responses={404: NOTHING_HELD})
async def export_customer(customer_id: str, rt: Rt) -> FollowupsExport:
    """Everything followups holds on the customer, for their copy of their data (read in one transaction, audited)."""

    async def read(unit: FollowupsUnit) -> tuple[store.CustomerRecords, store.RelationshipRecords, bool]:
        return (
            await store.customer_records(unit, customer_id),
            await store.relationship_records(unit, customer_id),
            await store.customer_is_erased(unit, customer_id),
        )

    records, log, erased = await rt.transaction(read)
    if records.empty and log.empty:
        raise nothing_held(customer_id, erased=erased)
    standing = log.standing
    customer, consent = records.customer, records.consent
    return FollowupsExport(
        customer_id=customer_id,
        contact=None if customer is None or customer.contact is None else dict(customer.contact),
        mail=MailConsent(
            accepts_marketing=None if consent is None else consent.accepts_marketing,
            said_at=None if consent is None else consent.said_at,
            unsubscribed_at=None if consent is None else consent.unsubscribed_at,
            address_unsubscribed=records.address_unsubscribed,
        ),
        first_order_at=None if customer is None else customer.first_order_at,
        orders=[
            OrderMilestones(
                order_id=order.order_id,
                placed_at=order.placed_at,
                fulfilled_at=order.fulfilled_at,
                total=None if order.total is None else str(order.total),
                currency=order.currency,
                refunds=[
                    RefundHeard(refund_id=refund_id, amount=str(amount), currency=currency)
                    for refund_id, amount, currency in order.refunds
                ],
            )
            for order in records.orders
        ],
        followups=[_followup(followup, None) for followup in records.followups],
        feedback=[
            FeedbackExport(**kept.feedback.model_dump(), followup_id=kept.followup_id) for kept in records.feedback
        ],
        escalations=[
            EscalationExport(
                escalation_id=e.escalation_id,
                feedback_id=e.feedback_id,
                order_id=e.order_id,
                due_by=e.due_by,
                resolved_at=e.resolved_at,
                breached_at=e.breached_at,
                note=e.note,
            )
            for e in records.escalations
        ],
        notes=[NoteOut(**vars(note)) for note in log.notes],
        facts=[FactOut(**vars(fact)) for fact in log.facts],
        calls=[CallOut(**vars(call)) for call in log.calls],
        reviews=[ReviewOut(**vars(review)) for review in log.reviews],
        standing=None
        if standing is None
        else StandingExport(
            tier=standing.tier,
            balance=standing.balance,
            segment=standing.segment,
            referral_code=standing.referral_code,
            friends_converted=len(standing.referrals),
            review_due_at=standing.review_due_at,
        ),
    )
