"""MongoDB for orders: the orders as heard, one profile per customer, erasure marks, webhook deliveries.

Collections:
- orders: one document per order id: `placed` (the OrderPlaced data, or None
  until it is heard of), `fulfilled_at`, `refunds` (one per refund id).
- customers: one profile per customer: contact details from the latest order,
  one line per placed order (`orders`), the stats derived from them, and the
  RFM scores and segment of the last scoring round.
- erased: sha256 of each erased customer id → the anonymous alias their orders
  and profile now live under, so late events join the anonymous records.
- webhook_deliveries: platform delivery ids already handled (kept 30 days).
- jobs: one lease document per scheduled job.
"""

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128
from pymongo import ASCENDING, DESCENDING, IndexModel

from services.orders.domain import OrderLine, RefundLine, Stats, refunded_of
from services.orders.settings import orders_settings
from shared.mongo import Database
from shared.settings import ServiceSettings

ORDERS = "orders"
CUSTOMERS = "customers"
WEBHOOK_DELIVERIES = "webhook_deliveries"
JOBS = "jobs"

WEBHOOK_RETENTION_SECONDS = 30 * 24 * 3600

# The orders a listing can be sorted by, each served by an index alone and one after the segment.
SORTS = ("last_order_at", "first_order_at", "orders_count", "spent")


def sort_field(sort: str, reporting_currency: str) -> str:
    """The profile field behind a listing's sort key: `spent` is net spend in the reporting currency."""
    return f"net_spent.{reporting_currency}" if sort == "spent" else sort


def listing_order(sort: str, reporting_currency: str) -> list[tuple[str, int]]:
    """The MongoDB sort for `sort` ('-' first for largest or latest first), in the shape the indexes serve."""
    direction = DESCENDING if sort.startswith("-") else ASCENDING
    return [(sort_field(sort.removeprefix("-"), reporting_currency), direction), ("_id", -direction)]


async def ensure_indexes(db: Database, settings: ServiceSettings) -> None:
    currency = orders_settings(settings).reporting_currency
    await db[ORDERS].create_indexes([IndexModel([("customer_id", ASCENDING), ("placed.placed_at", DESCENDING)])])
    fields = [sort_field(sort, currency) for sort in SORTS]
    # The customer id breaks ties, so pages are stable; walked backwards, each index serves the other direction.
    sort_indexes = [IndexModel([(field, DESCENDING), ("_id", ASCENDING)]) for field in fields]
    by_segment = [IndexModel([("segment", ASCENDING), (field, DESCENDING), ("_id", ASCENDING)]) for field in fields]
    await db[CUSTOMERS].create_indexes([*sort_indexes, *by_segment])
    await db[WEBHOOK_DELIVERIES].create_indexes(
        [IndexModel([("received_at", ASCENDING)], expireAfterSeconds=WEBHOOK_RETENTION_SECONDS)]
    )


# --- erasure ----------------------------------------------------------------------------------


# --- orders -------------------------------------------------------------------------------------


def new_order(order_id: str, customer_id: str) -> dict[str, Any]:
    return {"_id": order_id, "customer_id": customer_id, "placed": None, "fulfilled_at": None, "refunds": []}


def order_line(order: dict[str, Any]) -> OrderLine | None:
    """What the customer's profile keeps of this order; None until it has been placed."""
    placed = order["placed"]
    if placed is None:
        return None
    total = Decimal(placed["total"])
    refunds = [RefundLine(r["refund_id"], Decimal(r["amount"]), r["currency"]) for r in order["refunds"]]
    return OrderLine(
        order_id=order["_id"],
        placed_at=placed["placed_at"],
        currency=placed["currency"],
        total=total,
        refunded=refunded_of(total, placed["currency"], refunds),
    )


# --- customer profiles ----------------------------------------------------------------------------


def new_profile(customer_id: str) -> dict[str, Any]:
    return {"_id": customer_id, "contact": None, "contact_from": None, "orders": [], "rfm": None, "segment": None}


def lines_of(profile: dict[str, Any]) -> list[OrderLine]:
    return [
        OrderLine(
            order_id=line["order_id"],
            placed_at=line["placed_at"],
            currency=line["currency"],
            total=Decimal(line["total"]),
            refunded=Decimal(line["refunded"]),
        )
        for line in profile["orders"]
    ]


def with_lines(profile: dict[str, Any], lines: Sequence[OrderLine], stats: Stats) -> dict[str, Any]:
    """The profile with these order lines and the stats derived from them (the sort keys included)."""
    return profile | {
        "orders": [
            {
                "order_id": line.order_id,
                "placed_at": line.placed_at,
                "currency": line.currency,
                "total": str(line.total),
                "refunded": str(line.refunded),
            }
            for line in lines
        ],
        "orders_count": stats.orders_count,
        "first_order_at": stats.first_order_at,
        "last_order_at": stats.last_order_at,
        # Decimal128, so that `sort=spent` orders by amount; `money` reads them back.
        "net_spent": _decimals(stats.total_spent),
        "refunded": _decimals(stats.refunded),
        "average_order_value": _decimals(stats.average_order_value),
    }


def contact_from(order: dict[str, Any]) -> dict[str, Any]:
    """The customer's contact details as this order gives them (everything but the id)."""
    customer = order["placed"]["customer"]
    return {key: value for key, value in customer.items() if key != "customer_id" and value is not None}


def _decimals(amounts: dict[str, Decimal]) -> dict[str, Decimal128]:
    return {currency: Decimal128(amount) for currency, amount in amounts.items()}


def money(stored: dict[str, Decimal128] | None) -> dict[str, str]:
    """A stored per-currency amount as the API shows money: decimal strings."""
    return {currency: str(amount.to_decimal()) for currency, amount in (stored or {}).items()}
