"""The customer's own pages (DESIGN.md §6 "followups, public"): the feedback form and its thank-you, and the
unsubscribe page with RFC 8058's one-click POST.

No key and no login: the signed token in the link is the credential, so a form carries it instead of a CSRF
token (a page of another site cannot know it). Plain HTML that works without JavaScript, its CSS inline
(allowed by its hash in the Content-Security-Policy), every string from `pages/locales/<language>.json` in the
customer's language: the language their e-mail was written in, else their browser's, else English (Persian
right to left). A bad, expired or spent link gets a page that says so, with a 4xx status, never a stack trace.
"""

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

import jinja2
from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.followups import domain, service, store
from services.followups.domain import FeedbackLinkUnknown, FeedbackLinkUsed
from services.followups.settings import FollowupsSettings, FollowupsUnit, settings_of
from services.followups.store import FollowUp
from services.followups.tokens import InvalidToken, TokenClaims, read_token, read_unsubscribe_token
from shared.i18n import Catalogues, Formats, Words, choose_language, direction
from shared.service import Runtime, runtime

FOLDER = Path(__file__).parent / "pages"
CATALOGUES = Catalogues.load(FOLDER / "locales")
CSS = (FOLDER / "style.css").read_text(encoding="utf-8")
_CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
COMMENT_LIMIT = 5000
TOKEN_LIMIT = 2000
ONE_CLICK = ("List-Unsubscribe", "One-Click")  # RFC 8058's POST body

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(FOLDER / "templates", encoding="utf-8"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
# No script at all, the inline style by its hash, forms only to this service, never in a frame.
_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",  # the token is in the address: no other site hears of it
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

pages = APIRouter(tags=["customer pages"])
Rt = Annotated[Runtime, Depends(runtime)]


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _form_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {"schema": schema},
                "multipart/form-data": {"schema": schema},
            },
        }
    }


UNREADABLE = _html("The body cannot be read as a form (a broken multipart body, say).")
LINK_ANSWERS: dict[int | str, dict[str, Any]] = {
    401: _html("The link's token is missing, forged or garbled (a page saying so)."),
    410: _html("The link has expired, or names nothing this shop still holds (an erased customer's)."),
}


# --- rendering ----------------------------------------------------------------------------------


def _page(
    template: str,
    language: str,
    settings: FollowupsSettings,
    title_id: str,
    *,
    status_code: int = status.HTTP_200_OK,
    **values: Any,
) -> HTMLResponse:
    words = CATALOGUES.words(language)
    formats = Formats(language)
    html = _environment.get_template(template).render(
        t=words,
        number=formats.number,
        language=words.language,
        dir=direction(words.language),
        shop_name=settings.shop_name,
        title=words(title_id),
        css=Markup(CSS),  # noqa: S704 - our own stylesheet, without markup
        **values,
    )
    return HTMLResponse(html, status_code=status_code, headers=_HEADERS)


Problem = Literal["invalid", "expired", "gone", "not_unsubscribe", "unreadable"]
_PROBLEM_STATUS = {
    "invalid": status.HTTP_401_UNAUTHORIZED,
    "expired": status.HTTP_410_GONE,
    "gone": status.HTTP_410_GONE,
    "not_unsubscribe": status.HTTP_422_UNPROCESSABLE_CONTENT,
    "unreadable": status.HTTP_400_BAD_REQUEST,
}


def _problem(problem: Problem, language: str, settings: FollowupsSettings) -> HTMLResponse:
    words = CATALOGUES.words(language)
    days = Formats(language).number(settings.feedback_token_days)  # in the language's own digits
    message = words(f"problem.{problem}_body", **({"days": days} if problem == "expired" else {}))
    return _page(
        "problem.html",
        language,
        settings,
        f"problem.{problem}_title",
        status_code=_PROBLEM_STATUS[problem],
        message=message,
    )


def _browser_language(request: Request, wanted: str | None = None) -> str:
    return choose_language(wanted, request.headers.get("accept-language"))


