"""The console's pages and the changes made from them; each reads and changes through the services' APIs."""

import asyncio
import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from services.console import charts, domain, mail, store, views
from services.console.calls import SERVICES, Reading
from services.console.web import (
    CATALOGUES,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    Visit,
    back_to,
    client_address,
    console_of,
    form_of,
    render,
    secure_cookies,
    visit,
)
from shared.export import gather_export
from shared.i18n import LANGUAGES, Formats, choose_language
from shared.mongo import ping

pages = APIRouter()
Signed = Annotated[Visit, Depends(visit)]
CALLS_ON_TODAY = 20  # calls listed on Today, soonest due first; the rest come up as these are done
BRIEFS_ON_TODAY = 5  # the next calls, with followups' brief; the others with name, phone and town (and a link)
REFUSALS_SHOWN = 20  # the latest refused referrals on Programs
COMMISSIONS_SHOWN = 100  # an affiliate's latest commissions on their page
# Loyalty's rules that are one whole number each, editable on Programs: (name, label, counted in days).
RULE_NUMBERS = (
    ("review_points", "programs.review_points", False),
    ("review_min_chars", "programs.review_min_chars", False),
    ("survey_points", "programs.survey_points", False),
    ("referrer_points", "programs.referrer_points", False),
    ("referee_points", "programs.referee_points", False),
    ("points_lifetime_days", "programs.lifetime", True),
    ("tier_window_days", "programs.tier_window", True),
)
# Messages set aside listed per service on Operations; a listing moves them to the back, so a reload shows the next.
DEAD_LETTERS_SHOWN = 20
MAIL_DAYS_SHOWN = 14  # e-mail sent and failed per day on Operations, from followups' own records


# --- signing in and out -------------------------------------------------------------------------------------


@pages.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@pages.get("/readyz", include_in_schema=False)
async def readyz(request: Request, response: Response) -> dict[str, str]:
    """Ready when its own database answers; the services it calls are shown on Operations, not needed here."""
    up = await ping(console_of(request).db.client)
    response.status_code = 200 if up else 503
    return {"database": "ok" if up else "unreachable"}


@pages.get("/login", response_class=HTMLResponse)
async def sign_in_page(request: Request, lang: str | None = None) -> Response:
    return _sign_in_form(request, lang, problem=None, email="")


def _sign_in_form(
    request: Request, lang: str | None, *, problem: str | None, email: str, status: int = 200
) -> Response:
    language = choose_language(lang, request.headers.get("accept-language"))
    token = request.cookies.get(SIGN_IN_COOKIE) or domain.new_token()
    response = render(
        request,
        "sign_in.html",
        language,
        {"problem": problem, "email": email, "csrf": token, "title": "sign_in.title"},
        status_code=status,
    )
    settings = console_of(request).settings
    response.set_cookie(
        SIGN_IN_COOKIE, token, httponly=True, samesite="lax", secure=secure_cookies(request, settings), path="/login"
    )
    return response


@pages.post("/login", response_class=HTMLResponse)
async def sign_in(request: Request) -> Response:
    console = console_of(request)
    form = await form_of(request)
    lang = form.get("lang")
    if not domain.same_token(request.cookies.get(SIGN_IN_COOKIE), form.get("csrf")):
        return _sign_in_form(request, lang, problem="sign_in.error.expired", email="", status=400)
    email = domain.normal_email(form.get("email", ""))
    ip = client_address(request)
    now = console.now()
    if (await store.throttle(console.db, email, ip, now)).refuses:
        return _sign_in_form(request, lang, problem="sign_in.error.throttled", email=email, status=429)
    person = await store.find_person(console.db, email)
    if not domain.password_matches(person.password_hash if person else None, form.get("password", "")):
        await store.record_failure(console.db, email, ip, now)
        return _sign_in_form(request, lang, problem="sign_in.error.wrong", email=email, status=401)
    assert person is not None
    await store.forget_failures(console.db, email)
    token = domain.new_token()
    expires_at = domain.session_expiry(now, console.settings.console_session_hours)
    session = store.Session(email, domain.new_token(), expires_at)
    await store.open_session(console.db, domain.token_digest(token), session, now)
    response = RedirectResponse("/today", status_code=303)
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, samesite="lax", secure=secure_cookies(request, console.settings), path="/"
    )
    response.delete_cookie(SIGN_IN_COOKIE, path="/login")
    return response


@pages.post("/logout")
async def sign_out(request: Request, seen: Signed) -> Response:
    token = request.cookies.get(SESSION_COOKIE, "")
    await store.close_session(seen.console.db, domain.token_digest(token))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@pages.post("/preferences/language")
async def choose_own_language(request: Request, seen: Signed) -> Response:
    form = await form_of(request)
    language = form.get("language", "")
    if language in LANGUAGES:
        await store.set_language(seen.console.db, seen.person.email, language)
    return back_to(form.get("back", "/today"))


@pages.get("/")
async def home() -> Response:
    return RedirectResponse("/today", status_code=303)


# --- Today ---------------------------------------------------------------------------------------------------


@pages.get("/today", response_class=HTMLResponse)
async def today(request: Request, seen: Signed) -> Response:
    return await _today(request, seen)


