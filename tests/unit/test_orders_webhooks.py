"""Shopify and WooCommerce webhooks read as news of an order and told once as exactly the canonical events we
expect, or refused naming the platform's field."""

import base64
import copy
import hashlib
import hmac
import json
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from services.orders.platforms import (
    Ignored,
    KnownOrder,
    OrderNews,
    PrivacyRequest,
    Translation,
    UntranslatableWebhook,
    decide,
    known_order_key,
    shopify,
    signature_valid,
    signed_by_any,
    woocommerce,
)
from shared.events import is_no_email

WEBHOOKS = Path(__file__).parents[1] / "fixtures" / "webhooks"
SECRET = "whsec_0c5f1d7a9b3e4c2d8f6a"


def webhook(name: str) -> dict[str, Any]:
    """A fixture payload, e.g. "shopify/orders_create", freshly loaded so a test may change it."""
    loaded: dict[str, Any] = json.loads((WEBHOOKS / f"{name}.json").read_text())
    return loaded


AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
# The orders as told already (placed), for webhooks about what follows.
SHOPIFY_PLACED = KnownOrder(
    "shopify:order:450789469", "450789469", customer_id="207119551", currency="EUR", total=Decimal("36.31"), placed=True
)
WOO_PLACED = KnownOrder(
    "woocommerce:order:727",
    "727",
    customer_id="guest:aoife.byrne@example.ie",
    currency="EUR",
    total=Decimal("116.24"),
    placed=True,
)


def news(platform: ModuleType, topic: str, payload: Any) -> OrderNews:
    read = platform.read(topic, payload)
    assert isinstance(read, OrderNews), read
    return read


def told(platform: ModuleType, topic: str, payload: Any, known: KnownOrder | None = None) -> list[Translation]:
    """The events a webhook adds to what was told of its order before (`known`; nothing when None)."""
    order_news = news(platform, topic, payload)
    known = known or KnownOrder(known_order_key(order_news.platform, order_news.order_id), order_news.order_id)
    return list(decide(known, order_news, at=AT).events)


def on_the_wire(translations: list[Translation]) -> list[tuple[str, dict[str, Any]]]:
    """Event ids and data as consumers will read them: money and times as the contract's strings."""
    return [(translation.event_id, translation.data.model_dump(mode="json")) for translation in translations]


