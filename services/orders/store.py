"""MongoDB for orders: the orders as heard, one profile per customer, erasure marks, webhook deliveries.

The only code that knows the collections and the shape of their documents;
use cases and routes get and give the values of domain.py (and the `Order`,
`OrderRecord` and `CustomerSummary` below).

Collections:
- orders: one document per order id: `placed` (the OrderPlaced data, or None
  until it is heard of) and `placed_by` (the telling it came from),
  `fulfilled_at`, `refunds` (one per refund id).
- customers: one profile per customer: contact details from the latest order,
  one line per placed order (`orders`), the stats derived from them, and the
  RFM scores and segment of the last scoring round.
- erased: sha256 of each erased customer id → the anonymous alias their orders
  and profile now live under, so late events join the anonymous records.
- webhook_deliveries: the facts platform webhooks told, by what they say (the topic and Shopify's event id,
  or a digest of the body), kept 30 days: the same fact again is answered as a duplicate at once.
- platform_orders: per platform order, what the webhooks have told the others about it (`KnownOrder`:
  placed, fulfilled, refunds, cancelled) and what waits for it to count, the shop it came from, and how much
  of the refunds an imported history told webhook refunds were matched against.
- data_requests: Shopify customers/data_request webhooks, to be fulfilled by the shop owner with the export.
- jobs: one lease document per scheduled job.
"""

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from bson.decimal128 import Decimal128
from pymongo import ASCENDING, DESCENDING, DeleteOne, IndexModel, InsertOne, UpdateMany, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.orders.domain import (
    Cancellation,
    Contact,
    Customer,
    OrderLine,
    OrderRef,
    Refund,
    SearchTerms,
    Stats,
    Telling,
    history_of,
    refunded_of,
    stats_of,
)
from services.orders.insight import RENAMED_SEGMENTS, SEGMENTS, History, Rfm, segment_named
from services.orders.platforms import KnownOrder, RefundNews
from services.orders.platforms.common import history_refund_id
from services.orders.settings import OrdersSettings, OrdersUnit
from shared.aliases import ALIAS_PREFIX
from shared.erasure import (
    customer_erased,
    forget_once_sent_if_erased,
    forget_sent_events,
    is_alias,
    mark_erased,
    preload_customers,
)
from shared.events import OrderPlaced, is_no_email
from shared.leases import claim, release
from shared.mongo import Database, as_stored
from shared.service import Runtime
from shared.settings import ServiceSettings

T = TypeVar("T")

ORDERS = "orders"
CUSTOMERS = "customers"
WEBHOOK_DELIVERIES = "webhook_deliveries"
PLATFORM_ORDERS = "platform_orders"
DATA_REQUESTS = "data_requests"
JOBS = "jobs"

WEBHOOK_RETENTION_SECONDS = 30 * 24 * 3600
SCORES_WRITE_BATCH = 1000

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
    if not isinstance(settings, OrdersSettings):  # the spec hands every service its settings as the base type
        raise TypeError(f"the orders service needs OrdersSettings, got {type(settings).__name__}")
    await db[ORDERS].create_indexes([IndexModel([("customer_id", ASCENDING), ("placed.placed_at", DESCENDING)])])
    fields = [sort_field(sort, settings.reporting_currency) for sort in SORTS]
    # The customer id breaks ties, so pages are stable; walked backwards, each index serves the other direction.
    sort_indexes = [IndexModel([(field, DESCENDING), ("_id", ASCENDING)]) for field in fields]
    by_segment = [IndexModel([("segment", ASCENDING), (field, DESCENDING), ("_id", ASCENDING)]) for field in fields]
    # Finding a customer by what the owner knows of them (GET /customers?q=).
    contact = [IndexModel([(f"contact.{field}", ASCENDING)]) for field in ("email", "phone", "first_name", "last_name")]
    await db[CUSTOMERS].create_indexes([*sort_indexes, *by_segment, *contact])
    await db[ORDERS].create_indexes([IndexModel([("placed.order_number", ASCENDING)])])
    await db[WEBHOOK_DELIVERIES].create_indexes(
        [IndexModel([("received_at", ASCENDING)], expireAfterSeconds=WEBHOOK_RETENTION_SECONDS)]
    )
    await db[PLATFORM_ORDERS].create_indexes(
        [IndexModel([("shop", ASCENDING), ("customer_id", ASCENDING)]), IndexModel([("customer_id", ASCENDING)])]
    )
    await db[DATA_REQUESTS].create_indexes([IndexModel([("received_at", DESCENDING)])])
    for old, new in RENAMED_SEGMENTS.items():  # once: profiles scored before the rename, so `?segment=` finds them
        await db[CUSTOMERS].update_many({"segment": old}, {"$set": {"segment": new}})


