"""Follow-ups against the real broker, MongoDB and an SMTP server run in-process (aiosmtpd)."""

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from services.followups.app import SPEC
from services.followups.jobs import flag_breached_escalations, send_due
from services.followups.messages import render
from services.followups.settings import FollowupsSettings
from services.followups.store import FOLLOWUPS
from services.followups.tokens import issue_token
from shared.events import (
    Customer,
    CustomerErased,
    CustomerErasedEvent,
    LineItem,
    OrderFulfilled,
    OrderFulfilledEvent,
    OrderPlaced,
    OrderPlacedEvent,
    OrderRefunded,
    OrderRefundedEvent,
    ReferralInvited,
    ReferralInvitedEvent,
)
from shared.mongo import OUTBOX
from shared.service import Runtime
from shared.settings import ServiceSettings
from tests.service.delivery import deliver
from tests.support.running import running_service
from tests.support.smtp import SmtpInbox, smtp_server
from tests.support.tap import EventTap, eventually

ADMIN = {"Authorization": "Bearer test-admin-key"}
SECRET = "feedback-test-secret"
NOW = datetime.now(UTC)


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpInbox, int]]:
    with smtp_server() as inbox:
        yield inbox, inbox.port


def own_settings(settings: ServiceSettings, port: int, **changes: Any) -> FollowupsSettings:
    return FollowupsSettings(
        **settings.model_dump(),
        smtp_url=f"smtp://127.0.0.1:{port}",
        feedback_token_secret=SECRET,
        shop_name="Teapot & Co",
        feedback_url="https://shop.example/feedback",
        scheduler_interval_seconds=3600,  # the tests run the scheduler themselves, at the time they choose
        send_backoff_seconds=0,
        **changes,
    )


@pytest.fixture
async def followups(
    service_name: str, settings: ServiceSettings, smtp: tuple[SmtpInbox, int]
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient, SmtpInbox]]:
    inbox, port = smtp
    async with running_service(replace(SPEC, name=service_name), own_settings(settings, port)) as (rt, http):
        yield rt, http, inbox


def placed(
    customer_id: str,
    order_id: str,
    locale: str | None = "en",
    city: str | None = None,
    at: datetime = NOW - timedelta(minutes=5),
    **who: Any,
) -> Any:
    data = OrderPlaced(
        order_id=order_id,
        customer=Customer(customer_id=customer_id, email=f"{customer_id}@example.com", locale=locale, city=city, **who),
        placed_at=at,
        currency="EUR",
        total=Decimal("20.00"),
        line_items=[LineItem(sku="TEA", name="Tea", quantity=1, unit_price=Decimal("20.00"))],
    )
    return OrderPlacedEvent.new(data, source="shop", subject=customer_id)


def fulfilled(customer_id: str, order_id: str, at: datetime) -> Any:
    data = OrderFulfilled(order_id=order_id, customer_id=customer_id, fulfilled_at=at)
    return OrderFulfilledEvent.new(data, source="shop", subject=customer_id)


def refunded(customer_id: str, order_id: str, amount: str = "20.00", refund_id: str | None = None) -> Any:
    data = OrderRefunded(
        refund_id=refund_id or f"r-{order_id}",
        order_id=order_id,
        customer_id=customer_id,
        amount=Decimal(amount),
        currency="EUR",
        refunded_at=NOW,
    )
    return OrderRefundedEvent.new(data, source="shop", subject=customer_id)