def set_at(payload: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    target: Any = payload
    for step in parents:
        target = target[int(step)] if isinstance(target, list) else target[step]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value


def delete_at(payload: dict[str, Any], path: str) -> None:
    *parents, last = path.split(".")
    target: Any = payload
    for step in parents:
        target = target[int(step)] if isinstance(target, list) else target[step]
    del target[last]


def refused(translate: Any, *args: Any, **kwargs: Any) -> UntranslatableWebhook:
    with pytest.raises(UntranslatableWebhook) as raised:
        translate(*args, **kwargs)
    return raised.value


def sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


# --- Shopify ------------------------------------------------------------------------------


def test_shopify_orders_create_is_an_order_placed() -> None:
    assert on_the_wire(told(shopify, "orders/create", webhook("shopify/orders_create"))) == [
        (
            "shopify:order:450789469:placed",
            {
                "order_id": "450789469",
                "customer": {
                    "customer_id": "207119551",
                    "email": "eva.novakova@example.sk",
                    "first_name": "Eva",
                    "last_name": "Nováková",
                    "locale": "sk-SK",
                    "city": "Košice",
                    "region": None,
                    "country": "SK",
                    "phone": "+421905123456",
                    "accepts_marketing": True,
                },
                "placed_at": "2026-11-02T10:15:00+01:00",
                "currency": "EUR",
                "total": "36.31",
                "line_items": [
                    {"sku": "MUG-RED", "name": "Red mug", "quantity": 2, "unit_price": "12.50", "category": None},
                    # An empty sku: the variant id stands in for it.
                    {
                        "sku": "49148385",
                        "name": "Linen tea towel",
                        "quantity": 1,
                        "unit_price": "9.90",
                        "category": None,
                    },
                ],
                "discount_codes": ["WELCOME10"],
                "referral_code": "K7QX-M2PA",
                "shipping_address": {
                    "line1": "Hlavná 1",
                    "line2": "Byt 4",
                    "postal_code": "040 01",
                    "city": "Košice",
                    "region": None,
                    "country": "SK",
                },
                "order_number": "#1001",
            },
        )
    ]


def test_shopify_orders_fulfilled_is_handed_over_with_the_last_fulfillment() -> None:
    assert on_the_wire(told(shopify, "orders/fulfilled", webhook("shopify/orders_fulfilled"), SHOPIFY_PLACED)) == [
        (
            "shopify:order:450789469:fulfilled",
            {"order_id": "450789469", "customer_id": "207119551", "fulfilled_at": "2026-11-04T16:00:00+01:00"},
        )
    ]


def test_shopify_refunds_create_adds_up_the_refunded_transactions() -> None:
    refund = webhook("shopify/refunds_create")  # 5.00 back to a gift card, 6.25 back to the card
    assert on_the_wire(told(shopify, "refunds/create", refund, SHOPIFY_PLACED)) == [
        (
            "shopify:refund:509562969",
            {
                "refund_id": "509562969",
                "order_id": "450789469",
                "customer_id": "207119551",
                "amount": "11.25",
                "currency": "EUR",
                "refunded_at": "2026-11-10T09:00:00+01:00",
                "reason": "Mug arrived chipped",
            },
        )
    ]


def test_shopify_refund_counts_only_successful_refund_transactions() -> None:
    refund = webhook("shopify/refunds_create")
    successful = refund["transactions"][0]
    refund["transactions"] += [
        {**successful, "id": 179259971, "amount": "40.00", "status": "failure"},
        {**successful, "id": 179259972, "amount": "40.00", "status": "pending"},
        {**successful, "id": 179259973, "amount": "40.00", "kind": "sale"},
    ]
    [translation] = told(shopify, "refunds/create", refund, SHOPIFY_PLACED)
    assert translation.data.model_dump(mode="json")["amount"] == "11.25"


def test_shopify_refund_that_returned_no_money_is_no_event() -> None:
    refund = webhook("shopify/refunds_create")
    for transaction in refund["transactions"]:
        transaction["status"] = "failure"
    assert told(shopify, "refunds/create", refund, SHOPIFY_PLACED) == []
    refund["transactions"] = []  # a restock-only refund
    assert told(shopify, "refunds/create", refund, SHOPIFY_PLACED) == []


def test_shopify_refund_for_an_order_not_known_yet_waits_for_it_with_its_own_date() -> None:
    refund_news = news(shopify, "refunds/create", webhook("shopify/refunds_create"))
    waiting = decide(KnownOrder("shopify:order:450789469", "450789469"), refund_news, at=AT)
    assert waiting.events == ()
    order = decide(waiting.known, news(shopify, "orders/create", webhook("shopify/orders_create")), at=AT)
    assert [(t.event_id, t.data.model_dump(mode="json").get("refunded_at")) for t in order.events] == [
        ("shopify:order:450789469:placed", None),
        ("shopify:refund:509562969", "2026-11-10T09:00:00+01:00"),
    ]


def test_shopify_guest_checkout_is_keyed_by_the_lower_cased_email() -> None:
    order = webhook("shopify/orders_fulfilled")
    order["customer"] = None
    order["email"] = order["contact_email"] = "Guest.Buyer@Example.com"
    [placed, _] = told(shopify, "orders/create", copy.deepcopy(order))  # paid and fulfilled already
    [_, fulfilled] = told(shopify, "orders/fulfilled", order)
    customer = placed.data.model_dump(mode="json")["customer"]
    assert customer["customer_id"] == "guest:guest.buyer@example.com"
    assert customer["email"] == "Guest.Buyer@example.com"
    assert (customer["first_name"], customer["last_name"]) == ("Eva", "Nováková")  # from the billing address
    assert fulfilled.data.model_dump(mode="json")["customer_id"] == "guest:guest.buyer@example.com"


def test_shopify_sku_falls_back_to_the_variant_then_the_product() -> None:
    order = webhook("shopify/orders_create")
    set_at(order, "line_items.1.variant_id", None)
    [placed] = told(shopify, "orders/create", order)
    assert [item["sku"] for item in placed.data.model_dump(mode="json")["line_items"]] == ["MUG-RED", "921728736"]


def test_shopify_line_without_sku_variant_or_product_gets_a_stand_in_from_its_title() -> None:
    order = webhook("shopify/orders_create")
    set_at(order, "line_items.1.variant_id", None)
    set_at(order, "line_items.1.product_id", None)
    order["line_items"][1]["title"] = "Custom  Sale"  # a POS custom sale
    [placed] = told(shopify, "orders/create", order)
    assert placed.data.model_dump(mode="json")["line_items"][1]["sku"] == "no-sku:custom-sale"


def test_shopify_order_with_no_email_gets_the_stand_in_address() -> None:
    order = webhook("shopify/orders_create")
    for path in ("email", "contact_email", "customer.email"):
        delete_at(order, path)
    [placed] = told(shopify, "orders/create", order)
    customer = placed.data.model_dump(mode="json")["customer"]
    assert customer["customer_id"] == "207119551"
    assert is_no_email(customer["email"])
    order["customer"] = None
    [guest] = told(shopify, "orders/create", order)
    assert guest.data.model_dump(mode="json")["customer"]["customer_id"] == "guest:shopify:order:450789469"


@pytest.mark.parametrize(
    ("financial_status", "counts"),
    [
        ("pending", False),
        ("authorized", True),
        ("partially_paid", True),
        ("paid", True),
        ("partially_refunded", True),
        ("refunded", True),
        ("voided", False),
        ("expired", False),
    ],
)
def test_shopify_order_counts_once_paid_or_authorised(financial_status: str, counts: bool) -> None:
    order = webhook("shopify/orders_create")
    order["financial_status"] = financial_status
    assert [t.event_id for t in told(shopify, "orders/create", order)] == (
        ["shopify:order:450789469:placed"] if counts else []
    )


def test_shopify_test_orders_and_untranslated_topics_are_ignored() -> None:
    assert shopify.read("orders/create", webhook("shopify/orders_test_notification")) == Ignored("test")
    assert shopify.read("products/update", {"id": 1}) == Ignored("topic not translated")
    assert woocommerce.read("product.created", {"id": 1}) == Ignored("topic not translated")


def test_shopify_cancellation_of_a_placed_order_is_told_once_and_then_nothing_more() -> None:
    cancelled = decide(SHOPIFY_PLACED, news(shopify, "orders/cancelled", webhook("shopify/orders_cancelled")), at=AT)
    assert on_the_wire(list(cancelled.events)) == [
        (
            "shopify:order:450789469:cancelled",
            {
                "order_id": "450789469",
                "customer_id": "207119551",
                "cancelled_at": "2026-11-12T08:30:00+01:00",
                "reason": "customer",
            },
        )
    ]
    fulfilled = news(shopify, "orders/fulfilled", webhook("shopify/orders_fulfilled"))
    assert decide(cancelled.known, fulfilled, at=AT).events == ()


def test_shopify_cancellation_before_payment_is_final() -> None:
    fresh = KnownOrder("shopify:order:450789469", "450789469")
    cancelled = decide(fresh, news(shopify, "orders/cancelled", webhook("shopify/orders_cancelled")), at=AT)
    assert cancelled.events == ()
    assert decide(cancelled.known, news(shopify, "orders/paid", webhook("shopify/orders_paid")), at=AT).events == ()


def test_shopify_refund_in_the_presentment_currency_is_told_in_the_order_currency() -> None:
    placed = decide(
        KnownOrder("shopify:order:450789470", "450789470"),
        news(shopify, "orders/create", webhook("shopify/orders_create_in_usd")),
        at=AT,
    )
    refunded = decide(placed.known, news(shopify, "refunds/create", webhook("shopify/refunds_create_in_usd")), at=AT)
    [refund] = on_the_wire(list(refunded.events))
    assert (refund[1]["amount"], refund[1]["currency"]) == ("11.25", "EUR")


def test_shopify_fulfilment_resource_is_fulfilled_at_its_creation_once() -> None:
    fulfilment = webhook("shopify/fulfillments_create")
    [fulfilled] = told(shopify, "fulfillments/create", fulfilment, SHOPIFY_PLACED)
    assert fulfilled.data.model_dump(mode="json")["fulfilled_at"] == "2026-11-03T09:12:44+01:00"
    fulfilment["status"] = "cancelled"
    assert told(shopify, "fulfillments/create", fulfilment, SHOPIFY_PLACED) == []


def test_shopify_privacy_topics_name_the_customer_and_the_shop() -> None:
    request = shopify.read("customers/data_request", webhook("shopify/customers_data_request"))
    assert request == PrivacyRequest(
        topic="customers/data_request",
        shop="keramika-kosice.myshopify.com",
        customer_ids=("207119551", "guest:eva.novakova@example.sk"),
        orders=("450789469",),
        request_id="9999",
    )
    redact = shopify.read("shop/redact", webhook("shopify/shop_redact"))
    assert redact == PrivacyRequest(topic="shop/redact", shop="keramika-kosice.myshopify.com")


@pytest.mark.parametrize(
    ("attributes", "expected"), [([{"name": "ref", "value": "FRIEND-42"}], "FRIEND-42"), ([], None)]
)
def test_shopify_referral_code_comes_from_the_note_attributes(
    attributes: list[dict[str, str]], expected: str | None
) -> None:
    order = webhook("shopify/orders_create")
    order["note_attributes"] = [{"name": "gift_message", "value": "Happy name day!"}, *attributes]
    [placed] = told(shopify, "orders/create", order)
    assert placed.data.model_dump(mode="json")["referral_code"] == expected


@pytest.mark.parametrize("locale", ["en_US", "xx-XX", "12", ""])
def test_shopify_locale_the_contract_refuses_is_dropped_not_fatal(locale: str) -> None:
    order = webhook("shopify/orders_create")
    order["customer_locale"] = locale
    [placed] = told(shopify, "orders/create", order)
    assert placed.data.model_dump(mode="json")["customer"]["locale"] is None


def test_shopify_without_a_shipping_address_the_customer_lives_at_the_billing_address() -> None:
    order = webhook("shopify/orders_create")
    order["shipping_address"] = None
    order["billing_address"].update(city="Toronto", province="Ontario", country_code="CA")
    [placed] = told(shopify, "orders/create", order)
    data = placed.data.model_dump(mode="json")
    assert (data["customer"]["city"], data["customer"]["region"], data["customer"]["country"]) == (
        "Toronto",
        "Ontario",
        "CA",
    )
    assert data["shipping_address"] is None


def test_shopify_shipping_address_without_a_postcode_is_left_out_of_the_order() -> None:
    order = webhook("shopify/orders_create")
    order["shipping_address"]["zip"] = None
    [placed] = told(shopify, "orders/create", order)
    assert placed.data.model_dump(mode="json")["shipping_address"] is None


def test_shopify_fulfilled_at_ignores_cancelled_fulfillments_and_falls_back_to_updated_at() -> None:
    order = webhook("shopify/orders_fulfilled")
    order["fulfillments"].append(
        {**order["fulfillments"][0], "id": 255858048, "created_at": "2026-11-05T08:00:00+01:00", "status": "cancelled"}
    )
    [fulfilled] = told(shopify, "orders/fulfilled", order, SHOPIFY_PLACED)
    assert fulfilled.data.model_dump(mode="json")["fulfilled_at"] == "2026-11-04T16:00:00+01:00"
    order["fulfillments"] = []
    [fulfilled] = told(shopify, "orders/fulfilled", order, SHOPIFY_PLACED)
    assert fulfilled.data.model_dump(mode="json")["fulfilled_at"] == "2026-11-04T16:00:05+01:00"


@pytest.mark.parametrize(
    ("removed", "field"),
    [
        (("total_price",), "total_price"),
        (("line_items.0.price",), "line_items.0.price"),
        (("currency",), "currency"),
        (("created_at",), "created_at"),
        (("line_items",), "line_items"),
        (("id",), "id"),
    ],
)
def test_shopify_missing_field_is_named(removed: tuple[str, ...], field: str) -> None:
    order = webhook("shopify/orders_create")
    for path in removed:
        delete_at(order, path)
    error = refused(shopify.read, "orders/create", order)
    assert (error.field, error.reason.split(" ")[0]) == (field, field)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("email", "eva.novakova(at)example.sk", "email"),
        ("currency", "EURO", "currency"),
        ("total_price", 36.31, "total_price"),
        ("line_items.0.price", "-12.50", "line_items.0.price"),
        ("line_items.1.quantity", "1", "line_items.1.quantity"),
        ("created_at", "2026-11-02 10:15:00", "created_at"),
        ("shipping_address.country_code", "Slovakia", "shipping_address.country_code"),
        ("discount_codes.0.code", None, "discount_codes.0.code"),
        ("line_items", {"0": {"sku": "MUG-RED"}}, "line_items"),
    ],
)
def test_shopify_value_the_contract_refuses_is_named_by_its_shopify_field(path: str, value: Any, field: str) -> None:
    order = webhook("shopify/orders_create")
    set_at(order, path, value)
    error = refused(shopify.read, "orders/create", order)
    assert error.field == field
    assert error.reason.startswith(field)


