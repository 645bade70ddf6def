"""The platforms' door against the real broker and MongoDB: Shopify and WooCommerce webhooks, signed, re-sent,
shuffled and concurrent, each order's effects exactly once (in the outbox, and in orders' own customer history)."""

import asyncio
import base64
import hashlib
import hmac
import json
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.orders.app import SPEC
from services.orders.importer.history import SOURCE as HISTORY_SOURCE
from services.orders.importer.run import Checkpoint, OrdersApi, fingerprint, import_history
from services.orders.platforms import OrderNews
from services.orders.platforms import woocommerce as woocommerce_platform
from services.orders.platforms.common import history_refund_id
from services.orders.settings import OrdersSettings
from services.orders.store import ORDERS
from services.orders.webhooks import METRICS
from shared.events import OrderPlacedEvent, OrderRefunded, OrderRefundedEvent, is_no_email
from shared.outbox import EventPublisher
from shared.service import Runtime
from shared.settings import ServiceSettings
from tests.support.running import running_service
from tests.support.tap import EventTap, eventually

ADMIN = {"Authorization": "Bearer test-admin-key"}
SHOPIFY_SECRET = "shopify-test-secret"
SHOPIFY_PREVIOUS = "shopify-old-secret"
WOO_SECRET = "woo-test-secret"
WEBHOOKS = Path(__file__).parents[1] / "fixtures" / "webhooks"
WOO_HISTORY = Path(__file__).parents[1] / "fixtures" / "history" / "woocommerce_orders_export.csv"
SHOP = "keramika-kosice.myshopify.com"

Service = tuple[Runtime, httpx.AsyncClient]


@pytest.fixture
async def orders_service(service_name: str, settings: ServiceSettings) -> AsyncIterator[Service]:
    own = OrdersSettings(
        **settings.model_dump(),
        shopify_webhook_secret=SHOPIFY_SECRET,
        shopify_webhook_secret_previous=SHOPIFY_PREVIOUS,
        woocommerce_webhook_secret=WOO_SECRET,
        segment_interval_seconds=3600,
    )
    async with running_service(replace(SPEC, name=service_name), own) as running:
        yield running


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((WEBHOOKS / f"{name}.json").read_text())
    return loaded