async def _today(
    request: Request, seen: Visit, errors: dict[str, str] | None = None, values: dict[str, str] | None = None
) -> Response:
    calls = seen.console.calls
    now = seen.console.now()
    since = (now - timedelta(days=1)).isoformat()
    due, winning_back, reviews, tasks, escalations, invited, feedback = await calls.read_all(
        ("followups", "/followups", {"status": "due", "kind": "call", "limit": 100}),
        ("followups", "/followups", {"status": "due", "kind": "win_back", "limit": 100}),
        ("followups", "/followups", {"status": "due", "kind": "review", "limit": 100}),
        ("followups", "/followups", {"status": "due", "kind": "task", "limit": 100}),
        ("followups", "/escalations", {"open": "true"}),
        ("followups", "/followups", {"kind": "referral_invite", "status": "sent", "order": "latest", "limit": 20}),
        ("followups", "/feedback/received", {"since": since, "limit": 50}),
    )
    due_calls = due.data["followups"] if due.ok else []
    win_backs = winning_back.data["followups"] if winning_back.ok else []
    open_escalations = escalations.data["escalations"] if escalations.ok else []
    # Names of the people in the lists that come without them (escalations, invitations, feedback).
    wanted = {e["customer_id"] for e in open_escalations}
    wanted |= {f["customer_id"] for f in (invited.data["followups"] if invited.ok else [])}
    wanted |= {f["customer_id"] for f in (feedback.data["feedback"] if feedback.ok else [])}
    briefs, names = await asyncio.gather(
        _briefs(seen, [*due_calls, *win_backs][:BRIEFS_ON_TODAY]), _names(seen, wanted)
    )
    recent_invites = [
        f for f in (invited.data["followups"] if invited.ok else []) if _within(f.get("sent_at"), now, days=7)
    ]
    return render(
        request,
        "today.html",
        seen.language,
        {
            "title": "today.title",
            "csrf": seen.csrf,
            "calls": due,
            "call_rows": [(f, briefs.get(f["followup_id"])) for f in due_calls[:CALLS_ON_TODAY]],
            "calls_more": max(0, len(due_calls) - CALLS_ON_TODAY),
            "slipping": winning_back,
            "slipping_rows": [(f, briefs.get(f["followup_id"])) for f in win_backs],
            "reviews": reviews,
            "review_rows": reviews.data["followups"] if reviews.ok else [],
            "notes": tasks,
            "note_rows": tasks.data["followups"] if tasks.ok else [],
            "escalations": escalations,
            "escalation_rows": views.escalation_rows(open_escalations, names),
            "invited": invited,
            "invite_rows": recent_invites,
            "feedback": feedback,
            "feedback_rows": feedback.data["feedback"] if feedback.ok else [],
            "names": names,
            "errors": errors or {},
            "values": values or {},
            "outcomes": OUTCOMES,
            "fact_kinds": FACT_KINDS,
            "name_of": views.person_name,
            "parse_time": views.parse_time,
            "late_by": lambda due_at: (views.parse_time(due_at) or now) - now,
        },
        visit=seen,
        status_code=422 if errors else 200,
    )


# How a call went (followups' CallOutcome); reached and wrong number close the task, the others try again later.
OUTCOMES = ("reached", "no_answer", "voicemail", "wrong_number")
FACT_KINDS = ("birthday", "family", "interest", "preference", "occasion", "other")


def _within(moment: Any, now: Any, *, days: int) -> bool:
    parsed = views.parse_time(moment)
    return parsed is not None and now - parsed <= timedelta(days=days)


async def _briefs(seen: Visit, tasks: list[dict[str, Any]]) -> dict[str, views.Brief]:
    """followups' brief of each customer to call, all at once."""
    found = await seen.console.calls.read_all(
        *(("followups", f"/customers/{task['customer_id']}/brief", None) for task in tasks)
    )
    return {
        task["followup_id"]: views.brief_of(task["customer_id"], task.get("customer"), brief)
        for task, brief in zip(tasks, found, strict=True)
    }


async def _names(seen: Visit, customer_ids: set[str]) -> dict[str, str]:
    """The names of these customers, in one question to orders."""
    if not customer_ids:
        return {}
    wanted = {"customer_id": sorted(customer_ids)[:100], "limit": 100}
    found = await seen.console.calls.read("orders", "/customers", wanted)
    if not found.ok:
        return {}
    return {c["customer_id"]: views.person_name(c.get("contact"), c["customer_id"]) for c in found.data["customers"]}


@pages.post("/today/calls/{followup_id}/done")
async def log_call(request: Request, followup_id: str, seen: Signed) -> Response:
    """A call's outcome, what was said, and (optionally) a new personal fact, in followups' relationship log."""
    form = await form_of(request)
    outcome = form.get("outcome", "")
    customer_id = form.get("customer_id", "")
    if outcome not in OUTCOMES:
        return await _today(request, seen, {f"outcome-{followup_id}": "today.error.outcome"}, form)
    fact, kind = form.get("fact", ""), form.get("fact_kind", "other")
    if fact and kind not in FACT_KINDS:
        return await _today(request, seen, {f"fact-{followup_id}": "error.invalid"}, form)
    calls = seen.console.calls
    if fact:  # first, so a refused fact leaves the call to log again with nothing lost
        change = await calls.change(
            "followups", "POST", f"/customers/{customer_id}/facts", seen.person.actor, {"kind": kind, "value": fact}
        )
        if not change.ok:
            return await _today(request, seen, {f"fact-{followup_id}": _problem(change.status)}, form)
    body = {"outcome": outcome, "summary": form.get("note", ""), "followup_id": followup_id}
    change = await calls.change("followups", "POST", f"/customers/{customer_id}/calls", seen.person.actor, body)
    if not change.ok:
        return await _today(request, seen, {f"note-{followup_id}": _problem(change.status)}, form)
    return back_to("/today", "said.call_logged")


