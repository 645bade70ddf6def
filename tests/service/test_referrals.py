"""Referrals against the real broker and MongoDB: attribution, fraud refusals, order-independence, affiliates, stats."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from services.referrals.app import SPEC
from services.referrals.domain import REFUSAL_REASONS, referral_id
from services.referrals.service import METRICS
from services.referrals.settings import ReferralsSettings
from shared.events import (
    Customer,
    CustomerErased,
    CustomerErasedEvent,
    FeedbackReceived,
    FeedbackReceivedEvent,
    LineItem,
    OrderCancelled,
    OrderCancelledEvent,
    OrderPlaced,
    OrderPlacedEvent,
    OrderRefunded,
    OrderRefundedEvent,
    Ratings,
    ShippingAddress,
)
from shared.mongo import INBOX, OUTBOX
from shared.service import Runtime
from shared.settings import ServiceSettings
from tests.service.delivery import deliver
from tests.support.running import running_service
from tests.support.tap import EventTap, eventually

ADMIN = {"Authorization": "Bearer test-admin-key"}
NOW = datetime.now(UTC)
HOME = ShippingAddress(line1="Hlavná 1", line2="Flat 4", postal_code="040 01", city="Košice", country="SK")

Service = tuple[Runtime, httpx.AsyncClient]


@pytest.fixture
async def referrals(service_name: str, settings: ServiceSettings) -> AsyncIterator[Service]:
    own = ReferralsSettings(**settings.model_dump())
    async with running_service(replace(SPEC, name=service_name), own) as running:
        yield running


# --- events as the shop and followups send them ---------------------------------------------------------


def placed(
    customer_id: str,
    order_id: str,
    *,
    code: str | None = None,
    at: datetime = NOW - timedelta(hours=1),
    email: str | None = None,
    total: str = "80.00",
    address: ShippingAddress | None = None,
) -> OrderPlacedEvent:
    data = OrderPlaced(
        order_id=order_id,
        customer=Customer(customer_id=customer_id, email=email or f"{customer_id}@example.com"),
        placed_at=at,
        currency="EUR",
        total=Decimal(total),
        line_items=[LineItem(sku="TEA", name="Tea", quantity=1, unit_price=Decimal(total))],
        referral_code=code,
        shipping_address=address,
    )
    return OrderPlacedEvent.new(data, source="shop", subject=customer_id)


def again(event: OrderPlacedEvent) -> OrderPlacedEvent:
    """The same order told once more under a new event id (say by a webhook and by the backend)."""
    return event.model_copy(update={"id": str(uuid.uuid4())})


def refunded(customer_id: str, order_id: str, amount: str, at: datetime, refund_id: str) -> OrderRefundedEvent:
    data = OrderRefunded(
        refund_id=refund_id,
        order_id=order_id,
        customer_id=customer_id,
        amount=Decimal(amount),
        currency="EUR",
        refunded_at=at,
    )
    return OrderRefundedEvent.new(data, source="shop", subject=customer_id)


def cancelled(customer_id: str, order_id: str, at: datetime) -> OrderCancelledEvent:
    data = OrderCancelled(order_id=order_id, customer_id=customer_id, cancelled_at=at)
    return OrderCancelledEvent.new(data, source="shop", subject=customer_id)


def feedback(customer_id: str, nps: int | None, at: datetime) -> FeedbackReceivedEvent:
    data = FeedbackReceived(
        feedback_id=f"fb-{uuid.uuid4().hex[:8]}",
        customer_id=customer_id,
        ratings=Ratings(overall=5),
        nps=nps,
        channel="email",
        received_at=at,
    )
    return FeedbackReceivedEvent.new(data, source="followups", subject=customer_id)


def erased(customer_id: str) -> CustomerErasedEvent:
    data = CustomerErased(customer_id=customer_id, requested_at=NOW)
    return CustomerErasedEvent.new(data, source="orders", subject=customer_id)


# --- driving and reading the service ----------------------------------------------------------------


async def published(rt: Runtime, event_type: str, **data: str) -> list[dict[str, Any]]:
    """What the service published through its outbox (committed with the state change that caused it)."""
    query = {"type": event_type, **{f"body.data.{key}": value for key, value in data.items()}}
    return [entry["body"] async for entry in rt.db[OUTBOX].find(query, sort=[("created_at", 1)])]


async def issue(http: httpx.AsyncClient, customer_id: str) -> str:
    answer = await http.post(f"/referrers/{customer_id}/code", headers=ADMIN)
    assert answer.status_code in (200, 201), answer.text
    code: str = answer.json()["code"]
    return code


async def code_page(http: httpx.AsyncClient, code: str) -> dict[str, Any]:
    answer = await http.get(f"/referrals/{code}", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def limit(http: httpx.AsyncClient, code: str, **limits: Any) -> None:
    answer = await http.patch(f"/referrals/{code}", json=limits, headers=ADMIN)
    assert answer.status_code == 200, answer.text


def counted(name: str, **labels: str) -> float:
    return METRICS.get_sample_value(name, labels) or 0


def outcomes(page: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    return {r["order_id"]: (r["outcome"], r["reason"]) for r in page["referrals"]}


# --- attribution ----------------------------------------------------------------------------------------


async def test_a_new_customers_first_order_with_the_code_converts_once(referrals: Service, tap: EventTap) -> None:
    rt, http = referrals
    await deliver(rt, tap, placed("cus-a", "o-a1"))
    first = await http.post("/referrers/cus-a/code", headers=ADMIN)
    assert first.status_code == 201, first.text
    code = first.json()["code"]
    repeated = await http.post("/referrers/cus-a/code", headers=ADMIN)
    assert (repeated.status_code, repeated.json()["code"]) == (200, code)
    before = counted("referrals_conversions_total", program="customer")

    typed = code.lower().replace("-", " ")  # as a friend types it off a note
    order = placed("cus-b", "o-b1", code=typed)
    await deliver(rt, tap, order, order, again(order))

    [converted] = await tap.wait_for(lambda e: e["type"] == "ReferralConverted" and e["subject"] == "cus-b")
    assert converted["causationid"] == order.id
    assert converted["data"] | {"converted_at": None} == {
        "referral_id": referral_id("o-b1"),
        "code": code,
        "referrer_customer_id": "cus-a",
        "referee_customer_id": "cus-b",
        "order_id": "o-b1",
        "order_total": "80.00",
        "currency": "EUR",
        "converted_at": None,
        "program": "customer",
        "commission": None,
    }
    assert len(await published(rt, "ReferralConverted", referee_customer_id="cus-b")) == 1
    page = await code_page(http, code)
    assert (page["status"], page["conversions"], page["program"], page["referrer_customer_id"]) == (
        "active",
        1,
        "customer",
        "cus-a",
    )
    assert outcomes(page) == {"o-b1": ("converted", None)}
    assert counted("referrals_conversions_total", program="customer") == before + 1


async def test_every_refusal_reason_is_recorded_shown_and_counted(referrals: Service, tap: EventTap) -> None:
    rt, http = referrals
    before = {reason: counted("referrals_refusals_total", reason=reason) for reason in REFUSAL_REASONS}
    await deliver(rt, tap, placed("cus-eva", "o-eva1", email="Eva@Example.sk", address=HOME))
    code = await issue(http, "cus-eva")
    expired_code, capped_code = await issue(http, "cus-gil"), await issue(http, "cus-ida")
    await limit(http, expired_code, expires_at=(NOW - timedelta(days=1)).isoformat())
    await limit(http, capped_code, max_conversions=1)
    retyped_home = ShippingAddress(line1="HLAVNA 1, flat 4", postal_code="04001", city="kosice", country="SK")
    await deliver(
        rt,
        tap,
        placed("cus-eva", "o-eva2", code=code),  # her own order, same customer id
        placed("cus-eva2", "o-second-account", code=code, email="eva+deal@example.sk"),  # her e-mail, plus-tagged
        placed("cus-flatmate", "o-flat", code=code, address=retyped_home),  # her address, typed differently
        placed("cus-old", "o-old1", at=NOW - timedelta(days=30)),
        placed("cus-old", "o-old2", code=code),  # not their first order
        placed("cus-who", "o-who", code="ZZZ-ZZZ-ZZZ"),
        placed("cus-late", "o-late", code=expired_code),
        placed("cus-j", "o-j", code=capped_code),
        placed("cus-k", "o-k", code=capped_code),
    )

    assert outcomes(await code_page(http, code)) == {
        "o-eva2": ("refused", "own_order"),
        "o-second-account": ("refused", "own_order"),
        "o-flat": ("refused", "own_order"),
        "o-old2": ("refused", "returning_customer"),
    }
    assert outcomes(await code_page(http, "zzz zzz zzz")) == {"o-who": ("refused", "unknown_code")}
    expired_page = await code_page(http, expired_code)
    assert (expired_page["status"], outcomes(expired_page)) == ("expired", {"o-late": ("refused", "expired_code")})
    capped_page = await code_page(http, capped_code)
    assert capped_page["status"] == "capped"
    assert outcomes(capped_page) == {"o-j": ("converted", None), "o-k": ("refused", "capped_code")}
    assert capped_page["refusals"] == {"capped_code": 1}

    listed = (await http.get("/refusals", params={"reason": "own_order"}, headers=ADMIN)).json()["refusals"]
    assert {r["order_id"] for r in listed} == {"o-eva2", "o-second-account", "o-flat"}
    stats = (await http.get("/stats", headers=ADMIN)).json()
    expected = {"own_order": 3, "returning_customer": 1, "unknown_code": 1, "expired_code": 1, "capped_code": 1}
    assert stats["refusals"] == dict.fromkeys(REFUSAL_REASONS, 0) | expected
    for reason, count in expected.items():
        assert counted("referrals_refusals_total", reason=reason) == before[reason] + count
    assert [e["data"]["order_id"] for e in await published(rt, "ReferralConverted")] == ["o-j"]
    assert "referrals_refusals_total{reason=" in (await http.get("/metrics")).text


async def test_a_later_order_heard_of_first_does_not_stop_the_first_order_converting(
    referrals: Service, tap: EventTap
) -> None:
    rt, http = referrals
    code = await issue(http, "cus-ref")
    with_code = placed("cus-new", "o-first", code=code, at=NOW - timedelta(hours=5))
    await deliver(rt, tap, placed("cus-new", "o-second", at=NOW - timedelta(hours=1)))  # unrelated, later, but first
    await deliver(rt, tap, with_code, with_code, again(with_code))
    await deliver(rt, tap, placed("cus-new", "o-third", code=code))

    assert outcomes(await code_page(http, code)) == {
        "o-first": ("converted", None),
        "o-third": ("refused", "returning_customer"),
    }
    assert [e["data"]["order_id"] for e in await published(rt, "ReferralConverted")] == ["o-first"]


async def test_an_earlier_order_heard_of_after_the_conversion_contests_it_and_none_converts_again(
    referrals: Service, tap: EventTap
) -> None:
    rt, http = referrals
    code, other_code = await issue(http, "cus-r1"), await issue(http, "cus-r2")
    before = counted("referrals_contested_total", reason="returning_customer")
    await deliver(rt, tap, placed("cus-n", "o-n-late", code=code, at=NOW - timedelta(hours=1)))
    # Then it turns out they had ordered before, with another friend's code.
    await deliver(rt, tap, placed("cus-n", "o-n-early", code=other_code, at=NOW - timedelta(days=3)))
    await deliver(rt, tap, placed("cus-n", "o-n-earliest", at=NOW - timedelta(days=9)))  # and even before that

    page = await code_page(http, code)
    [conversion] = page["referrals"]
    assert (conversion["outcome"], conversion["contested"]["reason"]) == ("converted", "returning_customer")
    assert conversion["contested"]["order_id"] == "o-n-early"  # the first fact that disproved it
    assert page["contested"] == 1
    assert outcomes(await code_page(http, other_code)) == {"o-n-early": ("refused", "already_referred")}
    assert len(await published(rt, "ReferralConverted", referee_customer_id="cus-n")) == 1
    assert counted("referrals_contested_total", reason="returning_customer") == before + 1
    stats = (await http.get("/stats", headers=ADMIN)).json()
    assert (stats["conversions"], stats["contested"], stats["refusals"]["already_referred"]) == (
        1,
        {"returning_customer": 1},
        1,
    )


async def test_a_referrers_email_heard_of_after_the_conversion_contests_a_self_referral(
    referrals: Service, tap: EventTap
) -> None:
    rt, http = referrals
    code = await issue(http, "cus-x")  # issued before the shop has told us anything about them
    await deliver(rt, tap, placed("cus-y", "o-y", code=code, email="xavier@example.com"))
    assert outcomes(await code_page(http, code)) == {"o-y": ("converted", None)}
    await deliver(rt, tap, placed("cus-x", "o-x", email="Xavier+shop@Example.com"))

    [conversion] = (await code_page(http, code))["referrals"]
    assert conversion["contested"]["reason"] == "own_order"
    assert conversion["contested"]["order_id"] == "o-x"
    await deliver(rt, tap, placed("cus-x", "o-x2", email="xavier@example.com"))  # nothing new: nothing more
    assert (await code_page(http, code))["referrals"][0]["contested"] == conversion["contested"]


async def test_a_batch_of_friends_fills_a_capped_code_exactly(referrals: Service, tap: EventTap) -> None:
    rt, http = referrals
    code = await issue(http, "cus-popular")
    await limit(http, code, max_conversions=10)
    orders = [placed(f"cus-f{n:02d}", f"o-f{n:02d}", code=code, at=NOW - timedelta(minutes=n)) for n in range(30)]
    await deliver(rt, tap, *orders, *orders[:10])

    page = await code_page(http, code)
    assert page["conversions"] == 10
    assert sorted(str(reason) for _, reason in outcomes(page).values()) == ["None"] * 10 + ["capped_code"] * 20
    assert len(await published(rt, "ReferralConverted")) == 10
    assert await rt.db[INBOX].count_documents({"_id": {"$in": [o.id for o in orders]}}) == 30


async def test_concurrent_requests_for_a_customers_code_issue_one(referrals: Service) -> None:
    _rt, http = referrals
    answers = await asyncio.gather(*(http.post("/referrers/cus-rush/code", headers=ADMIN) for _ in range(8)))
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201]
    assert len({a.json()["code"] for a in answers}) == 1


# --- the happy moment -------------------------------------------------------------------------------------


async def test_a_promoter_gets_a_code_and_is_invited_at_most_once_in_ninety_days(
    referrals: Service, tap: EventTap
) -> None:
    rt, http = referrals
    happy = feedback("cus-p", 10, NOW - timedelta(days=100))
    await deliver(rt, tap, happy, happy)
    [invited] = await tap.wait_for(lambda e: e["type"] == "ReferralInvited" and e["subject"] == "cus-p")
    code = invited["data"]["code"]
    assert invited["data"] == {"customer_id": "cus-p", "code": code, "feedback_id": happy.data.feedback_id}
    assert invited["causationid"] == happy.id
    assert await issue(http, "cus-p") == code  # the promoter's code is their code

    await deliver(
        rt,
        tap,
        feedback("cus-p", 9, NOW - timedelta(days=50)),  # within 90 days of the last invitation
        feedback("cus-p", 8, NOW),  # a passive, not a promoter
        feedback("cus-p", None, NOW),  # no NPS answer
    )
    assert len(await published(rt, "ReferralInvited", customer_id="cus-p")) == 1
    later = feedback("cus-p", 10, NOW - timedelta(days=10))  # 90 days after the first
    await deliver(rt, tap, later, feedback("cus-p", 10, NOW - timedelta(days=200)))  # a late, older one asks no one

    invitations = await published(rt, "ReferralInvited", customer_id="cus-p")
    assert [i["data"]["feedback_id"] for i in invitations] == [happy.data.feedback_id, later.data.feedback_id]
    assert {i["data"]["code"] for i in invitations} == {code}
    assert (await http.get("/stats", headers=ADMIN)).json()["invitations"] == 2


async def test_the_wait_between_invitations_is_a_setting(
    service_name: str, settings: ServiceSettings, tap: EventTap
) -> None:
    own = ReferralsSettings(**settings.model_dump(), invite_every_days=7)
    async with running_service(replace(SPEC, name=service_name), own) as (rt, _http):
        await deliver(rt, tap, feedback("cus-w", 9, NOW - timedelta(days=8)), feedback("cus-w", 9, NOW))
        assert len(await published(rt, "ReferralInvited", customer_id="cus-w")) == 2


# --- affiliates ---------------------------------------------------------------------------------------------


async def enrol(http: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    answer = await http.post(
        "/affiliates", json={"name": "Anna's blog", "email": "anna@blog.example", **fields}, headers=ADMIN
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def commissions(http: httpx.AsyncClient, affiliate_id: str) -> dict[str, Any]:
    answer = await http.get(f"/affiliates/{affiliate_id}/commissions", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_an_affiliate_earns_a_commission_that_refunds_claw_back_pro_rata(
    referrals: Service, tap: EventTap
) -> None:
    rt, http = referrals
    affiliate = await enrol(http, commission_rate="0.15", customer_id="cus-anna")
    affiliate_id, code = affiliate["affiliate_id"], affiliate["code"]["code"]
    assert (affiliate["commission_rate"], affiliate["code"]["program"], affiliate["code"]["status"]) == (
        "0.15",
        "affiliate",
        "active",
    )
    await deliver(
        rt,
        tap,
        placed("cus-reader", "o-reader", code=code, total="80.00"),
        placed("cus-anna", "o-anna", code=code),  # the affiliate's own account earns nothing
        placed("cus-anna2", "o-anna2", code=code, email="Anna+Blog@blog.example"),  # nor her own e-mail
    )
    [converted] = await tap.wait_for(lambda e: e["type"] == "ReferralConverted" and e["subject"] == "cus-reader")
    assert (converted["data"]["program"], converted["data"]["commission"]) == ("affiliate", "12.00")
    assert converted["data"]["referrer_customer_id"] == affiliate_id
    assert outcomes(await code_page(http, code)) == {
        "o-reader": ("converted", None),
        "o-anna": ("refused", "own_order"),
        "o-anna2": ("refused", "own_order"),
    }

    # Refunds made at t1 < t2 < t3, heard of as t3, t1, t1 again, t2: each takes back the share of the
    # commission its money adds to what was refunded before it, whatever the arrival order.
    await deliver(rt, tap, placed("cus-reader2", "o-reader2", code=code, total="30.00"))
    refunds = [
        refunded("cus-reader2", "o-reader2", amount, NOW + timedelta(hours=hour), f"r-{hour}")
        for hour, amount in ((1, "7.00"), (2, "13.00"), (3, "10.00"))
    ]
    await deliver(rt, tap, refunds[2], refunds[0], refunds[0], refunds[1])
    await deliver(rt, tap, refunded("cus-reader", "o-reader", "20.00", NOW, "r-part"))

    listed = await commissions(http, affiliate_id)
    by_order = {c["order_id"]: c for c in listed["commissions"]}
    assert set(by_order) == {"o-reader", "o-reader2"}
    reader2 = by_order["o-reader2"]
    assert (reader2["commission_rate"], reader2["commission"]) == ("0.15", "4.50")  # 30.00 × 15 %
    # at 15 %: 4.50 × 7/30 = 1.05, × 20/30 = 3.00, × 30/30 = 4.50
    assert [(c["refund_id"], c["clawback"]) for c in reader2["clawbacks"]] == [
        ("r-1", "1.05"),
        ("r-2", "1.95"),
        ("r-3", "1.50"),
    ]
    assert (reader2["clawed_back"], reader2["commission_due"]) == ("4.50", "0.00")
    reader = by_order["o-reader"]
    assert (reader["commission"], reader["clawed_back"], reader["commission_due"]) == ("12.00", "3.00", "9.00")
    assert listed["totals"] == {"EUR": {"earned": "16.50", "clawed_back": "7.50", "due": "9.00"}}
    page = (await http.get(f"/affiliates/{affiliate_id}", headers=ADMIN)).json()
    assert (page["name"], page["code"]["conversions"], page["totals"]) == ("Anna's blog", 2, listed["totals"])


async def test_a_refund_heard_of_before_the_conversion_is_clawed_back_when_it_converts(
    referrals: Service, tap: EventTap
) -> None:
    rt, http = referrals
    affiliate = await enrol(http)  # the default rate, 10 %
    affiliate_id, code = affiliate["affiliate_id"], affiliate["code"]["code"]
    assert affiliate["commission_rate"] == "0.10"
    await deliver(rt, tap, refunded("cus-q", "o-q", "10.00", NOW, "r-q1"))
    await deliver(rt, tap, placed("cus-q", "o-q", code=code, total="50.00", at=NOW - timedelta(hours=2)))

    [converted] = await published(rt, "ReferralConverted", referee_customer_id="cus-q")
    assert converted["data"]["commission"] == "5.00"
    [earned] = (await commissions(http, affiliate_id))["commissions"]
    assert (earned["commission"], earned["clawed_back"], earned["commission_due"]) == ("5.00", "1.00", "4.00")

    # An earlier order of theirs turns up: not a new customer after all, so the affiliate earns nothing.
    await deliver(rt, tap, placed("cus-q", "o-q0", at=NOW - timedelta(days=40)))
    [contested] = (await commissions(http, affiliate_id))["commissions"]
    assert contested["contested"]["reason"] == "returning_customer"
    assert (contested["contest_clawback"], contested["clawed_back"], contested["commission_due"]) == (
        "4.00",
        "5.00",
        "0.00",
    )
    await deliver(rt, tap, refunded("cus-q", "o-q", "40.00", NOW, "r-q2"))  # nothing left to claw back
    [after] = (await commissions(http, affiliate_id))["commissions"]
    assert (after["clawed_back"], after["commission_due"]) == ("5.00", "0.00")
    assert [c["clawback"] for c in after["clawbacks"]] == ["1.00", "4.00"]
    assert after["contest_clawback"] == "0.00"


async def test_a_refund_in_another_currency_claws_nothing_back(referrals: Service, tap: EventTap) -> None:
    rt, http = referrals
    affiliate = await enrol(http)
    affiliate_id, code = affiliate["affiliate_id"], affiliate["code"]["code"]
    await deliver(rt, tap, placed("cus-u", "o-u", code=code, total="50.00"))
    in_dollars = OrderRefunded(
        refund_id="r-usd", order_id="o-u", customer_id="cus-u", amount=Decimal("50.00"), currency="USD", refunded_at=NOW
    )
    await deliver(rt, tap, OrderRefundedEvent.new(in_dollars, source="shop", subject="cus-u"))

    [earned] = (await commissions(http, affiliate_id))["commissions"]
    assert (earned["commission"], earned["clawed_back"], earned["commission_due"], earned["clawbacks"]) == (
        "5.00",
        "0.00",
        "5.00",
        [],
    )


# --- stats --------------------------------------------------------------------------------------------------


async def test_stats_count_the_funnel_and_the_k_factor_by_month(referrals: Service, tap: EventTap) -> None:
    rt, http = referrals
    january, february = datetime(2026, 1, 10, 12, tzinfo=UTC), datetime(2026, 2, 10, 12, tzinfo=UTC)
    affiliate = await enrol(http)
    await deliver(
        rt,
        tap,
        placed("cus-s1", "o-s1", at=january - timedelta(days=5)),
        placed("cus-s3", "o-s3", at=january - timedelta(days=5)),
        feedback("cus-s1", 10, january),
        feedback("cus-s3", 9, february),
    )
    code_s1 = await issue(http, "cus-s1")
    await deliver(
        rt,
        tap,
        placed("cus-s2", "o-s2", code=code_s1, at=january + timedelta(days=10)),
        placed("cus-s1", "o-s1b", code=code_s1, at=january + timedelta(days=11)),  # her own: not shared
        placed("cus-s4", "o-s4", code=affiliate["code"]["code"], at=february),  # affiliate sales are not invited
    )

    stats = (await http.get("/stats", headers=ADMIN)).json()
    # 4 customers, 2 invitations, 1 customer-program conversion:
    # rate 1/2, invitations per customer 2/4, K = 0.5 × 0.5 = 0.25
    assert {k: stats[k] for k in ("customers", "invitations", "codes_issued", "codes_shared", "conversions")} == {
        "customers": 4,
        "invitations": 2,
        "codes_issued": 2,
        "codes_shared": 1,
        "conversions": 1,
    }
    assert (stats["conversion_rate"], stats["invitations_per_customer"], stats["k_factor"]) == (
        "0.5000",
        "0.5000",
        "0.2500",
    )
    assert (stats["affiliate_conversions"], stats["refusals"]["own_order"]) == (1, 1)
    # January: 1 invited, 1 converted → rate 1, K = 1/4; February: 1 invited, none converted
    assert stats["months"] == [
        {"month": "2026-01", "invitations": 1, "conversions": 1, "conversion_rate": "1.0000", "k_factor": "0.2500"},
        {"month": "2026-02", "invitations": 1, "conversions": 0, "conversion_rate": "0.0000", "k_factor": "0.0000"},
    ]


# --- erasure --------------------------------------------------------------------------------------------------


async def test_erasure_removes_personal_data_and_keeps_the_counts(referrals: Service, tap: EventTap) -> None:
    rt, http = referrals
    await deliver(rt, tap, placed("cus-ea", "o-ea", email="erika@example.sk", address=HOME))
    await deliver(rt, tap, feedback("cus-ea", 10, NOW))
    code = (await published(rt, "ReferralInvited", customer_id="cus-ea"))[0]["data"]["code"]
    await deliver(rt, tap, placed("cus-eb", "o-eb", code=code, email="emil@example.sk"))
    await eventually(lambda: _outbox_sent(rt))
    before = (await http.get("/stats", headers=ADMIN)).json()
    assert (before["invitations"], before["conversions"]) == (1, 1)

    await deliver(rt, tap, erased("cus-ea"), erased("cus-eb"))
    # Late events about them are not used; their code converts no one any more.
    await deliver(
        rt,
        tap,
        placed("cus-eb", "o-eb2", email="emil@example.sk"),
        feedback("cus-ea", 10, NOW + timedelta(days=100)),
        placed("cus-ec", "o-ec", code=code),
    )

    stored = [doc for name in await rt.db.list_collection_names() if name != INBOX async for doc in rt.db[name].find()]
    for personal in ("cus-ea", "cus-eb", "erika", "emil", "hlavna"):
        assert personal not in str(stored).lower(), personal
    after = (await http.get("/stats", headers=ADMIN)).json()
    assert (after["invitations"], after["conversions"], after["customers"]) == (1, 1, 3)  # two aliases, cus-ec
    page = await code_page(http, code)
    assert page["status"] == "revoked"
    assert page["referrer_customer_id"].startswith("erased-")
    assert outcomes(page) == {"o-eb": ("converted", None), "o-ec": ("refused", "unknown_code")}
    refused = await http.post("/referrers/cus-ea/code", headers=ADMIN)
    assert refused.status_code == 409
    assert "customer_id" in refused.text


async def _outbox_sent(rt: Runtime) -> bool:
    return await rt.db[OUTBOX].count_documents({"status": {"$ne": "sent"}}) == 0


# --- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "names"),
    [
        ("post", "/affiliates", {"name": "", "email": "a@b.sk"}, 422, "name"),
        ("post", "/affiliates", {"name": "Anna", "email": "not-an-address"}, 422, "email"),
        ("post", "/affiliates", {"name": "Anna", "email": "a@b.sk", "commission_rate": "1.5"}, 422, "commission_rate"),
        ("post", "/affiliates", {"name": "Anna", "email": "a@b.sk", "comission_rate": "0.1"}, 422, "comission_rate"),
        ("post", "/affiliates", {"name": "Anna", "email": "a@b.sk", "max_conversions": 0}, 422, "max_conversions"),
        (
            "post",
            "/affiliates",
            {"name": "Anna", "email": "a@b.sk", "expires_at": "2027-01-01T00:00"},
            422,
            "expires_at",
        ),
        ("patch", "/referrals/ZZZ-ZZZ-ZZZ", {"max_conversions": 3}, 404, "code"),
        ("patch", "/referrals/ZZZ-ZZZ-ZZZ", {}, 422, "expires_at"),
        ("patch", "/referrals/ZZZ-ZZZ-ZZZ", {"max_conversions": "3"}, 422, "max_conversions"),
        ("patch", "/referrals/ZZZ-ZZZ-ZZZ", {"max_conversions": 2.5}, 422, "max_conversions"),
        ("patch", "/referrals/ZZZ-ZZZ-ZZZ", {"max_conversions": 3.0}, 404, "code"),  # a whole number, as JSON has it
        ("patch", "/referrals/ZZZ-ZZZ-ZZZ", {"expires_at": 1_800_000_000}, 422, "expires_at"),
        ("post", "/affiliates", {"name": "Anna", "email": "a@b.sk", "commission_rate": "1e-1"}, 422, "commission_rate"),
        ("post", "/affiliates", {"name": "Anna", "email": "anna@shop.test"}, 422, "email"),
        ("get", "/referrals/ZZZ-ZZZ-ZZZ", None, 404, "code"),
        ("get", "/refusals?reason=bogus", None, 422, "reason"),
        ("get", "/affiliates/aff_nope", None, 404, "affiliate_id"),
        ("get", "/affiliates/aff_nope/commissions", None, 404, "affiliate_id"),
        ("post", f"/referrers/{'x' * 129}/code", None, 422, "customer_id"),
    ],
)
async def test_bad_api_input_gets_a_4xx_naming_the_field_and_the_service_goes_on(
    referrals: Service, method: str, path: str, body: dict[str, Any] | None, status: int, names: str
) -> None:
    _rt, http = referrals
    answer = await http.request(method, path, json=body, headers=ADMIN)
    assert answer.status_code == status, answer.text
    assert names in answer.text
    assert (await http.post("/referrers/cus-fine/code", headers=ADMIN)).status_code in (200, 201)


async def test_a_method_a_path_lacks_gets_405_listing_every_method_it_has(referrals: Service) -> None:
    _rt, http = referrals
    for path, allowed in (("/affiliates", "GET, POST"), ("/referrals/ZZZ-ZZZ-ZZZ", "GET, PATCH")):
        for method in ("OPTIONS", "PUT", "DELETE"):
            answer = await http.request(method, path, headers=ADMIN)
            assert (answer.status_code, answer.headers.get("allow")) == (405, allowed), (method, path)


async def test_the_api_needs_the_admin_key(referrals: Service) -> None:
    _rt, http = referrals
    assert (await http.post("/referrers/cus-a/code")).status_code == 401
    assert (await http.get("/stats", headers={"Authorization": "Bearer wrong"})).status_code == 401


# --- cancellations and history ----------------------------------------------------------------------


async def test_a_cancelled_order_contests_its_conversion_and_the_commission_goes_back_whole(
    referrals: Service, tap: EventTap
) -> None:
    rt, http = referrals
    affiliate = await enrol(http)  # 10 %
    affiliate_id, code = affiliate["affiliate_id"], affiliate["code"]["code"]
    before = counted("referrals_contested_total", reason="order_cancelled")
    await deliver(rt, tap, placed("cus-c1", "o-c1", code=code, total="80.00"))
    await deliver(rt, tap, refunded("cus-c1", "o-c1", "20.00", NOW, "r-c1"))  # 2.00 of the 8.00 back
    cancel = cancelled("cus-c1", "o-c1", NOW + timedelta(minutes=5))
    await deliver(rt, tap, cancel, cancel)
    await deliver(rt, tap, cancel.model_copy(update={"id": str(uuid.uuid4())}))  # the same cancellation told again

    [sale] = (await commissions(http, affiliate_id))["commissions"]
    assert (sale["contested"]["reason"], sale["contested"]["order_id"]) == ("order_cancelled", "o-c1")
    assert (sale["commission"], sale["contest_clawback"], sale["clawed_back"], sale["commission_due"]) == (
        "8.00",
        "6.00",
        "8.00",
        "0.00",
    )
    await deliver(rt, tap, refunded("cus-c1", "o-c1", "60.00", NOW + timedelta(hours=1), "r-c2"))  # the money back
    [after] = (await commissions(http, affiliate_id))["commissions"]
    assert (after["clawed_back"], after["commission_due"]) == ("8.00", "0.00")  # taken back once
    stats = (await http.get("/stats", headers=ADMIN)).json()
    assert (stats["affiliate_conversions"], stats["contested"]) == (1, {"order_cancelled": 1})
    assert counted("referrals_contested_total", reason="order_cancelled") == before + 1
    assert len(await published(rt, "ReferralConverted", referee_customer_id="cus-c1")) == 1


async def test_a_cancellation_heard_of_before_the_order_ends_as_when_it_comes_after(
    referrals: Service, tap: EventTap
) -> None:
    rt, http = referrals
    affiliate = await enrol(http)
    affiliate_id, code = affiliate["affiliate_id"], affiliate["code"]["code"]
    friend_code = await issue(http, "cus-f")
    await deliver(rt, tap, cancelled("cus-c2", "o-c2", NOW), refunded("cus-c2", "o-c2", "20.00", NOW, "r-c3"))
    early = placed("cus-c2", "o-c2", code=code, total="80.00", at=NOW - timedelta(hours=1))
    await deliver(rt, tap, early, early)
    await deliver(rt, tap, cancelled("cus-c3", "o-c3", NOW), placed("cus-c3", "o-c3", code=friend_code))

    [sale] = (await commissions(http, affiliate_id))["commissions"]
    assert (sale["contested"]["reason"], sale["contest_clawback"], sale["clawed_back"], sale["commission_due"]) == (
        "order_cancelled",
        "6.00",
        "8.00",
        "0.00",
    )
    [converted] = await published(rt, "ReferralConverted", referee_customer_id="cus-c2")
    assert converted["data"]["commission"] == "8.00"  # converted and published as when the order came first
    [friend] = (await code_page(http, friend_code))["referrals"]
    assert (friend["outcome"], friend["contested"]["reason"]) == ("converted", "order_cancelled")
    stats = (await http.get("/stats", headers=ADMIN)).json()
    assert (stats["conversions"], stats["affiliate_conversions"], stats["contested"]) == (1, 1, {"order_cancelled": 2})


async def test_an_imported_order_converts_as_history_and_an_imported_promoter_is_not_invited(
    referrals: Service, tap: EventTap
) -> None:
    rt, http = referrals
    code = await issue(http, "cus-old-friend")
    order = placed("cus-h", "o-h", code=code, at=NOW - timedelta(days=300)).model_copy(update={"imported": True})
    happy = feedback("cus-h", 10, NOW - timedelta(days=290)).model_copy(update={"imported": True})
    await deliver(rt, tap, happy, order, order)  # the feedback before its order, the order twice

    assert outcomes(await code_page(http, code)) == {"o-h": ("converted", None)}  # history builds state
    [converted] = await published(rt, "ReferralConverted", referee_customer_id="cus-h")
    assert converted["imported"] is True  # so no one plans a message to the customer from it
    assert datetime.fromisoformat(converted["data"]["converted_at"]) == order.data.placed_at  # its true date
    assert await published(rt, "ReferralInvited", customer_id="cus-h") == []  # history is no happy moment now
    assert (await http.get("/stats", headers=ADMIN)).json()["codes_issued"] == 1  # and no code was issued for it
    live = feedback("cus-h", 10, NOW)
    await deliver(rt, tap, live)
    [invited] = await published(rt, "ReferralInvited", customer_id="cus-h")
    assert (invited["data"]["feedback_id"], invited["imported"]) == (live.data.feedback_id, None)
