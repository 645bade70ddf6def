"""Shopify webhooks as what they say about an order (`OrderNews`), or a privacy request: a pure reading, no I/O.

Payloads are the REST Admin API's Order, Fulfillment and Refund resources, as Shopify posts them;
`lifecycle.decide` turns the news into events, each told once.

    orders/create, orders/paid, orders/updated,     the whole order: it counts (is placed) when financial_status
    orders/fulfilled, orders/partially_fulfilled,   is paid, partially_paid, authorized, partially_paid,
    orders/cancelled                                partially_refunded or refunded, and cancelled_at is empty;
                                                    fulfilled when fulfillment_status is "fulfilled"; its
                                                    refunds[]; cancelled when cancelled_at is set (for good:
                                                    Shopify never revives a cancelled order)
    orders/delete                                   only the id: cancelled if it was counted
    fulfillments/create, fulfillments/update        a fulfilment of status success: fulfilled at its created_at
    refunds/create                                  one refund
    customers/redact, shop/redact,                  the mandatory privacy topics (`PrivacyRequest`)
    customers/data_request
    any payload with "test": true                   ignored ("send test notification", test orders), counted
    any other topic                                 ignored, counted

OrderPlaced                  ← Shopify order
  order_id                   ← id
  order_number               ← name ("#1001", what the customer sees)
  customer.customer_id       ← customer.id; a guest checkout (no customer) is "guest:" + the e-mail, lower-cased;
                               with no e-mail either, "guest:shopify:order:<id>"
  customer.email             ← email, else contact_email, else customer.email; none at all: the stand-in
                               `shared.events.no_email_for(customer id)`, which every service reads as no e-mail
  customer.first_name, last_name ← customer's, else billing_address's, else shipping_address's
  customer.phone             ← phone, else customer.phone, else billing_address.phone
  customer.locale            ← customer_locale, left out when it is not a BCP 47 tag
  customer.city, region, country ← shipping_address city, province, country_code; without a shipping
                               address, billing_address's (one address, never a mix of two)
  customer.accepts_marketing ← customer.email_marketing_consent.state ("subscribed" is yes), else
                               customer.accepts_marketing, else buyer_accepts_marketing
  placed_at                  ← created_at
  currency, total            ← currency, total_price (the shop's currency, as line item prices are); the
                               presentment currency and total_price_set.presentment_money are kept to convert
                               refunds paid back in the customer's currency
  line_items[]               ← line_items[]: sku (else variant_id, else product_id, else a stand-in from the
                               title, `no-sku:custom-sale`), title, quantity, price
  discount_codes             ← discount_codes[].code
  referral_code              ← the note_attributes entry named "referral_code" (or "ref")
  shipping_address           ← shipping_address: address1, address2, zip, city, province, country_code;
                               left out when it has no street, city, postcode or country
OrderFulfilled               ← fulfilled_at: the latest created_at of the order's fulfillments that were not
                               cancelled or failed, else updated_at; a Fulfillment resource's created_at
OrderRefunded                ← Shopify refund (refunds/create, or an order's refunds[])
  refund_id                  ← id
  amount, currency           ← the sum and currency of transactions of kind "refund" with status "success";
                               a refund that moved no money (a restock only) is no event
  refunded_at                ← created_at, else processed_at
  reason                     ← note, cut to the contract's 500 characters
OrderCancelled               ← cancelled_at, cancel_reason
"""

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import TypeAdapter, ValidationError

from services.orders.platforms.common import (
    Ignored,
    OrderNews,
    PrivacyRequest,
    Reading,
    RefundNews,
    UntranslatableWebhook,
    Webhook,
    anonymous_guest_id,
    exact_decimal,
    guest_id,
    line_sku,
    marketing_consent,
)
from shared.events import OrderPlaced, no_email_for
from shared.types import Locale

PLATFORM = "shopify"
ORDER_TOPICS = frozenset(
    {
        "orders/create",
        "orders/paid",
        "orders/updated",
        "orders/fulfilled",
        "orders/partially_fulfilled",
        "orders/cancelled",
    }
)
FULFILMENT_TOPICS = frozenset({"fulfillments/create", "fulfillments/update"})
PRIVACY_TOPICS = frozenset({"customers/redact", "shop/redact", "customers/data_request"})
# An order counts once the money is paid or promised (authorised); refunded orders were paid first.
COUNTING = frozenset({"paid", "partially_paid", "authorized", "partially_refunded", "refunded"})
_EMAIL = ("email", "contact_email", "customer.email")
_REFERRAL_NAMES = ("referral_code", "ref")
_NOT_HANDED_OVER = {"cancelled", "error", "failure"}
_LOCALE: TypeAdapter[str] = TypeAdapter(Locale)
_REASON_LENGTH = 500