async def preload(unit: OrdersUnit, order_ids: Iterable[str], customer_ids: Iterable[str]) -> None:
    """Read these orders, the customers' profiles and erasure marks in three queries (a batch's, say)."""
    await unit.preload(ORDERS, order_ids)
    await preload_customers(unit, CUSTOMERS, customer_ids)


# --- orders -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Order:
    """One order as heard so far: any of its facts may arrive first."""

    order_id: str
    customer_id: str  # the customer, or their anonymous alias once erased
    placed: Mapping[str, Any] | None  # the OrderPlaced data as stored (amounts as strings); None until told
    told: Telling | None  # the telling `placed` came from
    fulfilled_at: datetime | None
    refunds: tuple[Refund, ...]
    cancelled: Cancellation | None = None

    @property
    def line(self) -> OrderLine | None:
        """What the customer's profile keeps of this order; None until it has been placed, or once cancelled."""
        if self.placed is None or self.cancelled is not None:
            return None
        total = Decimal(self.placed["total"])
        currency = self.placed["currency"]
        return OrderLine(
            order_id=self.order_id,
            placed_at=self.placed["placed_at"],
            currency=currency,
            total=total,
            refunded=refunded_of(total, currency, self.refunds),
        )

    @property
    def contact(self) -> Contact | None:
        """The customer's contact details as this order gives them; None once kept anonymous (or not placed)."""
        if self.placed is None or is_alias(self.customer_id):
            return None
        customer = self.placed["customer"]
        return {
            key: value
            for key, value in customer.items()
            if key != "customer_id" and value is not None and not (key == "email" and is_no_email(value))
        }


async def get_order(unit: OrdersUnit, order_id: str, customer_id: str) -> Order:
    """The order, or a new one of this customer when nothing about it was heard yet."""
    found = await unit.find_one(ORDERS, {"_id": order_id})
    if found is None:
        return Order(order_id, customer_id, placed=None, told=None, fulfilled_at=None, refunds=(), cancelled=None)
    return _order_of(found)


def placing(order: Order, data: OrderPlaced, telling: Telling, *, anonymous_as: str | None = None) -> Order:
    """The order as `data` tells it; `anonymous_as` keeps it under that alias, without who the customer is."""
    placed = data.model_dump(mode="python")
    placed["placed_at"] = as_stored(data.placed_at)
    placed["total"] = str(data.total)
    placed["line_items"] = [item | {"unit_price": str(item["unit_price"])} for item in placed["line_items"]]
    if anonymous_as is not None:  # erased before this order arrived
        placed["customer"] = {"customer_id": anonymous_as}
        placed["shipping_address"] = None
    return replace(order, placed=placed, told=telling)


def save_order(unit: OrdersUnit, order: Order) -> None:
    unit.replace(
        ORDERS,
        {
            "_id": order.order_id,
            "customer_id": order.customer_id,
            "placed": order.placed,
            "placed_by": None if order.told is None else {"at": order.told.at, "id": order.told.event_id},
            "fulfilled_at": order.fulfilled_at,
            "refunds": [
                {
                    "refund_id": refund.refund_id,
                    "amount": str(refund.amount),
                    "currency": refund.currency,
                    "refunded_at": refund.refunded_at,
                    "reason": refund.reason,
                }
                for refund in order.refunds
            ],
            "cancelled": None
            if order.cancelled is None
            else {"at": order.cancelled.cancelled_at, "reason": order.cancelled.reason},
        },
    )


async def history_refunded(unit: OrdersUnit, order_id: str) -> Decimal:
    """What a shop's imported history told as refunded for the order (one sum; 0 when it told none)."""
    told = history_refund_id(order_id)
    found = await unit.find_one(ORDERS, {"_id": order_id}, projection={"refunds": 1})
    refunds = found.get("refunds", []) if found is not None else []
    return sum((Decimal(r["amount"]) for r in refunds if r["refund_id"] == told), Decimal(0))