async def test_a_thank_you_note_goes_out_once_in_the_customers_language_naming_their_town(
    followups: tuple[Runtime, httpx.AsyncClient, SmtpInbox], tap: EventTap
) -> None:
    rt, _http, inbox = followups
    order = placed("cus-hu", "o-hu", locale="hu-HU", city="Debrecen", first_name="Éva")
    await deliver(rt, tap, order, order)  # a duplicate delivery plans nothing twice
    assert await send_due(rt) == 1
    assert await send_due(rt) == 0

    [note] = inbox.to("cus-hu@example.com")
    expected = render(
        "thank_you", "hu", first_name="Éva", city="Debrecen", region=None, shop_name="Teapot & Co", order_id="o-hu"
    )
    assert note["Subject"] == expected.subject
    assert note["Content-Language"] == "hu"
    text = note.get_body(("plain",)).get_content()
    assert "Éva" in text
    assert "Debrecen" in text
    sent = await tap.wait_for(lambda e: e["type"] == "FollowUpSent" and e["data"]["followup_id"] == "thank_you:o-hu")
    assert sent[0]["data"]["kind"] == "thank_you"
    assert sent[0]["data"]["channel"] == "email"


async def test_each_shipped_language_and_the_english_fallback(
    followups: tuple[Runtime, httpx.AsyncClient, SmtpInbox], tap: EventTap
) -> None:
    rt, _http, inbox = followups
    locales = {"en-GB": "en", "hu": "hu", "sk-SK": "sk", "fa-IR": "fa", "hy-AM": "hy", "lv": "lv", "de-DE": "en"}
    await deliver(rt, tap, *(placed(f"cus-{tag}", f"o-{tag}", locale=tag) for tag in locales))
    assert await send_due(rt) == len(locales)
    for tag, language in locales.items():
        [note] = inbox.to(f"cus-{tag}@example.com")
        assert note["Content-Language"] == language
        html = note.get_body(("html",)).get_content()
        assert f'dir="{"rtl" if language == "fa" else "ltr"}"' in html


async def test_feedback_request_fourteen_days_after_fulfilment_and_its_link_works_once(
    followups: tuple[Runtime, httpx.AsyncClient, SmtpInbox], tap: EventTap
) -> None:
    rt, http, inbox = followups
    await deliver(rt, tap, placed("cus-fb", "o-fb"), fulfilled("cus-fb", "o-fb", NOW))
    await send_due(rt)  # the thank-you note
    assert [m["Subject"] for m in inbox.to("cus-fb@example.com")] == [
        render(
            "thank_you", "en", first_name=None, city=None, region=None, shop_name="Teapot & Co", order_id="o-fb"
        ).subject
    ]
    assert await send_due(rt, at=NOW + timedelta(days=13)) == 0
    assert await send_due(rt, at=NOW + timedelta(days=14, minutes=1)) == 1
    request = inbox.to("cus-fb@example.com")[-1]
    token = re.search(r"token=([\w.\-]+)", request.get_body(("plain",)).get_content())
    assert token is not None

    answer = {"token": token.group(1), "ratings": {"overall": 2, "product": 3}, "nps": 4, "comment": "Late and cold."}
    first = await http.post("/feedback", json=answer)
    assert first.status_code == 201, first.text
    assert (first.json()["customer_id"], first.json()["order_id"]) == ("cus-fb", "o-fb")
    assert first.json()["escalation_id"] is not None
    reused = await http.post("/feedback", json=answer)
    assert reused.status_code == 409
    assert "token" in reused.text

    received = await tap.wait_for(lambda e: e["type"] == "FeedbackReceived" and e["subject"] == "cus-fb")
    assert received[0]["data"]["nps"] == 4
    escalated = await tap.wait_for(lambda e: e["type"] == "FeedbackEscalated" and e["subject"] == "cus-fb")
    listed = (await http.get("/escalations", params={"open": "true"}, headers=ADMIN)).json()["escalations"]
    mine = [e for e in listed if e["customer_id"] == "cus-fb"]
    assert len(mine) == 1
    assert mine[0]["escalation_id"] == escalated[0]["data"]["escalation_id"]
    assert 3500 <= mine[0]["seconds_left"] <= 3600
    assert mine[0]["breached"] is False
    resolve_url = f"/escalations/{mine[0]['escalation_id']}/resolve"
    by_eva = ADMIN | {"X-Rapport-Actor": "eva@shop.example"}
    resolved = await http.post(resolve_url, json={"note": "Called, sent a new tin."}, headers=by_eva)
    assert resolved.json()["breached"] is False
    again = await http.post(resolve_url, json={"note": "Twice?"}, headers=by_eva)
    assert again.status_code == 404
    audit = (await http.get("/audit", headers=ADMIN)).json()
    resolutions = [r for r in audit if r["action"] == "POST /escalations/{escalation_id}/resolve"]
    assert [r["actor"] for r in resolutions] == ["admin/eva@shop.example"]  # the refused second try left none
    still_open = (await http.get("/escalations", params={"open": "true"}, headers=ADMIN)).json()["escalations"]
    assert [e for e in still_open if e["customer_id"] == "cus-fb"] == []

    report = (await http.get("/reports/nps", headers=ADMIN)).json()
    assert (report["responses"], report["detractors"], report["nps"], report["response_rate"]) == (1, 1, -100.0, 1.0)


