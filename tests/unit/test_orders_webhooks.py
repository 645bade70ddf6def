"""Shopify and WooCommerce webhooks become exactly the canonical events we expect, or a 422 naming the field."""

import base64
import copy
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from services.orders.platforms import Translation, UntranslatableWebhook, shopify, signature_valid, woocommerce

WEBHOOKS = Path(__file__).parents[1] / "fixtures" / "webhooks"
SECRET = "whsec_0c5f1d7a9b3e4c2d8f6a"


def webhook(name: str) -> dict[str, Any]:
    """A fixture payload, e.g. "shopify/orders_create", freshly loaded so a test may change it."""
    loaded: dict[str, Any] = json.loads((WEBHOOKS / f"{name}.json").read_text())
    return loaded


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
    assert on_the_wire(shopify.translate("orders/create", webhook("shopify/orders_create"))) == [
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
                    "accepts_marketing": None,
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
                "order_number": None,
            },
        )
    ]


def test_shopify_orders_fulfilled_is_handed_over_with_the_last_fulfillment() -> None:
    assert on_the_wire(shopify.translate("orders/fulfilled", webhook("shopify/orders_fulfilled"))) == [
        (
            "shopify:order:450789469:fulfilled",
            {"order_id": "450789469", "customer_id": "207119551", "fulfilled_at": "2026-11-04T16:00:00+01:00"},
        )
    ]