def _order_of(doc: Mapping[str, Any]) -> Order:
    placed_by = doc.get("placed_by")
    return Order(
        order_id=doc["_id"],
        customer_id=doc["customer_id"],
        placed=doc["placed"],
        told=None if placed_by is None or doc["placed"] is None else Telling(placed_by["at"], placed_by["id"]),
        fulfilled_at=doc["fulfilled_at"],
        refunds=tuple(
            Refund(r["refund_id"], Decimal(r["amount"]), r["currency"], r["refunded_at"], r.get("reason"))
            for r in doc["refunds"]
        ),
        cancelled=None
        if not doc.get("cancelled")
        else Cancellation(doc["cancelled"]["at"], doc["cancelled"]["reason"]),
    )


# --- customer profiles ----------------------------------------------------------------------------


async def get_customer(unit: OrdersUnit, customer_id: str) -> Customer:
    """The customer's profile; a new, empty one before their first order counts."""
    return await find_customer(unit, customer_id) or Customer(customer_id)


async def find_customer(unit: OrdersUnit, customer_id: str) -> Customer | None:
    found = await unit.find_one(CUSTOMERS, {"_id": customer_id})
    return None if found is None else _customer_of(found)


def save_customer(unit: OrdersUnit, customer: Customer) -> None:
    profile = new_profile(customer.customer_id) | {
        "contact": None if customer.contact is None else dict(customer.contact),
        "contact_from": _ref_document(customer.contact_from),
        "rfm": _rfm_document(customer.rfm),
        "segment": None if customer.rfm is None else customer.rfm.segment,
    }
    if customer.scored_at is not None:
        profile["scored_at"] = customer.scored_at
    unit.replace(CUSTOMERS, with_lines(profile, customer.lines, stats_of(customer.lines)))


def new_profile(customer_id: str) -> dict[str, Any]:
    """The document of a customer with no order yet."""
    return {"_id": customer_id, "contact": None, "contact_from": None, "orders": [], "rfm": None, "segment": None}


def with_lines(profile: dict[str, Any], lines: Sequence[OrderLine], stats: Stats) -> dict[str, Any]:
    """The profile document with these order lines and the stats derived from them (the sort keys included)."""
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


def _customer_of(doc: Mapping[str, Any]) -> Customer:
    contact_from = doc.get("contact_from")
    return Customer(
        customer_id=doc["_id"],
        lines=_lines_of(doc),
        contact=doc.get("contact"),
        contact_from=None if contact_from is None else OrderRef(contact_from["at"], contact_from["id"]),
        rfm=_rfm_of(doc),
        scored_at=doc.get("scored_at"),
    )


def _lines_of(doc: Mapping[str, Any]) -> tuple[OrderLine, ...]:
    return tuple(
        OrderLine(
            order_id=line["order_id"],
            placed_at=line["placed_at"],
            currency=line["currency"],
            total=Decimal(line["total"]),
            refunded=Decimal(line["refunded"]),
        )
        for line in doc["orders"]
    )


def _rfm_of(doc: Mapping[str, Any]) -> Rfm | None:
    scores = doc.get("rfm")
    if scores is None:
        return None
    return Rfm(scores["recency"], scores["frequency"], scores["monetary"], segment_named(doc["segment"]))


def _rfm_document(rfm: Rfm | None) -> dict[str, int] | None:
    return None if rfm is None else {"recency": rfm.recency, "frequency": rfm.frequency, "monetary": rfm.monetary}


def _ref_document(ref: OrderRef | None) -> dict[str, Any] | None:
    return None if ref is None else {"at": ref.placed_at, "id": ref.order_id}


def _decimals(amounts: Mapping[str, Decimal]) -> dict[str, Decimal128]:
    return {currency: Decimal128(amount) for currency, amount in amounts.items()}


def money(stored: Mapping[str, Decimal128] | None) -> dict[str, str]:
    """A stored per-currency amount as the API shows money: decimal strings."""
    return {currency: str(amount.to_decimal()) for currency, amount in (stored or {}).items()}


# --- erasure ----------------------------------------------------------------------------------


