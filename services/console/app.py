"""Wiring of the console: its database, the services' client, the pages, the first owner, the refusals."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from services.console import domain, store
from services.console.calls import ServiceCalls
from services.console.pages import pages
from services.console.settings import ConsoleSettings
from services.console.web import HERE, BadToken, Console, NotAllowed, SecurityHeaders, SignInNeeded, render
from shared.http import BodyLimit
from shared.i18n import choose_language
from shared.mongo import Database, database, open_client

log = structlog.get_logger("rapport.console")


def build_app(settings: ConsoleSettings, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = open_client(settings.mongodb_url, "rapport-console")
        db = database(client, f"{settings.crm_prefix}_console")
        key = settings.service_key
        calls = ServiceCalls(
            settings.service_urls, key.get_secret_value() if key else None, settings.service_timeout_seconds
        )
        try:
            await store.ensure_indexes(db)
            await first_owner(db, settings, clock())
            app.state.console = Console(settings, db, calls, clock)
            yield
        finally:
            await calls.close()
            await client.close()

    app = FastAPI(title="Rapport console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(pages)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(SignInNeeded)
    async def sign_in_first(request: Request, _: SignInNeeded) -> Response:
        if request.method in ("GET", "HEAD"):
            return RedirectResponse("/login", status_code=303)
        return _refusal(request, "refused.sign_in", 401)

    @app.exception_handler(BadToken)
    async def bad_token(request: Request, _: BadToken) -> Response:
        return _refusal(request, "refused.csrf", 403)

    @app.exception_handler(NotAllowed)
    async def not_allowed(request: Request, _: NotAllowed) -> Response:
        return _refusal(request, "refused.owner_only", 403)

    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(SecurityHeaders)
    return app


def _refusal(request: Request, message: str, status: int) -> HTMLResponse:
    language = choose_language(None, request.headers.get("accept-language"))
    return render(request, "refused.html", language, {"title": message, "message": message}, status_code=status)


async def first_owner(db: Database, settings: ConsoleSettings, now: datetime) -> None:
    """On a first start with CONSOLE_OWNER_EMAIL and CONSOLE_OWNER_PASSWORD, the console's first owner."""
    if await store.anyone(db):
        return
    if not settings.console_owner_email or settings.console_owner_password is None:
        log.warning(
            "console_has_nobody", hint="set CONSOLE_OWNER_EMAIL/PASSWORD, or python -m services.console add-user"
        )
        return
    email = domain.normal_email(settings.console_owner_email)
    password = settings.console_owner_password.get_secret_value()
    if domain.email_problem(email) or domain.password_problem(password):
        log.error("console_owner_refused", reason="CONSOLE_OWNER_EMAIL must be an address, the password 10+ characters")
        return
    name = email.split("@", 1)[0]
    if await store.add_person(db, store.Person(email, name, "owner", domain.hash_password(password), None, now)):
        log.info("console_owner_created", email=email)