# --- WooCommerce --------------------------------------------------------------------------


def test_woocommerce_order_created_is_an_order_placed() -> None:
    assert on_the_wire(told(woocommerce, "order.created", webhook("woocommerce/order_created"))) == [
        (
            "woocommerce:order:727:placed",
            {
                "order_id": "727",
                "customer": {
                    # customer_id 0: a guest checkout.
                    "customer_id": "guest:aoife.byrne@example.ie",
                    "email": "Aoife.Byrne@example.ie",
                    "first_name": "Aoife",
                    "last_name": "Byrne",
                    "locale": None,
                    "city": "Dublin 2",
                    "region": "D",
                    "country": "IE",
                    "phone": "+353 87 123 4567",
                    "accepts_marketing": None,
                },
                # date_created_gmt is 13:05:31 without an offset; date_created is Dublin's 14:05:31.
                "placed_at": "2026-06-12T13:05:31Z",
                "currency": "EUR",
                "total": "116.24",
                "line_items": [
                    # price 31.5 and 8.333333333333334 are JSON numbers: after the coupon, before VAT.
                    {
                        "sku": "SCARF-ARAN-NAT",
                        "name": "Aran wool scarf",
                        "quantity": 2,
                        "unit_price": "31.50",
                        "category": None,
                    },
                    {"sku": "23", "name": "Tweed cap – M", "quantity": 3, "unit_price": "8.33", "category": None},
                ],
                "discount_codes": ["welcome10"],
                "referral_code": "K7QX-M2PA",
                "shipping_address": {
                    "line1": "12 Harcourt Street",
                    "line2": "Apartment 3",
                    "postal_code": "D02 X285",
                    "city": "Dublin 2",
                    "region": "D",
                    "country": "IE",
                },
                "order_number": "#727",
            },
        )
    ]