async def customer_is_erased(unit: OrdersUnit, customer_id: str) -> bool:
    """Whether the customer was erased (their records now live under their alias)."""
    return await customer_erased(unit, CUSTOMERS, customer_id)


def forget_customer(unit: OrdersUnit, customer_id: str, alias: str, kept: Customer | None, at: datetime) -> None:
    """Erase the customer: their profile `kept` under the alias, their orders re-keyed to it, anonymous; a mark."""
    if kept is not None:
        unit.write(CUSTOMERS, DeleteOne({"_id": customer_id}))
        save_customer(unit, kept)
    unit.write(
        ORDERS,
        UpdateMany(
            {"customer_id": customer_id, "placed": {"$ne": None}},
            {"$set": {"placed.customer": {"customer_id": alias}, "placed.shipping_address": None}},
        ),
        # A refund's reason is the shop's free text ("call Zuzana at +421…"): it may name the customer.
        UpdateMany(
            {"customer_id": customer_id, "refunds.0": {"$exists": True}}, {"$set": {"refunds.$[].reason": None}}
        ),
        UpdateMany({"customer_id": customer_id, "cancelled": {"$ne": None}}, {"$set": {"cancelled.reason": None}}),
        UpdateMany({"customer_id": customer_id}, {"$set": {"customer_id": alias}}),
    )
    unit.write(
        PLATFORM_ORDERS,
        UpdateMany(
            {"customer_id": customer_id, "waiting_refunds.0": {"$exists": True}},
            {"$set": {"waiting_refunds.$[].reason": None}},
        ),
        UpdateMany({"customer_id": customer_id}, {"$set": {"customer_id": alias}}),
    )
    unit.write(DATA_REQUESTS, UpdateMany({"customer_id": customer_id}, {"$set": {"customer_id": alias}}))
    forget_sent_events(unit, customer_id)
    mark_erased(unit, customer_id, at)


# --- what the HTTP API shows ----------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerSummary:
    """A profile's headline figures (what a listing shows), amounts as decimal strings per currency."""

    customer_id: str
    contact: Contact | None
    orders_count: int
    first_order_at: datetime | None
    last_order_at: datetime | None
    net_spent: dict[str, str]
    segment: str | None


@dataclass(frozen=True)
class CustomerFigures(CustomerSummary):
    """A profile in full, but its order lines."""

    refunded: dict[str, str]
    average_order_value: dict[str, str]
    rfm: Rfm | None
    scored_at: datetime | None


@dataclass(frozen=True)
class PlacedItem:
    sku: str
    name: str
    quantity: int
    unit_price: str


@dataclass(frozen=True)
class OrderRecord:
    """An order as the customer's history shows it (amounts as told, decimal strings)."""

    order_id: str
    placed_at: datetime | None
    currency: str | None
    total: str | None
    items: tuple[PlacedItem, ...]
    fulfilled_at: datetime | None
    refunds: tuple[Refund, ...]
    cancelled_at: datetime | None


async def customer_figures(rt: Runtime, customer_id: str) -> CustomerFigures | None:
    found = await rt.db[CUSTOMERS].find_one({"_id": customer_id}, {"orders": 0})
    return None if found is None else _figures_of(found)


def _figures_of(found: Mapping[str, Any]) -> CustomerFigures:
    return CustomerFigures(
        **vars(_summary_of(found)),
        refunded=money(found.get("refunded")),
        average_order_value=money(found.get("average_order_value")),
        rfm=_rfm_of(found),
        scored_at=found.get("scored_at"),
    )


async def order_record(rt: Runtime, order_id: str) -> OrderRecord | None:
    """One order as told (its items, fulfilment, refunds and cancellation); None when nothing was heard of it."""
    found = await rt.db[ORDERS].find_one({"_id": order_id})
    return None if found is None else _record_of(found)


async def order_history(rt: Runtime, customer_id: str, limit: int = 100) -> list[OrderRecord]:
    """The customer's orders, latest first."""
    found = await rt.db[ORDERS].find({"customer_id": customer_id}, sort=[("placed.placed_at", -1)]).to_list(limit)
    return [_record_of(doc) for doc in found]