async def test_a_token_files_feedback_only_for_its_own_order_and_an_existing_feedback_request(
    followups: tuple[Runtime, httpx.AsyncClient, SmtpInbox], tap: EventTap
) -> None:
    rt, http, _inbox = followups
    await deliver(rt, tap, placed("cus-ta", "o-ta"), fulfilled("cus-ta", "o-ta", NOW))
    token = issue_token(SECRET, followup_id="feedback_request:o-ta", customer_id="cus-ta", order_id="o-ta")
    other_order = await http.post("/feedback", json={"token": token, "order_id": "o-tb", "ratings": {"overall": 5}})
    assert other_order.status_code == 422
    assert other_order.json()["detail"][0]["loc"] == ["body", "order_id"]
    # Correctly signed, but naming a feedback request this shop never planned (or one of another customer).
    for followup_id, customer_id in (("feedback_request:o-none", "cus-ta"), ("feedback_request:o-ta", "cus-tb")):
        stray = issue_token(SECRET, followup_id=followup_id, customer_id=customer_id, order_id="o-ta")
        refused = await http.post("/feedback", json={"token": stray, "ratings": {"overall": 1}})
        assert refused.status_code == 401, followup_id
        assert "token" in refused.text
    assert await rt.db["feedback"].count_documents({"customer_id": {"$in": ["cus-ta", "cus-tb"]}}) == 0
    accepted = await http.post("/feedback", json={"token": token, "order_id": "o-ta", "ratings": {"overall": 5}})
    assert accepted.status_code == 201, accepted.text


@pytest.mark.parametrize(
    ("token", "status", "reason"),
    [
        (issue_token("another-secret", followup_id="f", customer_id="c", order_id=None), 401, "invalid signature"),
        (issue_token(SECRET, followup_id="f", customer_id="c", order_id=None, now=0.0), 410, "expired"),
        ("not-a-token", 401, "token"),
    ],
)
async def test_a_forged_expired_or_garbled_token_gets_a_clear_4xx(
    followups: tuple[Runtime, httpx.AsyncClient, SmtpInbox], token: str, status: int, reason: str
) -> None:
    _rt, http, _inbox = followups
    got = await http.post("/feedback", json={"token": token, "ratings": {"overall": 5}})
    assert got.status_code == status
    assert reason in got.text