@pages.post("/today/tasks/{followup_id}/done")
async def task_done(request: Request, followup_id: str, seen: Signed) -> Response:
    """A task by hand (a note to write, a parcel to send) done."""
    form = await form_of(request)
    change = await seen.console.calls.change(
        "followups", "POST", f"/followups/{followup_id}/done", seen.person.actor, {"note": form.get("note", "")}
    )
    if not change.ok:
        return await _today(request, seen, {f"task-{followup_id}": _problem(change.status)}, form)
    return back_to("/today", "said.task_done")


@pages.post("/today/escalations/{escalation_id}/resolve")
async def resolve_escalation(request: Request, escalation_id: str, seen: Signed) -> Response:
    form = await form_of(request)
    note = form.get("note", "")
    if not note:
        return await _today(request, seen, {f"resolution-{escalation_id}": "today.error.resolution"}, form)
    change = await seen.console.calls.change(
        "followups", "POST", f"/escalations/{escalation_id}/resolve", seen.person.actor, {"note": note}
    )
    if not change.ok:
        return await _today(request, seen, {f"resolution-{escalation_id}": _problem(change.status)}, form)
    return back_to("/today", "said.escalation_resolved")


def _problem(status: int) -> str:
    """The message id for a refusal a person can act on."""
    if status == 404:
        return "error.gone"
    if status == 422:
        return "error.invalid"
    return "error.unavailable"


# --- customers -----------------------------------------------------------------------------------------------

# The RFM segments orders names (services/orders/insight.py; a unit test keeps the two lists the same).
SEGMENTS = (
    "champions",
    "loyal",
    "potential_loyalists",
    "new",
    "promising",
    "need_attention",
    "about_to_sleep",
    "cant_lose",
    "at_risk",
    "hibernating",
)


@pages.get("/customers", response_class=HTMLResponse)
async def customers(request: Request, seen: Signed, q: str = "", segment: str = "", tier: str = "") -> Response:
    query = q.strip()[:200]
    chosen = segment if segment in SEGMENTS else ""
    calls = seen.console.calls
    rules = await calls.read("loyalty", "/rules")
    tiers = [t["name"] for t in rules.data.get("tiers", [])] if rules.ok else []
    if query:
        found = await calls.read("orders", "/customers", {"q": query, "limit": 50})
    elif tier and (members := await calls.read("loyalty", "/members", {"tier": tier[:40], "limit": 50})).ok:
        ids = [m["customer_id"] for m in members.data["members"]]
        found = await calls.read("orders", "/customers", {"customer_id": ids, "limit": 50}) if ids else members
        if ids and found.ok:  # in the tier's order, most points first
            rank = {customer_id: n for n, customer_id in enumerate(ids)}
            found.data["customers"].sort(key=lambda c: rank.get(c["customer_id"], len(rank)))
    elif tier:
        found = members  # loyalty did not answer: the list says so
    else:
        found = await calls.read("orders", "/customers", {"segment": chosen or None, "limit": 50})
    rows = found.data.get("customers", []) if found.ok else []
    return render(
        request,
        "customers.html",
        seen.language,
        {
            "title": "customers.title",
            "csrf": seen.csrf,
            "q": query,
            "segment": chosen,
            "segments": SEGMENTS,
            "tier": tier if tier in tiers else "",
            "tiers": tiers,
            "found": found,
            "rows": rows,
            "name_of": views.person_name,
            "parse_time": views.parse_time,
        },
        visit=seen,
    )


@pages.get("/customers/{customer_id}", response_class=HTMLResponse)
async def customer(request: Request, customer_id: str, seen: Signed) -> Response:
    return await _customer(request, seen, customer_id)


async def _customer(
    request: Request,
    seen: Visit,
    customer_id: str,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    code: str | None = None,
) -> Response:
    calls = seen.console.calls
    profile, member, followups, feedback, rewards, memory = await calls.read_all(
        ("orders", f"/customers/{customer_id}", None),
        ("loyalty", f"/members/{customer_id}", None),
        ("followups", "/followups", {"customer_id": customer_id, "order": "latest", "limit": 100}),
        ("followups", "/feedback/received", {"customer_id": customer_id, "limit": 50}),
        ("loyalty", "/rewards", None),
        ("followups", f"/customers/{customer_id}/brief", None),
    )
    if profile.problem == "not_found" and member.problem == "not_found":
        return render(
            request,
            "not_found.html",
            seen.language,
            {"title": "customer.not_found", "csrf": seen.csrf},
            visit=seen,
            status_code=404,
        )
    contact = profile.data.get("contact") if profile.ok else None
    return render(
        request,
        "customer.html",
        seen.language,
        {
            "title": "customer.title",
            "csrf": seen.csrf,
            "customer_id": customer_id,
            "name": views.person_name(contact, customer_id),
            "contact": contact or {},
            "profile": profile,
            "member": member,
            "rewards": [r for r in (rewards.data if rewards.ok else []) if r.get("active")],
            "memory": memory,
            "timeline": views.timeline_of(profile, member, followups, feedback, memory),
            "fact_kinds": FACT_KINDS,
            "review_due": memory.ok
            and any(task.get("kind") == "review" for task in memory.data.get("open_tasks") or []),
            "sources": {r.service for r in (profile, member, followups, feedback) if r.problem == "unavailable"},
            "errors": errors or {},
            "values": values or {},
            "code": code,
            "attempt": (values or {}).get("attempt") or str(uuid.uuid4()),  # the adjustment's Idempotency-Key
            "parse_time": views.parse_time,
        },
        visit=seen,
        status_code=422 if errors else 200,
    )