def test_woocommerce_completed_order_is_fulfilled() -> None:
    completed = webhook("woocommerce/order_updated_completed")
    assert on_the_wire(told(woocommerce, "order.updated", completed, WOO_PLACED)) == [
        (
            "woocommerce:order:727:fulfilled",
            {"order_id": "727", "customer_id": "guest:aoife.byrne@example.ie", "fulfilled_at": "2026-06-15T09:20:44Z"},
        )
    ]


def test_woocommerce_each_refund_is_an_order_refunded() -> None:
    # Fulfilled before; refunds[] carry no date: each is dated when first seen, this delivery's date_modified_gmt.
    fulfilled = replace(WOO_PLACED, fulfilled=True)
    assert on_the_wire(
        told(woocommerce, "order.updated", webhook("woocommerce/order_updated_refunded"), fulfilled)
    ) == [
        (
            "woocommerce:refund:735",
            {
                "refund_id": "735",
                "order_id": "727",
                "customer_id": "guest:aoife.byrne@example.ie",
                "amount": "77.49",
                "currency": "EUR",
                "refunded_at": "2026-06-20T08:02:11Z",
                "reason": None,
            },
        ),
        (
            "woocommerce:refund:731",
            {
                "refund_id": "731",
                "order_id": "727",
                "customer_id": "guest:aoife.byrne@example.ie",
                "amount": "38.75",
                "currency": "EUR",
                "refunded_at": "2026-06-20T08:02:11Z",
                "reason": "Scarf arrived with a pulled thread",
            },
        ),
    ]


