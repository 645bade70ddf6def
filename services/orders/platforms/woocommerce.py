"""WooCommerce webhooks as what they say about an order (`OrderNews`): a pure reading, no I/O.

Payloads are REST API v3 order objects, which is what WooCommerce posts for order topics; it re-sends
the whole order on every change, so every order topic is read the same way and `lifecycle.decide`
tells each fact once, whichever delivery brings it first.

    order.created, order.updated,   the whole order: it counts (is placed) in status processing, completed or
    order.restored                  refunded (paid; refunded orders were paid first); pending, on-hold (awaiting
                                    a bank transfer or cheque), failed, cancelled, checkout-draft and trash do not
                                    count yet; fulfilled when completed (date_completed_gmt); refunds[] inside;
                                    cancelled when the status is cancelled or failed (a counted order that fails
                                    was taken back); an order that never counted may still be paid later
    order.deleted                   only {"id": N}: cancelled if it was counted (a restored order stays cancelled)
    any other topic                 ignored, counted

OrderPlaced                  ← WooCommerce order
  order_id                   ← id
  order_number               ← number, as WooCommerce shows it: "#" + number when it is a plain number ("#727"),
                               as written when a plugin formats it ("WC-2026-0042")
  customer.customer_id       ← customer_id; 0 is a guest checkout: "guest:" + billing.email, lower-cased; with no
                               e-mail either, "guest:woocommerce:order:<id>"
  customer.email             ← billing.email; none: the stand-in `shared.events.no_email_for(customer id)`
  customer names and phone   ← billing.first_name, last_name, phone
  customer.city, region, country ← billing.city, state, country
  customer.accepts_marketing ← WooCommerce has no field of its own: a meta_data entry "accepts_marketing" or
                               "marketing_consent" (yes/no, 1/0), as consent plugins write them, else absent
  placed_at                  ← date_created_gmt, which is UTC written without an offset
  currency, total            ← currency, total
  line_items[]               ← line_items[]: sku (else variation_id, else product_id, when not 0, else a stand-in
                               from the name, `no-sku:tweed-cap-m`), name (HTML entities decoded), quantity, price
                               — a JSON number, taken exactly through its decimal text and rounded to the
                               currency's minor unit
  discount_codes             ← coupon_lines[].code
  referral_code              ← the meta_data entry with key "referral_code"
  shipping_address           ← shipping: address_1, address_2, postcode, city, state, country; only when
                               address_1 is filled in, and left out when it lacks a city, postcode or country
OrderFulfilled               ← fulfilled_at from date_completed_gmt, else date_modified_gmt
OrderRefunded                ← refunds[] entry: refund_id from id, amount = |total| (WooCommerce writes "-10.00"),
                               reason; currency of the order; refunded_at = the entry's date_created_gmt when the
                               payload has one, else when Rapport first saw the refund (that delivery's
                               date_modified_gmt), never a later delivery's; a refund of 0.00 (a restock only)
                               is no event
OrderCancelled               ← date_modified_gmt (the deletion: when it arrived), the status as the reason
"""

import html
from decimal import Decimal, InvalidOperation
from typing import Any

from services.orders.platforms.common import (
    Ignored,
    OrderNews,
    Reading,
    RefundNews,
    UntranslatableWebhook,
    Webhook,
    anonymous_guest_id,
    guest_id,
    in_minor_units,
    line_sku,
    marketing_consent,
)
from shared.events import OrderPlaced, no_email_for

PLATFORM = "woocommerce"
ORDER_TOPICS = frozenset({"order.created", "order.updated", "order.restored"})
COUNTING = frozenset({"processing", "completed", "refunded"})
CANCELLING = frozenset({"cancelled", "failed"})
_CONSENT_KEYS = ("accepts_marketing", "marketing_consent")
_REASON_LENGTH = 500


def read(topic: str, payload: dict[str, Any]) -> Webhook:
    """What a WooCommerce webhook says about its order, or nothing we translate."""
    reading = Reading(payload)
    if topic in ORDER_TOPICS:
        return _order_news(reading)
    if topic == "order.deleted":
        return OrderNews(PLATFORM, str(reading.take("order_id", "id", required=True)), removed=True)
    return Ignored("topic not translated")