@pages.post("/customers/{customer_id}/notes")
async def write_note(request: Request, customer_id: str, seen: Signed) -> Response:
    form = await form_of(request)
    if not form.get("note"):
        return await _customer(request, seen, customer_id, {"note": "customer.error.note_empty"}, form)
    change = await seen.console.calls.change(
        "followups", "POST", f"/customers/{customer_id}/notes", seen.person.actor, {"text": form["note"]}
    )
    if not change.ok:
        return await _customer(request, seen, customer_id, {"note": _problem(change.status)}, form)
    return back_to(f"/customers/{customer_id}", "said.note_saved")


@pages.post("/customers/{customer_id}/facts")
async def note_fact(request: Request, customer_id: str, seen: Signed) -> Response:
    form = await form_of(request)
    if problem := _fact_problem(form):
        return await _customer(request, seen, customer_id, {"fact": problem}, form)
    body = {"kind": form["fact_kind"], "value": form["fact"]}
    change = await seen.console.calls.change(
        "followups", "POST", f"/customers/{customer_id}/facts", seen.person.actor, body
    )
    if not change.ok:
        return await _customer(request, seen, customer_id, {"fact": _problem(change.status)}, form)
    return back_to(f"/customers/{customer_id}", "said.fact_saved")


@pages.post("/customers/{customer_id}/facts/{fact_id}")
async def change_fact(request: Request, customer_id: str, fact_id: str, seen: Signed) -> Response:
    """A fact edited in place (`action=save`) or removed (`action=remove`)."""
    form = await form_of(request)
    calls, actor, path = seen.console.calls, seen.person.actor, f"/customers/{customer_id}/facts/{fact_id}"
    if form.get("action") == "remove":
        change = await calls.change("followups", "DELETE", path, actor)
        said = "said.fact_removed"
    else:
        if problem := _fact_problem(form):
            return await _customer(request, seen, customer_id, {f"fact-{fact_id}": problem}, form)
        change = await calls.change("followups", "PUT", path, actor, {"kind": form["fact_kind"], "value": form["fact"]})
        said = "said.fact_saved"
    if not change.ok:
        return await _customer(request, seen, customer_id, {f"fact-{fact_id}": _problem(change.status)}, form)
    return back_to(f"/customers/{customer_id}", said)


def _fact_problem(form: dict[str, str]) -> str | None:
    if not form.get("fact"):
        return "customer.error.fact_empty"
    if form.get("fact_kind") not in FACT_KINDS:
        return "customer.error.fact_kind"
    return None


@pages.post("/customers/{customer_id}/reviews")
async def record_review(request: Request, customer_id: str, seen: Signed) -> Response:
    """A key-account review: what they need, what went well and badly, the next step."""
    form = await form_of(request)
    errors = {
        f"review-{name}": f"customer.error.review_{name}" for name in ("needs", "next_step") if not form.get(name)
    }
    if errors:
        return await _customer(request, seen, customer_id, errors, form)
    body = {name: form.get(name, "") for name in ("needs", "went_well", "went_badly", "next_step")}
    change = await seen.console.calls.change(
        "followups", "POST", f"/customers/{customer_id}/reviews", seen.person.actor, body
    )
    if not change.ok:
        return await _customer(request, seen, customer_id, {"review-needs": _problem(change.status)}, form)
    return back_to(f"/customers/{customer_id}", "said.review_recorded")


@pages.post("/customers/{customer_id}/code")
async def referral_code(request: Request, customer_id: str, seen: Signed) -> Response:
    change = await seen.console.calls.change("referrals", "POST", f"/referrers/{customer_id}/code", seen.person.actor)
    if not change.ok:
        return await _customer(request, seen, customer_id, {"code": _problem(change.status)})
    return await _customer(request, seen, customer_id, code=change.data["code"])


@pages.post("/customers/{customer_id}/rewards")
async def issue_reward(request: Request, customer_id: str, seen: Signed) -> Response:
    form = await form_of(request)
    reward_id = form.get("reward_id", "")
    if not reward_id:
        return await _customer(request, seen, customer_id, {"reward_id": "customer.error.reward"}, form)
    change = await seen.console.calls.change(
        "loyalty",
        "POST",
        f"/members/{customer_id}/redemptions",
        seen.person.actor,
        {"reward_id": reward_id},
        headers={"Idempotency-Key": form.get("attempt") or str(uuid.uuid4())},
    )
    if not change.ok:
        problem = "customer.error.points" if change.status == 409 else _problem(change.status)
        return await _customer(request, seen, customer_id, {"reward_id": problem}, form)
    return back_to(f"/customers/{customer_id}", "said.reward_issued")


MOST_POINTS_ADJUSTED = 1_000_000  # as loyalty bounds an adjustment (services/loyalty/domain.py)


@pages.post("/customers/{customer_id}/points")
async def adjust_points(request: Request, customer_id: str, seen: Signed) -> Response:
    """Give (or, with a minus, take) points by hand with the reason; staff may too. A resent form is one change."""
    form = await form_of(request)
    points, reason = _adjusted_points(form.get("points", "")), form.get("reason", "")
    errors = {}
    if points is None:
        errors["adjust-points"] = "customer.error.adjust_points"
    if not reason.strip() or len(reason) > 500:
        errors["adjust-reason"] = "customer.error.adjust_reason"
    if errors:
        return await _customer(request, seen, customer_id, errors, form)
    change = await seen.console.calls.change(
        "loyalty",
        "POST",
        f"/members/{customer_id}/adjustments",
        seen.person.actor,
        {"points": points, "reason": reason},
        headers={"Idempotency-Key": form.get("attempt") or str(uuid.uuid4())},
    )
    if not change.ok:
        named = _named(change.fields, "adjust-") or {"adjust-points": _problem(change.status)}
        return await _customer(request, seen, customer_id, named, form)
    return back_to(f"/customers/{customer_id}", "said.points_adjusted")


