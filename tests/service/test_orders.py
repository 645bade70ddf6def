"""Orders against the real broker and MongoDB: profiles from shuffled duplicates, webhooks, listings, erasure."""

import json
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.orders.app import SPEC
from services.orders.settings import OrdersSettings
from services.orders.store import CUSTOMERS, ORDERS, ensure_indexes, listing_order, money
from shared.events import (
    Customer,
    LineItem,
    OrderCancelled,
    OrderCancelledEvent,
    OrderFulfilled,
    OrderFulfilledEvent,
    OrderPlaced,
    OrderPlacedEvent,
    OrderRefunded,
    OrderRefundedEvent,
)
from shared.mongo import OUTBOX
from shared.service import Runtime
from shared.settings import ServiceSettings
from tests.service.delivery import deliver
from tests.support.running import running_service
from tests.support.tap import EventTap, eventually

ADMIN = {"Authorization": "Bearer test-admin-key"}
SHOPIFY_SECRET = "shopify-test-secret"
WOO_SECRET = "woo-test-secret"
WEBHOOKS = Path(__file__).parents[1] / "fixtures" / "webhooks"


@pytest.fixture
async def orders_service(
    service_name: str, settings: ServiceSettings
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    own = OrdersSettings(
        **settings.model_dump(),
        shopify_webhook_secret=SHOPIFY_SECRET,
        woocommerce_webhook_secret=WOO_SECRET,
        segment_interval_seconds=3600,
    )
    async with running_service(replace(SPEC, name=service_name), own) as running:
        yield running


def at(day: str) -> datetime:
    return datetime.fromisoformat(f"{day}T10:00:00+00:00")


def placed(customer_id: str, order_id: str, total: str, day: str, currency: str = "EUR", city: str = "") -> Any:
    data = OrderPlaced(
        order_id=order_id,
        customer=Customer(
            customer_id=customer_id, email=f"{customer_id}@example.com", first_name="Eva", city=city or None
        ),
        placed_at=at(day),
        currency=currency,
        total=Decimal(total),
        line_items=[LineItem(sku="MUG", name="Mug", quantity=1, unit_price=Decimal(total))],
    )
    return OrderPlacedEvent.new(data, source="shop", subject=customer_id)


def fulfilled(customer_id: str, order_id: str, day: str) -> Any:
    data = OrderFulfilled(order_id=order_id, customer_id=customer_id, fulfilled_at=at(day))
    return OrderFulfilledEvent.new(data, source="shop", subject=customer_id)


def refunded(
    customer_id: str, order_id: str, refund_id: str, amount: str, day: str, currency: str = "EUR", reason: str = ""
) -> Any:
    data = OrderRefunded(
        refund_id=refund_id,
        order_id=order_id,
        customer_id=customer_id,
        amount=Decimal(amount),
        currency=currency,
        refunded_at=at(day),
        reason=reason or None,
    )
    return OrderRefundedEvent.new(data, source="shop", subject=customer_id)


async def customer(http: httpx.AsyncClient, customer_id: str) -> dict[str, Any]:
    got = await http.get(f"/customers/{customer_id}", headers=ADMIN)
    assert got.status_code == 200, got.text
    body: dict[str, Any] = got.json()
    return body


async def test_shuffled_duplicated_stream_gives_the_profile_computed_by_hand(
    orders_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    rt, http = orders_service
    stream = [
        placed("cus-a", "a1", "100.00", "2026-01-10", city="Bratislava"),
        placed("cus-a", "a2", "50.00", "2026-02-05", city="Bratislava"),
        placed("cus-a", "a3", "30.00", "2026-03-01", currency="USD", city="Košice"),
        fulfilled("cus-a", "a1", "2026-01-12"),
        fulfilled("cus-a", "a2", "2026-02-07"),
        refunded("cus-a", "a1", "ra1", "20.00", "2026-01-20"),
        refunded("cus-a", "a1", "ra2", "10.00", "2026-01-25"),
        refunded("cus-a", "a2", "ra3", "60.00", "2026-02-20"),  # more than the order: counts up to its total
        placed("cus-b", "b1", "40.00", "2026-02-01"),
        refunded("cus-b", "b1", "rb1", "15.50", "2026-02-03"),
    ]
    # Every event twice, in shuffled order, and a1 told again under a new event id (a webhook and the backend).
    retold = placed("cus-a", "a1", "100.00", "2026-01-10", city="Bratislava")
    deliveries = [*stream, *stream, retold]
    random.Random(4).shuffle(deliveries)  # noqa: S311 - a repeatable shuffle, not a secret
    await deliver(rt, tap, *deliveries)

    a = await customer(http, "cus-a")
    assert a["orders_count"] == 3
    assert a["first_order_at"] == "2026-01-10T10:00:00Z"
    assert a["last_order_at"] == "2026-03-01T10:00:00Z"
    # EUR: 100 − 30 + 50 − 50 (capped) = 70; USD 30.
    assert a["total_spent"] == {"EUR": "70.00", "USD": "30.00"}
    assert a["refunded"] == {"EUR": "80.00", "USD": "0.00"}
    assert a["average_order_value"] == {"EUR": "75.00", "USD": "30.00"}
    assert a["lifetime_value"] == {"EUR": "70.00", "USD": "30.00"}
    assert a["contact"]["city"] == "Košice"  # from the latest order
    by_id = {order["order_id"]: order for order in a["orders"]}
    assert [order["order_id"] for order in a["orders"]] == ["a3", "a2", "a1"]
    assert by_id["a1"]["total"] == "100.00"
    assert by_id["a1"]["fulfilled_at"] == "2026-01-12T10:00:00Z"
    assert sorted(r["refund_id"] for r in by_id["a1"]["refunds"]) == ["ra1", "ra2"]

    b = await customer(http, "cus-b")
    assert (b["orders_count"], b["total_spent"], b["refunded"]) == (1, {"EUR": "24.50"}, {"EUR": "15.50"})


async def test_a_refund_before_its_order_counts_once_the_order_arrives(
    orders_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    rt, http = orders_service
    await deliver(rt, tap, refunded("cus-c", "c1", "rc1", "5.00", "2026-04-02"))
    assert (await http.get("/customers/cus-c", headers=ADMIN)).status_code == 404
    await deliver(rt, tap, placed("cus-c", "c1", "25.00", "2026-04-01"))
    assert (await customer(http, "cus-c"))["total_spent"] == {"EUR": "20.00"}


async def test_listing_by_segment_and_sort_uses_an_index(
    orders_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    rt, http = orders_service
    stream = [placed("loyal", f"l{n}", "80.00", f"2026-0{n}-15") for n in range(1, 6)]
    stream += [placed("once", "o1", "10.00", "2026-05-20"), placed("gone", "g1", "20.00", "2025-01-02")]
    await deliver(rt, tap, *stream)
    refreshed = await http.post("/segments/refresh", headers=ADMIN)
    assert refreshed.json() == {"scored": 3}

    listed = await http.get("/customers", params={"sort": "-spent", "limit": 2}, headers=ADMIN)
    assert [c["customer_id"] for c in listed.json()["customers"]] == ["loyal", "gone"]
    by_recency = await http.get("/customers", params={"sort": "-last_order_at"}, headers=ADMIN)
    assert [c["customer_id"] for c in by_recency.json()["customers"]] == ["once", "loyal", "gone"]
    segments = {c["customer_id"]: c["segment"] for c in by_recency.json()["customers"]}
    # Three customers: recency scores once 4, loyal 2, gone 1; frequency loyal 4, the others 1.
    assert segments == {"once": "promising", "loyal": "at_risk", "gone": "hibernating"}
    hibernating = await http.get("/customers", params={"segment": "hibernating"}, headers=ADMIN)
    assert [c["customer_id"] for c in hibernating.json()["customers"]] == ["gone"]

    for query, sort in (({"segment": "at_risk"}, "-spent"), ({}, "last_order_at"), ({}, "-orders_count")):
        plan = await rt.db[CUSTOMERS].find(query).sort(listing_order(sort, "EUR")).limit(50).explain()
        stages = json.dumps(plan["queryPlanner"]["winningPlan"], default=str)
        assert "IXSCAN" in stages
        assert "COLLSCAN" not in stages
        assert '"SORT"' not in stages  # read in index order, not sorted in memory


@pytest.mark.parametrize(
    ("params", "field"),
    [({"segment": "vips"}, "segment"), ({"sort": "size"}, "sort"), ({"limit": 0}, "limit")],
)
async def test_bad_listing_parameters_get_a_422_naming_them(
    orders_service: tuple[Runtime, httpx.AsyncClient], params: dict[str, Any], field: str
) -> None:
    _rt, http = orders_service
    got = await http.get("/customers", params=params, headers=ADMIN)
    assert got.status_code == 422
    assert field in got.text


async def test_segment_report_counts_the_last_round_and_who_is_not_scored_yet(
    orders_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    rt, http = orders_service
    stream = [placed("loyal", f"l{n}", "80.00", f"2026-0{n}-15") for n in range(1, 6)]
    stream += [placed("once", "o1", "10.00", "2026-05-20"), placed("gone", "g1", "20.00", "2025-01-02")]
    await deliver(rt, tap, *stream)
    before = (await http.get("/reports/segments", headers=ADMIN)).json()
    assert before["unscored"] == 3
    assert set(before["segments"].values()) == {0}
    assert (await http.post("/segments/refresh", headers=ADMIN)).json() == {"scored": 3}

    # After the round (the same three as the listing test above) one newcomer orders and one customer is erased:
    # the newcomer waits for the next round, the erased one still counts under their alias.
    await deliver(rt, tap, placed("fresh", "f1", "15.00", "2026-05-25"))
    assert (await http.post("/customers/gone/erase", headers=ADMIN)).status_code == 202
    report = (await http.get("/reports/segments", headers=ADMIN)).json()
    assert report["unscored"] == 1
    assert {name: n for name, n in report["segments"].items() if n} == {"promising": 1, "at_risk": 1, "hibernating": 1}
    assert len(report["segments"]) == 10  # every segment named, the empty ones with 0


async def test_retention_report_over_the_api(orders_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap) -> None:
    rt, http = orders_service
    await deliver(
        rt,
        tap,
        placed("r1", "r1-1", "10.00", "2026-01-05"),
        placed("r1", "r1-2", "30.00", "2026-01-15"),
        placed("r2", "r2-1", "20.00", "2026-01-20"),
    )
    report = (await http.get("/reports/retention", headers=ADMIN)).json()
    assert (report["customers"], report["repeat_customers"], report["repeat_purchase_rate"]) == (2, 1, 0.5)
    assert report["days_to_second_order"] == 10.0
    assert report["cohorts"][0]["month"] == "2026-01"
    assert report["cohorts"][0]["customers"] == 2
    assert report["lifetime_value"]["EUR"] == {"customers": 2, "average": "30.00", "total": "60.00"}


# --- erasure ---------------------------------------------------------------------------------------


async def test_erasure_removes_personal_data_keeps_totals_and_tells_everyone_once(
    orders_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    rt, http = orders_service
    await deliver(rt, tap, placed("cus-e", "e1", "60.00", "2026-03-03", city="Trnava"))
    erased = await http.post("/customers/cus-e/erase", headers=ADMIN)
    assert erased.status_code == 202
    assert erased.json() == {"customer_id": "cus-e", "erased": True, "already_erased": False}
    told = await tap.wait_for(lambda e: e["type"] == "CustomerErased" and e["data"]["customer_id"] == "cus-e")
    assert told[0]["source"] == "orders"

    gone = await http.get("/customers/cus-e", headers=ADMIN)
    assert gone.status_code == 404
    assert "erased" in gone.text
    stored = json.dumps(
        [d async for d in rt.db[ORDERS].find({})] + [d async for d in rt.db[CUSTOMERS].find({})], default=str
    )
    assert "cus-e" not in stored
    assert "Trnava" not in stored
    assert "example.com" not in stored

    # A late order of the erased customer joins the anonymous record; the shop's totals still add up.
    await deliver(rt, tap, placed("cus-e", "e2", "40.00", "2026-03-09", city="Trnava"))
    anonymous = await rt.db[CUSTOMERS].find_one({"_id": {"$regex": "^erased-"}})
    assert anonymous is not None
    stored = (anonymous["orders_count"], money(anonymous["net_spent"]), anonymous["contact"])
    assert stored == (2, {"EUR": "100.00"}, None)
    assert "Trnava" not in json.dumps(await rt.db[ORDERS].find_one({"_id": "e2"}), default=str)

    again = await http.post("/customers/cus-e/erase", headers=ADMIN)
    assert again.json()["already_erased"] is True
    # The audit trail keeps who erased, and names the customer by their alias only.
    trail = (await http.get("/audit", headers=ADMIN)).json()
    erasures = [r for r in trail if r["action"] == "POST /customers/{customer_id}/erase"]
    assert len(erasures) == 2
    assert {r["actor"] for r in erasures} == {"admin"}
    assert {r["target"]["customer_id"] for r in erasures} == {anonymous["_id"]}
    assert "cus-e" not in json.dumps([d async for d in rt.db["audit"].find({})], default=str)
    await eventually(lambda: _outbox_empty(rt))
    assert len([e for e in tap.bodies("CustomerErased") if e["data"]["customer_id"] == "cus-e"]) == 1


async def test_erasure_scrubs_refund_and_cancellation_reasons_and_late_ones_keep_none_nor_the_erasure_event(
    orders_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    rt, http = orders_service
    reason = "call Zuzana at +421 905 123 456"
    await deliver(
        rt,
        tap,
        placed("cus-z", "z1", "30.00", "2026-03-03"),
        placed("cus-z", "z2", "20.00", "2026-03-04"),
        placed("cus-z", "z4", "15.00", "2026-03-04"),
        refunded("cus-z", "z1", "rz1", "10.00", "2026-03-05", reason=reason),
        cancelled("cus-z", "z4", "2026-03-05", reason="Zuzana changed her mind"),
    )
    history = {order["order_id"]: order for order in (await customer(http, "cus-z"))["orders"]}
    assert history["z1"]["refunds"][0]["reason"] == reason
    assert (await http.post("/customers/cus-z/erase", headers=ADMIN)).status_code == 202
    await tap.wait_for(lambda e: e["type"] == "CustomerErased" and e["data"]["customer_id"] == "cus-z")
    # A refund told after the erasure, for a known order and for one not heard of yet.
    await deliver(
        rt,
        tap,
        refunded("cus-z", "z2", "rz2", "5.00", "2026-03-06", reason="Zuzana moved to Žilina"),
        refunded("cus-z", "z3", "rz3", "5.00", "2026-03-06", reason="Zuzana again"),
        cancelled("cus-z", "z2", "2026-03-07", reason="Zuzana, once more"),
    )
    await eventually(lambda: _outbox_empty(rt))
    orders = [d async for d in rt.db[ORDERS].find({"_id": {"$in": ["z1", "z2", "z3"]}})]
    assert sorted(len(order["refunds"]) for order in orders) == [1, 1, 1]  # the refunds still count, nameless
    assert [refund["reason"] for order in orders for refund in order["refunds"]] == [None, None, None]
    cancellations = [d["cancelled"] async for d in rt.db[ORDERS].find({"_id": {"$in": ["z2", "z4"]}})]
    assert [c["reason"] for c in cancellations] == [None, None]  # cancelled still, without the shop's words
    everything = json.dumps(
        [doc for name in await rt.db.list_collection_names() async for doc in rt.db[name].find({})], default=str
    )
    for needle in ("Zuzana", "+421", "cus-z"):  # the sent CustomerErased too: it named the customer
        assert needle not in everything, needle


# --- cancellations ---------------------------------------------------------------------------------


def cancelled(customer_id: str, order_id: str, day: str, reason: str = "customer") -> Any:
    data = OrderCancelled(order_id=order_id, customer_id=customer_id, cancelled_at=at(day), reason=reason)
    return OrderCancelledEvent.new(data, source="shop", subject=customer_id)


async def test_a_cancelled_order_is_marked_and_counts_for_nothing_whatever_the_order_of_events(
    orders_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    rt, http = orders_service
    # c1 cancelled after it was placed, twice; c2's cancellation arrives before the order itself.
    c1 = cancelled("cus-c", "c1", "2026-03-02")
    await deliver(rt, tap, placed("cus-c", "c1", "80.00", "2026-03-01"), placed("cus-c", "c3", "20.00", "2026-03-05"))
    await deliver(rt, tap, c1, c1, cancelled("cus-c", "c2", "2026-03-04"))
    await deliver(rt, tap, placed("cus-c", "c2", "40.00", "2026-03-03"), fulfilled("cus-c", "c2", "2026-03-04"))
    profile = await customer(http, "cus-c")
    assert (profile["orders_count"], profile["total_spent"]) == (1, {"EUR": "20.00"})
    assert (profile["first_order_at"], profile["last_order_at"]) == ("2026-03-05T10:00:00Z", "2026-03-05T10:00:00Z")
    marks = {order["order_id"]: order["cancelled_at"] for order in profile["orders"]}
    assert marks == {"c1": "2026-03-02T10:00:00Z", "c2": "2026-03-04T10:00:00Z", "c3": None}


async def _outbox_empty(rt: Runtime) -> bool:
    return await rt.relay.backlog() == 0


async def test_a_scoring_round_publishes_each_segment_change_once_through_the_outbox(
    orders_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    rt, http = orders_service
    stream = [placed("sc-loyal", f"scl{n}", "80.00", f"2026-0{n}-15") for n in range(1, 6)]
    stream += [placed("sc-once", "sco1", "10.00", "2026-05-20"), placed("sc-gone", "scg1", "20.00", "2025-01-02")]
    await deliver(rt, tap, *stream)
    assert (await http.post("/segments/refresh", headers=ADMIN)).json() == {"scored": 3}
    first = await tap.wait_for(lambda e: e["type"] == "CustomerSegmentChanged", count=3)
    assert {e["subject"]: (e["data"].get("from_segment"), e["data"]["to_segment"]) for e in first} == {
        "sc-once": (None, "promising"),
        "sc-loyal": (None, "at_risk"),
        "sc-gone": (None, "hibernating"),
    }
    assert all(e["source"] == "orders" for e in first)

    await http.post("/segments/refresh", headers=ADMIN)  # nobody moved: nothing more to tell
    told = {"type": "CustomerSegmentChanged"}
    assert await rt.db[OUTBOX].count_documents(told) == 3

    await deliver(rt, tap, placed("sc-gone", "scg2", "20.00", "2026-06-01"))  # the sleeper is back, the latest
    await http.post("/segments/refresh", headers=ADMIN)
    gone = [
        entry["body"]["data"]
        async for entry in rt.db[OUTBOX].find(told | {"body.subject": "sc-gone"}, sort=[("created_at", 1)])
    ]
    assert (gone[0].get("from_segment"), gone[0]["to_segment"]) == (None, "hibernating")
    assert len(gone) == 2
    assert gone[1]["from_segment"] == "hibernating"
    assert gone[1]["to_segment"] != "hibernating"


async def test_a_profile_scored_under_the_old_segment_name_is_listed_under_cant_lose(
    orders_service: tuple[Runtime, httpx.AsyncClient], tap: EventTap
) -> None:
    rt, http = orders_service
    await deliver(rt, tap, placed("old-name", "on1", "30.00", "2026-02-01"))
    await rt.db[CUSTOMERS].update_one(
        {"_id": "old-name"},
        {"$set": {"segment": "cannot_lose", "rfm": {"recency": 1, "frequency": 5, "monetary": 5}}},
    )
    assert (await customer(http, "old-name"))["segment"] == "cant_lose"  # read as the contract names it
    await ensure_indexes(rt.db, rt.settings)  # what every start does: renames the stored value once
    listed = await http.get("/customers", params={"segment": "cant_lose"}, headers=ADMIN)
    assert [c["customer_id"] for c in listed.json()["customers"]] == ["old-name"]
    assert await rt.db[CUSTOMERS].count_documents({"segment": "cannot_lose"}) == 0
