"""Shopify webhooks as canonical order events: a pure translation, no I/O.

Payloads are the REST Admin API's Order and Refund resources, as Shopify posts them.

    orders/create    → OrderPlaced     event id shopify:order:<id>:placed
    orders/fulfilled → OrderFulfilled  event id shopify:order:<id>:fulfilled
    refunds/create   → OrderRefunded   event id shopify:refund:<id>

OrderPlaced                  ← Shopify order
  order_id                   ← id
  customer.customer_id       ← customer.id; a guest checkout (no customer) is "guest:" + the e-mail, lower-cased
  customer.email             ← email, else contact_email, else customer.email
  customer.first_name, last_name ← customer's, else billing_address's, else shipping_address's
  customer.phone             ← phone, else customer.phone, else billing_address.phone
  customer.locale            ← customer_locale, left out when it is not a BCP 47 tag
  customer.city, region, country ← shipping_address city, province, country_code; without a shipping
                               address, billing_address's (one address, never a mix of two)
  placed_at                  ← created_at
  currency, total            ← currency, total_price (the shop's currency, as line item prices are)
  line_items[]               ← line_items[]: sku (else variant_id, else product_id), title, quantity, price
  discount_codes             ← discount_codes[].code
  referral_code              ← the note_attributes entry named "referral_code" (or "ref")
  shipping_address           ← shipping_address: address1, address2, zip, city, province, country_code;
                               left out when it has no street, city, postcode or country
OrderFulfilled               ← Shopify order
  order_id, customer_id      ← as for OrderPlaced
  fulfilled_at               ← the latest created_at of fulfillments that were not cancelled or failed,
                               else updated_at
OrderRefunded                ← Shopify refund
  refund_id, order_id        ← id, order_id
  customer_id                ← the `customer_id` argument: a refund does not name its customer, the caller
                               looks the order up; unknown → UntranslatableWebhook on "order_id"
  amount, currency           ← the sum and currency of transactions of kind "refund" with status "success";
                               a refund that moved no money (a restock only) is no event: []
  refunded_at                ← created_at, else processed_at
  reason                     ← note, cut to the contract's 500 characters
"""

from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from services.orders.platforms.common import (
    OrderNotKnownYet,
    Reading,
    Translation,
    UntranslatableWebhook,
    guest_id,
    line_sku,
)
from shared.events import OrderFulfilled, OrderPlaced, OrderRefunded
from shared.types import Locale

_EMAIL = ("email", "contact_email", "customer.email")
_REFERRAL_NAMES = ("referral_code", "ref")
_NOT_HANDED_OVER = {"cancelled", "error", "failure"}
_LOCALE: TypeAdapter[str] = TypeAdapter(Locale)
_REASON_LENGTH = 500


def translate(topic: str, payload: dict[str, Any], *, customer_id: str | None = None) -> list[Translation]:
    """The canonical events a Shopify webhook stands for; `customer_id` is needed for refunds/create only."""
    if topic == "orders/create":
        return [_order_placed(payload)]
    if topic == "orders/fulfilled":
        return [_order_fulfilled(payload)]
    if topic == "refunds/create":
        return _order_refunded(payload, customer_id)
    raise UntranslatableWebhook(f"Shopify topic {topic!r} is not one we translate")


def _order_placed(order: dict[str, Any]) -> Translation:
    reading = Reading(order)
    order_id = str(reading.take("order_id", "id", required=True))
    address = "shipping_address" if order.get("shipping_address") else "billing_address"
    customer = {
        "customer_id": _customer_id(reading, "customer.customer_id"),
        "email": reading.take("customer.email", *_EMAIL, required=True),
        "first_name": reading.take(
            "customer.first_name", "customer.first_name", "billing_address.first_name", "shipping_address.first_name"
        ),
        "last_name": reading.take(
            "customer.last_name", "customer.last_name", "billing_address.last_name", "shipping_address.last_name"
        ),
        "phone": reading.take("customer.phone", "phone", "customer.phone", "billing_address.phone"),
        "locale": _known_locale(reading.take("customer.locale", "customer_locale")),
        "city": reading.take("customer.city", f"{address}.city"),
        "region": reading.take("customer.region", f"{address}.province"),
        "country": reading.take("customer.country", f"{address}.country_code"),
    }
    items = reading.take_list("line_items", "line_items", required=True)
    codes = reading.take_list("discount_codes", "discount_codes")
    data = {
        "order_id": order_id,
        "customer": customer,
        "placed_at": reading.take_time("placed_at", "created_at"),
        "currency": reading.take("currency", "currency", required=True),
        "total": reading.take("total", "total_price", required=True),
        "line_items": [_line_item(reading, index) for index in range(len(items))],
        "discount_codes": [reading.take(f"discount_codes.{i}", f"discount_codes.{i}.code") for i in range(len(codes))],
        "referral_code": _referral_code(reading),
        "shipping_address": _shipping_address(reading),
    }
    return Translation(f"shopify:order:{order_id}:placed", reading.build(OrderPlaced, data))