async def test_feedback_without_token_or_key_is_refused_and_bad_ratings_are_named(
    followups: tuple[Runtime, httpx.AsyncClient, SmtpInbox],
) -> None:
    _rt, http, _inbox = followups
    anonymous = await http.post("/feedback", json={"customer_id": "c", "ratings": {"overall": 5}})
    assert anonymous.status_code == 401
    for garbage in (b"not json", b"[]", b'{"ratings": "x"}', b'{"token": 5}'):  # authentication before validation
        refused = await http.post("/feedback", content=garbage, headers={"Content-Type": "application/json"})
        assert refused.status_code == 401, garbage
    forged_key = await http.post("/feedback", json={"ratings": {"overall": 5}}, headers={"Authorization": "Bearer no"})
    assert forged_key.status_code == 401
    bad = await http.post(
        "/feedback", json={"customer_id": "c", "ratings": {"overall": 9}, "channel": "phone"}, headers=ADMIN
    )
    assert bad.status_code == 422
    assert [e["loc"] for e in bad.json()["detail"]] == [["body", "ratings", "overall"]]
    nobody = await http.post("/feedback", json={"ratings": {"overall": 5}}, headers=ADMIN)
    assert (nobody.status_code, [e["loc"] for e in nobody.json()["detail"]]) == (422, [["body", "customer_id"]])
    # With a key but no customer named, the token says whose feedback it is: here, nobody's.
    garbled = await http.post("/feedback", json={"token": "not-a-token", "ratings": {"overall": 5}}, headers=ADMIN)
    assert garbled.status_code == 401
    assert "token" in garbled.text
    logged = await http.post(
        "/feedback", json={"customer_id": "c", "ratings": {"overall": 5}, "nps": 10, "channel": "phone"}, headers=ADMIN
    )
    assert logged.status_code == 201
    assert logged.json()["escalation_id"] is None


async def test_an_early_customer_gets_a_call_task_listed_for_the_owner(
    followups: tuple[Runtime, httpx.AsyncClient, SmtpInbox], tap: EventTap
) -> None:
    rt, http, _inbox = followups
    order = placed("cus-call", "o-call", phone="+421900123456", first_name="Eva", city="Košice")
    await deliver(rt, tap, order, fulfilled("cus-call", "o-call", NOW - timedelta(days=15)))
    due = (await http.get("/followups", params={"status": "due", "kind": "call"}, headers=ADMIN)).json()["followups"]
    [call] = [f for f in due if f["customer_id"] == "cus-call"]
    assert call["customer"]["phone"] == "+421900123456"
    assert call["channel"] == "person"
    assert await send_due(rt, at=NOW + timedelta(days=30)) == 2  # the thank-you and the feedback request; no call
    done = await http.post(f"/followups/{call['followup_id']}/done", json={"note": "Loves the tea."}, headers=ADMIN)
    assert done.json()["status"] == "done"


async def test_only_the_shops_first_customers_get_a_call_however_many_come_later(
    service_name: str, settings: ServiceSettings, smtp: tuple[SmtpInbox, int], tap: EventTap
) -> None:
    _inbox, port = smtp
    first_two = own_settings(settings, port, call_customers=2)
    async with running_service(replace(SPEC, name=service_name), first_two) as (rt, _http):

        async def order_and_ship(customer: str, days_ago: int) -> None:
            at = NOW - timedelta(days=days_ago)
            await deliver(rt, tap, placed(customer, f"o-{customer}", at=at), fulfilled(customer, f"o-{customer}", NOW))

        await order_and_ship("first", 30)
        await order_and_ship("second", 29)
        for later in ("third", "fourth"):  # the shop already has its first two
            await order_and_ship(later, 20)
        await order_and_ship("between", 25)  # later than the first two, earlier than the third
        await order_and_ship("oldest", 40)  # heard of late, but the earliest of all: one of the first
        calls = {f["customer_id"] async for f in rt.db[FOLLOWUPS].find({"kind": "call"})}
    assert calls == {"first", "second", "oldest"}


async def test_a_refund_cancels_what_is_pending_even_when_it_arrives_first(
    followups: tuple[Runtime, httpx.AsyncClient, SmtpInbox], tap: EventTap
) -> None:
    rt, _http, inbox = followups
    await deliver(rt, tap, placed("cus-r1", "o-r1"), fulfilled("cus-r1", "o-r1", NOW), refunded("cus-r1", "o-r1"))
    await deliver(rt, tap, refunded("cus-r2", "o-r2"))
    await deliver(rt, tap, placed("cus-r2", "o-r2"), fulfilled("cus-r2", "o-r2", NOW))
    statuses = {f["_id"]: f["status"] async for f in rt.db[FOLLOWUPS].find({"order_id": {"$in": ["o-r1", "o-r2"]}})}
    assert statuses == {
        "thank_you:o-r1": "cancelled",
        "feedback_request:o-r1": "cancelled",
        "thank_you:o-r2": "cancelled",
        "feedback_request:o-r2": "cancelled",
        "call:cus-r1": "cancelled",  # both are among the shop's first customers; the call hung on the order
        "call:cus-r2": "cancelled",
    }
    assert await send_due(rt, at=NOW + timedelta(days=30)) == 0
    assert inbox.messages == []