def signed(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def body_of(payload: dict[str, Any] | bytes) -> bytes:
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()


async def shopify(
    http: httpx.AsyncClient,
    topic: str,
    payload: dict[str, Any] | bytes,
    *,
    secret: str = SHOPIFY_SECRET,
    event_id: str | None = None,
) -> httpx.Response:
    body = body_of(payload)
    headers = {
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": signed(body, secret),
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-API-Version": "2026-10",
        "Content-Type": "application/json",
    }
    if event_id is not None:
        headers["X-Shopify-Event-Id"] = event_id
    return await http.post("/webhooks/shopify", content=body, headers=headers)


async def woocommerce(
    http: httpx.AsyncClient, topic: str, payload: dict[str, Any] | bytes, *, delivery: str | None = None
) -> httpx.Response:
    body = body_of(payload)
    headers = {
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Source": "https://aran-and-tweed.ie/",
        "X-WC-Webhook-Signature": signed(body, WOO_SECRET),
        "X-WC-Webhook-ID": "12",
        "X-WC-Webhook-Delivery-ID": delivery or uuid.uuid4().hex,
        "Content-Type": "application/json",
    }
    return await http.post("/webhooks/woocommerce", content=body, headers=headers)


async def outbox(rt: Runtime, event_type: str | None = None) -> list[dict[str, Any]]:
    """The events the service has published (the outbox keeps every entry, sent or not)."""
    query = {} if event_type is None else {"type": event_type}
    return [entry["body"] async for entry in rt.db["outbox"].find(query, sort=[("created_at", 1)])]


def ignored(platform: str, topic: str, reason: str) -> float:
    labels = {"platform": platform, "topic": topic, "reason": reason}
    return METRICS.get_sample_value("rapport_webhooks_ignored_total", labels) or 0.0


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- the same fact again ------------------------------------------------------------------------


async def test_a_fact_resent_under_new_delivery_ids_answers_200_and_changes_nothing(orders_service: Service) -> None:
    rt, http = orders_service
    ok(await woocommerce(http, "order.created", fixture("woocommerce/order_created")))
    completed = fixture("woocommerce/order_updated_completed")
    ok(await woocommerce(http, "order.updated", completed))
    again = await woocommerce(http, "order.updated", completed)  # the same body, a new delivery id
    assert again.status_code == 200, again.text
    noted = completed | {"customer_note": "Thanks!", "date_modified_gmt": "2026-06-16T10:00:00"}  # a later note
    later = ok(await woocommerce(http, "order.updated", noted))
    assert later["published"] == []
    shopify_order = fixture("shopify/orders_create")
    ok(await shopify(http, "orders/create", shopify_order))
    assert (await shopify(http, "orders/create", shopify_order)).status_code == 200
    assert [e["id"] for e in await outbox(rt)] == [
        "woocommerce:order:727:placed",
        "woocommerce:order:727:fulfilled",
        "shopify:order:450789469:placed",
    ]


async def test_twenty_concurrent_deliveries_of_one_new_order_all_get_2xx_and_place_it_once(
    orders_service: Service,
) -> None:
    rt, http = orders_service
    order = fixture("shopify/orders_create")
    answers = await asyncio.gather(*(shopify(http, "orders/create", order) for _ in range(20)))
    assert sorted(answer.status_code for answer in answers) == [200] * 20, [a.text for a in answers]
    assert sum(len(answer.json()["published"]) for answer in answers) == 1
    assert [e["id"] for e in await outbox(rt)] == ["shopify:order:450789469:placed"]
    profile = await eventually(lambda: _customer(http, "207119551"))
    assert profile["orders_count"] == 1


async def test_woocommerce_deliveries_sharing_a_delivery_id_in_one_second_are_each_recorded(
    orders_service: Service,
) -> None:
    rt, http = orders_service
    delivery = "6f1ed002ab5595859014ebf0951522d9"  # wp_hash(webhook id . the second): shared within the second
    for order_id in (901, 902):
        order = fixture("woocommerce/order_created") | {"id": order_id, "number": str(order_id)}
        answer = ok(await woocommerce(http, "order.created", order, delivery=delivery))
        assert answer["duplicate"] is False
    assert [e["data"]["order_id"] for e in await outbox(rt, "OrderPlaced")] == ["901", "902"]


async def test_the_same_shopify_event_id_is_one_fact_whatever_the_webhook_id(orders_service: Service) -> None:
    rt, http = orders_service
    order = fixture("shopify/orders_create")
    first = ok(await shopify(http, "orders/create", order, event_id="98880550-7158-44d4-b7cd-2c97c8a091b5"))
    again = ok(await shopify(http, "orders/create", order, event_id="98880550-7158-44d4-b7cd-2c97c8a091b5"))
    assert (first["duplicate"], again["duplicate"]) == (False, True)
    assert len(await outbox(rt)) == 1


async def test_a_signed_order_reaches_the_broker_once_and_its_redelivery_is_a_duplicate(
    orders_service: Service, tap: EventTap
) -> None:
    rt, http = orders_service
    body = (WEBHOOKS / "shopify" / "orders_create.json").read_bytes()
    first = ok(await shopify(http, "orders/create", body))
    assert first["published"] == [{"id": "shopify:order:450789469:placed", "type": "OrderPlaced"}]
    event = (await tap.wait_for(lambda e: e["id"] == "shopify:order:450789469:placed"))[0]
    assert event["source"] == "orders"
    assert event["data"]["customer"]["email"] == "eva.novakova@example.sk"
    assert event["data"]["total"] == "36.31"
    assert event["data"]["referral_code"] == "K7QX-M2PA"
    assert ok(await shopify(http, "orders/create", body)) == {"duplicate": True, "published": []}
    # The service consumes the order it published: once it is recorded, nothing more can still be on its way.
    await eventually(lambda: rt.db[ORDERS].find_one({"_id": "450789469"}))
    await eventually(lambda: _outbox_sent(rt))
    assert len([e for e in tap.bodies() if e["id"] == "shopify:order:450789469:placed"]) == 1

    for topic, name in (("order.created", "order_created"), ("order.updated", "order_updated_completed")):
        ok(await woocommerce(http, topic, fixture(f"woocommerce/{name}")))
    placed = (await tap.wait_for(lambda e: e["id"] == "woocommerce:order:727:placed"))[0]
    done = (await tap.wait_for(lambda e: e["id"] == "woocommerce:order:727:fulfilled"))[0]
    assert done["data"]["customer_id"] == placed["data"]["customer"]["customer_id"]


async def _outbox_sent(rt: Runtime) -> bool:
    return await rt.relay.backlog() == 0


async def test_a_bad_signature_gets_401_and_publishes_nothing(orders_service: Service) -> None:
    rt, http = orders_service
    body = (WEBHOOKS / "shopify" / "orders_create.json").read_bytes()
    forged = await shopify(http, "orders/create", body, secret="not-the-secret")
    headers = {"X-Shopify-Topic": "orders/create", "X-Shopify-Hmac-Sha256": signed(body, SHOPIFY_SECRET)}
    tampered = await http.post("/webhooks/shopify", content=body.replace(b"36.31", b"0.01"), headers=headers)
    unsigned = await http.post("/webhooks/woocommerce", content=body, headers={"X-WC-Webhook-Topic": "order.created"})
    assert (forged.status_code, tampered.status_code, unsigned.status_code) == (401, 401, 401)
    assert await outbox(rt) == []


async def test_a_payload_missing_what_the_translation_needs_gets_422_naming_it(orders_service: Service) -> None:
    rt, http = orders_service
    order = fixture("shopify/orders_create")
    del order["total_price"]
    got = await shopify(http, "orders/create", order)
    assert got.status_code == 422
    [refusal] = got.json()["detail"]
    assert refusal["loc"] == ["body", "total_price"]
    assert refusal["msg"].startswith("total_price is missing")
    assert await outbox(rt) == []


# --- status and test flags ---------------------------------------------------------------------


async def test_shopify_test_notification_leaves_no_customer_points_or_email(orders_service: Service) -> None:
    rt, http = orders_service
    before = ignored("shopify", "orders/create", "test")
    answer = ok(await shopify(http, "orders/create", fixture("shopify/orders_test_notification")))
    assert answer["published"] == []
    assert answer["ignored"] == "test"
    assert ignored("shopify", "orders/create", "test") == before + 1
    assert await outbox(rt) == []  # nothing for loyalty to award, nothing for followups to send
    assert (await http.get("/customers/115310627314723954", headers=ADMIN)).status_code == 404


@pytest.mark.parametrize("status", ["failed", "pending", "cancelled", "on-hold", "checkout-draft"])
async def test_woocommerce_order_created_unpaid_publishes_no_order_placed(orders_service: Service, status: str) -> None:
    rt, http = orders_service
    order = fixture("woocommerce/order_created_pending") | {"status": status}
    answer = ok(await woocommerce(http, "order.created", order))
    assert answer["published"] == []
    assert await outbox(rt) == []


async def test_an_order_is_placed_once_paid_whichever_topic_comes_first(orders_service: Service) -> None:
    rt, http = orders_service
    assert ok(await shopify(http, "orders/create", fixture("shopify/orders_create_pending")))["published"] == []
    paid = ok(await shopify(http, "orders/updated", fixture("shopify/orders_updated")))
    assert [p["id"] for p in paid["published"]] == ["shopify:order:450789469:placed"]
    assert ok(await shopify(http, "orders/paid", fixture("shopify/orders_paid")))["published"] == []
    [placed] = await outbox(rt, "OrderPlaced")
    assert placed["data"]["order_number"] == "#1001"
    assert placed["data"]["customer"]["accepts_marketing"] is True

    ok(await woocommerce(http, "order.created", fixture("woocommerce/order_created_pending")))
    processing = ok(await woocommerce(http, "order.updated", fixture("woocommerce/order_created")))
    assert [p["id"] for p in processing["published"]] == ["woocommerce:order:727:placed"]
    [_, woo] = await outbox(rt, "OrderPlaced")
    assert woo["data"]["order_number"] == "#727"


async def test_topics_a_shop_subscribes_to_get_200_and_untranslated_ones_are_ignored_and_counted(
    orders_service: Service,
) -> None:
    _rt, http = orders_service
    for topic, name in (
        ("orders/paid", "orders_paid"),
        ("orders/updated", "orders_updated"),
        ("fulfillments/create", "fulfillments_create"),
        ("orders/cancelled", "orders_cancelled"),
    ):
        assert "ignored" not in ok(await shopify(http, topic, fixture(f"shopify/{name}")))
    before = ignored("shopify", "products/update", "topic not translated")
    answer = ok(await shopify(http, "products/update", {"id": 632910392, "title": "Red mug"}))
    assert answer == {"duplicate": False, "published": [], "ignored": "topic not translated"}
    assert ignored("shopify", "products/update", "topic not translated") == before + 1
    ok(await woocommerce(http, "order.created", fixture("woocommerce/order_created")))
    assert ok(await woocommerce(http, "order.deleted", fixture("woocommerce/order_deleted")))["published"]
    assert ok(await woocommerce(http, "order.restored", fixture("woocommerce/order_created")))["published"] == []
    assert ok(await woocommerce(http, "coupon.created", {"id": 5, "code": "welcome10"}))["ignored"]


# --- no order lost for one odd field ---------------------------------------------------------------


async def test_lines_without_sku_get_a_stable_stand_in(orders_service: Service) -> None:
    rt, http = orders_service
    order = fixture("shopify/orders_create")
    order["line_items"][1].update(sku=None, variant_id=None, product_id=None, title="Custom sale", name="Custom sale")
    ok(await shopify(http, "orders/create", order))
    woo = fixture("woocommerce/order_created")
    woo["line_items"][1].update(sku="", variation_id=0, product_id=0)  # the product was deleted since
    ok(await woocommerce(http, "order.created", woo))
    [shop, wc] = await outbox(rt, "OrderPlaced")
    assert [item["sku"] for item in shop["data"]["line_items"]] == ["MUG-RED", "no-sku:custom-sale"]
    assert [item["sku"] for item in wc["data"]["line_items"]] == ["SCARF-ARAN-NAT", "no-sku:tweed-cap-m"]


async def test_an_order_with_no_email_still_counts_for_its_customer(orders_service: Service) -> None:
    rt, http = orders_service
    order = fixture("shopify/orders_create")
    order.update(email="", contact_email=None)
    order["customer"]["email"] = None
    ok(await shopify(http, "orders/create", order))
    [placed] = await outbox(rt, "OrderPlaced")
    assert placed["data"]["customer"]["customer_id"] == "207119551"
    assert is_no_email(placed["data"]["customer"]["email"])
    profile = await eventually(lambda: _customer(http, "207119551"))
    assert profile["orders_count"] == 1
    assert "email" not in (profile["contact"] or {})  # the stand-in is nobody's address

    guest = fixture("woocommerce/order_created")
    guest["billing"]["email"] = ""
    ok(await woocommerce(http, "order.created", guest))
    [_, woo] = await outbox(rt, "OrderPlaced")
    assert woo["data"]["customer"]["customer_id"] == "guest:woocommerce:order:727"
    assert is_no_email(woo["data"]["customer"]["email"])


async def test_woocommerce_refund_dates_are_their_own_or_when_first_seen(orders_service: Service) -> None:
    rt, http = orders_service
    ok(await woocommerce(http, "order.created", fixture("woocommerce/order_created")))
    first = fixture("woocommerce/order_updated_refunded")
    first["refunds"] = [first["refunds"][1]]  # 731 alone, two days before 735
    first["date_modified_gmt"] = "2026-06-18T11:00:00"
    ok(await woocommerce(http, "order.updated", first))
    later = fixture("woocommerce/order_updated_refunded")  # 735 and 731, modified on the 20th
    later["refunds"][0]["date_created_gmt"] = "2026-06-19T16:45:00"  # a payload that dates its refunds
    ok(await woocommerce(http, "order.updated", later))
    ok(await woocommerce(http, "order.updated", later | {"date_modified_gmt": "2026-06-25T09:00:00"}))
    refunds = {e["data"]["refund_id"]: e["data"]["refunded_at"] for e in await outbox(rt, "OrderRefunded")}
    assert refunds == {"731": "2026-06-18T11:00:00Z", "735": "2026-06-19T16:45:00Z"}


async def test_a_refund_in_the_presentment_currency_reduces_the_shop_currency_totals(orders_service: Service) -> None:
    rt, http = orders_service
    ok(await shopify(http, "orders/create", fixture("shopify/orders_create_in_usd")))
    ok(await shopify(http, "refunds/create", fixture("shopify/refunds_create_in_usd")))
    [refund] = await outbox(rt, "OrderRefunded")
    assert (refund["data"]["amount"], refund["data"]["currency"]) == ("11.25", "EUR")  # 12.24 USD × 36.31 / 39.50
    profile = await eventually(lambda: _customer(http, "207119551", refunded=True))
    assert profile["total_spent"] == {"EUR": "25.06"}


async def test_refunds_an_imported_history_told_are_not_told_again_by_a_later_webhook(
    orders_service: Service, tap: EventTap
) -> None:
    """Order 727 came in with the shop's history: placed, and 38.75 refunded in one sum (an export names no refund).
    A later order.updated lists its refunds one by one (38.75 and 77.49): only what goes beyond is told."""
    rt, http = orders_service
    news = woocommerce_platform.read("order.created", fixture("woocommerce/order_created"))
    assert isinstance(news, OrderNews)
    assert news.order is not None
    placed, customer_id = news.order, news.order.customer.customer_id
    refund = OrderRefunded(
        refund_id=history_refund_id("727"),
        order_id="727",
        customer_id=customer_id,
        amount=Decimal("38.75"),
        currency="EUR",
        refunded_at=placed.placed_at,
    )
    for event, kind in ((OrderPlacedEvent, "placed"), (OrderRefundedEvent, "refunded")):
        data = placed if kind == "placed" else refund
        told = event(  # as the importer tells it (importer/history.py)
            id=f"woocommerce:order:727:{kind}",
            source=HISTORY_SOURCE,
            time=placed.placed_at,
            subject=customer_id,
            imported=True,
            data=data,  # type: ignore[arg-type]
        )
        await tap.publish(told)
    await eventually(lambda: _customer(http, customer_id, refunded=True))

    later = ok(await woocommerce(http, "order.updated", fixture("woocommerce/order_updated_refunded")))
    told_now = [e["data"] for e in await outbox(rt, "OrderRefunded")]
    assert sum(Decimal(r["amount"]) for r in told_now) == Decimal("77.49"), later
    ok(await woocommerce(http, "order.updated", fixture("woocommerce/order_updated_refunded") | {"note": "again"}))
    assert len(await outbox(rt, "OrderRefunded")) == len(told_now)

    async def every_refund_heard() -> dict[str, Any] | None:
        profile = await _customer(http, customer_id)
        refunds = profile["orders"][0]["refunds"] if profile else []
        return profile if len(refunds) == 1 + len(told_now) else None

    profile = await eventually(every_refund_heard)
    refunded = sum(Decimal(r["amount"]) for r in profile["orders"][0]["refunds"])
    assert refunded == Decimal("116.24"), "the order's whole total, refunded once"


async def test_the_importer_publishes_a_history_refund_less_what_the_webhooks_told(
    orders_service: Service, settings: ServiceSettings, tap: EventTap, tmp_path: Path
) -> None:
    """Webhooks connected first: order 715 was refunded 12.00 by webhook (refund 990). Its export row says
    12.00 refunded in one sum; asked through `--orders-url`, the importer publishes no second refund for it,
    and order 725's 30.00, which no webhook told, as it is."""
    _rt, http = orders_service
    told = fixture("woocommerce/order_updated_refunded") | {
        "id": 715,
        "number": "715",
        "customer_id": 12,
        "status": "completed",
        "total": "80.00",
        "refunds": [{"id": 990, "reason": "", "total": "-12.00"}],
    }
    ok(await woocommerce(http, "order.updated", told))

    async def recorded() -> bool:
        got = await http.get("/orders/715", headers=ADMIN)
        return got.status_code == 200 and bool(got.json()["refunds"])

    await eventually(recorded)
    async with httpx.AsyncClient(transport=http._transport, base_url=str(http.base_url), headers=ADMIN) as asking:
        orders = OrdersApi(asking, "")
        assert await orders.told("715") == {"EUR": Decimal("12.00")}
        assert await orders.told("no-such-order") == {}
        publisher = EventPublisher(settings.rabbitmq_url, settings.topology.events.name, name="test-importer")
        await publisher.start()
        try:
            checkpoint = Checkpoint.load(tmp_path / "state.json", fingerprint(WOO_HISTORY))
            report = await import_history(
                "woocommerce", WOO_HISTORY, publisher.publish, checkpoint, told_refunds=orders.told
            )
        finally:
            await publisher.stop()
    imported = await tap.wait_for(lambda event: bool(event.get("imported")), count=report.published)
    refunds = {(e["data"]["order_id"], e["data"]["amount"]) for e in imported if e["type"] == "OrderRefunded"}
    assert refunds == {("725", "30.00")}


async def test_a_refund_before_its_order_waits_for_it(orders_service: Service) -> None:
    rt, http = orders_service
    early = ok(await shopify(http, "refunds/create", fixture("shopify/refunds_create")))
    assert early["published"] == []
    late = ok(await shopify(http, "orders/create", fixture("shopify/orders_create")))
    assert [p["type"] for p in late["published"]] == ["OrderPlaced", "OrderRefunded"]
    [refund] = await outbox(rt, "OrderRefunded")
    assert refund["data"]["customer_id"] == "207119551"
    assert refund["data"]["refunded_at"] == "2026-11-10T09:00:00+01:00"


# --- the order's life, shuffled and re-sent ---------------------------------------------------------

SHOPIFY_LIFE = [
    ("orders/create", "orders_create_pending"),
    ("orders/paid", "orders_paid"),
    ("orders/updated", "orders_updated"),
    ("fulfillments/create", "fulfillments_create"),
    ("orders/fulfilled", "orders_fulfilled"),
    ("refunds/create", "refunds_create"),
    ("orders/cancelled", "orders_cancelled"),
]
PAID = {"orders_paid", "orders_updated", "orders_fulfilled"}


@pytest.mark.parametrize("seed", [1, 2])
async def test_an_orders_whole_life_shuffled_and_resent_has_each_effect_once(
    orders_service: Service, seed: int
) -> None:
    rt, http = orders_service
    deliveries = [*SHOPIFY_LIFE, *SHOPIFY_LIFE]
    random.Random(seed).shuffle(deliveries)  # noqa: S311 - a shuffle, not a secret
    for topic, name in deliveries:
        ok(await shopify(http, topic, fixture(f"shopify/{name}")))
    types = [e["type"] for e in await outbox(rt)]
    paying = [deliveries.index((topic, name)) for topic, name in SHOPIFY_LIFE if name in PAID]
    # Shopify never revives a cancelled order: heard of as cancelled before it was paid, it never counts.
    counted = deliveries.index(("orders/cancelled", "orders_cancelled")) > min(paying)
    assert types.count("OrderPlaced") == types.count("OrderCancelled") == int(counted)
    assert types.count("OrderFulfilled") <= int(counted)
    assert types.count("OrderRefunded") <= int(counted)
    if counted:
        assert types[0] == "OrderPlaced"
        assert types[-1] == "OrderCancelled"

        async def cancelled_in_history() -> dict[str, Any] | None:
            profile = await _customer(http, "207119551")
            return profile if profile and profile["orders"] and profile["orders"][0]["cancelled_at"] else None

        profile = await eventually(cancelled_in_history)
        assert [order["order_id"] for order in profile["orders"]] == ["450789469"]
        assert (profile["orders_count"], profile["total_spent"]) == (0, {})
    for event_type in set(types):
        ids = [e["id"] for e in await outbox(rt, event_type)]
        assert len(ids) == len(set(ids))


async def test_a_cancelled_order_is_marked_in_the_customers_history_and_leaves_the_stats(
    orders_service: Service,
) -> None:
    rt, http = orders_service
    ok(await shopify(http, "orders/create", fixture("shopify/orders_create")))
    cancelled = ok(await shopify(http, "orders/cancelled", fixture("shopify/orders_cancelled")))
    assert [p["id"] for p in cancelled["published"]] == ["shopify:order:450789469:cancelled"]
    assert ok(await shopify(http, "orders/cancelled", fixture("shopify/orders_cancelled")))["published"] == []
    [event] = await outbox(rt, "OrderCancelled")
    assert event["data"] == {
        "order_id": "450789469",
        "customer_id": "207119551",
        "cancelled_at": "2026-11-12T08:30:00+01:00",
        "reason": "customer",
    }

    async def marked() -> dict[str, Any] | None:
        profile = await _customer(http, "207119551")
        return profile if profile and profile["orders"][0]["cancelled_at"] else None

    profile = await eventually(marked)
    assert profile["orders_count"] == 0
    assert profile["total_spent"] == {}
    assert profile["orders"][0]["cancelled_at"] == "2026-11-12T07:30:00Z"

    ok(await woocommerce(http, "order.created", fixture("woocommerce/order_created")))
    deleted = ok(await woocommerce(http, "order.deleted", fixture("woocommerce/order_deleted")))
    assert [p["type"] for p in deleted["published"]] == ["OrderCancelled"]
    assert ok(await woocommerce(http, "order.restored", fixture("woocommerce/order_created")))["published"] == []


# --- secrets, pings, privacy --------------------------------------------------------------------------


async def test_the_previous_shopify_secret_still_works_during_a_rotation(orders_service: Service) -> None:
    _rt, http = orders_service
    order = fixture("shopify/orders_create")
    assert (await shopify(http, "orders/create", order, secret=SHOPIFY_PREVIOUS)).status_code == 200
    assert (await shopify(http, "orders/create", order, secret="someone-else")).status_code == 401
    ping = await http.post(
        "/webhooks/woocommerce", content=b"webhook_id=12", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert ping.json() == {"ping": True}


async def test_shopify_privacy_webhooks_erase_and_record_data_requests(orders_service: Service, tap: EventTap) -> None:
    rt, http = orders_service
    ok(await shopify(http, "orders/create", fixture("shopify/orders_create")))
    guest = fixture("shopify/orders_create_in_usd")
    guest["customer"] = None
    guest["email"] = guest["contact_email"] = "guest@example.sk"
    ok(await shopify(http, "orders/create", guest))
    await eventually(lambda: _customer(http, "guest:guest@example.sk"))

    request = ok(await shopify(http, "customers/data_request", fixture("shopify/customers_data_request")))
    assert request["published"] == []
    ok(await shopify(http, "customers/data_request", fixture("shopify/customers_data_request")))
    listed = await http.get("/data-requests", headers=ADMIN)
    assert listed.status_code == 200, listed.text
    [data_request] = listed.json()["data_requests"]
    assert data_request | {"received_at": None} == {
        "request_id": "shopify:keramika-kosice.myshopify.com:9999",
        "shop": "keramika-kosice.myshopify.com",
        "customer_id": "207119551",
        "orders_requested": ["450789469"],
        "status": "pending",
        "received_at": None,
    }

    redact = ok(await shopify(http, "customers/redact", fixture("shopify/customers_redact")))
    assert [p["type"] for p in redact["published"]] == ["CustomerErased"]
    assert (await http.get("/customers/207119551", headers=ADMIN)).status_code == 404
    shop = ok(await shopify(http, "shop/redact", fixture("shopify/shop_redact")))
    # CustomerErased names whom it erases: the outbox forgets it once sent, so it is read off the exchange.
    told = await tap.wait_for(lambda e: e["type"] == "CustomerErased", count=2)
    erased = {e["data"]["customer_id"] for e in told}
    assert erased == {"207119551", "guest:guest@example.sk"}
    assert [p["type"] for p in shop["published"]] == ["CustomerErased"]  # the one not erased before
    assert "guest@example.sk" not in json.dumps([d async for d in rt.db["platform_orders"].find({})], default=str)


async def test_answers_are_documented_with_typed_bodies(orders_service: Service) -> None:
    _rt, http = orders_service
    spec = (await http.get("/openapi.json")).json()
    for path in ("/webhooks/shopify", "/webhooks/woocommerce"):
        answers = spec["paths"][path]["post"]["responses"]
        assert {"200", "400", "401", "413", "422", "503"} <= answers.keys(), path
        for code in ("400", "401", "413", "503"):
            assert answers[code]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    no_topic = await http.post(
        "/webhooks/shopify", content=b"{}", headers={"X-Shopify-Hmac-Sha256": signed(b"{}", SHOPIFY_SECRET)}
    )
    assert no_topic.status_code == 400
    assert no_topic.json()["detail"].startswith("X-Shopify-Topic")


async def _customer(http: httpx.AsyncClient, customer_id: str, *, refunded: bool = False) -> dict[str, Any] | None:
    got = await http.get(f"/customers/{customer_id}", headers=ADMIN)
    if got.status_code != 200:
        return None
    body: dict[str, Any] = got.json()
    if refunded and not any(order["refunds"] for order in body["orders"]):
        return None
    return body


# --- erased customers -----------------------------------------------------------------------------


async def test_a_shop_order_for_an_erased_customer_goes_out_anonymous_and_its_event_is_not_kept(
    orders_service: Service, tap: EventTap
) -> None:
    rt, http = orders_service
    assert (await http.post("/customers/207119551/erase", headers=ADMIN)).status_code == 202
    ok(await shopify(http, "orders/create", fixture("shopify/orders_create")))
    # The others hear of the order (and keep it anonymous); this outbox keeps no copy naming her once it is sent.
    await tap.wait_for(lambda e: e["id"] == "shopify:order:450789469:placed")
    await eventually(lambda: rt.db[ORDERS].find_one({"_id": "450789469"}))
    await eventually(lambda: _outbox_sent(rt))
    everything = json.dumps(
        [doc for name in await rt.db.list_collection_names() async for doc in rt.db[name].find({})], default=str
    )
    for needle in ("eva.novakova@example.sk", "207119551", "Nováková"):
        assert needle not in everything, needle
