"""The console's web plumbing: who is visiting (session cookie), CSRF, the page renderer, security headers."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.console import domain, store
from services.console.calls import ServiceCalls
from services.console.settings import ConsoleSettings
from shared.i18n import LANGUAGES, NATIVE_NAMES, Catalogues, Formats, choose_language, direction
from shared.mongo import Database

HERE = Path(__file__).parent
SESSION_COOKIE = "rapport_session"
SIGN_IN_COOKIE = "rapport_sign_in"  # the sign-in form's CSRF token, before there is a session
CATALOGUES = Catalogues.load(HERE / "locales")
TEMPLATES = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
# No script, no inline style, no frame, nothing from elsewhere: the pages work without JavaScript.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


@dataclass
class Console:
    """What every route of a running console shares."""

    settings: ConsoleSettings
    db: Database
    calls: ServiceCalls
    clock: Any = field(default=lambda: datetime.now(UTC))

    def now(self) -> datetime:
        moment: datetime = self.clock()
        return moment


def console_of(request: Request) -> Console:
    found: Console = request.app.state.console
    return found


class SignInNeeded(Exception):
    """No session: the visitor is sent to the sign-in page (a page) or refused (an action)."""


class NotAllowed(Exception):
    """A staff member asked for an owner's page or action."""


class BadToken(Exception):
    """A form came without the session's CSRF token."""


@dataclass(frozen=True)
class Visit:
    """A signed-in person's request: who, in which language, with the session's CSRF token."""

    person: store.Person
    csrf: str
    language: str
    console: Console

    def require(self, action: str) -> None:
        if not domain.may(self.person.role, action):
            raise NotAllowed(action)


async def visit(request: Request) -> Visit:
    """The signed-in person, or SignInNeeded; a POST must carry the session's CSRF token."""
    console = console_of(request)
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInNeeded
    digest = domain.token_digest(token)
    now = console.now()
    session = await store.find_session(console.db, digest, now)
    person = None if session is None else await store.find_person(console.db, session.email)
    if session is None or person is None:
        raise SignInNeeded
    if request.method == "POST":
        form = await request.form()
        if not domain.same_token(session.csrf, _text(form.get("csrf"))):
            raise BadToken
    # Sliding expiry, written at most once in a while, not on every page.
    renewed = domain.session_expiry(now, console.settings.console_session_hours)
    if (renewed - session.expires_at).total_seconds() > 600:
        await store.extend_session(console.db, digest, renewed)
    language = choose_language(person.language, request.headers.get("accept-language"))
    return Visit(person, session.csrf, language, console)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


async def form_of(request: Request) -> dict[str, str]:
    """The posted form's text fields (files ignored), each trimmed."""
    form = await request.form()
    return {key: value.strip() for key, value in form.items() if isinstance(value, str)}


def render(
    request: Request,
    template: str,
    language: str,
    values: Mapping[str, Any],
    *,
    visit: Visit | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """A page in the visitor's language; every template gets `t` (words), `f` (formats) and the navigation."""
    words = CATALOGUES.words(language)
    said = request.query_params.get("said")
    context = {
        "t": words,
        "f": Formats(language),
        "lang": language,
        "dir": direction(language),
        "languages": [(code, NATIVE_NAMES[code]) for code in LANGUAGES],
        "visit": visit,
        "path": request.url.path,
        "here": str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""),
        "said": said if said and said.startswith("said.") and said in CATALOGUES.by_language["en"] else None,
        "term": lambda kind, value: _term(words, kind, value),
        "may": (lambda action: domain.may(visit.person.role, action)) if visit else (lambda action: False),
        "now": console_of(request).now(),
        **values,
    }
    return HTMLResponse(TEMPLATES.get_template(template).render(context), status_code=status_code)


def _term(words: Any, kind: str, value: object) -> str:
    """A value's name in the language (`term("segment", "champions")`); the value itself when none is known."""
    try:
        text: str = words(f"{kind}.{value}")
    except KeyError:
        return str(value)
    return text


def back_to(path: str, said: str | None = None) -> RedirectResponse:
    """After a change: back to the page (303, so a reload does not send the form again), saying what was done."""
    target = path if path.startswith("/") and not path.startswith("//") else "/today"
    if said:
        target += ("&" if "?" in target else "?") + f"said={said}"
    return RedirectResponse(target, status_code=303)


def secure_cookies(request: Request, settings: ConsoleSettings) -> bool:
    if settings.console_secure_cookies is not None:
        return settings.console_secure_cookies
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class SecurityHeaders:
    """Every answer of the console carries the same strict headers (CSP: no script, nothing from elsewhere)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)