async def test_a_partial_refund_cancels_nothing_and_the_refunds_that_make_it_whole_cancel_all(
    followups: tuple[Runtime, httpx.AsyncClient, SmtpInbox], tap: EventTap
) -> None:
    rt, _http, _inbox = followups

    async def statuses(order_id: str) -> dict[str, str]:
        return {f["kind"]: f["status"] async for f in rt.db[FOLLOWUPS].find({"order_id": order_id})}

    await deliver(rt, tap, placed("cus-pr", "o-pr"), fulfilled("cus-pr", "o-pr", NOW))
    first_part = refunded("cus-pr", "o-pr", "5.00", "r-pr-1")
    await deliver(rt, tap, first_part, first_part)  # €5 of €20, told twice: still a partial refund
    assert await statuses("o-pr") == {"thank_you": "pending", "feedback_request": "pending", "call": "pending"}
    await deliver(rt, tap, refunded("cus-pr", "o-pr", "15.00", "r-pr-2"))  # now the whole €20
    assert await statuses("o-pr") == {"thank_you": "cancelled", "feedback_request": "cancelled", "call": "cancelled"}

    # Out of order: the partial refund first, then the order — nothing is cancelled.
    await deliver(rt, tap, refunded("cus-pr2", "o-pr2", "5.00"))
    await deliver(rt, tap, placed("cus-pr2", "o-pr2"))
    assert await statuses("o-pr2") == {"thank_you": "pending"}


async def test_a_referral_invitation_email_carries_the_code(
    followups: tuple[Runtime, httpx.AsyncClient, SmtpInbox], tap: EventTap
) -> None:
    rt, _http, inbox = followups
    invite = ReferralInvitedEvent.new(
        ReferralInvited(customer_id="cus-p", code="K7Q-XM4-PA9", feedback_id="fb-1"),
        source="referrals",
        subject="cus-p",
    )
    await deliver(rt, tap, placed("cus-p", "o-p", locale="sk"), invite, invite)
    await send_due(rt)
    [mail] = [m for m in inbox.to("cus-p@example.com") if "K7Q-XM4-PA9" in m.get_body(("plain",)).get_content()]
    assert mail["Content-Language"] == "sk"


async def test_two_scheduler_replicas_send_each_due_message_exactly_once(
    followups: tuple[Runtime, httpx.AsyncClient, SmtpInbox], tap: EventTap
) -> None:
    rt, _http, inbox = followups
    await deliver(rt, tap, *(placed(f"cus-m{n}", f"o-m{n}") for n in range(300)))
    counts = await asyncio.gather(send_due(rt), send_due(rt))
    assert sum(counts) == 300
    assert min(counts) > 0  # both replicas took part
    followup_ids = [m["X-Rapport-Followup"] for m in inbox.messages]
    assert len(followup_ids) == 300
    assert len(set(followup_ids)) == 300