async def customer_listing(
    rt: Runtime, segment: str | None, sort: str, reporting_currency: str, *, limit: int, offset: int
) -> list[CustomerSummary]:
    """Profiles of one segment (or all), in `sort` order (see `listing_order`)."""
    query = {} if segment is None else {"segment": segment}  # a profile exists once its customer has ordered
    found = rt.db[CUSTOMERS].find(
        query, {"orders": 0}, sort=listing_order(sort, reporting_currency), skip=offset, limit=limit
    )
    return [_summary_of(profile) async for profile in found]


async def customers_named(rt: Runtime, customer_ids: Sequence[str]) -> list[CustomerSummary]:
    """The profiles of these customers (those known), in no particular order."""
    found = rt.db[CUSTOMERS].find({"_id": {"$in": list(customer_ids)}}, {"orders": 0})
    return [_summary_of(profile) async for profile in found]


async def customers_matching(rt: Runtime, terms: SearchTerms, *, limit: int) -> list[CustomerSummary]:
    """Customers whose e-mail or phone is one of the terms, whose name starts so, or who placed the order named."""
    wanted: list[dict[str, Any]] = []
    if terms.emails:
        wanted.append({"contact.email": {"$in": list(terms.emails)}})
    if terms.phones:
        wanted.append({"contact.phone": {"$in": list(terms.phones)}})
    for field, prefixes in (("first_name", terms.first_names), ("last_name", terms.last_names)):
        wanted += [{f"contact.{field}": {"$regex": f"^{re.escape(prefix)}"}} for prefix in prefixes]
    if terms.full_name is not None:
        firsts, lasts = terms.full_name
        wanted += [
            {
                "contact.first_name": {"$regex": f"^{re.escape(first)}"},
                "contact.last_name": {"$regex": f"^{re.escape(last)}"},
            }
            for first in firsts
            for last in lasts
        ]
    if terms.order_numbers:
        by_number = {
            "$or": [
                {"placed.order_number": {"$in": list(terms.order_numbers)}},
                {"_id": {"$in": list(terms.order_numbers)}},
            ]
        }
        owners = {doc["customer_id"] async for doc in rt.db[ORDERS].find(by_number, {"customer_id": 1}, limit=limit)}
        if owners:
            wanted.append({"_id": {"$in": sorted(owners)}})
    if not wanted:
        return []
    # Unsorted, so each branch stops at `limit` on its own index; the page is then put latest buyer first.
    found = [
        _summary_of(profile) async for profile in rt.db[CUSTOMERS].find({"$or": wanted}, {"orders": 0}, limit=limit)
    ]
    return sorted(found, key=lambda c: (c.last_order_at is not None, c.last_order_at), reverse=True)


def _summary_of(profile: Mapping[str, Any]) -> CustomerSummary:
    return CustomerSummary(
        customer_id=profile["_id"],
        contact=profile.get("contact"),
        orders_count=profile.get("orders_count", 0),
        first_order_at=profile.get("first_order_at"),
        last_order_at=profile.get("last_order_at"),
        net_spent=money(profile.get("net_spent")),
        segment=None if profile.get("segment") is None else segment_named(profile["segment"]),
    )


def _record_of(doc: Mapping[str, Any]) -> OrderRecord:
    order = _order_of(doc)
    placed = order.placed or {}
    return OrderRecord(
        order_id=order.order_id,
        placed_at=placed.get("placed_at"),
        currency=placed.get("currency"),
        total=placed.get("total"),
        items=tuple(
            PlacedItem(item["sku"], item["name"], item["quantity"], item["unit_price"])
            for item in placed.get("line_items", [])
        ),
        fulfilled_at=order.fulfilled_at,
        refunds=order.refunds,
        cancelled_at=None if order.cancelled is None else order.cancelled.cancelled_at,
    )


@dataclass(frozen=True)
class CustomerRecords:
    """Everything orders holds on one customer (their export): the profile, and every order of theirs as told."""

    profile: CustomerFigures | None
    orders: list[Order]  # oldest first


async def customer_records(unit: OrdersUnit, customer_id: str) -> CustomerRecords:
    found = await unit.find_one(CUSTOMERS, {"_id": customer_id})
    orders = await unit.find(ORDERS, {"customer_id": customer_id}, sort=[("placed.placed_at", 1), ("_id", 1)])
    return CustomerRecords(None if found is None else _figures_of(found), [_order_of(doc) for doc in orders])