@pytest.mark.parametrize("status", ["on-hold", "pending", "cancelled", "failed", "checkout-draft", "trash"])
def test_woocommerce_order_not_paid_yet_is_nothing(status: str) -> None:
    order = webhook("woocommerce/order_created")
    order["status"] = status
    assert told(woocommerce, "order.created", order) == []


@pytest.mark.parametrize("status", ["processing", "completed", "refunded"])
def test_woocommerce_order_counts_when_paid(status: str) -> None:
    order = webhook("woocommerce/order_created")
    order["status"] = status
    assert told(woocommerce, "order.updated", order)[0].event_id == "woocommerce:order:727:placed"


def test_woocommerce_failed_order_paid_later_counts_then() -> None:
    order = webhook("woocommerce/order_created_pending")
    order["status"] = "failed"
    failed = decide(KnownOrder("woocommerce:order:727", "727"), news(woocommerce, "order.updated", order), at=AT)
    assert failed.events == ()
    paid = decide(failed.known, news(woocommerce, "order.updated", webhook("woocommerce/order_created")), at=AT)
    assert [t.event_id for t in paid.events] == ["woocommerce:order:727:placed"]


@pytest.mark.parametrize("status", ["cancelled", "failed"])
def test_woocommerce_counted_order_cancelled_or_failed_is_cancelled_once(status: str) -> None:
    order = webhook("woocommerce/order_created") | {"status": status, "date_modified_gmt": "2026-06-13T08:00:00"}
    cancelled = decide(WOO_PLACED, news(woocommerce, "order.updated", order), at=AT)
    assert on_the_wire(list(cancelled.events)) == [
        (
            "woocommerce:order:727:cancelled",
            {
                "order_id": "727",
                "customer_id": "guest:aoife.byrne@example.ie",
                "cancelled_at": "2026-06-13T08:00:00Z",
                "reason": status,
            },
        )
    ]
    assert decide(cancelled.known, news(woocommerce, "order.updated", order), at=AT).events == ()