def test_shopify_refunds_create_adds_up_the_refunded_transactions() -> None:
    refund = webhook("shopify/refunds_create")  # 5.00 back to a gift card, 6.25 back to the card
    assert on_the_wire(shopify.translate("refunds/create", refund, customer_id="207119551")) == [
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
    [translation] = shopify.translate("refunds/create", refund, customer_id="207119551")
    assert translation.data.model_dump(mode="json")["amount"] == "11.25"


def test_shopify_refund_that_returned_no_money_is_no_event() -> None:
    refund = webhook("shopify/refunds_create")
    for transaction in refund["transactions"]:
        transaction["status"] = "failure"
    assert shopify.translate("refunds/create", refund, customer_id="207119551") == []
    refund["transactions"] = []  # a restock-only refund
    assert shopify.translate("refunds/create", refund) == []


def test_shopify_refund_for_an_order_not_known_yet_names_order_id() -> None:
    error = refused(shopify.translate, "refunds/create", webhook("shopify/refunds_create"), customer_id=None)
    assert error.field == "order_id"
    assert "450789469 is not known yet" in error.reason


def test_shopify_guest_checkout_is_keyed_by_the_lower_cased_email() -> None:
    order = webhook("shopify/orders_fulfilled")
    order["customer"] = None
    order["email"] = order["contact_email"] = "Guest.Buyer@Example.com"
    [placed] = shopify.translate("orders/create", copy.deepcopy(order))
    [fulfilled] = shopify.translate("orders/fulfilled", order)
    customer = placed.data.model_dump(mode="json")["customer"]
    assert customer["customer_id"] == "guest:guest.buyer@example.com"
    assert customer["email"] == "Guest.Buyer@example.com"
    assert (customer["first_name"], customer["last_name"]) == ("Eva", "Nováková")  # from the billing address
    assert fulfilled.data.model_dump(mode="json")["customer_id"] == "guest:guest.buyer@example.com"


def test_shopify_sku_falls_back_to_the_variant_then_the_product() -> None:
    order = webhook("shopify/orders_create")
    set_at(order, "line_items.1.variant_id", None)
    [placed] = shopify.translate("orders/create", order)
    assert [item["sku"] for item in placed.data.model_dump(mode="json")["line_items"]] == ["MUG-RED", "921728736"]


def test_shopify_line_without_sku_variant_or_product_is_refused() -> None:
    order = webhook("shopify/orders_create")
    set_at(order, "line_items.1.variant_id", None)
    set_at(order, "line_items.1.product_id", None)
    error = refused(shopify.translate, "orders/create", order)
    assert error.field == "line_items.1.sku"


@pytest.mark.parametrize(
    ("attributes", "expected"), [([{"name": "ref", "value": "FRIEND-42"}], "FRIEND-42"), ([], None)]
)
def test_shopify_referral_code_comes_from_the_note_attributes(
    attributes: list[dict[str, str]], expected: str | None
) -> None:
    order = webhook("shopify/orders_create")
    order["note_attributes"] = [{"name": "gift_message", "value": "Happy name day!"}, *attributes]
    [placed] = shopify.translate("orders/create", order)
    assert placed.data.model_dump(mode="json")["referral_code"] == expected


@pytest.mark.parametrize("locale", ["en_US", "xx-XX", "12", ""])
def test_shopify_locale_the_contract_refuses_is_dropped_not_fatal(locale: str) -> None:
    order = webhook("shopify/orders_create")
    order["customer_locale"] = locale
    [placed] = shopify.translate("orders/create", order)
    assert placed.data.model_dump(mode="json")["customer"]["locale"] is None


def test_shopify_without_a_shipping_address_the_customer_lives_at_the_billing_address() -> None:
    order = webhook("shopify/orders_create")
    order["shipping_address"] = None
    order["billing_address"].update(city="Toronto", province="Ontario", country_code="CA")
    [placed] = shopify.translate("orders/create", order)
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
    [placed] = shopify.translate("orders/create", order)
    assert placed.data.model_dump(mode="json")["shipping_address"] is None


def test_shopify_fulfilled_at_ignores_cancelled_fulfillments_and_falls_back_to_updated_at() -> None:
    order = webhook("shopify/orders_fulfilled")
    order["fulfillments"].append(
        {**order["fulfillments"][0], "id": 255858048, "created_at": "2026-11-05T08:00:00+01:00", "status": "cancelled"}
    )
    [fulfilled] = shopify.translate("orders/fulfilled", order)
    assert fulfilled.data.model_dump(mode="json")["fulfilled_at"] == "2026-11-04T16:00:00+01:00"
    order["fulfillments"] = []
    [fulfilled] = shopify.translate("orders/fulfilled", order)
    assert fulfilled.data.model_dump(mode="json")["fulfilled_at"] == "2026-11-04T16:00:05+01:00"


@pytest.mark.parametrize(
    ("removed", "field"),
    [
        (("email", "contact_email", "customer.email"), "email"),
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
    error = refused(shopify.translate, "orders/create", order)
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
    error = refused(shopify.translate, "orders/create", order)
    assert error.field == field
    assert error.reason.startswith(field)


# --- WooCommerce --------------------------------------------------------------------------


def test_woocommerce_order_created_is_an_order_placed() -> None:
    assert on_the_wire(woocommerce.translate("order.created", webhook("woocommerce/order_created"))) == [
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
                "order_number": None,
            },
        )
    ]


def test_woocommerce_completed_order_is_fulfilled() -> None:
    assert on_the_wire(woocommerce.translate("order.updated", webhook("woocommerce/order_updated_completed"))) == [
        (
            "woocommerce:order:727:fulfilled",
            {"order_id": "727", "customer_id": "guest:aoife.byrne@example.ie", "fulfilled_at": "2026-06-15T09:20:44Z"},
        )
    ]


def test_woocommerce_each_refund_is_an_order_refunded() -> None:
    # Status "refunded": the order is no longer reported as fulfilled, each refund is.
    assert on_the_wire(woocommerce.translate("order.updated", webhook("woocommerce/order_updated_refunded"))) == [
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


@pytest.mark.parametrize("status", ["processing", "on-hold", "pending", "cancelled", "failed"])
def test_woocommerce_update_in_any_other_status_without_refunds_is_nothing(status: str) -> None:
    order = webhook("woocommerce/order_created")
    order["status"] = status
    assert woocommerce.translate("order.updated", order) == []


def test_woocommerce_order_created_already_completed_and_refunded_is_all_three_events() -> None:
    order = webhook("woocommerce/order_updated_completed")
    order["refunds"] = [{"id": 731, "reason": "Scarf arrived with a pulled thread", "total": "-38.75"}]
    assert [translation.event_id for translation in woocommerce.translate("order.created", order)] == [
        "woocommerce:order:727:placed",
        "woocommerce:order:727:fulfilled",
        "woocommerce:refund:731",
    ]


def test_woocommerce_later_updates_repeat_earlier_events_under_the_same_ids() -> None:
    first = webhook("woocommerce/order_updated_completed")
    first["refunds"] = [{"id": 731, "reason": "Scarf arrived with a pulled thread", "total": "-38.75"}]
    first_ids = [translation.event_id for translation in woocommerce.translate("order.updated", first)]
    later_ids = [
        translation.event_id
        for translation in woocommerce.translate("order.updated", webhook("woocommerce/order_updated_refunded"))
    ]
    assert first_ids == ["woocommerce:order:727:fulfilled", "woocommerce:refund:731"]
    assert later_ids == ["woocommerce:refund:735", "woocommerce:refund:731"]


def test_woocommerce_refund_of_nothing_is_no_event() -> None:
    order = webhook("woocommerce/order_updated_refunded")
    order["refunds"][0]["total"] = "-0.00"
    assert [translation.event_id for translation in woocommerce.translate("order.updated", order)] == [
        "woocommerce:refund:731"
    ]


def test_woocommerce_registered_customer_keeps_their_id() -> None:
    order = webhook("woocommerce/order_updated_refunded")
    order["customer_id"] = 12
    [placed, *refunds] = woocommerce.translate("order.created", order)
    assert placed.data.model_dump(mode="json")["customer"]["customer_id"] == "12"
    assert [refund.data.model_dump(mode="json")["customer_id"] for refund in refunds] == ["12", "12"]


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
    [placed] = woocommerce.translate("order.created", order)
    assert placed.data.model_dump(mode="json")["line_items"][0]["unit_price"] == unit_price


def test_woocommerce_sku_falls_back_to_the_variation_then_the_product() -> None:
    order = webhook("woocommerce/order_created")
    order["line_items"][1]["variation_id"] = 0
    [placed] = woocommerce.translate("order.created", order)
    assert [item["sku"] for item in placed.data.model_dump(mode="json")["line_items"]] == ["SCARF-ARAN-NAT", "22"]
    order["line_items"][1]["product_id"] = 0  # the product was deleted since
    assert refused(woocommerce.translate, "order.created", order).field == "line_items.1.sku"


def test_woocommerce_order_without_a_shipping_street_has_no_shipping_address() -> None:
    order = webhook("woocommerce/order_created")
    order["shipping"] = dict.fromkeys(order["shipping"], "")  # virtual goods: WooCommerce sends empty strings
    [placed] = woocommerce.translate("order.created", order)
    assert placed.data.model_dump(mode="json")["shipping_address"] is None


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("billing.email", "billing.email"),
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
    error = refused(woocommerce.translate, "order.created", order)
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
    error = refused(woocommerce.translate, "order.created", order)
    assert error.field == field
    assert error.reason.startswith(field)


# --- both platforms -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("translate", "topic"),
    [
        (shopify.translate, "orders/cancelled"),
        (shopify.translate, "products/update"),
        (woocommerce.translate, "order.deleted"),
        (woocommerce.translate, "product.created"),
    ],
)
def test_unhandled_topic_is_refused_without_a_field(translate: Any, topic: str) -> None:
    error = refused(translate, topic, {"id": 1})
    assert error.field is None
    assert repr(topic) in error.reason


@pytest.mark.parametrize("translate", [shopify.translate, woocommerce.translate])
def test_body_that_is_not_a_json_object_is_refused(translate: Any) -> None:
    topic = "orders/create" if translate is shopify.translate else "order.created"
    assert refused(translate, topic, [{"id": 1}]).field is None


@pytest.mark.parametrize(
    ("translate", "topic", "name", "arguments"),
    [
        (shopify.translate, "orders/create", "shopify/orders_create", {}),
        (shopify.translate, "orders/fulfilled", "shopify/orders_fulfilled", {}),
        (shopify.translate, "refunds/create", "shopify/refunds_create", {"customer_id": "207119551"}),
        (woocommerce.translate, "order.created", "woocommerce/order_created", {}),
        (woocommerce.translate, "order.updated", "woocommerce/order_updated_completed", {}),
        (woocommerce.translate, "order.updated", "woocommerce/order_updated_refunded", {}),
    ],
)
def test_the_same_webhook_delivered_twice_gives_the_same_events(
    translate: Any, topic: str, name: str, arguments: dict[str, Any]
) -> None:
    first = translate(topic, webhook(name), **arguments)
    again = translate(topic, webhook(name), **arguments)
    assert first  # something to de-duplicate
    assert on_the_wire(again) == on_the_wire(first)


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


def test_signature_with_an_unset_secret_is_never_valid() -> None:
    body = b'{"id": 727}'
    assert not signature_valid(body, sign(body, ""), "")
