"""The console against its real MongoDB, with every service away: sessions, CSRF, roles, throttling, no key leaks.

Every page still renders (the missing parts marked); nothing but the sign-in page is reachable without a session;
a form without the session's token is refused; a staff member cannot reach an owner's page or action; the key the
console calls the services with never reaches a browser.
"""

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest

from services.console import domain, store
from services.console.app import build_app
from services.console.settings import ConsoleSettings
from tests.support.infra import Infrastructure
from tests.support.local_mongod import free_port

SERVICE_KEY = "console-service-key-" + uuid.uuid4().hex
OWNER = ("owner@shop.example", "owner password 1")
STAFF = ("staff@shop.example", "staff password 1")
PAGES = [
    "/today",
    "/customers",
    "/customers?q=jana",
    "/customers/cus_1",
    "/programs",
    "/programs/affiliates/aff_1",
    "/programs/codes/K7Q-XM4-PA9",
    "/reports",
    "/operations",
    "/mail",
]
OWNER_PAGES = ["/settings"]


@dataclass
class Running:
    settings: ConsoleSettings
    http: httpx.AsyncClient


@pytest.fixture
async def console(
    infra: Infrastructure, prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    away = f"http://127.0.0.1:{free_port()}"  # nothing listens: every service is down
    settings = ConsoleSettings(
        mongodb_url=infra.mongodb_url,
        crm_prefix=f"{prefix}c{uuid.uuid4().hex[:6]}",
        orders_url=away,
        followups_url=away,
        loyalty_url=away,
        referrals_url=away,
        console_api_key=SERVICE_KEY,
        console_owner_email=OWNER[0],
        console_owner_password=OWNER[1],
        mail_folder=str(tmp_path_factory.mktemp("mail")),
        service_timeout_seconds=1.0,
        log_format="console",
    )
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        db = app.state.console.db
        staff = store.Person(STAFF[0], "Staff", "staff", domain.hash_password(STAFF[1]), None, datetime.now(UTC))
        await store.add_person(db, staff)
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as http:
            yield Running(settings, http)
        await db.client.drop_database(db.name)


async def sign_in(http: httpx.AsyncClient, email: str, password: str) -> str:
    """Sign in as a browser does; returns the session's CSRF token (read from a page's form)."""
    form = await http.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    answer = await http.post("/login", data={"csrf": token.group(1), "email": email, "password": password})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/today"
    today = await http.get("/today")
    found = re.search(r'name="csrf" value="([^"]+)"', today.text)
    assert found is not None
    return found.group(1)


async def test_nothing_but_the_sign_in_page_without_a_session(console: Running) -> None:
    http = console.http
    for path in [*PAGES, *OWNER_PAGES, "/"]:
        answer = await http.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"] in ("/login", "/today"), path
    for action in [
        "/today/calls/call:cus_1/done",
        "/today/escalations/esc_1/resolve",
        "/customers/cus_1/erase",
        "/customers/cus_1/facts",
        "/customers/cus_1/points",
        "/programs/rewards",
        "/programs/codes/K7Q-XM4-PA9/limits",
        "/operations/dead-letters/loyalty/replay",
        "/settings/people",
        "/logout",
    ]:
        answer = await http.post(action, data={"note": "x", "confirm": "cus_1"})
        assert answer.status_code == 401, action
    assert (await http.get("/login")).status_code == 200


async def test_the_first_owner_signs_in_and_every_page_renders_with_the_services_away(console: Running) -> None:
    http = console.http
    csrf = await sign_in(http, *OWNER)
    for path in [*PAGES, *OWNER_PAGES]:
        answer = await http.get(path)
        assert answer.status_code in (200, 404), (path, answer.text[:500])
        assert "service does not answer" in answer.text or path in ("/mail", "/settings"), path
    assert csrf


async def session_cookie(http: httpx.AsyncClient, headers: dict[str, str]) -> str:
    form = await http.get("/login", headers=headers)
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    data = {"csrf": token.group(1), "email": OWNER[0], "password": OWNER[1]}
    answer = await http.post("/login", data=data, headers=headers)
    assert answer.status_code == 303, answer.text
    return next(v for k, v in answer.headers.multi_items() if k == "set-cookie" and v.startswith("rapport_session"))


async def test_the_session_cookie_is_http_only_lax_and_secure_behind_tls(console: Running) -> None:
    behind_tls = httpx.AsyncClient(transport=console.http._transport, base_url="https://console")
    cookie = await session_cookie(behind_tls, {"X-Forwarded-Proto": "https"})
    await behind_tls.aclose()
    assert "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower()
    assert "Secure" in cookie
    plain = await session_cookie(console.http, {})
    assert "HttpOnly" in plain
    assert "Secure" not in plain


async def test_a_form_without_the_session_token_is_refused(console: Running) -> None:
    http = console.http
    csrf = await sign_in(http, *OWNER)
    for token in (None, "", "not-the-token"):
        data = {"name": "Mug", "points_price": "100"} | ({} if token is None else {"csrf": token})
        answer = await http.post("/programs/rewards", data=data)
        assert answer.status_code == 403, token
    signed_out = await http.post("/logout", data={"csrf": "wrong"})
    assert signed_out.status_code == 403
    assert (await http.get("/today")).status_code == 200  # still signed in
    # With the token the form goes through to the service (which is away: the page says so, next to the field).
    answer = await http.post("/programs/rewards", data={"csrf": csrf, "name": "Mug", "points_price": "100"})
    assert answer.status_code == 422
    assert "service does not answer" in answer.text


async def test_the_sign_in_form_needs_its_own_token(console: Running) -> None:
    answer = await console.http.post("/login", data={"email": OWNER[0], "password": OWNER[1]})
    assert answer.status_code == 400
    assert "rapport_session" not in answer.headers.get("set-cookie", "")


async def test_staff_cannot_reach_settings_erasure_people_or_loyalty_rules(console: Running) -> None:
    http = console.http
    csrf = await sign_in(http, *STAFF)
    assert (await http.get("/today")).status_code == 200
    settings = await http.get("/settings")
    assert settings.status_code == 403
    assert "Only an owner" in settings.text
    assert 'href="/settings"' not in (await http.get("/today")).text
    for action, data in [
        ("/customers/cus_1/erase", {"confirm": "cus_1"}),
        ("/customers/cus_1/export", {}),
        ("/settings/people", {"name": "X", "email": "x@shop.example", "password": "0123456789", "role": "owner"}),
        (f"/settings/people/{OWNER[0]}/remove", {}),
        ("/programs/rules", {"rates-EUR": "5"}),
        ("/programs/campaigns", {"name": "Double", "starts_at": "2026-12-01", "ends_at": "2026-12-24"}),
        ("/programs/campaigns/cmp_1/end", {}),
        ("/operations/dead-letters/loyalty/replay", {"message_id": "evt_1"}),
        ("/programs/codes/K7Q-XM4-PA9/limits", {"max_conversions": "10"}),
    ]:
        answer = await http.post(action, data={"csrf": csrf, **data})
        assert answer.status_code == 403, action
    assert await store.find_person(http._transport.app.state.console.db, "x@shop.example") is None  # type: ignore[attr-defined]


async def test_an_owner_adds_staff_with_errors_next_to_the_fields(console: Running) -> None:
    http = console.http
    csrf = await sign_in(http, *OWNER)
    refused = await http.post(
        "/settings/people", data={"csrf": csrf, "name": "", "email": "nope", "password": "short", "role": "staff"}
    )
    assert refused.status_code == 422
    for field, message in [("person-name", "Name:"), ("person-email", "E-mail:"), ("person-password", "Password:")]:
        assert re.search(rf'id="{field}-error">{message}', refused.text), field
        assert f'aria-describedby="{field}-error"' in refused.text
    added = await http.post(
        "/settings/people",
        data={"csrf": csrf, "name": "Eva", "email": "Eva@Shop.example", "password": "a long password", "role": "staff"},
    )
    assert added.status_code == 303
    other = httpx.AsyncClient(transport=http._transport, base_url="http://console")
    await sign_in(other, "eva@shop.example", "a long password")
    assert (await other.get("/settings")).status_code == 403
    await other.aclose()


async def test_sign_in_is_throttled_per_address(console: Running) -> None:
    http = console.http
    form = await http.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    for _ in range(domain.MAX_FAILURES_PER_EMAIL):
        wrong = await http.post("/login", data={"csrf": token.group(1), "email": OWNER[0], "password": "guess"})
        assert wrong.status_code == 401
    right = await http.post("/login", data={"csrf": token.group(1), "email": OWNER[0], "password": OWNER[1]})
    assert right.status_code == 429
    assert "rapport_session" not in right.headers.get("set-cookie", "")
    # Another person signing in from elsewhere is not held back by these failures.
    await sign_in(httpx.AsyncClient(transport=http._transport, base_url="http://console"), *STAFF)


async def test_the_service_key_never_reaches_the_browser(console: Running) -> None:
    http = console.http
    login = await http.get("/login")
    seen = [login]
    csrf = await sign_in(http, *OWNER)
    for path in [*PAGES, *OWNER_PAGES, "/static/console.css", "/readyz"]:
        seen.append(await http.get(path))
    seen.append(await http.post("/programs/rewards", data={"csrf": csrf, "name": "Mug", "points_price": "1"}))
    seen.append(await http.post("/customers/cus_1/erase", data={"csrf": csrf, "confirm": "cus_1"}))
    for answer in seen:
        assert SERVICE_KEY not in answer.text
        assert all(SERVICE_KEY not in value for _, value in answer.headers.multi_items())
    assert "default-src 'none'" in seen[-1].headers["content-security-policy"]


async def test_a_language_is_chosen_per_person(console: Running) -> None:
    http = console.http
    csrf = await sign_in(http, *OWNER)
    answer = await http.post("/preferences/language", data={"csrf": csrf, "language": "fa", "back": "/customers"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/customers"
    page = await http.get("/customers")
    assert '<html lang="fa" dir="rtl">' in page.text
    other = httpx.AsyncClient(transport=http._transport, base_url="http://console")
    await sign_in(other, *STAFF)
    assert '<html lang="en" dir="ltr">' in (await other.get("/customers")).text
    await other.aclose()
    # Somewhere else than the console is never where a language switch sends you.
    away = await http.post("/preferences/language", data={"csrf": csrf, "language": "hu", "back": "//evil.example/"})
    assert away.headers["location"] == "/today"


async def test_an_owner_exports_a_customer_and_the_file_says_what_is_missing(console: Running) -> None:
    http = console.http
    csrf = await sign_in(http, *OWNER)
    answer = await http.post("/customers/cus_1/export", data={"csrf": csrf})
    assert answer.status_code == 200
    assert answer.headers["content-disposition"] == 'attachment; filename="customer-cus_1.json"'
    data = answer.json()
    assert data["customer_id"] == "cus_1"
    assert sorted(data["missing"]) == ["followups", "loyalty", "orders", "referrals"]  # every service is away
    assert SERVICE_KEY not in answer.text