def _adjusted_points(text: str) -> int | None:
    """A whole number of points, a minus to take them, not 0 and within the bound; None otherwise."""
    written = text.strip().replace(" ", "")
    digits = written.removeprefix("-").removeprefix("+")
    if not digits.isascii() or not digits.isdigit():
        return None
    points = int(written)
    return points if points != 0 and abs(points) <= MOST_POINTS_ADJUSTED else None


@pages.post("/customers/{customer_id}/export")
async def export_customer(request: Request, customer_id: str, seen: Signed) -> Response:
    """Everything the four services hold on the customer, as one JSON file (shared/export.py; owners only)."""
    seen.require("export")
    settings = seen.console.settings
    key = settings.service_key
    data = await gather_export(
        customer_id,
        urls=settings.service_urls,
        api_key=key.get_secret_value() if key else "",
        acting_for=seen.person.actor,
        timeout=settings.service_timeout_seconds * 5,
    )
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in customer_id)
    return Response(
        data.model_dump_json(indent=2),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="customer-{name}.json"'},
    )


@pages.post("/customers/{customer_id}/erase")
async def erase_customer(request: Request, customer_id: str, seen: Signed) -> Response:
    seen.require("erasure")
    form = await form_of(request)
    if form.get("confirm") != customer_id:
        return await _customer(request, seen, customer_id, {"confirm": "customer.error.confirm"}, form)
    change = await seen.console.calls.change("orders", "POST", f"/customers/{customer_id}/erase", seen.person.actor)
    if not change.ok:
        return await _customer(request, seen, customer_id, {"confirm": _problem(change.status)}, form)
    return back_to("/customers", "said.erased")


# --- programs --------------------------------------------------------------------------------------------------


@pages.get("/programs", response_class=HTMLResponse)
async def programs(request: Request, seen: Signed) -> Response:
    return await _programs(request, seen)


async def _programs(
    request: Request, seen: Visit, errors: dict[str, str] | None = None, values: dict[str, str] | None = None
) -> Response:
    rules, campaigns, rewards, affiliates, stats, refusals = await seen.console.calls.read_all(
        ("loyalty", "/rules", None),
        ("loyalty", "/campaigns", None),
        ("loyalty", "/rewards", None),
        ("referrals", "/affiliates", None),
        ("referrals", "/stats", None),
        ("referrals", "/refusals", {"limit": REFUSALS_SHOWN}),
    )
    return render(
        request,
        "programs.html",
        seen.language,
        {
            "title": "programs.title",
            "csrf": seen.csrf,
            "rules": rules,
            "campaigns": campaigns,
            "rewards": rewards,
            "affiliates": affiliates,
            "stats": stats,
            "refusals": refusals,
            "rule_numbers": RULE_NUMBERS,
            "errors": errors or {},
            "values": values or {},
            "parse_time": views.parse_time,
        },
        visit=seen,
        status_code=422 if errors else 200,
    )


@pages.post("/programs/rewards")
async def add_reward(request: Request, seen: Signed) -> Response:
    form = await form_of(request)
    errors: dict[str, str] = {}
    if not form.get("name"):
        errors["reward-name"] = "programs.error.name"
    price = form.get("points_price", "")
    if not price.isdigit() or int(price) < 1:
        errors["reward-points_price"] = "programs.error.points"
    if errors:
        return await _programs(request, seen, errors, form)
    body = {"name": form["name"], "points_price": int(price), "description": form.get("description") or None}
    change = await seen.console.calls.change("loyalty", "POST", "/rewards", seen.person.actor, body)
    if not change.ok:
        named = _named(change.fields, "reward-") or {"reward-name": _problem(change.status)}
        return await _programs(request, seen, named, form)
    return back_to("/programs", "said.reward_added")


@pages.post("/programs/rewards/{reward_id}/retire")
async def retire_reward(request: Request, reward_id: str, seen: Signed) -> Response:
    seen.require("settings")
    await seen.console.calls.change("loyalty", "DELETE", f"/rewards/{reward_id}", seen.person.actor)
    return back_to("/programs", "said.reward_retired")


@pages.post("/programs/affiliates")
async def enrol_affiliate(request: Request, seen: Signed) -> Response:
    form = await form_of(request)
    errors: dict[str, str] = {}
    if not form.get("name"):
        errors["affiliate-name"] = "programs.error.name"
    if domain.email_problem(form.get("email", "")):
        errors["affiliate-email"] = "programs.error.email"
    rate = form.get("commission_rate", "")
    if rate and not _is_rate(rate):
        errors["affiliate-commission_rate"] = "programs.error.rate"
    if errors:
        return await _programs(request, seen, errors, form)
    body = {"name": form["name"], "email": form["email"], "commission_rate": rate or None}
    change = await seen.console.calls.change("referrals", "POST", "/affiliates", seen.person.actor, body)
    if not change.ok:
        named = _named(change.fields, "affiliate-") or {"affiliate-name": _problem(change.status)}
        return await _programs(request, seen, named, form)
    return back_to("/programs", "said.affiliate_added")