def test_woocommerce_deleted_order_is_cancelled_and_stays_cancelled_when_restored() -> None:
    deleted = decide(WOO_PLACED, news(woocommerce, "order.deleted", webhook("woocommerce/order_deleted")), at=AT)
    assert [(t.event_id, t.data.model_dump(mode="json")["cancelled_at"]) for t in deleted.events] == [
        ("woocommerce:order:727:cancelled", "2026-12-01T09:00:00Z")
    ]
    restored = news(woocommerce, "order.restored", webhook("woocommerce/order_created"))
    assert decide(deleted.known, restored, at=AT).events == ()
    never_counted = KnownOrder("woocommerce:order:727", "727")
    assert decide(never_counted, news(woocommerce, "order.deleted", {"id": 727}), at=AT).events == ()


def test_woocommerce_refund_with_its_own_date_keeps_it() -> None:
    order = webhook("woocommerce/order_updated_refunded")
    order["refunds"][0]["date_created_gmt"] = "2026-06-19T16:45:00"
    refunds = told(woocommerce, "order.updated", order, replace(WOO_PLACED, fulfilled=True))
    assert [t.data.model_dump(mode="json")["refunded_at"] for t in refunds] == [
        "2026-06-19T16:45:00Z",
        "2026-06-20T08:02:11Z",
    ]


@pytest.mark.parametrize(("value", "consent"), [("yes", True), ("no", False), ("1", True), ("maybe", None)])
def test_woocommerce_marketing_consent_from_a_consent_plugins_meta_data(value: str, consent: bool | None) -> None:
    order = webhook("woocommerce/order_created")
    order["meta_data"].append({"id": 13200, "key": "accepts_marketing", "value": value})
    [placed] = told(woocommerce, "order.created", order)
    assert placed.data.model_dump(mode="json")["customer"]["accepts_marketing"] is consent


def test_woocommerce_order_created_already_completed_and_refunded_is_all_three_events() -> None:
    order = webhook("woocommerce/order_updated_completed")
    order["refunds"] = [{"id": 731, "reason": "Scarf arrived with a pulled thread", "total": "-38.75"}]
    assert [translation.event_id for translation in told(woocommerce, "order.created", order)] == [
        "woocommerce:order:727:placed",
        "woocommerce:order:727:fulfilled",
        "woocommerce:refund:731",
    ]


def test_woocommerce_later_updates_tell_only_what_is_new() -> None:
    first = webhook("woocommerce/order_updated_completed")
    first["refunds"] = [{"id": 731, "reason": "Scarf arrived with a pulled thread", "total": "-38.75"}]
    told_first = decide(WOO_PLACED, news(woocommerce, "order.updated", first), at=AT)
    later = news(woocommerce, "order.updated", webhook("woocommerce/order_updated_refunded"))
    told_later = decide(told_first.known, later, at=AT)
    assert [t.event_id for t in told_first.events] == ["woocommerce:order:727:fulfilled", "woocommerce:refund:731"]
    assert [t.event_id for t in told_later.events] == ["woocommerce:refund:735"]
    assert decide(told_later.known, later, at=AT).events == ()


def test_woocommerce_refund_of_nothing_is_no_event() -> None:
    order = webhook("woocommerce/order_updated_refunded")
    order["refunds"][0]["total"] = "-0.00"
    fulfilled = replace(WOO_PLACED, fulfilled=True)
    assert [translation.event_id for translation in told(woocommerce, "order.updated", order, fulfilled)] == [
        "woocommerce:refund:731"
    ]


def test_woocommerce_registered_customer_keeps_their_id() -> None:
    order = webhook("woocommerce/order_updated_refunded")
    order["customer_id"] = 12
    [placed, *others] = told(woocommerce, "order.created", order)
    assert placed.data.model_dump(mode="json")["customer"]["customer_id"] == "12"
    assert [other.data.model_dump(mode="json")["customer_id"] for other in others] == ["12", "12", "12"]


