"""Loyalty against the real broker and MongoDB: earning, refunds, order-independence, redemptions, expiry."""

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from services.loyalty import service as loyalty
from services.loyalty.app import SPEC
from services.loyalty.domain import Facts, Ledger, Scheme, facts_of, replay
from services.loyalty.jobs import review_due_members
from services.loyalty.settings import LoyaltySettings
from services.loyalty.store import LEDGER, MEMBER_FACTS, MEMBERS, fact_doc
from shared.events import (
    Customer,
    CustomerErased,
    CustomerErasedEvent,
    Envelope,
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
    ReferralConverted,
    ReferralConvertedEvent,
)
from shared.mongo import OUTBOX
from shared.service import Runtime
from shared.settings import ServiceSettings
from tests.service.delivery import consumed, deliver
from tests.support.running import running_service
from tests.support.tap import EventTap, eventually

ADMIN = {"Authorization": "Bearer test-admin-key"}
NOW = datetime.now(UTC)


@pytest.fixture
async def loyalty_service(
    service_name: str, settings: ServiceSettings
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    own = LoyaltySettings(**settings.model_dump(), expiry_interval_seconds=3600)
    async with running_service(replace(SPEC, name=service_name), own) as running:
        yield running


def order(customer_id: str, order_id: str, total: str, at: datetime, currency: str = "EUR") -> OrderPlacedEvent:
    items = [LineItem(sku="MUG", name="Mug", quantity=1, unit_price=Decimal(total), category="kitchen")]
    data = OrderPlaced(
        order_id=order_id,
        customer=Customer(customer_id=customer_id, email=f"{customer_id}@example.com"),
        placed_at=at,
        currency=currency,
        total=Decimal(total),
        line_items=items,
    )
    return OrderPlacedEvent.new(data, source="shop", subject=customer_id)


def refund(customer_id: str, order_id: str, amount: str, at: datetime) -> OrderRefundedEvent:
    data = OrderRefunded(
        refund_id=f"ref-{uuid.uuid4().hex[:8]}",
        order_id=order_id,
        customer_id=customer_id,
        amount=Decimal(amount),
        currency="EUR",
        refunded_at=at,
    )
    return OrderRefundedEvent.new(data, source="shop", subject=customer_id)


def cancelled(customer_id: str, order_id: str, at: datetime) -> OrderCancelledEvent:
    data = OrderCancelled(order_id=order_id, customer_id=customer_id, cancelled_at=at, reason="customer")
    return OrderCancelledEvent.new(data, source="shop", subject=customer_id)


def told_again(event: Envelope[Any]) -> Envelope[Any]:
    """The same fact told once more under a new event id (say by a webhook and by the backend)."""
    return event.model_copy(update={"id": str(uuid.uuid4())})


def imported(event: Envelope[Any]) -> Envelope[Any]:
    """The event as a shop's history import sends it (DESIGN.md §3: `imported: true`)."""
    return event.model_copy(update={"imported": True})


def feedback(
    customer_id: str, order_id: str, comment: str | None, nps: int | None, at: datetime
) -> FeedbackReceivedEvent:
    data = FeedbackReceived(
        feedback_id=f"fb-{uuid.uuid4().hex[:8]}",
        customer_id=customer_id,
        order_id=order_id,
        ratings=Ratings(overall=4),
        nps=nps,
        comment=comment,
        channel="email",
        received_at=at,
    )
    return FeedbackReceivedEvent.new(data, source="followups", subject=customer_id)


def referral(referrer: str, referee: str, order_id: str, at: datetime) -> ReferralConvertedEvent:
    data = ReferralConverted(
        referral_id=f"rf-{uuid.uuid4().hex[:8]}",
        code="K7QX-M2PA",
        referrer_customer_id=referrer,
        referee_customer_id=referee,
        order_id=order_id,
        order_total=Decimal("10"),
        currency="EUR",
        converted_at=at,
        program="customer",
    )
    return ReferralConvertedEvent.new(data, source="referrals", subject=referee)


async def earn(tap: EventTap, placed: OrderPlacedEvent) -> dict[str, Any]:
    """Publish an order as the shop does and wait for the points it earns."""
    await tap.publish(placed)
    awarded = await tap.wait_for(lambda e: e["type"] == "PointsAwarded" and e["causationid"] == placed.id)
    return awarded[0]


async def member(http: httpx.AsyncClient, customer_id: str) -> dict[str, Any]:
    got = await http.get(f"/members/{customer_id}", headers=ADMIN)
    assert got.status_code == 200, got.text
    body: dict[str, Any] = got.json()
    return body


async def test_an_order_earns_points_explained_on_the_member_page(
    loyalty_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    _rt, http = loyalty_service
    placed = order("cus-a", "ord-a1", "120.50", NOW - timedelta(days=1))
    awarded = await earn(tap, placed)
    assert awarded["data"] | {"entry_id": None, "expires_at": None} == {
        "entry_id": None,
        "customer_id": "cus-a",
        "points": 120,
        "reason": "purchase",
        "order_id": "ord-a1",
        "balance": 120,
        "tier": "bronze",
        "expires_at": None,
    }
    page = await member(http, "cus-a")
    assert page["balance"] == 120
    assert page["tier"] == "bronze"
    assert page["next_tier"] == {"name": "silver", "points_needed": 380}
    assert [(e["kind"], e["reason"], e["points"], e["cause"]) for e in page["recent_entries"]] == [
        ("earn", "purchase", 120, "OrderPlaced")
    ]
    assert page["expiring_in_30_days"] == 0
    assert (await http.get("/members/nobody", headers=ADMIN)).status_code == 404


async def test_reaching_silver_publishes_tier_changed_and_multiplies_the_next_order(
    loyalty_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    _rt, _http = loyalty_service
    await tap.publish(order("cus-t", "ord-t1", "500", NOW - timedelta(days=2)))
    await tap.wait_for(lambda e: e["type"] == "TierChanged" and e["data"]["customer_id"] == "cus-t")
    await tap.publish(order("cus-t", "ord-t2", "100", NOW - timedelta(days=1)))
    second = await tap.wait_for(lambda e: e["type"] == "PointsAwarded" and e["data"].get("order_id") == "ord-t2")
    assert second[0]["data"]["points"] == 125
    changed = [e["data"] for e in tap.bodies("TierChanged") if e["data"]["customer_id"] == "cus-t"]
    assert changed == [{"customer_id": "cus-t", "from_tier": "bronze", "to_tier": "silver"}]


async def test_a_refund_before_its_order_reverses_once_the_order_arrives(
    loyalty_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    rt, http = loyalty_service
    early = refund("cus-r", "ord-r1", "25", NOW - timedelta(hours=1))
    await tap.publish(early)
    await eventually(lambda: consumed(rt) == 1)
    assert tap.bodies("PointsReversed") == []
    await tap.publish(order("cus-r", "ord-r1", "100", NOW - timedelta(hours=2)))
    reversed_ = await tap.wait_for(lambda e: e["type"] == "PointsReversed" and e["data"]["customer_id"] == "cus-r")
    assert reversed_[0]["data"]["points"] == 25
    assert reversed_[0]["data"]["reason"] == "refund"
    assert (await member(http, "cus-r"))["balance"] == 75


async def test_an_unconfigured_currency_earns_nothing_and_is_counted(
    loyalty_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    rt, http = loyalty_service
    before = loyalty.METRICS.get_sample_value("loyalty_orders_in_unrated_currency_total", {"currency": "JPY"}) or 0
    await tap.publish(order("cus-y", "ord-y1", "5000", NOW, currency="JPY"))
    await eventually(lambda: consumed(rt) == 1)
    after = loyalty.METRICS.get_sample_value("loyalty_orders_in_unrated_currency_total", {"currency": "JPY"})
    assert after == before + 1
    assert (await member(http, "cus-y"))["balance"] == 0
    assert "loyalty_orders_in_unrated_currency_total" in (await http.get("/metrics")).text


async def test_a_shuffled_stream_with_duplicates_ends_in_the_in_order_balances(
    loyalty_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    rt, _http = loyalty_service
    rng = random.Random(20261122)  # noqa: S311 - a repeatable shuffle, not a secret
    customers = [f"cus-{n:03d}" for n in range(120)]
    stream: list[Envelope[Any]] = []
    for customer in customers:
        for n in range(rng.randint(3, 25)):
            at = NOW - timedelta(days=60) + timedelta(hours=rng.randint(0, 24 * 59))
            placed = order(customer, f"{customer}-o{n}", f"{rng.randint(5, 400)}.{rng.randint(0, 99):02d}", at)
            stream.append(placed)
            if rng.random() < 0.25:
                part = (placed.data.total * Decimal(rng.choice(["0.25", "0.5", "1"]))).quantize(Decimal("0.01"))
                stream.append(
                    refund(customer, placed.data.order_id, str(part), at + timedelta(hours=rng.randint(1, 48)))
                )
            if rng.random() < 0.3:
                words = rng.choice([None, "Lovely, quick and careful delivery"])
                stream.append(
                    feedback(customer, placed.data.order_id, words, rng.choice([None, 3, 9]), at + timedelta(days=3))
                )
    for n in range(40):
        referrer, referee = rng.sample(customers, 2)
        stream.append(referral(referrer, referee, f"ref-order-{n}", NOW - timedelta(days=rng.randint(1, 59))))
    duplicates = rng.sample(stream, len(stream) // 10)
    deliveries = stream + duplicates
    rng.shuffle(deliveries)
    assert len(deliveries) > 2000

    for event in deliveries:
        await tap.publish(event)
    await eventually(lambda: consumed(rt) == len(deliveries), timeout=240)

    in_order = _in_order_ledgers(stream, customers)
    by_hand = _worked_out_by_hand(stream, customers)
    # the pure replay itself follows DESIGN.md §7 as worked out independently, so a wrong rule fails here
    assert {c: (ledger.balance, ledger.tier.name) for c, ledger in in_order.items()} == by_hand
    expected = {customer: balance for customer, (balance, _tier) in by_hand.items()}
    docs = {doc["_id"]: doc async for doc in rt.db[MEMBERS].find({})}
    actual = {customer: docs[customer]["balance"] for customer in customers if customer in docs}
    assert actual == {c: b for c, b in expected.items() if c in docs}
    assert set(docs) >= {c for c, b in expected.items() if b != 0}
    assert {c: doc["tier"] for c, doc in docs.items()} == {c: in_order[c].tier.name for c in docs}
    for customer in customers[:10]:  # the ledger adds up to the balance
        total = sum([e["points"] async for e in rt.db[LEDGER].find({"customer_id": customer})])
        assert total == expected[customer]


# DESIGN.md §7 defaults, written out here rather than read from the domain: (tier, threshold, multiplier)
DESIGN_TIERS = [("bronze", 0, Decimal("1.0")), ("silver", 500, Decimal("1.25")), ("gold", 1500, Decimal("1.5"))]
DESIGN_TIERS += [("vip", 5000, Decimal("2.0"))]


def _worked_out_by_hand(stream: list[Envelope[Any]], customers: list[str]) -> dict[str, tuple[int, str]]:
    """Balance and tier per customer by DESIGN.md §7, computed without the domain: every event here lies
    within the last 60 days, so nothing expires and every order is in the 365-day tier window."""
    balance = dict.fromkeys(customers, 0)
    earned: dict[str, dict[str, tuple[int, Decimal]]] = {c: {} for c in customers}  # order → (points, total)
    refunded: dict[str, Decimal] = {}  # order → refunded so far
    taken: dict[str, int] = {}  # order → points reversed so far
    feedback_paid: set[str] = set()

    placed_at: dict[str, datetime] = {}

    def tier_points(customer: str, before: datetime | None = None) -> int:
        """Purchase points net of refunds, of the orders placed before `before` (an order placed at the same
        moment is not before it) or of all."""
        return sum(
            points - taken.get(order_id, 0)
            for order_id, (points, _) in earned[customer].items()
            if before is None or placed_at[order_id] < before
        )

    def tier_of(points: int) -> tuple[str, Decimal]:
        held = [(name, multiplier) for name, threshold, multiplier in DESIGN_TIERS if points >= threshold]
        return held[-1]

    unique = list({event.id: event for event in stream}.values())

    def happened_at(event: Envelope[Any]) -> tuple[datetime, int]:
        """When it happened; at the same moment an order comes first, then feedback, then a refund."""
        data = event.data
        if isinstance(data, OrderPlaced):
            return data.placed_at, 0
        return (data.received_at, 1) if isinstance(data, FeedbackReceived) else (data.refunded_at, 2)

    referrals = [e for e in unique if isinstance(e.data, ReferralConverted)]  # count whenever they happened
    for event in [*sorted((e for e in unique if e not in referrals), key=happened_at), *referrals]:
        data = event.data
        if isinstance(data, OrderPlaced):
            customer = data.customer.customer_id
            _name, multiplier = tier_of(tier_points(customer, data.placed_at))  # the tier held before the order
            placed_at[data.order_id] = data.placed_at
            points = int((data.total * multiplier).to_integral_value(rounding="ROUND_FLOOR"))
            earned[customer][data.order_id] = (points, data.total)
            balance[customer] += points
        elif isinstance(data, OrderRefunded):
            points, total = earned[data.customer_id][data.order_id]  # refunds here come after their order
            refunded[data.order_id] = refunded.get(data.order_id, Decimal(0)) + data.amount
            target = int((points * min(refunded[data.order_id], total) / total).to_integral_value("ROUND_FLOOR"))
            balance[data.customer_id] -= target - taken.get(data.order_id, 0)
            taken[data.order_id] = target
        elif isinstance(data, FeedbackReceived):
            if (
                data.comment is not None
                and len(data.comment.strip()) >= 20
                and f"r{data.order_id}" not in feedback_paid
            ):
                balance[data.customer_id] += 50
                feedback_paid.add(f"r{data.order_id}")
            if data.nps is not None and f"s{data.order_id}" not in feedback_paid:
                balance[data.customer_id] += 20
                feedback_paid.add(f"s{data.order_id}")
        elif isinstance(data, ReferralConverted):
            balance[data.referrer_customer_id] += 500
            balance[data.referee_customer_id] += 250
    return {customer: (balance[customer], tier_of(tier_points(customer))[0]) for customer in customers}


def _in_order_ledgers(stream: list[Envelope[Any]], customers: list[str]) -> dict[str, Ledger]:
    """The pure rules over the de-duplicated stream in the order it happened."""
    facts: dict[str, Facts] = {c: Facts() for c in customers}
    for event in sorted(stream, key=lambda e: e.time):
        for owner, fact in facts_of(event.data, Scheme()):
            facts[owner] = facts[owner].adding(fact) or facts[owner]
    return {customer: replay(f, datetime.now(UTC)) for customer, f in facts.items()}


async def _reward(http: httpx.AsyncClient, price: int) -> str:
    created = await http.post("/rewards", json={"name": "Free shipping", "points_price": price}, headers=ADMIN)
    assert created.status_code == 201, created.text
    reward_id: str = created.json()["reward_id"]
    return reward_id


async def test_fifty_concurrent_redemptions_spend_exactly_the_balance(
    loyalty_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    _rt, http = loyalty_service
    await earn(tap, order("cus-c", "ord-c1", "1000", NOW - timedelta(days=1)))
    reward_id = await _reward(http, 100)

    async def attempt(n: int) -> httpx.Response:
        return await http.post(
            "/members/cus-c/redemptions",
            json={"reward_id": reward_id},
            headers={**ADMIN, "Idempotency-Key": f"try-{n}"},
        )

    answers = await asyncio.gather(*(attempt(n) for n in range(50)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [201] * 10 + [409] * 40
    refused = next(a for a in answers if a.status_code == 409)
    assert refused.json()["detail"] == "balance 0 does not cover 100 points for 'Free shipping'"
    assert (await member(http, "cus-c"))["balance"] == 0
    await tap.wait_for(lambda e: e["type"] == "PointsRedeemed" and e["data"]["customer_id"] == "cus-c", count=10)


async def test_a_retried_redemption_returns_the_first_result(
    loyalty_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    _rt, http = loyalty_service
    await earn(tap, order("cus-i", "ord-i1", "300", NOW - timedelta(days=1)))
    reward_id = await _reward(http, 120)
    headers = {**ADMIN, "Idempotency-Key": "checkout-42"}
    first = await http.post("/members/cus-i/redemptions", json={"reward_id": reward_id}, headers=headers)
    again = await http.post("/members/cus-i/redemptions", json={"reward_id": reward_id}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert first.json()["balance"] == 180
    assert (await member(http, "cus-i"))["balance"] == 180
    other_reward = await _reward(http, 10)
    reused = await http.post("/members/cus-i/redemptions", json={"reward_id": other_reward}, headers=headers)
    assert reused.status_code == 409
    assert reused.json() == {"detail": "Idempotency-Key: already used for another reward"}
    assert (await member(http, "cus-i"))["balance"] == 180


async def test_a_negative_balance_refuses_redemption_clearly(
    loyalty_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    _rt, http = loyalty_service
    await earn(tap, order("cus-n", "ord-n1", "200", NOW - timedelta(days=3)))
    reward_id = await _reward(http, 150)
    spent = await http.post(
        "/members/cus-n/redemptions", json={"reward_id": reward_id}, headers={**ADMIN, "Idempotency-Key": "n-1"}
    )
    assert spent.status_code == 201
    await tap.publish(refund("cus-n", "ord-n1", "200", NOW - timedelta(days=1)))
    await tap.wait_for(lambda e: e["type"] == "PointsReversed" and e["data"]["customer_id"] == "cus-n")
    assert (await member(http, "cus-n"))["balance"] == -150
    refused = await http.post(
        "/members/cus-n/redemptions", json={"reward_id": reward_id}, headers={**ADMIN, "Idempotency-Key": "n-2"}
    )
    assert refused.status_code == 409
    assert refused.json()["detail"] == "balance -150 does not cover 150 points for 'Free shipping'"


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "names"),
    [
        ("post", "/rewards", {"name": "Mug", "points_price": -5}, {}, 422, "points_price"),
        ("post", "/rewards", {"name": "Mug", "points_price": "5"}, {}, 422, "points_price"),
        ("post", "/members/cus-x/redemptions", {"reward_id": "rw_nope"}, {"Idempotency-Key": "k"}, 404, "reward_id"),
        ("post", "/members/cus-x/redemptions", {"reward_id": "rw_nope"}, {}, 422, "Idempotency-Key"),
        (
            "post",
            "/campaigns",
            {
                "name": "Autumn",
                "starts_at": "2026-10-10T00:00:00+00:00",
                "ends_at": "2026-10-01T00:00:00+00:00",
                "multiplier": "2",
            },
            {},
            409,
            "ends_at: the campaign's window is empty",
        ),
        (
            "post",
            "/campaigns",
            {
                "name": "Autumn",
                "starts_at": "2026-10-10T00:00:00",
                "ends_at": "2026-10-20T00:00:00+00:00",
                "multiplier": "2",
            },
            {},
            422,
            "starts_at",
        ),
        (
            "post",
            "/campaigns",
            {
                "name": "Autumn",
                "starts_at": "2026-10-10T00:00:00+00:00",
                "ends_at": "2026-10-20T00:00:00+00:00",
                "multiplier": "0.5",
            },
            {},
            422,
            "multiplier",
        ),
        (
            "put",
            "/rules",
            {"rates": {"eur": "1"}, "tiers": [{"name": "b", "threshold": 0, "multiplier": "1"}]},
            {},
            422,
            "rates",
        ),
        (
            "put",
            "/rules",
            {"rates": {"EUR": "1"}, "tiers": [{"name": "b", "threshold": 10, "multiplier": "1"}]},
            {},
            409,
            "tiers: tiers must start at threshold 0",
        ),
    ],
)
async def test_bad_api_input_gets_a_4xx_naming_the_problem(
    loyalty_service: tuple[Runtime, httpx.AsyncClient],
    method: str,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
    status: int,
    names: str,
) -> None:
    _rt, http = loyalty_service
    answer = await http.request(method, path, json=body, headers={**ADMIN, **headers})
    assert answer.status_code == status, answer.text
    assert names in answer.text


async def test_rules_and_campaigns_configure_earning(
    loyalty_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    _rt, http = loyalty_service
    rules = {
        "rates": {"EUR": "2", "HUF": "0.005"},
        "tiers": [
            {"name": "member", "threshold": 0, "multiplier": "1"},
            {"name": "star", "threshold": 100, "multiplier": "3"},
        ],
    }
    assert (await http.put("/rules", json=rules, headers=ADMIN)).status_code == 200
    window = {"starts_at": (NOW - timedelta(days=5)).isoformat(), "ends_at": (NOW + timedelta(days=5)).isoformat()}
    created = await http.post(
        "/campaigns",
        json={
            "name": "Kitchen week",
            "multiplier": "2",
            "categories": ["kitchen"],
            "bonus_lifetime_days": 10,
            **window,
        },
        headers=ADMIN,
    )
    assert created.status_code == 201, created.text
    await tap.publish(order("cus-k", "ord-k1", "10", NOW - timedelta(days=1)))
    await tap.publish(order("cus-h", "ord-h1", "10000", NOW - timedelta(days=1), currency="HUF"))
    awarded = await tap.wait_for(
        lambda e: e["type"] == "PointsAwarded" and e["data"]["customer_id"] in {"cus-k", "cus-h"}, count=4
    )
    by_reason = sorted((e["data"]["customer_id"], e["data"]["reason"], e["data"]["points"]) for e in awarded)
    # EUR at 2/unit: 20 base + 20 kitchen bonus; HUF at 0.005: 50 base + 50 bonus (the mug is kitchen too)
    assert by_reason == [
        ("cus-h", "bonus", 50),
        ("cus-h", "purchase", 50),
        ("cus-k", "bonus", 20),
        ("cus-k", "purchase", 20),
    ]
    page = await member(http, "cus-k")
    assert page["expiring_in_30_days"] == 20  # the bonus lives 10 days


async def test_the_points_report_sums_the_ledger_per_month_and_runs_the_outstanding(
    loyalty_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    rt, http = loyalty_service
    assert (await http.get("/reports/points", headers=ADMIN)).json() == {"months": []}
    # This month: cus-p earns 200 (1 a euro), spends 150 on a reward, and 50 is taken back for a refund;
    # cus-q earns 80, which expires unspent 400 days on.
    await earn(tap, order("cus-p", "ord-p1", "200", NOW - timedelta(days=3)))
    spent = await http.post(
        "/members/cus-p/redemptions",
        json={"reward_id": await _reward(http, 150)},
        headers={**ADMIN, "Idempotency-Key": "p"},
    )
    assert spent.status_code == 201
    await tap.publish(refund("cus-p", "ord-p1", "50", NOW - timedelta(days=1)))
    await tap.wait_for(lambda e: e["type"] == "PointsReversed" and e["data"]["customer_id"] == "cus-p")
    await earn(tap, order("cus-q", "ord-q1", "80", NOW - timedelta(days=2)))
    this_month = datetime.now(UTC).strftime("%Y-%m")
    later = NOW + timedelta(days=400)
    assert await review_due_members(rt, at=later) >= 1
    await tap.wait_for(lambda e: e["type"] == "PointsExpired" and e["data"]["customer_id"] == "cus-q")

    report = (await http.get("/reports/points", headers=ADMIN)).json()
    nothing = {"issued": 0, "taken_back": 0, "corrected": 0, "redeemed": 0, "expired": 0}
    assert report["months"] == [
        nothing | {"month": this_month, "issued": 280, "taken_back": 50, "redeemed": 150, "outstanding": 80},
        nothing | {"month": later.strftime("%Y-%m"), "expired": 80, "outstanding": 0},
    ]


async def test_expiry_runs_once_even_with_two_replicas_reviewing_together(
    loyalty_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    rt, _http = loyalty_service
    await earn(tap, order("cus-e", "ord-e1", "80", NOW - timedelta(days=2)))
    later = NOW + timedelta(days=400)
    reviewed = await asyncio.gather(review_due_members(rt, at=later), review_due_members(rt, at=later))
    assert sum(reviewed) == 1
    expired = await tap.wait_for(lambda e: e["type"] == "PointsExpired" and e["data"]["customer_id"] == "cus-e")
    assert expired[0]["data"] == {"customer_id": "cus-e", "points": 80, "balance": 0}
    assert await review_due_members(rt, at=later) == 0
    entries = [e async for e in rt.db[LEDGER].find({"customer_id": "cus-e", "kind": "expire"})]
    assert [e["points"] for e in entries] == [-80]
    tier_down = [e for e in tap.bodies("TierChanged") if e["data"]["customer_id"] == "cus-e"]
    assert tier_down == []  # 80 points never left bronze


async def test_customer_erased_removes_the_member_and_keeps_anonymous_totals(
    loyalty_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    rt, http = loyalty_service
    await earn(tap, order("cus-gone", "ord-g1", "70", NOW - timedelta(days=2)))
    await earn(tap, order("cus-gone2", "ord-g9", "10", NOW - timedelta(days=2)))  # an id they are a prefix of
    sent_about_them = {"body.subject": "cus-gone", "status": "sent"}
    await eventually(lambda: _count(rt, OUTBOX, sent_about_them, at_least=1))
    erased = CustomerErasedEvent.new(CustomerErased(customer_id="cus-gone", requested_at=NOW), source="orders")
    assert await rt.db[MEMBER_FACTS].find_one({"_id.member": "cus-gone"}) is not None
    await tap.publish(erased)
    await eventually(lambda: consumed(rt) == 3)
    assert await rt.db[MEMBERS].find_one({"_id": "cus-gone"}) is None
    assert await rt.db[MEMBER_FACTS].find_one({"_id.member": "cus-gone"}) is None  # what they bought
    assert await rt.db[MEMBER_FACTS].find_one({"_id.member": "cus-gone2"}) is not None  # only theirs
    assert await rt.db[OUTBOX].count_documents(sent_about_them) == 0  # PointsAwarded named them
    assert await rt.db[LEDGER].count_documents({"customer_id": "cus-gone"}) == 0
    assert await rt.db[LEDGER].count_documents({"customer_id": {"$regex": "^erased-"}, "points": 70}) == 1
    await tap.publish(order("cus-gone", "ord-g2", "50", NOW))  # a late event does not bring the member back
    await eventually(lambda: consumed(rt) == 4)
    assert await rt.db[MEMBERS].find_one({"_id": "cus-gone"}) is None
    assert (await http.get("/members/cus-gone", headers=ADMIN)).status_code == 404


async def _count(rt: Runtime, collection: str, query: dict[str, object], at_least: int) -> bool:
    return await rt.db[collection].count_documents(query) >= at_least


async def test_a_member_stored_before_the_checkpoint_is_read_and_moved_to_the_new_layout(
    loyalty_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    """A member document from before the checkpoint (facts inline, no checkpoint) keeps working."""
    rt, http = loyalty_service
    old = order("cus-old", "ord-old", "100", NOW - timedelta(days=10))
    [(_, bought)] = facts_of(old.data, Scheme())
    await rt.db[MEMBERS].insert_one(
        {
            "_id": "cus-old",
            "balance": 100,
            "tier": "bronze",
            "qualifying_points": 100,
            "recorded": {"purchase:ord-old": 100},
            "next_review_at": NOW + timedelta(days=355),
            "lease_until": None,
            "updated_at": NOW - timedelta(days=10),
            "purchases": [fact_doc(bought)],
        }
    )
    assert SPEC.ensure_indexes is not None
    await SPEC.ensure_indexes(rt.db, rt.settings)  # what a replica does as it starts: moves the facts once
    newer = order("cus-old", "ord-new", "50", NOW - timedelta(days=1))
    assert (await earn(tap, newer))["data"]["balance"] == 150
    stored = await rt.db[MEMBERS].find_one({"_id": "cus-old"})
    assert stored is not None
    assert "checkpoint" in stored
    assert "purchases" not in stored
    facts = rt.db[MEMBER_FACTS].find({"_id.member": "cus-old", "kind": "purchases"}, sort=[("fact.placed_at", 1)])
    assert [doc["fact"]["order_id"] async for doc in facts] == ["ord-old", "ord-new"]
    # an order placed before both arrives late: the full replay needs the moved facts, and lifts both to silver
    earlier = order("cus-old", "ord-early", "500", NOW - timedelta(days=20))
    await tap.publish(earlier)
    await eventually(lambda: consumed(rt) == 2)
    everything = Facts().adding(*(fact for e in (old, newer, earlier) for _, fact in facts_of(e.data, Scheme())))
    assert everything is not None
    expected = replay(everything, datetime.now(UTC))
    page = await member(http, "cus-old")
    assert (page["balance"], page["tier"]) == (expected.balance, expected.tier.name) == (500 + 125 + 62, "silver")


async def test_a_history_stored_as_one_document_per_member_is_split_once_and_still_replayed(
    loyalty_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    """member_facts as it was (one document per member, a list per kind): split into one document per fact
    as the service starts, and a late order's full replay still reads every fact."""
    rt, http = loyalty_service
    first, second = order("cus-big", "ord-1", "300", NOW - timedelta(days=10)), refund("cus-big", "ord-1", "100", NOW)
    await deliver(rt, tap, first, second)
    member_doc = await rt.db[MEMBER_FACTS].find({"_id.member": "cus-big"}).to_list()
    old_shape: dict[str, Any] = {"_id": "cus-big"}
    for doc in member_doc:
        old_shape.setdefault(doc["kind"], []).append(doc["fact"])
    await rt.db[MEMBER_FACTS].delete_many({"_id.member": "cus-big"})
    await rt.db[MEMBER_FACTS].insert_one(old_shape)
    assert set(old_shape) == {"_id", "purchases", "refunds"}

    assert SPEC.ensure_indexes is not None
    await SPEC.ensure_indexes(rt.db, rt.settings)
    await SPEC.ensure_indexes(rt.db, rt.settings)  # a second replica starting: nothing left to split
    assert await rt.db[MEMBER_FACTS].find_one({"_id": "cus-big"}) is None
    split = await rt.db[MEMBER_FACTS].find({"_id.member": "cus-big"}).to_list()
    assert sorted(doc["_id"]["fact"] for doc in split) == sorted(doc["_id"]["fact"] for doc in member_doc)

    assert (await member(http, "cus-big"))["balance"] == 200
    early = order("cus-big", "ord-0", "500", NOW - timedelta(days=20))  # late: before both, so a full replay
    await deliver(rt, tap, early)
    # ord-0 500 at bronze; ord-1 then at silver: 375, a third refunded (125); 500 + 375 - 125
    assert (await member(http, "cus-big"))["balance"] == 750


async def test_a_cancellation_gives_back_what_the_order_still_counted_for_once_in_any_order(
    loyalty_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    rt, http = loyalty_service
    # In order: 100 points, a refund of 30 takes 30, the cancellation the other 70; told again, nothing more.
    cancel = cancelled("cus-x1", "ord-x1", NOW - timedelta(hours=1))
    await deliver(rt, tap, order("cus-x1", "ord-x1", "100", NOW - timedelta(hours=3)))
    await deliver(rt, tap, refund("cus-x1", "ord-x1", "30", NOW - timedelta(hours=2)), cancel, cancel)
    await deliver(rt, tap, told_again(cancel))
    page = await member(http, "cus-x1")
    assert (page["balance"], page["tier_points"]) == (0, 0)
    reversed_ = [e["data"] for e in tap.bodies("PointsReversed") if e["data"]["customer_id"] == "cus-x1"]
    assert sorted((e["points"], e["reason"]) for e in reversed_) == [(30, "refund"), (70, "refund")]
    assert sorted(e["cause"] for e in page["recent_entries"]) == ["OrderCancelled", "OrderPlaced", "OrderRefunded"]

    # Out of order: the cancellation, then its order, then the refund: the same ledger.
    await deliver(rt, tap, cancelled("cus-x2", "ord-x2", NOW - timedelta(hours=1)))
    await deliver(rt, tap, order("cus-x2", "ord-x2", "100", NOW - timedelta(hours=3)))
    await deliver(rt, tap, refund("cus-x2", "ord-x2", "30", NOW - timedelta(hours=2)))
    assert (await member(http, "cus-x2"))["balance"] == 0
    entries = rt.db[LEDGER].find({"customer_id": "cus-x2"}, sort=[("at", 1)])
    assert sorted([(e["key"], e["points"]) async for e in entries]) == [
        ("purchase:ord-x2", 100),
        ("refund:ord-x2", -100),
    ]

    # A cancelled order counts towards no tier: silver goes, and the next order earns at bronze.
    await deliver(rt, tap, order("cus-x3", "ord-x3a", "600", NOW - timedelta(days=3)))
    await deliver(rt, tap, cancelled("cus-x3", "ord-x3a", NOW - timedelta(days=2)))
    await deliver(rt, tap, order("cus-x3", "ord-x3b", "100", NOW - timedelta(days=1)))
    await tap.wait_for(lambda e: e["type"] == "TierChanged" and e["data"]["customer_id"] == "cus-x3", count=2)
    changes = [
        (e["data"]["from_tier"], e["data"]["to_tier"])
        for e in tap.distinct("TierChanged")
        if e["data"]["customer_id"] == "cus-x3"
    ]
    assert changes == [("bronze", "silver"), ("silver", "bronze")]
    page = await member(http, "cus-x3")
    assert (page["balance"], page["tier"], page["tier_points"]) == (100, "bronze", 100)


async def test_an_imported_history_builds_points_with_their_true_dates_and_tells_it_is_history(
    loyalty_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    """A shop's history (imported: true): points earned when the orders were placed, so the old ones have expired
    already; the tier from the orders of the last 365 days; what it publishes says it is history."""
    rt, http = loyalty_service
    history = [
        imported(order("cus-h1", "ord-h1", "500", NOW - timedelta(days=400))),  # expired 35 days ago
        imported(order("cus-h1", "ord-h2", "600", NOW - timedelta(days=100))),  # silver then (ord-h1 in window)
        imported(refund("cus-h1", "ord-h2", "60", NOW - timedelta(days=90))),
        imported(order("cus-h1", "ord-h3", "80", NOW - timedelta(days=50))),
        imported(cancelled("cus-h1", "ord-h3", NOW - timedelta(days=49))),
    ]
    await deliver(rt, tap, *history, history[1])  # in the order it happened, one told twice
    page = await member(http, "cus-h1")
    # ord-h1 500 (expired); ord-h2 at silver 750, a tenth refunded (75); ord-h3 at silver 100, cancelled
    assert (page["balance"], page["tier"], page["tier_points"]) == (675, "silver", 675)
    await tap.wait_for(lambda e: e["type"] == "PointsExpired" and e["data"]["customer_id"] == "cus-h1")
    about_them = [e for e in tap.distinct() if e["source"] != "shop" and e.get("subject") == "cus-h1"]
    assert {e["type"] for e in about_them} == {"PointsAwarded", "PointsReversed", "PointsExpired", "TierChanged"}
    assert all(e["imported"] is True for e in about_them)
    expiry = next(e["data"] for e in about_them if e["type"] == "PointsExpired")
    assert expiry["points"] == 500
    awarded = {e["data"]["order_id"]: e["data"]["expires_at"] for e in about_them if e["type"] == "PointsAwarded"}
    true_expiry = NOW - timedelta(days=100) + timedelta(days=365)  # from when it was placed, not from the import
    assert abs(datetime.fromisoformat(awarded["ord-h2"]) - true_expiry) < timedelta(seconds=1)

    # Shuffled, the same history ends the same.
    shuffled = [
        imported(order("cus-h2", "ord-i3", "80", NOW - timedelta(days=50))),
        imported(cancelled("cus-h2", "ord-i3", NOW - timedelta(days=49))),
        imported(refund("cus-h2", "ord-i2", "60", NOW - timedelta(days=90))),
        imported(order("cus-h2", "ord-i2", "600", NOW - timedelta(days=100))),
        imported(order("cus-h2", "ord-i1", "500", NOW - timedelta(days=400))),
    ]
    await deliver(rt, tap, *shuffled)
    again = await member(http, "cus-h2")
    assert (again["balance"], again["tier"], again["tier_points"]) == (675, "silver", 675)

    # A live order afterwards earns at the tier the history left, and is not history.
    live = await earn(tap, order("cus-h1", "ord-h4", "100", NOW))
    assert (live["data"]["points"], live["imported"]) == (125, None)


# --- the owner's adjustments -------------------------------------------------------------------------------

EVA = ADMIN | {"X-Rapport-Actor": "eva@shop.example"}


async def adjust(http: httpx.AsyncClient, customer_id: str, points: int, reason: str, key: str) -> httpx.Response:
    return await http.post(
        f"/members/{customer_id}/adjustments",
        json={"points": points, "reason": reason},
        headers=EVA | {"Idempotency-Key": key},
    )


async def test_the_owner_gives_and_takes_points_by_hand_once_per_idempotency_key_audited_as_the_person(
    loyalty_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    rt, http = loyalty_service
    await earn(tap, order("cus-adj", "ord-adj1", "100", NOW - timedelta(days=1)))
    given = await adjust(http, "cus-adj", 900, "Parcel lost in the post", "adj-1")
    assert given.status_code == 201, given.text
    assert given.json() | {"adjustment_id": "-"} == {
        "adjustment_id": "-",
        "customer_id": "cus-adj",
        "points": 900,
        "reason": "Parcel lost in the post",
        "balance": 1000,
    }
    again = await adjust(http, "cus-adj", 900, "Parcel lost in the post", "adj-1")
    assert (again.status_code, again.json()) == (201, given.json())
    awarded = await tap.wait_for(lambda e: e["type"] == "PointsAwarded" and e["data"]["reason"] == "adjustment")
    assert (awarded[0]["data"]["points"], awarded[0]["data"]["tier"]) == (900, "bronze")  # no tier for it
    assert awarded[0]["data"]["expires_at"] is not None  # expires like earned points
    page = await member(http, "cus-adj")
    assert (page["balance"], page["tier"], page["tier_points"]) == (1000, "bronze", 100)

    taken = await adjust(http, "cus-adj", -1200, "Points given twice by mistake", "adj-2")
    assert (taken.status_code, taken.json()["balance"]) == (201, -200)  # below zero, as a refund may go
    reversed_ = await tap.wait_for(lambda e: e["type"] == "PointsReversed" and e["data"]["customer_id"] == "cus-adj")
    assert (reversed_[0]["data"]["reason"], reversed_[0]["data"]["points"]) == ("adjustment", 1200)
    reused = await adjust(http, "cus-adj", -1, "Points given twice by mistake", "adj-2")
    assert (reused.status_code, reused.json()) == (
        409,
        {"detail": "Idempotency-Key: already used for another adjustment"},
    )
    assert (await member(http, "cus-adj"))["balance"] == -200
    assert len(tap.bodies("PointsAwarded")) == 2  # the purchase and the one adjustment, not its replay

    audit = (await http.get("/audit", headers=ADMIN)).json()
    made = [r for r in audit if r["action"] == "POST /members/{customer_id}/adjustments"]
    assert [(r["actor"], r["target"]) for r in made] == [("admin/eva@shop.example", {"customer_id": "cus-adj"})] * 3
    exported = (await http.get("/customers/cus-adj/export", headers=ADMIN)).json()
    assert [(a["points"], a["reason"]) for a in exported["adjustments"]] == [
        (900, "Parcel lost in the post"),
        (-1200, "Points given twice by mistake"),
    ]
    assert [p["order_id"] for p in exported["purchases"]] == ["ord-adj1"]
    assert await rt.db[LEDGER].count_documents({"customer_id": "cus-adj", "reason": "adjustment"}) == 2


async def test_an_order_placed_before_an_adjustment_arriving_late_or_twice_ends_in_the_in_order_balance(
    loyalty_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    rt, http = loyalty_service
    await earn(tap, order("cus-late", "ord-l1", "100", NOW - timedelta(days=3)))
    taken = await adjust(http, "cus-late", -150, "Returned the gift card", "late-1")
    assert taken.json()["balance"] == -50
    late = order("cus-late", "ord-l0", "200", NOW - timedelta(days=5))  # placed before both, told after
    await earn(tap, late)
    await tap.publish(told_again(late))
    await eventually(lambda: consumed(rt) == 3)
    page = await member(http, "cus-late")
    assert (page["balance"], page["tier_points"]) == (150, 300)
    # the in-order ledger: 200 + 100 earned, 150 taken; the late order's points neither repeat nor move the taking
    assert await rt.db[LEDGER].count_documents({"customer_id": "cus-late"}) == 3


async def test_an_adjustment_names_its_bad_field_and_needs_a_member(
    loyalty_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    _rt, http = loyalty_service
    await earn(tap, order("cus-bad", "ord-b1", "10", NOW - timedelta(days=1)))
    for body, field in [
        ({"points": 0, "reason": "why"}, "points"),
        ({"points": 1_000_001, "reason": "why"}, "points"),
        ({"points": "5", "reason": "why"}, "points"),
        ({"points": 5, "reason": ""}, "reason"),
        ({"points": 5, "reason": "   "}, "reason"),
        ({"points": 5, "reason": "x" * 501}, "reason"),
    ]:
        refused = await http.post("/members/cus-bad/adjustments", json=body, headers=EVA | {"Idempotency-Key": "b"})
        assert refused.status_code == 422, (body, refused.text)
        assert [problem["loc"][-1] for problem in refused.json()["detail"]] == [field], body
    unknown = await adjust(http, "cus-nobody", 5, "why", "b")
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "customer_id: no member 'cus-nobody'"})
    no_key = await http.post("/members/cus-bad/adjustments", json={"points": 5, "reason": "why"}, headers=EVA)
    assert no_key.status_code == 422
    assert (await member(http, "cus-bad"))["balance"] == 10


async def test_customer_erased_forgets_the_owners_words_on_their_adjustments(
    loyalty_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    rt, http = loyalty_service
    await earn(tap, order("cus-words", "ord-w1", "70", NOW - timedelta(days=2)))
    assert (await adjust(http, "cus-words", 30, "Complained about the rude courier", "w-1")).status_code == 201
    erased = CustomerErasedEvent.new(CustomerErased(customer_id="cus-words", requested_at=NOW), source="orders")
    await tap.publish(erased)
    await eventually(lambda: consumed(rt) == 2)
    for collection in (MEMBERS, MEMBER_FACTS, LEDGER, OUTBOX, "redemption_requests", "audit"):
        stored = [doc async for doc in rt.db[collection].find({})]
        assert "rude courier" not in str(stored), collection
        assert "cus-words" not in str(stored), collection
    assert await rt.db[LEDGER].count_documents({"customer_id": {"$regex": "^erased-"}, "points": 30}) == 1
    assert (await adjust(http, "cus-words", 5, "why", "w-2")).status_code == 404