@pages.post("/programs/rules")
async def change_rules(request: Request, seen: Signed) -> Response:
    """Points per currency, the tiers' thresholds and multipliers, and the points for reviews, surveys and
    referrals; a rule the form does not carry stays as it is."""
    seen.require("rules")
    form = await form_of(request)
    current = await seen.console.calls.read("loyalty", "/rules")
    if not current.ok:
        return await _programs(request, seen, {"rules-tiers": "error.unavailable"}, form)
    rules = dict(current.data)
    rules["rates"] = {currency: form.get(f"rates-{currency}", rate) for currency, rate in rules["rates"].items()}
    # Each tier as the form changed it (those marked removed left out) and a new one when named, in the order of
    # their thresholds; `fields` says which form field each tier sent stands for, to put a refusal next to it.
    changed = [
        (
            f"tiers-{index}",
            tier
            | {
                "threshold": _whole(form.get(f"tiers-{index}-threshold", str(tier["threshold"]))),
                "multiplier": form.get(f"tiers-{index}-multiplier", tier["multiplier"]),
            },
        )
        for index, tier in enumerate(rules["tiers"])
        if form.get(f"tiers-{index}-remove") != "yes"
    ]
    if form.get("new_tier-name", "").strip():
        new_tier = {
            "name": form["new_tier-name"].strip(),
            "threshold": _whole(form.get("new_tier-threshold", "").strip()),
            "multiplier": form.get("new_tier-multiplier", "").strip() or "1",
        }
        changed.append(("new_tier", new_tier))
    if all(isinstance(tier["threshold"], int) for _, tier in changed):
        changed.sort(key=lambda named: int(named[1]["threshold"]))
    rules["tiers"] = [tier for _, tier in changed]
    fields = {f"tiers-{position}-": f"{field}-" for position, (field, _) in enumerate(changed)}
    for name, _, _ in RULE_NUMBERS:
        rules[name] = _whole(form.get(name, str(rules[name])))
    if "two_sided_referrals" in form:
        rules["two_sided_referrals"] = form["two_sided_referrals"] == "yes"
    change = await seen.console.calls.change("loyalty", "PUT", "/rules", seen.person.actor, rules)
    if not change.ok:
        problem = "programs.error.tiers" if change.status == 409 else _problem(change.status)
        named = (_named(change.fields, "rules-") if change.status == 422 else {}) or {"rules-tiers": problem}
        return await _programs(request, seen, {_tier_field(name, fields): why for name, why in named.items()}, form)
    return back_to("/programs", "said.rules_changed")


def _tier_field(name: str, fields: dict[str, str]) -> str:
    """A refusal of the n-th tier sent (`rules-tiers-1-multiplier`) at the field it came from (`rules-new_tier-…`)."""
    for sent, field in fields.items():
        if name.startswith(f"rules-{sent}"):
            return f"rules-{field}{name.removeprefix(f'rules-{sent}')}"
    return name


@pages.post("/programs/campaigns")
async def start_campaign(request: Request, seen: Signed) -> Response:
    """A bonus campaign from one day to another (midnight UTC), its multiplier and what it covers."""
    seen.require("rules")
    form = await form_of(request)
    body = {
        "name": form.get("name", ""),
        "starts_at": _midnight(form.get("starts_at", "")),
        "ends_at": _midnight(form.get("ends_at", "")),
        "multiplier": form.get("multiplier", ""),
        "categories": _listed(form.get("categories", "")),
        "skus": _listed(form.get("skus", "")),
    }
    change = await seen.console.calls.change("loyalty", "POST", "/campaigns", seen.person.actor, body)
    if not change.ok:
        named = _named(change.fields, "campaign-") or {"campaign-name": _problem(change.status)}
        if change.status == 409:
            named = {"campaign-ends_at": "programs.error.window"}
        return await _programs(request, seen, named, form)
    return back_to("/programs", "said.campaign_started")


@pages.post("/programs/campaigns/{campaign_id}/end")
async def end_campaign(request: Request, campaign_id: str, seen: Signed) -> Response:
    seen.require("rules")
    await seen.console.calls.change("loyalty", "DELETE", f"/campaigns/{campaign_id}", seen.person.actor)
    return back_to("/programs", "said.campaign_ended")


@pages.get("/programs/affiliates/{affiliate_id}", response_class=HTMLResponse)
async def affiliate(request: Request, affiliate_id: str, seen: Signed) -> Response:
    account, commissions = await seen.console.calls.read_all(
        ("referrals", f"/affiliates/{affiliate_id}", None),
        ("referrals", f"/affiliates/{affiliate_id}/commissions", {"limit": COMMISSIONS_SHOWN}),
    )
    if account.problem == "not_found":
        gone = {"title": "programs.affiliate_not_found", "back": "/programs", "back_words": "programs.back"}
        return render(request, "not_found.html", seen.language, gone, visit=seen, status_code=404)
    return render(
        request,
        "affiliate.html",
        seen.language,
        {
            "title": "programs.affiliate",
            "csrf": seen.csrf,
            "account": account,
            "commissions": commissions,
            "affiliate_id": affiliate_id,
            "parse_time": views.parse_time,
        },
        visit=seen,
    )


@pages.get("/programs/codes/{code}", response_class=HTMLResponse)
async def referral_code_page(request: Request, code: str, seen: Signed) -> Response:
    return await _code_page(request, seen, code)