async def _form_fields(request: Request) -> dict[str, str] | None:
    """The text fields of a posted form; None when the body cannot be read as one (a broken multipart, say)."""
    try:
        form = await request.form()
    except StarletteHTTPException:  # Starlette's answer to a body it cannot parse: ours is a page
        return None
    return {name: value for name, value in form.items() if isinstance(value, str)}


def _redirect(page: str, token: str) -> RedirectResponse:
    """POST-redirect-GET, relative to the page (so it works behind a proxy under any prefix)."""
    return RedirectResponse(f"{page}?{urlencode({'token': token})}", status.HTTP_303_SEE_OTHER, headers=_HEADERS)


# --- the feedback link ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedbackLink:
    token: str
    claims: TokenClaims
    followup: FollowUp
    language: str


async def _feedback_link(rt: Runtime, request: Request, token: str | None) -> FeedbackLink | HTMLResponse:
    """The feedback request a link names, in the customer's language; or the page saying why it does not work."""
    settings = settings_of(rt)
    if not token or len(token) > TOKEN_LIMIT or settings.feedback_token_secret is None:
        return _problem("invalid", _browser_language(request), settings)
    try:
        claims = read_token(
            settings.feedback_token_secret.get_secret_value(),
            token,
            max_age_seconds=settings.feedback_token_days * 24 * 3600,
        )
    except InvalidToken as invalid:
        if invalid.reason == "expired" and invalid.claims is not None:
            expired = await store.followup_named(rt, invalid.claims.followup_id)
            return _problem(
                "expired", _browser_language(request, None if expired is None else expired.locale), settings
            )
        return _problem("invalid", _browser_language(request), settings)
    followup = await store.followup_named(rt, claims.followup_id)
    if followup is None or not domain.link_fits(
        followup.customer_id, followup.order_id, claims.customer_id, claims.order_id
    ):
        return _problem("gone", _browser_language(request, None if followup is None else followup.locale), settings)
    language = followup.locale
    if language is None:  # planned but not sent by this replica's record yet: the customer's own language
        contact = await store.contact_of(rt, claims.customer_id)
        language = None if contact is None else contact.get("locale")
    return FeedbackLink(token, claims, followup, _browser_language(request, language))


def _form(
    link: FeedbackLink,
    settings: FollowupsSettings,
    values: dict[str, str],
    errors: dict[str, str],
    status_code: int = status.HTTP_200_OK,
) -> HTMLResponse:
    return _page(
        "feedback_form.html",
        link.language,
        settings,
        "form.title",
        status_code=status_code,
        token=link.token,
        values=values,
        errors=errors,
        comment_limit=COMMENT_LIMIT,
    )


@pages.get(
    "/feedback/form",
    response_class=HTMLResponse,
    responses={200: _html("The feedback form, or the thank-you when the link was used already."), **LINK_ANSWERS},
)
async def feedback_form(request: Request, rt: Rt, token: str | None = None) -> Response:
    """The page the feedback request's link opens: ratings, the 0–10 question and a comment."""
    link = await _feedback_link(rt, request, token)
    if isinstance(link, Response):
        return link
    if await store.feedback_through(rt, link.followup.followup_id) is not None:
        return await _thanks(rt, link, already=True)
    return _form(link, settings_of(rt), {}, {})