@pytest.mark.parametrize(
    ("price_json", "currency", "unit_price"),
    [
        ("31.5", "EUR", "31.50"),
        ("8.333333333333334", "EUR", "8.33"),
        ("0.30000000000000004", "EUR", "0.30"),
        ("2.675", "EUR", "2.68"),  # the float is 2.67499999…; its decimal text rounds half up
        ("12", "EUR", "12.00"),
        ("1e-05", "EUR", "0.00"),
        ("333.3333333333333", "JPY", "333"),
        ("1.2345", "KWD", "1.235"),
    ],
)
def test_woocommerce_price_is_taken_exactly_and_rounded_to_the_currency_minor_unit(
    price_json: str, currency: str, unit_price: str
) -> None:
    order = webhook("woocommerce/order_created")
    order["currency"] = currency
    order["line_items"][0]["price"] = json.loads(price_json)
    [placed] = told(woocommerce, "order.created", order)
    assert placed.data.model_dump(mode="json")["line_items"][0]["unit_price"] == unit_price


def test_woocommerce_sku_falls_back_to_the_variation_then_the_product() -> None:
    order = webhook("woocommerce/order_created")
    order["line_items"][1]["variation_id"] = 0
    [placed] = told(woocommerce, "order.created", order)
    assert [item["sku"] for item in placed.data.model_dump(mode="json")["line_items"]] == ["SCARF-ARAN-NAT", "22"]
    order["line_items"][1]["product_id"] = 0  # the product was deleted since
    [placed] = told(woocommerce, "order.created", order)
    assert placed.data.model_dump(mode="json")["line_items"][1]["sku"] == "no-sku:tweed-cap-m"


def test_woocommerce_order_without_a_shipping_street_has_no_shipping_address() -> None:
    order = webhook("woocommerce/order_created")
    order["shipping"] = dict.fromkeys(order["shipping"], "")  # virtual goods: WooCommerce sends empty strings
    [placed] = told(woocommerce, "order.created", order)
    assert placed.data.model_dump(mode="json")["shipping_address"] is None


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("total", "total"),
        ("line_items.0.price", "line_items.0.price"),
        ("currency", "currency"),
        ("date_created_gmt", "date_created_gmt"),
        ("line_items.1.name", "line_items.1.name"),
    ],
)
def test_woocommerce_missing_field_is_named(path: str, field: str) -> None:
    order = webhook("woocommerce/order_created")
    delete_at(order, path)
    error = refused(woocommerce.read, "order.created", order)
    assert (error.field, error.reason.split(" ")[0]) == (field, field)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("billing.email", "aoife.byrne", "billing.email"),
        ("total", "116,24", "total"),
        ("line_items.0.price", -31.5, "line_items.0.price"),
        ("line_items.0.price", "NaN", "line_items.0.price"),
        ("line_items.0.price", 1e30, "line_items.0.price"),
        ("line_items.0.quantity", 0, "line_items.0.quantity"),
        ("date_created_gmt", "12/06/2026 13:05", "date_created_gmt"),
        ("shipping.country", "Ireland", "shipping.country"),
    ],
)
def test_woocommerce_value_the_contract_refuses_is_named_by_its_woocommerce_field(
    path: str, value: Any, field: str
) -> None:
    order = webhook("woocommerce/order_created")
    set_at(order, path, value)
    error = refused(woocommerce.read, "order.created", order)
    assert error.field == field
    assert error.reason.startswith(field)


# --- both platforms -----------------------------------------------------------------------


@pytest.mark.parametrize(("platform", "topic"), [(shopify, "orders/create"), (woocommerce, "order.created")])
def test_body_that_is_not_a_json_object_is_refused(platform: ModuleType, topic: str) -> None:
    assert refused(platform.read, topic, [{"id": 1}]).field is None