async def test_killing_a_replica_mid_run_loses_no_message(
    service_name: str, settings: ServiceSettings, smtp: tuple[SmtpInbox, int], tap: EventTap
) -> None:
    inbox, port = smtp
    own = own_settings(settings, port, scheduler_lease_seconds=0.5)
    async with running_service(replace(SPEC, name=service_name), own) as (rt, _http):
        await deliver(rt, tap, *(placed(f"cus-k{n}", f"o-k{n}") for n in range(200)))
        doomed = asyncio.create_task(send_due(rt))
        await eventually(lambda: len(inbox.messages) >= 40)
        doomed.cancel()  # as if the replica died: what it held is released only by its lease running out
        await asyncio.gather(doomed, return_exceptions=True)
        await eventually(lambda: _send_rest(rt), timeout=30)
        pending = await rt.db[FOLLOWUPS].count_documents({"status": "pending"})
    followup_ids = [m["X-Rapport-Followup"] for m in inbox.messages]
    assert pending == 0
    assert set(followup_ids) == {f"thank_you:o-k{n}" for n in range(200)}
    assert len(followup_ids) - len(set(followup_ids)) <= 1  # at most the one in flight when it died


async def _send_rest(rt: Runtime) -> bool:
    await send_due(rt)
    return await rt.db[FOLLOWUPS].count_documents({"status": "pending"}) == 0


async def test_a_breached_escalation_is_flagged_once_and_counted(
    followups: tuple[Runtime, httpx.AsyncClient, SmtpInbox],
) -> None:
    rt, http, _inbox = followups
    unhappy = {"customer_id": "cus-late", "ratings": {"overall": 1}, "channel": "phone"}
    assert (await http.post("/feedback", json=unhappy, headers=ADMIN)).status_code == 201
    assert await flag_breached_escalations(rt, at=NOW + timedelta(minutes=30)) == 0
    assert await flag_breached_escalations(rt, at=NOW + timedelta(hours=2)) == 1
    assert await flag_breached_escalations(rt, at=NOW + timedelta(hours=3)) == 0
    listed = (await http.get("/escalations", headers=ADMIN)).json()["escalations"]
    assert [e["breached"] for e in listed if e["customer_id"] == "cus-late"] == [True]
    metrics = (await http.get("/metrics")).text
    assert re.search(r"^followups_escalations_breached_total [1-9]", metrics, re.MULTILINE)