@pages.post(
    "/feedback/form",
    response_class=HTMLResponse,
    openapi_extra=_form_body(
        {
            "token": {"type": "string"},
            "overall": {"type": "string", "enum": ["1", "2", "3", "4", "5"]},
            "product": {"type": "string", "enum": ["1", "2", "3", "4", "5"]},
            "service": {"type": "string", "enum": ["1", "2", "3", "4", "5"]},
            "nps": {"type": "string", "enum": [str(n) for n in range(11)]},
            "comment": {"type": "string", "maxLength": COMMENT_LIMIT},
        },
        ["token", "overall"],
    ),
    responses={
        303: {
            "description": "Recorded: on to the thank-you page (or, for a link used before, back to the form's "
            "page, which says the answers arrived)."
        },
        400: UNREADABLE,
        422: _html("An answer is missing or out of range: the form again, the error next to the field."),
        **LINK_ANSWERS,
    },
)
async def send_feedback(request: Request, rt: Rt) -> Response:
    """The form's answers become FeedbackReceived, exactly as through `POST /feedback` (one per link)."""
    settings = settings_of(rt)
    posted = await _posted(rt, request)
    if isinstance(posted, Response):
        return posted
    link, raw = posted
    answers, errors = _answers(raw, CATALOGUES.words(link.language), Formats(link.language))
    if errors:
        kept: dict[str, str] = {
            name: raw[name] for name in ("overall", "product", "service", "nps", "comment") if name in raw
        }
        return _form(link, settings, kept, errors, status.HTTP_422_UNPROCESSABLE_CONTENT)
    fields = answers | {"customer_id": link.claims.customer_id, "order_id": link.claims.order_id, "channel": "web"}
    try:
        feedback = service.new_feedback(fields, received_at=rt.now())
    except ValidationError:  # the checks above keep to the contract; a mismatch is ours, so say it plainly
        return _problem("invalid", link.language, settings)

    async def take(unit: FollowupsUnit) -> service.FeedbackTaken:
        return await service.take_feedback(unit, feedback, followup_id=link.claims.followup_id)

    try:
        await store.once_per_link(rt, take)
    except FeedbackLinkUsed:
        return _redirect("form", link.token)  # the form's page says the answers arrived
    except FeedbackLinkUnknown:
        return _problem("gone", link.language, settings)
    return _redirect("thanks", link.token)


async def _posted(rt: Runtime, request: Request) -> tuple[FeedbackLink, dict[str, str]] | HTMLResponse:
    """The posted form and the feedback link its token names; or the page saying what is wrong with them."""
    raw = await _form_fields(request)
    if raw is None:
        return _problem("unreadable", _browser_language(request), settings_of(rt))
    link = await _feedback_link(rt, request, raw.get("token"))
    return link if isinstance(link, Response) else (link, raw)


def _answers(raw: dict[str, str], words: Words, formats: Formats) -> tuple[dict[str, Any], dict[str, str]]:
    """The form's answers as FeedbackReceived's fields, and an error message per field that is wrong."""
    errors: dict[str, str] = {}
    ratings: dict[str, int] = {}
    for name in ("overall", "product", "service"):
        given = raw.get(name, "").strip()
        if not given:
            if name == "overall":
                errors[name] = words("error.overall_missing")
            continue
        if not given.isdigit() or not 1 <= int(given) <= 5:
            errors[name] = words("error.rating_range")
            continue
        ratings[name] = int(given)
    nps: int | None = None
    given_nps = raw.get("nps", "").strip()
    if given_nps:
        if given_nps.isdigit() and 0 <= int(given_nps) <= 10:
            nps = int(given_nps)
        else:
            errors["nps"] = words("error.nps_range")
    comment = raw.get("comment", "").strip()
    if len(comment) > COMMENT_LIMIT:
        errors["comment"] = words("error.comment_long", limit=formats.number(COMMENT_LIMIT))
    return {"ratings": ratings, "nps": nps, "comment": comment or None}, errors


@pages.get(
    "/feedback/thanks",
    response_class=HTMLResponse,
    responses={
        200: _html("Thank you; a promoter sees their referral code and a link to share."),
        303: {"description": "No answer through this link yet: on to the form."},
        **LINK_ANSWERS,
    },
)
async def feedback_thanks(request: Request, rt: Rt, token: str | None = None) -> Response:
    """After the form: thanks, and for a promoter (NPS 9–10) their referral code, right there."""
    link = await _feedback_link(rt, request, token)
    if isinstance(link, Response):
        return link
    return await _thanks(rt, link, already=False)


