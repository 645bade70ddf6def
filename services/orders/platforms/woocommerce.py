"""WooCommerce webhooks as canonical order events: a pure translation, no I/O.

Payloads are REST API v3 order objects, which is what WooCommerce posts for order topics.
WooCommerce re-sends the whole order on every change, so each event id is derived from the
order's or refund's id and a repeated fact gets the id it had the first time.

    order.created → OrderPlaced                       event id woocommerce:order:<id>:placed
                    and whatever order.updated would give, for orders entered already completed or refunded
    order.updated → OrderFulfilled when status is "completed"   woocommerce:order:<id>:fulfilled
                    and one OrderRefunded per refunds[] entry   woocommerce:refund:<refund id>
                    (any other status, and no refunds: nothing, [])

OrderPlaced                  ← WooCommerce order
  order_id                   ← id
  customer.customer_id       ← customer_id; 0 is a guest checkout: "guest:" + billing.email, lower-cased
  customer.email             ← billing.email
  customer names and phone   ← billing.first_name, last_name, phone
  customer.city, region, country ← billing.city, state, country
  placed_at                  ← date_created_gmt, which is UTC written without an offset
  currency, total            ← currency, total
  line_items[]               ← line_items[]: sku (else variation_id, else product_id, when not 0),
                               name (HTML entities decoded), quantity, price — a JSON number, taken
                               exactly through its decimal text and rounded to the currency's minor unit
  discount_codes             ← coupon_lines[].code
  referral_code              ← the meta_data entry with key "referral_code"
  shipping_address           ← shipping: address_1, address_2, postcode, city, state, country; only when
                               address_1 is filled in, and left out when it lacks a city, postcode or country
OrderFulfilled               ← order_id and customer_id as for OrderPlaced; fulfilled_at from
                               date_completed_gmt, else date_modified_gmt
OrderRefunded                ← refunds[] entry: refund_id from id, amount = |total| (WooCommerce writes
                               "-10.00"), reason; currency of the order; refunded_at = date_modified_gmt, as
                               the entry has no date of its own; a refund of 0.00 (a restock only) is no event
"""

import html
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from services.orders.platforms.common import Reading, Translation, UntranslatableWebhook, guest_id, line_sku
from shared.events import OrderFulfilled, OrderPlaced, OrderRefunded

# ISO 4217 minor units where they are not 2; WooCommerce's JSON prices carry more digits than that.
_WHOLE_UNITS = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF".split()  # noqa: SIM905 - as ISO lists them
_THOUSANDTHS = "BHD IQD JOD KWD LYD OMR TND".split()  # noqa: SIM905 - as ISO lists them
_MINOR_UNITS = {**dict.fromkeys(_WHOLE_UNITS, 0), **dict.fromkeys(_THOUSANDTHS, 3)}
_REASON_LENGTH = 500


def translate(topic: str, payload: dict[str, Any]) -> list[Translation]:
    """The canonical events a WooCommerce order webhook stands for, in the order they happened."""
    if topic == "order.created":
        return [_order_placed(payload), *_fulfilment_and_refunds(payload)]
    if topic == "order.updated":
        return _fulfilment_and_refunds(payload)
    raise UntranslatableWebhook(f"WooCommerce topic {topic!r} is not one we translate")


def _order_placed(order: dict[str, Any]) -> Translation:
    reading = Reading(order)
    order_id = str(reading.take("order_id", "id", required=True))
    currency = reading.take("currency", "currency", required=True)
    customer = {
        "customer_id": _customer_id(reading, "customer.customer_id"),
        "email": reading.take("customer.email", "billing.email", required=True),
        "first_name": reading.take("customer.first_name", "billing.first_name"),
        "last_name": reading.take("customer.last_name", "billing.last_name"),
        "phone": reading.take("customer.phone", "billing.phone"),
        "city": reading.take("customer.city", "billing.city"),
        "region": reading.take("customer.region", "billing.state"),
        "country": reading.take("customer.country", "billing.country"),
    }
    items = reading.take_list("line_items", "line_items", required=True)
    coupons = reading.take_list("discount_codes", "coupon_lines")
    data = {
        "order_id": order_id,
        "customer": customer,
        "placed_at": reading.take_time("placed_at", "date_created_gmt", naive_is_utc=True),
        "currency": currency,
        "total": reading.take_amount("total", "total"),
        "line_items": [_line_item(reading, index, currency) for index in range(len(items))],
        "discount_codes": [reading.take(f"discount_codes.{i}", f"coupon_lines.{i}.code") for i in range(len(coupons))],
        "referral_code": _referral_code(reading),
        "shipping_address": _shipping_address(reading),
    }
    return Translation(f"woocommerce:order:{order_id}:placed", reading.build(OrderPlaced, data))