# --- scoring round ----------------------------------------------------------------------------------


async def claim_job(rt: Runtime, job: str, owner: str, lease: timedelta) -> bool:
    """Hold the job's lease document; False while another replica holds it."""
    return await claim(rt.db[JOBS], {"_id": job}, lease=lease, owner=owner, create=True) is not None


async def release_job(rt: Runtime, job: str, owner: str) -> None:
    await release(rt.db[JOBS], job, owner)


async def histories(rt: Runtime) -> list[History]:
    """Every customer as the insight rules see them, read in one pass."""
    return [history_of(doc["_id"], _lines_of(doc)) async for doc in rt.db[CUSTOMERS].find({}, {"orders": 1})]


async def segment_sizes(rt: Runtime) -> tuple[dict[str, int], int]:
    """Customers per segment of the last scoring round (every segment named, 0 when empty), and those not scored yet.

    An erased customer still counts, under their anonymous alias, as the shop's other totals do.
    """
    counted = await rt.db[CUSTOMERS].aggregate(
        [{"$match": {"orders.0": {"$exists": True}}}, {"$group": {"_id": "$segment", "customers": {"$sum": 1}}}]
    )
    sizes = dict.fromkeys(SEGMENTS, 0)
    unscored = 0
    async for doc in counted:
        if doc["_id"] is None:
            unscored += int(doc["customers"])
        else:
            name = segment_named(doc["_id"])
            sizes[name] = sizes.get(name, 0) + int(doc["customers"])
    return sizes, unscored


async def histories_and_scores(rt: Runtime) -> tuple[list[History], dict[str, Rfm | None]]:
    """Every customer as the insight rules see them, and their scores of the last round, read in one pass."""
    profiles = await rt.db[CUSTOMERS].find({}, {"orders": 1, "rfm": 1, "segment": 1}).to_list()
    scored = {profile["_id"]: _rfm_of(profile) for profile in profiles}
    return [history_of(profile["_id"], _lines_of(profile)) for profile in profiles], scored


def save_scores(unit: OrdersUnit, scores: Mapping[str, Rfm], at: datetime) -> None:
    """Store these customers' new scores and segment, scored `at` (a round writes them SCORES_WRITE_BATCH a unit)."""
    unit.write(
        CUSTOMERS,
        *(
            UpdateOne(
                {"_id": customer_id}, {"$set": {"rfm": _rfm_document(rfm), "segment": rfm.segment, "scored_at": at}}
            )
            for customer_id, rfm in scores.items()
        ),
    )


# --- platform webhooks ------------------------------------------------------------------------------


async def once_per_fact(rt: Runtime, fact: str, topic: str, work: Callable[[OrdersUnit], Awaitable[T]]) -> T | None:
    """Run `work` and record the webhook's fact in one transaction; None when the fact was told before.

    Told before: recorded by an earlier request, or by one racing this one (its insert, or an event id of
    its outbox entries, collides with ours). After such a collision the work runs once more, on what the
    winner committed, so nothing a concurrent delivery did not also do is lost.
    """

    async def receive(unit: OrdersUnit) -> T | None:
        if await unit.find_one(WEBHOOK_DELIVERIES, {"_id": fact}) is not None:
            return None
        result = await work(unit)
        await forget_once_sent_if_erased(unit)  # a late order of an erased customer still names them
        unit.write(WEBHOOK_DELIVERIES, InsertOne({"_id": fact, "topic": topic, "received_at": unit.now()}))
        return result

    for _ in range(2):  # after a collision, once more on what the winner committed
        try:
            return await rt.transaction(receive)
        except (DuplicateKeyError, BulkWriteError) as error:
            if not _only_duplicates(error):
                raise
    return None


def _only_duplicates(error: DuplicateKeyError | BulkWriteError) -> bool:
    """Whether every write the error reports hit a unique key (the fact, or an event id, already taken)."""
    if isinstance(error, DuplicateKeyError):
        return True
    errors = error.details.get("writeErrors", [])
    return bool(errors) and all(each.get("code") == 11000 for each in errors)