def _order_fulfilled(order: dict[str, Any]) -> Translation:
    reading = Reading(order)
    order_id = str(reading.take("order_id", "id", required=True))
    data = {
        "order_id": order_id,
        "customer_id": _customer_id(reading, "customer_id"),
        "fulfilled_at": _fulfilled_at(reading),
    }
    return Translation(f"shopify:order:{order_id}:fulfilled", reading.build(OrderFulfilled, data))


def _order_refunded(refund: dict[str, Any], customer_id: str | None) -> list[Translation]:
    reading = Reading(refund)
    refund_id = str(reading.take("refund_id", "id", required=True))
    order_id = str(reading.take("order_id", "order_id", required=True))
    transactions = reading.take_list("amount", "transactions")
    refunded = [
        f"transactions.{index}"
        for index, transaction in enumerate(transactions)
        if isinstance(transaction, dict)
        and (transaction.get("kind"), transaction.get("status")) == ("refund", "success")
    ]
    if not refunded:
        return []
    if not customer_id:
        raise OrderNotKnownYet(
            f"order {order_id} is not known yet, so neither is the customer this refund is for", "order_id"
        )
    currencies = {_refund_currency(reading, transaction) for transaction in refunded}
    if len(currencies) > 1:
        raise UntranslatableWebhook(
            f"refund transactions are in several currencies: {sorted(currencies)}", "transactions"
        )
    reason = reading.take("reason", "note")
    data = {
        "refund_id": refund_id,
        "order_id": order_id,
        "customer_id": customer_id,
        "amount": sum(reading.take_amount("amount", f"{transaction}.amount") for transaction in refunded),
        "currency": currencies.pop(),
        "refunded_at": reading.take_time("refunded_at", "created_at", "processed_at"),
        "reason": str(reason)[:_REASON_LENGTH] if reason is not None else None,
    }
    reading.record("amount", "transactions")
    return [Translation(f"shopify:refund:{refund_id}", reading.build(OrderRefunded, data))]


def _customer_id(reading: Reading, field: str) -> str:
    shopify_id = reading.take(field, "customer.id")
    if shopify_id is not None:
        return str(shopify_id)
    return guest_id(reading.take(field, *_EMAIL, required=True))


def _known_locale(locale: Any) -> str | None:
    # A locale the contract would refuse costs us a greeting language, not the order.
    try:
        return _LOCALE.validate_python(locale)
    except ValidationError:
        return None


def _line_item(reading: Reading, index: int) -> dict[str, Any]:
    item = f"line_items.{index}"
    return {
        "sku": line_sku(reading, item, f"{item}.variant_id", f"{item}.product_id"),
        "name": reading.take(f"{item}.name", f"{item}.title", f"{item}.name", required=True),
        "quantity": reading.take(f"{item}.quantity", f"{item}.quantity", required=True),
        "unit_price": reading.take(f"{item}.unit_price", f"{item}.price", required=True),
    }


def _referral_code(reading: Reading) -> str | None:
    for index, attribute in enumerate(reading.take_list("referral_code", "note_attributes")):
        if isinstance(attribute, dict) and str(attribute.get("name", "")).strip().lower() in _REFERRAL_NAMES:
            code = reading.take("referral_code", f"note_attributes.{index}.value")
            if code is not None:
                return str(code)
    return None


def _shipping_address(reading: Reading) -> dict[str, Any] | None:
    address = {
        "line1": reading.take("shipping_address.line1", "shipping_address.address1"),
        "line2": reading.take("shipping_address.line2", "shipping_address.address2"),
        "postal_code": reading.take("shipping_address.postal_code", "shipping_address.zip"),
        "city": reading.take("shipping_address.city", "shipping_address.city"),
        "region": reading.take("shipping_address.region", "shipping_address.province"),
        "country": reading.take("shipping_address.country", "shipping_address.country_code"),
    }
    # Countries without postcodes, pickup orders: the contract's address needs all four, the order does not.
    if any(address[part] is None for part in ("line1", "postal_code", "city", "country")):
        return None
    return address


def _fulfilled_at(reading: Reading) -> datetime:
    handed_over = [
        reading.take_time("fulfilled_at", f"fulfillments.{index}.created_at")
        for index, fulfillment in enumerate(reading.take_list("fulfilled_at", "fulfillments"))
        if isinstance(fulfillment, dict) and fulfillment.get("status") not in _NOT_HANDED_OVER
    ]
    if handed_over:
        reading.record("fulfilled_at", "fulfillments")
        return max(handed_over)
    return reading.take_time("fulfilled_at", "updated_at")


def _refund_currency(reading: Reading, transaction: str) -> str:
    money_sets = ("refund_line_items.0.subtotal_set", "order_adjustments.0.amount_set", "total_duties_set")
    return str(
        reading.take(
            "currency",
            f"{transaction}.currency",
            *(f"{money_set}.presentment_money.currency_code" for money_set in money_sets),
            required=True,
        )
    )