@pytest.mark.parametrize(
    ("platform", "topic", "name", "known"),
    [
        (shopify, "orders/create", "shopify/orders_create", None),
        (shopify, "orders/fulfilled", "shopify/orders_fulfilled", SHOPIFY_PLACED),
        (shopify, "refunds/create", "shopify/refunds_create", SHOPIFY_PLACED),
        (woocommerce, "order.created", "woocommerce/order_created", None),
        (woocommerce, "order.updated", "woocommerce/order_updated_completed", WOO_PLACED),
        (woocommerce, "order.updated", "woocommerce/order_updated_refunded", WOO_PLACED),
    ],
)
def test_the_same_webhook_delivered_again_tells_nothing_more(
    platform: ModuleType, topic: str, name: str, known: KnownOrder | None
) -> None:
    order_news = news(platform, topic, webhook(name))
    known = known or KnownOrder(known_order_key(order_news.platform, order_news.order_id), order_news.order_id)
    first = decide(known, order_news, at=AT)
    assert first.events  # something to tell once
    assert decide(first.known, news(platform, topic, webhook(name)), at=AT).events == ()


# --- signatures ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["shopify/orders_create", "woocommerce/order_created"])
def test_signature_of_the_raw_body_with_the_shared_secret_is_valid(name: str) -> None:
    body = (WEBHOOKS / f"{name}.json").read_bytes()
    assert signature_valid(body, sign(body, SECRET), SECRET)


def test_signature_is_invalid_when_anything_differs() -> None:
    body = (WEBHOOKS / "shopify/orders_create.json").read_bytes()
    signature = sign(body, SECRET)
    reserialised = json.dumps(json.loads(body)).encode()  # what a framework's parsed-then-dumped body looks like
    hex_digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert not signature_valid(body, sign(body, "whsec_someone_else"), SECRET)
    assert not signature_valid(body.replace(b'"36.31"', b'"0.01"'), signature, SECRET)
    assert not signature_valid(reserialised, signature, SECRET)
    assert not signature_valid(body, None, SECRET)
    assert not signature_valid(body, "", SECRET)
    assert not signature_valid(body, "not base64 at all!", SECRET)
    assert not signature_valid(body, "čšž==", SECRET)
    assert not signature_valid(body, hex_digest, SECRET)
    assert not signature_valid(body, signature[:-4], SECRET)


def test_a_signature_of_the_previous_secret_is_valid_during_a_rotation() -> None:
    body = b'{"id": 727}'
    assert signed_by_any(body, sign(body, "old"), ["new", "old"])
    assert not signed_by_any(body, sign(body, "older"), ["new", "old"])


def test_signature_with_an_unset_secret_is_never_valid() -> None:
    body = b'{"id": 727}'
    assert not signature_valid(body, sign(body, ""), "")


# --- an order the imported history told ----------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "told_amounts"),
    [
        ("0", ["77.49", "38.75"]),  # no history: both refunds as they are
        ("38.75", ["38.74", "38.75"]),  # the history told one of them (the export names neither): the rest is told
        ("116.24", []),  # the history told them all
        ("200.00", []),
    ],
)
def test_refunds_of_an_imported_order_are_told_only_beyond_what_its_history_told(
    history: str, told_amounts: list[str]
) -> None:
    """An export gives an order's refunds as one sum under no refund id; a webhook about that order later lists
    them one by one. Both are one set of refunds: what the history told is matched first, the rest is told."""
    imported = replace(WOO_PLACED, fulfilled=True)
    later = news(woocommerce, "order.updated", webhook("woocommerce/order_updated_refunded"))
    decision = decide(imported, later, at=AT, told_by_history=Decimal(history))
    amounts = [str(t.data.amount) for t in decision.events if hasattr(t.data, "amount")]
    assert amounts == told_amounts
    assert sum(map(Decimal, amounts), Decimal(0)) == max(Decimal("116.24") - Decimal(history), Decimal(0))
    assert decision.known.matched_with_history == min(Decimal(history), Decimal("116.24"))
    assert decide(decision.known, later, at=AT, told_by_history=Decimal(history)).events == ()  # the next one


def test_a_refund_after_the_history_is_told_in_full() -> None:
    imported, history = replace(WOO_PLACED, fulfilled=True), Decimal("38.75")
    first = webhook("woocommerce/order_updated_completed")
    first["refunds"] = [{"id": 731, "reason": "Scarf arrived with a pulled thread", "total": "-38.75"}]
    matched = decide(imported, news(woocommerce, "order.updated", first), at=AT, told_by_history=history)
    assert matched.events == ()  # the refund the history told
    later = news(woocommerce, "order.updated", webhook("woocommerce/order_updated_refunded"))
    told_later = decide(matched.known, later, at=AT, told_by_history=history)
    assert [(t.event_id, str(t.data.amount)) for t in told_later.events if hasattr(t.data, "amount")] == [
        ("woocommerce:refund:735", "77.49")
    ]