async def get_known_order(unit: OrdersUnit, key: str, order_id: str) -> KnownOrder:
    """What the webhooks have told about this platform order; a new one when nothing was."""
    found = await unit.find_one(PLATFORM_ORDERS, {"_id": key})
    if found is None:
        return KnownOrder(key=key, order_id=order_id)
    presentment = found.get("presentment")
    return KnownOrder(
        key=key,
        order_id=found["order_id"],
        shop=found.get("shop"),
        customer_id=found.get("customer_id"),
        currency=found.get("currency"),
        total=None if found.get("total") is None else Decimal(found["total"]),
        presentment=None if presentment is None else (presentment["currency"], Decimal(presentment["total"])),
        placed=found["placed"],
        fulfilled=found["fulfilled"],
        cancelled=found["cancelled"],
        waiting_fulfilment=_moment(found.get("waiting_fulfilment")),
        waiting_refunds=tuple(
            RefundNews(r["refund_id"], Decimal(r["amount"]), r["currency"], _moment(r["refunded_at"]), r.get("reason"))
            for r in found.get("waiting_refunds", [])
        ),
        refunds={refund_id: moment for refund_id, at in found.get("refunds", {}).items() if (moment := _moment(at))},
        matched_with_history=Decimal(found.get("matched_with_history", "0")),
    )


def save_known_order(unit: OrdersUnit, known: KnownOrder) -> None:
    # Times as the platform wrote them (ISO 8601 with its offset), so a waiting refund is told with its own.
    unit.replace(
        PLATFORM_ORDERS,
        {
            "_id": known.key,
            "order_id": known.order_id,
            "shop": known.shop,
            "customer_id": known.customer_id,
            "currency": known.currency,
            "total": None if known.total is None else str(known.total),
            "presentment": None
            if known.presentment is None
            else {"currency": known.presentment[0], "total": str(known.presentment[1])},
            "placed": known.placed,
            "fulfilled": known.fulfilled,
            "cancelled": known.cancelled,
            "waiting_fulfilment": _iso(known.waiting_fulfilment),
            "waiting_refunds": [
                {
                    "refund_id": refund.refund_id,
                    "amount": str(refund.amount),
                    "currency": refund.currency,
                    "refunded_at": _iso(refund.refunded_at),
                    "reason": refund.reason,
                }
                for refund in known.waiting_refunds
            ],
            "refunds": {refund_id: _iso(at) for refund_id, at in known.refunds.items()},
            "matched_with_history": str(known.matched_with_history),
        },
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


async def customers_of_shop(unit: OrdersUnit, shop: str, *, limit: int) -> list[str]:
    """Up to `limit` customers (not erased yet) whose orders came from this shop's webhooks."""
    query = {"shop": shop, "customer_id": {"$ne": None, "$not": {"$regex": f"^{ALIAS_PREFIX}"}}}
    found = await unit.find(PLATFORM_ORDERS, query, projection={"customer_id": 1}, limit=limit)
    return sorted({doc["customer_id"] for doc in found})


@dataclass(frozen=True)
class DataRequest:
    """A customer's request, through the platform, for the data the shop keeps about them."""

    request_id: str
    shop: str
    customer_id: str
    orders_requested: tuple[str, ...]
    received_at: datetime
    status: str = "pending"


def record_data_request(unit: OrdersUnit, request: DataRequest) -> None:
    """Keep the request (once per request id: the platform may send it again)."""
    unit.write(
        DATA_REQUESTS,
        UpdateOne(
            {"_id": request.request_id},
            {
                "$setOnInsert": {
                    "shop": request.shop,
                    "customer_id": request.customer_id,
                    "orders_requested": list(request.orders_requested),
                    "received_at": request.received_at,
                    "status": request.status,
                }
            },
            upsert=True,
        ),
    )


async def data_requests(rt: Runtime, status: str | None = None, limit: int = 500) -> list[DataRequest]:
    """The data requests received, latest first; of one status, when given."""
    query = {} if status is None else {"status": status}
    found = (
        await rt.db[DATA_REQUESTS].find(query, sort=[("received_at", DESCENDING), ("_id", ASCENDING)]).to_list(limit)
    )
    return [
        DataRequest(
            request_id=doc["_id"],
            shop=doc["shop"],
            customer_id=doc["customer_id"],
            orders_requested=tuple(doc["orders_requested"]),
            received_at=doc["received_at"],
            status=doc["status"],
        )
        for doc in found
    ]