async def _thanks(rt: Runtime, link: FeedbackLink, *, already: bool) -> Response:
    settings = settings_of(rt)
    given = await store.feedback_through(rt, link.followup.followup_id)
    if given is None:
        return _redirect("form", link.token)
    promoter = domain.is_promoter(given.nps)
    code = await store.referral_code_of(rt, link.claims.customer_id) if promoter else None
    share_url = f"{settings.referral_url}{code}" if code else ""
    words = CATALOGUES.words(link.language)
    share_mail = ""
    if code:
        subject = words("thanks.share_subject", shop=settings.shop_name)
        body = words("thanks.share_body", shop=settings.shop_name, code=code, url=share_url)
        share_mail = f"mailto:?subject={quote(subject)}&body={quote(body)}"
    code_by_mail = False
    if promoter and not code:  # the invitation is on its way from referrals; will it be e-mailed too?
        contact = await store.contact_of(rt, link.claims.customer_id)
        email = None if contact is None else contact.get("email")
        consent, listed = await store.mail_consent(rt, link.claims.customer_id, email)
        reason = domain.why_not_sent(
            "referral_invite",
            consent,
            address_unsubscribed=listed,
            consent_default=settings.marketing_consent_default,
        )
        code_by_mail = reason is None
    return _page(
        "feedback_thanks.html",
        link.language,
        settings,
        "thanks.already_title" if already else "thanks.title",
        already=already,
        unhappy=domain.is_detractor_feedback(given.overall, given.nps),
        promoter=promoter,
        code=code,
        share_url=share_url,
        share_mail=share_mail,
        code_by_mail=code_by_mail,
        reload_url=f"thanks?{urlencode({'token': link.token})}",
    )


# --- unsubscribe (RFC 8058) ---------------------------------------------------------------------------


async def _unsubscriber(rt: Runtime, request: Request, token: str | None) -> tuple[str, str] | HTMLResponse:
    """The customer an unsubscribe link names and their language; or the page saying the link does not work."""
    settings = settings_of(rt)
    if not token or len(token) > TOKEN_LIMIT or settings.feedback_token_secret is None:
        return _problem("invalid", _browser_language(request), settings)
    try:
        customer_id = read_unsubscribe_token(settings.feedback_token_secret.get_secret_value(), token)
    except InvalidToken:
        return _problem("invalid", _browser_language(request), settings)
    contact = await store.contact_of(rt, customer_id)
    return customer_id, _browser_language(request, None if contact is None else contact.get("locale"))


@pages.get(
    "/unsubscribe",
    response_class=HTMLResponse,
    responses={
        200: _html("Asks to confirm with a button (a GET never unsubscribes: mail scanners follow links)."),
        401: LINK_ANSWERS[401],
    },
)
async def unsubscribe_page(request: Request, rt: Rt, token: str | None = None) -> Response:
    """The link in relationship mail: a page with one button; scanners that follow links change nothing."""
    found = await _unsubscriber(rt, request, token)
    if isinstance(found, Response):
        return found
    customer_id, language = found
    consent, _ = await store.mail_consent(rt, customer_id, None)
    settings = settings_of(rt)
    if consent.unsubscribed_at is not None:
        return _page("unsubscribe.html", language, settings, "unsubscribe.already_title", state="done", action="")
    action = f"unsubscribe?{urlencode({'token': token})}"
    return _page("unsubscribe.html", language, settings, "unsubscribe.title", state="asking", action=action)


@pages.post(
    "/unsubscribe",
    response_class=HTMLResponse,
    openapi_extra=_form_body({"List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}}, ["List-Unsubscribe"]),
    responses={
        200: _html("Unsubscribed (a mail client's one-click POST, or the page's button); said in their language."),
        401: LINK_ANSWERS[401],
        400: UNREADABLE,
        422: _html("The body is not `List-Unsubscribe=One-Click`: nothing changed."),
    },
)
async def unsubscribe(request: Request, rt: Rt, token: str | None = None) -> Response:
    """RFC 8058 one-click: `POST <the List-Unsubscribe URL>` with `List-Unsubscribe=One-Click`, no login."""
    found = await _unsubscriber(rt, request, token)
    if isinstance(found, Response):
        return found
    customer_id, language = found
    settings = settings_of(rt)
    form = await _form_fields(request)
    if form is None:
        return _problem("unreadable", language, settings)
    if form.get(ONE_CLICK[0]) != ONE_CLICK[1]:
        return _problem("not_unsubscribe", language, settings)

    async def record(unit: FollowupsUnit) -> None:
        await service.unsubscribe(unit, customer_id)

    await rt.transaction(record)
    return _page("unsubscribe.html", language, settings, "unsubscribe.done_title", state="done", action="")