def _fulfilment_and_refunds(order: dict[str, Any]) -> list[Translation]:
    reading = Reading(order)
    order_id = str(reading.take("order_id", "id", required=True))
    completed = reading.take("status", "status") == "completed"
    refunds = reading.take_list("refunds", "refunds")
    if not completed and not refunds:
        return []
    customer_id = _customer_id(reading, "customer_id")
    translations = []
    if completed:
        fulfilled = {
            "order_id": order_id,
            "customer_id": customer_id,
            "fulfilled_at": reading.take_time(
                "fulfilled_at", "date_completed_gmt", "date_modified_gmt", naive_is_utc=True
            ),
        }
        translations.append(
            Translation(f"woocommerce:order:{order_id}:fulfilled", reading.build(OrderFulfilled, fulfilled))
        )
    for index in range(len(refunds)):
        refund = f"refunds.{index}"
        refund_id = str(reading.take("refund_id", f"{refund}.id", required=True))
        amount = abs(reading.take_amount("amount", f"{refund}.total"))
        if not amount:
            continue
        # v3 calls the reason "reason"; the v2 controller wrote it under "refund".
        reason = reading.take("reason", f"{refund}.reason", f"{refund}.refund")
        refunded = {
            "refund_id": refund_id,
            "order_id": order_id,
            "customer_id": customer_id,
            "amount": amount,
            "currency": reading.take("currency", "currency", required=True),
            "refunded_at": reading.take_time("refunded_at", "date_modified_gmt", naive_is_utc=True),
            "reason": str(reason)[:_REASON_LENGTH] if reason is not None else None,
        }
        translations.append(Translation(f"woocommerce:refund:{refund_id}", reading.build(OrderRefunded, refunded)))
    return translations


def _customer_id(reading: Reading, field: str) -> str:
    woocommerce_id = reading.take(field, "customer_id")
    if woocommerce_id is not None and str(woocommerce_id) != "0":
        return str(woocommerce_id)
    return guest_id(reading.take(field, "billing.email", required=True))


def _line_item(reading: Reading, index: int, currency: Any) -> dict[str, Any]:
    item = f"line_items.{index}"
    name = reading.take(f"{item}.name", f"{item}.name", required=True)
    return {
        "sku": line_sku(reading, item, f"{item}.variation_id", f"{item}.product_id"),
        "name": html.unescape(name) if isinstance(name, str) else name,
        "quantity": reading.take(f"{item}.quantity", f"{item}.quantity", required=True),
        "unit_price": _in_minor_units(reading.take_amount(f"{item}.unit_price", f"{item}.price"), currency, item),
    }


def _in_minor_units(price: Decimal, currency: Any, item: str) -> Decimal:
    # WooCommerce's price is the line total over the quantity: 25.00 / 3 arrives as 8.333333333333334.
    try:
        return price.quantize(Decimal(1).scaleb(-_MINOR_UNITS.get(str(currency), 2)), rounding=ROUND_HALF_UP)
    except InvalidOperation:  # more digits than a Decimal holds: no price a shop charges
        raise UntranslatableWebhook(f"{item}.price is out of range: {price}", f"{item}.price") from None


def _referral_code(reading: Reading) -> str | None:
    for index, meta in enumerate(reading.take_list("referral_code", "meta_data")):
        if isinstance(meta, dict) and meta.get("key") == "referral_code":
            code = reading.take("referral_code", f"meta_data.{index}.value")
            if code is not None:
                return str(code)
    return None


def _shipping_address(reading: Reading) -> dict[str, Any] | None:
    address = {
        "line1": reading.take("shipping_address.line1", "shipping.address_1"),
        "line2": reading.take("shipping_address.line2", "shipping.address_2"),
        "postal_code": reading.take("shipping_address.postal_code", "shipping.postcode"),
        "city": reading.take("shipping_address.city", "shipping.city"),
        "region": reading.take("shipping_address.region", "shipping.state"),
        "country": reading.take("shipping_address.country", "shipping.country"),
    }
    # No shipping for virtual goods; no postcode in some countries: the order still stands without it.
    if any(address[part] is None for part in ("line1", "postal_code", "city", "country")):
        return None
    return address
