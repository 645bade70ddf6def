"""The platforms' order export CSVs, read into one shape: a `HistoricOrder` per order. Pure, no I/O.

Both exports write one row per line item; the rows of one order come one after another, and the
order's own fields are on its first row (Shopify leaves them blank on the others; WooCommerce's
exporter repeats them). `read_orders` groups the rows and hands out each order with the number of
rows it took, so a caller can show progress and resume after the N-th order.

Shopify — Admin → Orders → Export, "CSV for Excel, Numbers, or other spreadsheet programs":
    Name ("#1001"), Email, Financial Status, Paid at, Fulfillment Status, Fulfilled at, Accepts Marketing,
    Currency, Subtotal, Shipping, Taxes, Total, Discount Code, Created at, Lineitem quantity, Lineitem name,
    Lineitem price, Lineitem sku, Billing Name/Address1/Address2/City/Zip/Province/Country/Phone, the same
    for Shipping, Note Attributes, Cancelled at, Payment Method, Refunded Amount, Id, Phone, … Times are
    written "2025-10-07 09:50:26 +0200"; a zip code that could lose its leading zero is written "'02115".
    The export names no customer id: see history.py for how a customer is recognised.

WooCommerce — the "Customer / Order / Coupon Export" extension (WooCommerce.com), orders in its
"Default - One Row per Item" format (WooCommerce itself exports products only):
    order_id, order_number, date, status, shipping_total, …, order_total, refunded_total, order_currency,
    payment_method, customer_id, billing_first_name, billing_last_name, billing_email, billing_phone,
    billing_address_1/2, billing_postcode, billing_city, billing_state, billing_country, shipping_*,
    item_name, item_sku, item_price, item_quantity, item_total, coupon_items ("code:SPRING10|amount:5.00",
    several joined by ";"), … Times are the site's local time with no offset ("2024-03-05 14:22:10"), so
    the caller says which time zone the shop runs in. Optional columns a custom format may add and that
    are read when present: date_completed (or completed_date) and date_paid (or paid_date).

A value that cannot be read raises `UnreadableOrder` naming the CSV column and the row, so a shop
owner can find it in a spreadsheet.
"""

import csv
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Literal

Platform = Literal["shopify", "woocommerce"]
Row = Mapping[str, str | None]


class UnreadableOrder(ValueError):
    """A value in the export that is not what its column promises; names the column and the CSV line."""

    def __init__(self, reason: str, column: str, line: int) -> None:
        super().__init__(f"line {line}, column {column!r}: {reason}")
        self.column = column
        self.line = line


class NotThisExport(ValueError):
    """The file's header is not the export we were told it is."""


@dataclass(frozen=True)
class HistoricLine:
    sku: str | None
    name: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True)
class HistoricAddress:
    line1: str | None = None
    line2: str | None = None
    postal_code: str | None = None
    city: str | None = None
    region: str | None = None
    country: str | None = None


@dataclass(frozen=True)
class HistoricOrder:
    """One order as the export tells it, in the platform's own terms (status words, ids)."""

    platform: Platform
    order_id: str
    order_number: str | None
    first_line: int  # the CSV line of its first row, for messages
    status: str  # Shopify's Financial Status, WooCommerce's order status
    email: str | None
    platform_customer_id: str | None  # WooCommerce's customer_id (0 is a guest); Shopify's export has none
    first_name: str | None
    last_name: str | None
    phone: str | None
    accepts_marketing: bool | None
    placed_at: datetime
    paid_at: datetime | None
    fulfilled_at: datetime | None
    cancelled_at: datetime | None
    currency: str
    total: Decimal
    refunded: Decimal
    payment_method: str | None
    discount_codes: tuple[str, ...]
    referral_code: str | None
    billing: HistoricAddress
    shipping: HistoricAddress
    lines: tuple[HistoricLine, ...] = field(default=())


# --- grouping ----------------------------------------------------------------------------------------------


def read_orders(
    platform: Platform, text_lines: Iterable[str], *, shop_timezone: tzinfo
) -> Iterator[tuple[HistoricOrder, int]]:
    """Each order of the export in file order, with how many CSV rows it took."""
    reader = csv.DictReader(text_lines)
    header = [name.strip().lstrip("\ufeff") for name in reader.fieldnames or []]
    reader.fieldnames = header
    key, also, build = _FORMATS[platform]
    missing = [column for column in _REQUIRED[platform] if column not in header]
    if missing:
        raise NotThisExport(
            f"this is not a {_EXPORT_NAMES[platform]}: the header lacks {', '.join(missing)} "
            f"(it has {', '.join(header[:8])}{', …' if len(header) > 8 else ''})"
        )
    group: list[tuple[int, Row]] = []
    for row in reader:
        line = reader.line_num
        if not any((value or "").strip() for value in row.values()):
            continue  # a blank line, as spreadsheets leave at the end
        if group and (_differs(row, group[0][1], key) or _differs(row, group[0][1], also)):
            yield build(group, shop_timezone), len(group)
            group = []
        group.append((line, row))
    if group:
        yield build(group, shop_timezone), len(group)