def read(topic: str, payload: dict[str, Any], *, shop: str = "") -> Webhook:
    """What a Shopify webhook says: news of an order, a privacy request, or nothing we translate."""
    reading = Reading(payload)
    if topic in PRIVACY_TOPICS:
        return _privacy_request(topic, reading, shop)
    if payload.get("test") is True:
        return Ignored("test")  # "send test notification", and orders paid through the test gateway
    if topic in ORDER_TOPICS:
        return _order_news(reading)
    if topic in FULFILMENT_TOPICS:
        return _fulfilment_news(reading)
    reader = _OTHER_READERS.get(topic)
    return Ignored("topic not translated") if reader is None else reader(reading)


def _deletion_news(reading: Reading) -> OrderNews:
    return OrderNews(PLATFORM, str(reading.take("order_id", "id", required=True)), removed=True)


def _refund_news(reading: Reading) -> Webhook:
    order_id = str(reading.take("order_id", "order_id", required=True))
    refund = _refund(reading, "")
    if refund is None and _only_test_transactions(reading):
        return Ignored("test")
    return OrderNews(PLATFORM, order_id, refunds=() if refund is None else (refund,))


def _order_news(reading: Reading) -> OrderNews:
    order = _order_placed(reading)
    cancelled_at = reading.take("cancelled_at", "cancelled_at")
    fulfilled = reading.take("fulfillment_status", "fulfillment_status") == "fulfilled"
    refunds = reading.take_list("refunds", "refunds")
    return OrderNews(
        platform=PLATFORM,
        order_id=order.order_id,
        order=order,
        counts=reading.take("financial_status", "financial_status") in COUNTING,
        presentment=_presentment(reading, order.currency),
        fulfilled_at=_fulfilled_at(reading) if fulfilled else None,
        refunds=tuple(
            refund for index in range(len(refunds)) if (refund := _refund(reading, f"refunds.{index}.")) is not None
        ),
        cancelled_at=None if cancelled_at is None else reading.take_time("cancelled_at", "cancelled_at"),
        cancel_reason=_text(reading.take("cancel_reason", "cancel_reason")),
        cancellation_final=True,
        changed_at=reading.take_time("updated_at", "updated_at", "created_at"),
    )


def _order_placed(reading: Reading) -> OrderPlaced:
    order_id = str(reading.take("order_id", "id", required=True))
    address = "shipping_address" if reading.payload.get("shipping_address") else "billing_address"
    customer_id = _customer_id(reading, "customer.customer_id", order_id)
    customer = {
        "customer_id": customer_id,
        "email": reading.take("customer.email", *_EMAIL) or no_email_for(customer_id),
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
        "accepts_marketing": _accepts_marketing(reading),
    }
    items = reading.take_list("line_items", "line_items", required=True)
    codes = reading.take_list("discount_codes", "discount_codes")
    number = reading.take("order_number", "name", "order_number")
    data = {
        "order_id": order_id,
        "order_number": None if number is None else str(number),
        "customer": customer,
        "placed_at": reading.take_time("placed_at", "created_at"),
        "currency": reading.take("currency", "currency", required=True),
        "total": reading.take("total", "total_price", required=True),
        "line_items": [_line_item(reading, index) for index in range(len(items))],
        "discount_codes": [reading.take(f"discount_codes.{i}", f"discount_codes.{i}.code") for i in range(len(codes))],
        "referral_code": _referral_code(reading),
        "shipping_address": _shipping_address(reading),
    }
    return reading.build(OrderPlaced, data)


def _fulfilment_news(reading: Reading) -> OrderNews:
    order_id = str(reading.take("order_id", "order_id", required=True))
    if reading.take("status", "status") != "success":  # pending, open, cancelled, error, failure: not handed over
        return OrderNews(PLATFORM, order_id)
    return OrderNews(PLATFORM, order_id, fulfilled_at=reading.take_time("fulfilled_at", "created_at"))