async def test_a_send_that_keeps_failing_is_retried_then_marked_failed_and_listed(
    service_name: str, settings: ServiceSettings, tap: EventTap
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # nothing listens here once the probe is closed
    own = own_settings(settings, closed_port, send_attempts=2)
    async with running_service(replace(SPEC, name=service_name), own) as (rt, http):
        await deliver(rt, tap, placed("cus-nomail", "o-nomail"))
        # With no back-off (the fixture's setting) the retry comes in the same round: two attempts, then failed.
        assert await send_due(rt) == 2
        assert await send_due(rt) == 0
        failed = (await http.get("/followups", params={"status": "failed"}, headers=ADMIN)).json()["followups"]
    [task] = [f for f in failed if f["followup_id"] == "thank_you:o-nomail"]
    assert task["attempts"] == 2
    assert "Connect" in task["last_error"] or "connect" in task["last_error"]


async def test_the_mail_report_counts_each_days_sent_and_failed_e_mail(
    service_name: str, settings: ServiceSettings, tap: EventTap, smtp: tuple[SmtpInbox, int]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    _, port = smtp
    async with running_service(replace(SPEC, name=service_name), own_settings(settings, port)) as (rt, http):
        for n in range(3):
            await deliver(rt, tap, placed(f"cus-mail{n}", f"o-mail{n}"))
        assert await send_due(rt) == 3
    failing = own_settings(settings, closed_port, send_attempts=1)
    async with running_service(replace(SPEC, name=service_name), failing) as (rt, http):
        await deliver(rt, tap, placed("cus-mail-fails", "o-mail-fails"))
        assert await send_due(rt) == 1
        answer = await http.get("/reports/mail", params={"days": 3}, headers=ADMIN)
        assert answer.status_code == 200, answer.text
        report = answer.json()
        wrong = await http.get("/reports/mail", params={"days": 0}, headers=ADMIN)
    today = datetime.now(UTC).date()
    assert [day["day"] for day in report["days"]] == [str(today - timedelta(days=n)) for n in (2, 1, 0)]
    assert [(day["sent"], day["failed"]) for day in report["days"]] == [(0, 0), (0, 0), (3, 1)]
    assert (report["sent"], report["failed"]) == (3, 1)
    assert wrong.status_code == 422
    assert "days" in wrong.text


async def test_erasure_forgets_the_contact_and_cancels_pending_messages(
    followups: tuple[Runtime, httpx.AsyncClient, SmtpInbox], tap: EventTap
) -> None:
    rt, _http, inbox = followups
    await deliver(rt, tap, placed("cus-gone", "o-gone", city="Trnava", first_name="Jana"))
    erased = CustomerErasedEvent.new(
        CustomerErased(customer_id="cus-gone", requested_at=NOW), source="orders", subject="cus-gone"
    )
    await deliver(rt, tap, erased)
    late_invite = ReferralInvitedEvent.new(
        ReferralInvited(customer_id="cus-gone", code="K7Q-XM4-PA9", feedback_id="fb-gone"),
        source="referrals",
        subject="cus-gone",
    )
    # Late events about them plan nothing and store nothing.
    await deliver(rt, tap, placed("cus-gone", "o-gone-2", city="Trnava"))
    await deliver(rt, tap, fulfilled("cus-gone", "o-gone", NOW), late_invite)
    assert await send_due(rt, at=NOW + timedelta(days=30)) == 0
    assert inbox.messages == []
    stored = [d async for d in rt.db["customers"].find({})] + [d async for d in rt.db[FOLLOWUPS].find({})]
    assert "Trnava" not in str(stored)
    assert "cus-gone" not in str(stored)
    statuses = [f["status"] async for f in rt.db[FOLLOWUPS].find({})]
    assert statuses == ["cancelled"]


async def test_a_feedback_link_mailed_before_the_erasure_no_longer_works(
    followups: tuple[Runtime, httpx.AsyncClient, SmtpInbox], tap: EventTap
) -> None:
    rt, http, _inbox = followups
    await deliver(rt, tap, placed("cus-old-link", "o-old-link"), fulfilled("cus-old-link", "o-old-link", NOW))
    mailed = issue_token(
        SECRET, followup_id="feedback_request:o-old-link", customer_id="cus-old-link", order_id="o-old-link"
    )
    erased = CustomerErasedEvent.new(
        CustomerErased(customer_id="cus-old-link", requested_at=NOW), source="orders", subject="cus-old-link"
    )
    await deliver(rt, tap, erased)
    late = await http.post("/feedback", json={"token": mailed, "ratings": {"overall": 1}, "comment": "I am Jana N."})
    assert late.status_code == 401
    assert await rt.db["feedback"].count_documents({}) == await rt.db["feedback"].count_documents(
        {"customer_id": {"$ne": "cus-old-link"}}
    )
    assert "Jana N." not in str([d async for d in rt.db["feedback"].find({})])
    assert "Jana N." not in str([d async for d in rt.db[OUTBOX].find({})])


async def test_erasure_removes_the_sent_feedback_event_that_carries_the_customers_words(
    followups: tuple[Runtime, httpx.AsyncClient, SmtpInbox], tap: EventTap
) -> None:
    rt, http, _inbox = followups
    words = {"customer_id": "cus-said", "ratings": {"overall": 2}, "comment": "Jana Novak: the lid was cracked."}
    assert (await http.post("/feedback", json=words | {"channel": "phone"}, headers=ADMIN)).status_code == 201

    async def sent() -> bool:
        return await rt.db[OUTBOX].count_documents({"body.subject": "cus-said", "status": "sent"}) == 2

    await eventually(sent)  # FeedbackReceived and FeedbackEscalated went out
    erased = CustomerErasedEvent.new(
        CustomerErased(customer_id="cus-said", requested_at=NOW), source="orders", subject="cus-said"
    )
    await deliver(rt, tap, erased)
    assert "Jana Novak" not in str([d async for d in rt.db[OUTBOX].find({})])
    assert await rt.db[OUTBOX].count_documents({"body.subject": "cus-said"}) == 0