def _differs(row: Row, first: Row, column: str) -> bool:
    # A row starts another order when it names one; rows after an order's first may leave the column blank.
    value = _cell(row, column)
    return value != "" and value != _cell(first, column)


def _cell(row: Row, column: str) -> str:
    return (row.get(column) or "").strip()


def _optional(row: Row, *columns: str) -> str | None:
    for column in columns:
        value = _cell(row, column)
        if value:
            return value
    return None


def _amount(row: Row, column: str, line: int, *, default: str | None = None) -> Decimal:
    text = _cell(row, column) or default  # "12,50" is refused, never read as 1250
    if text is None:
        raise UnreadableOrder("is empty; an amount is needed", column, line)
    try:
        amount = Decimal(text)
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite():
        raise UnreadableOrder(f"{text!r} is not an amount", column, line)
    return amount


def _quantity(row: Row, column: str, line: int) -> int:
    text = _cell(row, column)
    try:
        return int(Decimal(text or "1"))
    except (InvalidOperation, ValueError):
        raise UnreadableOrder(f"{text!r} is not a quantity", column, line) from None


def _time(row: Row, column: str, line: int, shop_timezone: tzinfo) -> datetime | None:
    text = _cell(row, column)
    if not text:
        return None
    # Shopify writes "2025-10-07 09:50:26 +0200": without the space before the offset it is ISO 8601.
    iso = text[:19] + text[20:] if len(text) > 20 and text[19] == " " and text[20] in "+-" else text
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise UnreadableOrder(f"{text!r} is not a date and time", column, line) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=shop_timezone)


def _split_name(full: str | None) -> tuple[str | None, str | None]:
    # Shopify writes one "Billing Name"; its first word is the given name for a greeting, the rest the family name.
    if not full:
        return None, None
    first, _, last = full.partition(" ")
    return first, (last.strip() or None)


# --- Shopify -----------------------------------------------------------------------------------------------

_REFERRAL_ATTRIBUTES = ("referral_code", "ref")


def _shopify_order(group: list[tuple[int, Row]], shop_timezone: tzinfo) -> HistoricOrder:
    line, first = group[0]
    name = _cell(first, "Name")
    order_id = _cell(first, "Id") or name  # Id is the order's id in the Admin API, as webhooks carry it
    placed_at = _time(first, "Created at", line, shop_timezone)
    if placed_at is None:
        raise UnreadableOrder("is empty; every order has a creation time", "Created at", line)
    currency = _cell(first, "Currency").upper()
    if not currency:
        raise UnreadableOrder("is empty; every order has a currency", "Currency", line)
    first_name, last_name = _split_name(_optional(first, "Billing Name", "Shipping Name"))
    return HistoricOrder(
        platform="shopify",
        order_id=order_id,
        order_number=name or None,
        first_line=line,
        status=_cell(first, "Financial Status").lower(),
        email=_optional(first, "Email"),
        platform_customer_id=None,
        first_name=first_name,
        last_name=last_name,
        phone=_optional(first, "Phone", "Billing Phone", "Shipping Phone"),
        accepts_marketing={"yes": True, "no": False}.get(
            (_optional(first, "Accepts Marketing", "Accepts Email Marketing") or "").lower()
        ),
        placed_at=placed_at,
        paid_at=_time(first, "Paid at", line, shop_timezone),
        fulfilled_at=_time(first, "Fulfilled at", line, shop_timezone),
        cancelled_at=_time(first, "Cancelled at", line, shop_timezone),
        currency=currency,
        total=_amount(first, "Total", line),
        refunded=_amount(first, "Refunded Amount", line, default="0"),
        payment_method=_optional(first, "Payment Method"),
        discount_codes=tuple(code.strip() for code in _cell(first, "Discount Code").split(",") if code.strip()),
        referral_code=_shopify_referral_code(_cell(first, "Note Attributes")),
        billing=_shopify_address(first, "Billing"),
        shipping=_shopify_address(first, "Shipping"),
        lines=tuple(
            HistoricLine(
                sku=_optional(row, "Lineitem sku"),
                name=_cell(row, "Lineitem name"),
                quantity=_quantity(row, "Lineitem quantity", row_line),
                unit_price=_amount(row, "Lineitem price", row_line),
            )
            for row_line, row in group
            if _cell(row, "Lineitem name") or _cell(row, "Lineitem sku")
        ),
    )


def _shopify_address(row: Row, kind: str) -> HistoricAddress:
    return HistoricAddress(
        line1=_optional(row, f"{kind} Address1", f"{kind} Street"),
        line2=_optional(row, f"{kind} Address2"),
        postal_code=(_optional(row, f"{kind} Zip") or "").lstrip("'") or None,  # "'02115" keeps Excel's zero
        city=_optional(row, f"{kind} City"),
        region=_optional(row, f"{kind} Province Name", f"{kind} Province"),
        country=(_optional(row, f"{kind} Country") or "").upper() or None,
    )


def _shopify_referral_code(note_attributes: str) -> str | None:
    # "Note Attributes" holds one "name: value" per line.
    for entry in note_attributes.splitlines():
        name, _, value = entry.partition(":")
        if name.strip().lower() in _REFERRAL_ATTRIBUTES and value.strip():
            return value.strip()
    return None