def _refund(reading: Reading, at: str) -> RefundNews | None:
    """The refund at `at` ("" for a Refund resource, "refunds.0." inside an order); None when it moved no money."""
    refund_id = str(reading.take("refund_id", f"{at}id", required=True))
    transactions = reading.take_list("amount", f"{at}transactions")
    refunded = [
        f"{at}transactions.{index}"
        for index, transaction in enumerate(transactions)
        if isinstance(transaction, dict)
        and (transaction.get("kind"), transaction.get("status")) == ("refund", "success")
    ]
    if not refunded:
        return None
    currencies = {_refund_currency(reading, at, transaction) for transaction in refunded}
    if len(currencies) > 1:
        raise UntranslatableWebhook(
            f"refund transactions are in several currencies: {sorted(currencies)}", f"{at}transactions"
        )
    amount = sum((reading.take_amount("amount", f"{transaction}.amount") for transaction in refunded), Decimal(0))
    reading.record("amount", f"{at}transactions")
    return RefundNews(
        refund_id=refund_id,
        amount=amount,
        currency=currencies.pop(),
        refunded_at=reading.take_time("refunded_at", f"{at}created_at", f"{at}processed_at"),
        reason=_text(reading.take("reason", f"{at}note")),
    )


def _only_test_transactions(reading: Reading) -> bool:
    transactions = reading.take_list("transactions", "transactions")
    return bool(transactions) and all(isinstance(t, dict) and t.get("test") is True for t in transactions)


def _privacy_request(topic: str, reading: Reading, shop: str) -> PrivacyRequest:
    shop_domain = str(reading.take("shop_domain", "shop_domain") or shop)
    customer_ids: list[str] = []
    if (account := reading.take("customer.id", "customer.id")) is not None:
        customer_ids.append(str(account))
    if (email := reading.take("customer.email", "customer.email")) is not None:
        customer_ids.append(guest_id(email))  # the same person's guest checkouts
    ordered = reading.take_list("orders", "orders_requested") or reading.take_list("orders", "orders_to_redact")
    request = reading.take("data_request.id", "data_request.id")
    return PrivacyRequest(
        topic=topic,
        shop=shop_domain,
        customer_ids=tuple(customer_ids),
        orders=tuple(str(order) for order in ordered),
        request_id=None if request is None else str(request),
    )


def _customer_id(reading: Reading, field: str, order_id: str) -> str:
    shopify_id = reading.take(field, "customer.id")
    if shopify_id is not None:
        return str(shopify_id)
    email = reading.take(field, *_EMAIL)
    return anonymous_guest_id(PLATFORM, order_id) if email is None else guest_id(email)


def _accepts_marketing(reading: Reading) -> bool | None:
    for path in ("customer.email_marketing_consent.state", "customer.accepts_marketing", "buyer_accepts_marketing"):
        consent = marketing_consent(reading.take("customer.accepts_marketing", path))
        if consent is not None:
            return consent
    return None


def _presentment(reading: Reading, currency: str) -> tuple[str, Decimal] | None:
    presentment = reading.take("presentment", "total_price_set.presentment_money.currency_code")
    amount = reading.take("presentment", "total_price_set.presentment_money.amount")
    if presentment is None or amount is None or presentment == currency:
        return None
    return str(presentment), exact_decimal(amount, "total_price_set.presentment_money.amount")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:_REASON_LENGTH]


_OTHER_READERS: dict[str, Callable[[Reading], Webhook]] = {
    "orders/delete": _deletion_news,
    "refunds/create": _refund_news,
}


def _known_locale(locale: Any) -> str | None:
    # A locale the contract would refuse costs us a greeting language, not the order.
    try:
        return _LOCALE.validate_python(locale)
    except ValidationError:
        return None


def _line_item(reading: Reading, index: int) -> dict[str, Any]:
    item = f"line_items.{index}"
    name = reading.take(f"{item}.name", f"{item}.title", f"{item}.name", required=True)
    return {
        "sku": line_sku(reading, item, name, f"{item}.variant_id", f"{item}.product_id"),
        "name": name,
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
    # Fulfilled: handed over when the last parcel was (the feedback request is about the whole order).
    handed_over = [
        reading.take_time("fulfilled_at", f"fulfillments.{index}.created_at")
        for index, fulfillment in enumerate(reading.take_list("fulfilled_at", "fulfillments"))
        if isinstance(fulfillment, dict) and fulfillment.get("status") not in _NOT_HANDED_OVER
    ]
    if handed_over:
        reading.record("fulfilled_at", "fulfillments")
        return max(handed_over)
    return reading.take_time("fulfilled_at", "updated_at")


def _refund_currency(reading: Reading, at: str, transaction: str) -> str:
    money_sets = (
        f"{at}refund_line_items.0.subtotal_set",
        f"{at}order_adjustments.0.amount_set",
        f"{at}total_duties_set",
    )
    return str(
        reading.take(
            "currency",
            f"{transaction}.currency",
            *(f"{money_set}.presentment_money.currency_code" for money_set in money_sets),
            required=True,
        )
    )