def _order_news(reading: Reading) -> OrderNews:
    order = _order_placed(reading)
    status = reading.take("status", "status")
    completed = reading.take("date_completed_gmt", "date_completed_gmt") is not None or status == "completed"
    changed_at = reading.take_time("date_modified_gmt", "date_modified_gmt", "date_created_gmt", naive_is_utc=True)
    refunds = reading.take_list("refunds", "refunds")
    return OrderNews(
        platform=PLATFORM,
        order_id=order.order_id,
        order=order,
        counts=status in COUNTING,
        fulfilled_at=(
            reading.take_time("fulfilled_at", "date_completed_gmt", "date_modified_gmt", naive_is_utc=True)
            if completed
            else None
        ),
        refunds=tuple(_refund(reading, index, order.currency) for index in range(len(refunds))),
        cancelled_at=changed_at if status in CANCELLING else None,
        cancel_reason=str(status) if status in CANCELLING else None,
        changed_at=changed_at,
    )


def _order_placed(reading: Reading) -> OrderPlaced:
    order_id = str(reading.take("order_id", "id", required=True))
    currency = reading.take("currency", "currency", required=True)
    customer_id = _customer_id(reading, "customer.customer_id", order_id)
    customer = {
        "customer_id": customer_id,
        "email": reading.take("customer.email", "billing.email") or no_email_for(customer_id),
        "first_name": reading.take("customer.first_name", "billing.first_name"),
        "last_name": reading.take("customer.last_name", "billing.last_name"),
        "phone": reading.take("customer.phone", "billing.phone"),
        "city": reading.take("customer.city", "billing.city"),
        "region": reading.take("customer.region", "billing.state"),
        "country": reading.take("customer.country", "billing.country"),
        "accepts_marketing": _accepts_marketing(reading),
    }
    items = reading.take_list("line_items", "line_items", required=True)
    coupons = reading.take_list("discount_codes", "coupon_lines")
    number = reading.take("order_number", "number")
    data = {
        "order_id": order_id,
        "order_number": None if number is None else (f"#{number}" if str(number).isdigit() else str(number)),
        "customer": customer,
        "placed_at": reading.take_time("placed_at", "date_created_gmt", naive_is_utc=True),
        "currency": currency,
        "total": reading.take_amount("total", "total"),
        "line_items": [_line_item(reading, index, currency) for index in range(len(items))],
        "discount_codes": [reading.take(f"discount_codes.{i}", f"coupon_lines.{i}.code") for i in range(len(coupons))],
        "referral_code": _referral_code(reading),
        "shipping_address": _shipping_address(reading),
    }
    return reading.build(OrderPlaced, data)


def _refund(reading: Reading, index: int, currency: str) -> RefundNews:
    refund = f"refunds.{index}"
    dated = reading.take("refunded_at", f"{refund}.date_created_gmt")
    # v3 calls the reason "reason"; the v2 controller wrote it under "refund".
    reason = reading.take("reason", f"{refund}.reason", f"{refund}.refund")
    return RefundNews(
        refund_id=str(reading.take("refund_id", f"{refund}.id", required=True)),
        amount=abs(reading.take_amount("amount", f"{refund}.total")),
        currency=currency,
        refunded_at=None
        if dated is None
        else reading.take_time("refunded_at", f"{refund}.date_created_gmt", naive_is_utc=True),
        reason=None if reason is None else str(reason)[:_REASON_LENGTH],
    )


def _customer_id(reading: Reading, field: str, order_id: str) -> str:
    woocommerce_id = reading.take(field, "customer_id")
    if woocommerce_id is not None and str(woocommerce_id) != "0":
        return str(woocommerce_id)
    email = reading.take(field, "billing.email")
    return anonymous_guest_id(PLATFORM, order_id) if email is None else guest_id(email)


def _accepts_marketing(reading: Reading) -> bool | None:
    for index, meta in enumerate(reading.take_list("accepts_marketing", "meta_data")):
        if isinstance(meta, dict) and meta.get("key") in _CONSENT_KEYS:
            return marketing_consent(reading.take("customer.accepts_marketing", f"meta_data.{index}.value"))
    return None


def _line_item(reading: Reading, index: int, currency: Any) -> dict[str, Any]:
    item = f"line_items.{index}"
    name = reading.take(f"{item}.name", f"{item}.name", required=True)
    name = html.unescape(name) if isinstance(name, str) else name
    return {
        "sku": line_sku(reading, item, name, f"{item}.variation_id", f"{item}.product_id"),
        "name": name,
        "quantity": reading.take(f"{item}.quantity", f"{item}.quantity", required=True),
        "unit_price": _in_minor_units(reading.take_amount(f"{item}.unit_price", f"{item}.price"), currency, item),
    }


def _in_minor_units(price: Decimal, currency: Any, item: str) -> Decimal:
    # WooCommerce's price is the line total over the quantity: 25.00 / 3 arrives as 8.333333333333334.
    try:
        return in_minor_units(price, str(currency))
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