async def _code_page(
    request: Request, seen: Visit, code: str, errors: dict[str, str] | None = None, values: dict[str, str] | None = None
) -> Response:
    found = await seen.console.calls.read("referrals", f"/referrals/{code}", {"limit": COMMISSIONS_SHOWN})
    if found.problem == "not_found":
        gone = {"title": "programs.code_not_found", "back": "/programs", "back_words": "programs.back"}
        return render(request, "not_found.html", seen.language, gone, visit=seen, status_code=404)
    return render(
        request,
        "code.html",
        seen.language,
        {
            "title": "programs.code",
            "csrf": seen.csrf,
            "found": found,
            "code": code,
            "errors": errors or {},
            "values": values or {},
            "parse_time": views.parse_time,
        },
        visit=seen,
        status_code=422 if errors else 200,
    )


@pages.post("/programs/codes/{code}/limits")
async def limit_code(request: Request, code: str, seen: Signed) -> Response:
    """Cap the new customers a referral code pays for and/or let it expire; an empty field lifts that limit."""
    seen.require("rules")
    form = await form_of(request)
    most = form.get("max_conversions", "").strip()
    ends = form.get("expires_at", "").strip()
    body = {"max_conversions": _whole(most) if most else None, "expires_at": _midnight(ends) if ends else None}
    change = await seen.console.calls.change("referrals", "PATCH", f"/referrals/{code}", seen.person.actor, body)
    if not change.ok:
        named = _named(change.fields, "limits-") or {"limits-max_conversions": _problem(change.status)}
        return await _code_page(request, seen, code, named, form)
    return back_to(f"/programs/codes/{code}", "said.limits_set")


def _named(fields: dict[str, str], form: str) -> dict[str, str]:
    """The service's refusal, next to the fields it names (`tiers.0.threshold` is the field `tiers-0-threshold`)."""
    return {f"{form}{name.replace('.', '-')}": "error.invalid" for name in fields}


def _whole(text: str) -> int | str:
    """A whole number as typed, as a number; anything else as typed, for the service to refuse by name."""
    return int(text) if text.isdigit() else text


def _midnight(day: str) -> str:
    """A date from the form (2026-12-24) as the start of that day in UTC; anything else as typed."""
    return f"{day}T00:00:00Z" if len(day) == 10 and day[4] == day[7] == "-" else day