# --- WooCommerce -------------------------------------------------------------------------------------------


def _woocommerce_order(group: list[tuple[int, Row]], shop_timezone: tzinfo) -> HistoricOrder:
    line, first = group[0]
    placed_at = _time(first, "date", line, shop_timezone)
    if placed_at is None:
        raise UnreadableOrder("is empty; every order has a date", "date", line)
    currency = _cell(first, "order_currency").upper()
    if not currency:
        raise UnreadableOrder("is empty; every order has a currency", "order_currency", line)
    customer_id = _cell(first, "customer_id")
    return HistoricOrder(
        platform="woocommerce",
        order_id=_cell(first, "order_id"),
        order_number=_optional(first, "order_number"),
        first_line=line,
        status=_cell(first, "status").lower().removeprefix("wc-"),
        email=_optional(first, "billing_email"),
        platform_customer_id=customer_id if customer_id not in ("", "0") else None,
        first_name=_optional(first, "billing_first_name"),
        last_name=_optional(first, "billing_last_name"),
        phone=_optional(first, "billing_phone"),
        accepts_marketing=None,  # the export does not say
        placed_at=placed_at,
        paid_at=_time(first, "date_paid", line, shop_timezone) or _time(first, "paid_date", line, shop_timezone),
        fulfilled_at=(
            _time(first, "date_completed", line, shop_timezone) or _time(first, "completed_date", line, shop_timezone)
        ),
        cancelled_at=None,  # WooCommerce cancels orders that were never paid; history.py skips them
        currency=currency,
        total=_amount(first, "order_total", line),
        refunded=_amount(first, "refunded_total", line, default="0"),
        payment_method=_optional(first, "payment_method"),
        discount_codes=_woocommerce_coupons(_cell(first, "coupon_items")),
        referral_code=None,
        billing=_woocommerce_address(first, "billing"),
        shipping=_woocommerce_address(first, "shipping"),
        lines=tuple(
            HistoricLine(
                sku=_optional(row, "item_sku"),
                name=_cell(row, "item_name"),
                quantity=(quantity := _quantity(row, "item_quantity", row_line)),
                unit_price=_woocommerce_unit_price(row, row_line, quantity),
            )
            for row_line, row in group
            if _cell(row, "item_name") or _cell(row, "item_sku")
        ),
    )


def _woocommerce_unit_price(row: Row, line: int, quantity: int) -> Decimal:
    if _cell(row, "item_price"):
        return _amount(row, "item_price", line)
    return (_amount(row, "item_total", line) / max(quantity, 1)).quantize(Decimal("0.01"))


def _woocommerce_address(row: Row, kind: str) -> HistoricAddress:
    return HistoricAddress(
        line1=_optional(row, f"{kind}_address_1"),
        line2=_optional(row, f"{kind}_address_2"),
        postal_code=_optional(row, f"{kind}_postcode"),
        city=_optional(row, f"{kind}_city"),
        region=_optional(row, f"{kind}_state"),
        country=(_optional(row, f"{kind}_country") or "").upper() or None,
    )


_COUPON_CODE = re.compile(r"(?:^|\|)code:([^|;]+)")


def _woocommerce_coupons(coupon_items: str) -> tuple[str, ...]:
    # "code:SPRING10|amount:5.00;code:FREESHIP|amount:4.90"
    return tuple(match.strip() for item in coupon_items.split(";") for match in _COUPON_CODE.findall(item))


# The column that tells orders apart, one more that does when present (two orders may share a Name), the reader.
_FORMATS = {
    "shopify": ("Name", "Id", _shopify_order),
    "woocommerce": ("order_id", "order_id", _woocommerce_order),
}
_REQUIRED: dict[Platform, tuple[str, ...]] = {
    "shopify": ("Name", "Email", "Financial Status", "Created at", "Currency", "Total", "Lineitem name"),
    "woocommerce": ("order_id", "date", "status", "order_total", "order_currency", "billing_email", "item_name"),
}
_EXPORT_NAMES = {
    "shopify": "Shopify order export",
    "woocommerce": "WooCommerce Customer/Order/Coupon Export (Default - One Row per Item)",
}


# --- Shopify's customers export (optional) -----------------------------------------------------------------


def read_customer_ids(text_lines: Iterable[str]) -> dict[str, str]:
    """E-mail (lower-cased) → Shopify customer id, from Admin → Customers → Export (columns Customer ID, Email)."""
    reader = csv.DictReader(text_lines)
    header = [name.strip().lstrip("\ufeff") for name in reader.fieldnames or []]
    reader.fieldnames = header
    id_column = next((c for c in ("Customer ID", "ID", "Id") if c in header), None)
    if id_column is None or "Email" not in header:
        raise NotThisExport(f"a Shopify customers export has the columns Customer ID and Email; this has {header[:6]}")
    found = {}
    for row in reader:
        email, customer_id = _cell(row, "Email").lower(), _cell(row, id_column).lstrip("'")
        if email and customer_id:
            found[email] = customer_id
    return found