def _listed(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _is_rate(text: str) -> bool:
    try:
        return 0 <= float(text) <= 1
    except ValueError:
        return False


# --- reports ----------------------------------------------------------------------------------------------------


@pages.get("/reports", response_class=HTMLResponse)
async def reports(request: Request, seen: Signed) -> Response:
    calls = seen.console.calls
    # Retention reads every customer's history (seconds at 100,000 customers): it gets longer than a page's wait.
    slow = seen.console.settings.service_timeout_seconds * 5
    (nps, referral_stats, tiers, segments, points), retention = await asyncio.gather(
        calls.read_all(
            ("followups", "/reports/nps", None),
            ("referrals", "/stats", None),
            ("loyalty", "/reports/tiers", None),
            ("orders", "/reports/segments", None),
            ("loyalty", "/reports/points", None),
        ),
        calls.read("orders", "/reports/retention", timeout=slow),
    )
    words = CATALOGUES.words(seen.language)
    months = nps.data["months"][-12:] if nps.ok else []
    k_months = referral_stats.data["months"][-12:] if referral_stats.ok else []
    sizes = segments.data["segments"].items() if segments.ok else []
    segment_sizes = [(words(f"segment.{name}"), count) for name, count in sizes]
    if segments.ok and segments.data["unscored"]:
        segment_sizes.append((words("reports.unscored"), segments.data["unscored"]))
    points_months = points.data["months"][-12:] if points.ok else []
    points_series = [
        (words(f"reports.{figure}"), [month[figure] for month in points_months])
        for figure in ("issued", "redeemed", "expired", "outstanding")
    ]
    return render(
        request,
        "reports.html",
        seen.language,
        {
            "title": "reports.title",
            "csrf": seen.csrf,
            "nps": nps,
            "nps_chart": charts.bars(
                [(m["month"], m["nps"]) for m in months], words("reports.nps_by_month"), low=-100, high=100
            ),
            "nps_months": months,
            "retention": retention,
            "k_chart": charts.bars(
                [(m["month"], float(m["k_factor"]) if m["k_factor"] is not None else None) for m in k_months],
                words("reports.k_by_month"),
            ),
            "k_months": k_months,
            "referral_stats": referral_stats,
            "tiers": tiers,
            "tier_chart": charts.bars(
                [
                    (words(f"tier.{name}") if f"tier.{name}" in CATALOGUES.by_language["en"] else name, float(count))
                    for name, count in (tiers.data["tiers"].items() if tiers.ok else [])
                ],
                words("reports.tier_sizes"),
            ),
            "segments": segments,
            "segment_sizes": segment_sizes,
            "segment_chart": charts.lying_bars(
                [(label, float(count)) for label, count in segment_sizes],
                words("reports.segments"),
                figure=lambda count: Formats(seen.language).number(int(count)),
            ),
            "points": points,
            "points_months": points_months,
            "points_chart": charts.grouped_bars(
                [month["month"] for month in points_months], points_series, words("reports.points")
            ),
            "heat": charts.heat,
        },
        visit=seen,
    )


# --- operations and mail --------------------------------------------------------------------------------------


@pages.get("/operations", response_class=HTMLResponse)
async def operations(request: Request, seen: Signed) -> Response:
    calls = seen.console.calls
    readiness = await calls.read_all(*((service, "/readyz", None) for service in SERVICES))
    metrics = await asyncio.gather(*(calls.metrics(service) for service in SERVICES))
    # Each service's own dead letters, and the events no service binds (any service lists those; orders does here).
    set_aside = await calls.read_all(
        *((service, "/dead-letters", {"limit": DEAD_LETTERS_SHOWN}) for service in SERVICES)
    )
    unrouted, mail_days, sent, failed = await calls.read_all(
        ("orders", "/dead-letters", {"queue": "unrouted", "limit": DEAD_LETTERS_SHOWN}),
        ("followups", "/reports/mail", {"days": MAIL_DAYS_SHOWN}),
        ("followups", "/followups", {"status": "sent", "order": "latest", "limit": 20}),
        ("followups", "/followups", {"status": "failed", "order": "latest", "limit": 20}),
    )
    return render(
        request,
        "operations.html",
        seen.language,
        {
            "title": "operations.title",
            "csrf": seen.csrf,
            "health": list(zip(SERVICES, readiness, metrics, set_aside, strict=True)),
            "set_aside": list(zip(SERVICES, set_aside, strict=True)),
            "unrouted": unrouted,
            "mail_days": mail_days,
            "mail_chart": _mail_chart(mail_days, seen.language),
            "mail_days_shown": MAIL_DAYS_SHOWN,
            "sent": sent,
            "failed": failed,
            "parse_time": views.parse_time,
        },
        visit=seen,
    )


def _mail_chart(mail_days: Reading, language: str) -> Markup:
    """Each day's e-mail sent and failed, labelled by the day of the month in the reader's digits."""
    words, formats = CATALOGUES.words(language), Formats(language)
    days = mail_days.data["days"] if mail_days.ok else []
    return charts.grouped_bars(
        [formats.number(int(day["day"][8:])) for day in days],
        [
            (words("operations.mail_sent"), [day["sent"] for day in days]),
            (words("operations.mail_failed"), [day["failed"] for day in days]),
        ],
        words("operations.mail_days", days=formats.number(MAIL_DAYS_SHOWN)),
    )


@pages.post("/operations/dead-letters/{service}/replay")
async def replay_dead_letters(request: Request, service: str, seen: Signed) -> Response:
    """Send a service's messages set aside back to it (one, by its id, or all), after a fix (owners only)."""
    seen.require("replay")
    form = await form_of(request)
    unrouted = service == "unrouted"
    owner = "orders" if unrouted else next((known for known in SERVICES if known == service), None)
    if owner is None:
        return back_to("/operations", "said.replay_failed")
    body = {"message_ids": [form["message_id"]]} if form.get("message_id") else {}
    path = "/dead-letters/replay?queue=unrouted" if unrouted else "/dead-letters/replay"
    change = await seen.console.calls.change(owner, "POST", path, seen.person.actor, body)
    return back_to("/operations", "said.replayed" if change.ok else "said.replay_failed")


@pages.get("/mail", response_class=HTMLResponse)
async def mailbox(request: Request, seen: Signed) -> Response:
    letters = mail.letters(seen.console.settings.mail_folder, limit=50)
    return render(
        request,
        "mail.html",
        seen.language,
        {"title": "mail.title", "csrf": seen.csrf, "letters": letters, "folder": seen.console.settings.mail_folder},
        visit=seen,
    )


# --- settings and people (owners only) ------------------------------------------------------------------------


@pages.get("/settings", response_class=HTMLResponse)
async def settings_page(request: Request, seen: Signed) -> Response:
    seen.require("settings")
    return await _settings(request, seen)


async def _settings(
    request: Request, seen: Visit, errors: dict[str, str] | None = None, values: dict[str, str] | None = None
) -> Response:
    settings = seen.console.settings
    return render(
        request,
        "settings.html",
        seen.language,
        {
            "title": "settings.title",
            "csrf": seen.csrf,
            "people": await store.people(seen.console.db),
            "urls": settings.service_urls,
            "key_set": settings.service_key is not None,
            "errors": errors or {},
            "values": values or {},
        },
        visit=seen,
        status_code=422 if errors else 200,
    )


@pages.post("/settings/people")
async def add_person(request: Request, seen: Signed) -> Response:
    seen.require("people")
    form = await form_of(request)
    email = domain.normal_email(form.get("email", ""))
    errors: dict[str, str] = {}
    if not form.get("name"):
        errors["person-name"] = "people.error.name"
    if problem := domain.email_problem(email):
        errors["person-email"] = problem
    if problem := domain.password_problem(form.get("password", "")):
        errors["person-password"] = problem
    role = form.get("role", "staff")
    if role not in domain.ROLES:
        errors["person-role"] = "people.error.role"
    if not errors:
        person = store.Person(
            email,
            form["name"],
            "owner" if role == "owner" else "staff",
            domain.hash_password(form["password"]),
            None,
            seen.console.now(),
        )
        if not await store.add_person(seen.console.db, person):
            errors["person-email"] = "people.error.taken"
    if errors:
        return await _settings(request, seen, errors, {k: v for k, v in form.items() if k != "password"})
    return back_to("/settings", "said.person_added")


@pages.post("/settings/people/{email}/remove")
async def remove_person(request: Request, email: str, seen: Signed) -> Response:
    seen.require("people")
    if email == seen.person.email:
        return await _settings(request, seen, {"people": "people.error.self"})
    await store.remove_person(seen.console.db, email)
    return back_to("/settings", "said.person_removed")
