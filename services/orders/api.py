"""HTTP API of orders: customers with their history and segment, the retention report, erasure."""

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import AfterValidator, BaseModel, Field, WithJsonSchema

from services.orders import domain, jobs, service, store
from services.orders.domain import Refund
from services.orders.insight import SEGMENTS, Rfm
from services.orders.settings import OrdersUnit, settings_of
from services.orders.store import CustomerSummary, Order, OrderRecord
from shared.http import ADMIN_ONLY, NOTHING_HELD, error, nothing_held
from shared.service import Runtime, runtime

api = APIRouter(tags=["orders"])
Rt = Annotated[Runtime, Depends(runtime)]

Sort = Literal[
    "-last_order_at",
    "last_order_at",
    "-first_order_at",
    "first_order_at",
    "-orders_count",
    "orders_count",
    "-spent",
    "spent",
]


def _known_segment(segment: str) -> str:
    if segment not in SEGMENTS:
        raise ValueError(f"{segment!r} is not one of {', '.join(SEGMENTS)}")
    return segment


# The grid's names, checked and listed in the OpenAPI from the grid itself.
SegmentName = Annotated[str, AfterValidator(_known_segment), WithJsonSchema({"type": "string", "enum": list(SEGMENTS)})]


class CustomerOut(BaseModel):
    """A customer's headline figures; amounts are decimal strings per currency."""

    customer_id: str
    contact: dict[str, Any] | None
    orders_count: int
    first_order_at: datetime | None
    last_order_at: datetime | None
    total_spent: dict[str, str]
    segment: str | None


class Scores(BaseModel):
    recency: int
    frequency: int
    monetary: int


class ItemOut(BaseModel):
    sku: str
    name: str
    quantity: int
    unit_price: str


class RefundOut(BaseModel):
    refund_id: str
    amount: str
    currency: str
    refunded_at: datetime
    reason: str | None


class OrderOut(BaseModel):
    order_id: str
    placed_at: datetime | None
    currency: str | None
    total: str | None
    items: list[ItemOut]
    fulfilled_at: datetime | None
    refunds: list[RefundOut]
    cancelled_at: datetime | None = Field(description="Set once the order was cancelled: it then counts for nothing.")


class CustomerProfile(CustomerOut):
    refunded: dict[str, str]
    average_order_value: dict[str, str]
    lifetime_value: dict[str, str]
    rfm: Scores | None
    scored_at: datetime | None
    orders: list[OrderOut]


class CustomerPage(BaseModel):
    customers: list[CustomerOut]
    limit: int
    offset: int


@api.get("/customers/{customer_id}", responses={404: error("The customer is not known, or was erased.")})
async def get_customer(customer_id: str, rt: Rt) -> CustomerProfile:
    """Contact details, stats, lifetime value, RFM segment and the order history of one customer."""
    figures = await store.customer_figures(rt, customer_id)
    if figures is None:

        async def was_erased(unit: OrdersUnit) -> bool:
            return await store.customer_is_erased(unit, customer_id)

        detail = "was erased" if await rt.transaction(was_erased) else "is not known"
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"customer_id: {customer_id!r} {detail}")
    orders = await store.order_history(rt, customer_id)
    return CustomerProfile(
        **_summary(figures).model_dump(),
        refunded=figures.refunded,
        average_order_value=figures.average_order_value,
        lifetime_value=figures.net_spent,  # historic: what they have spent, net of refunds
        rfm=_scores(figures.rfm),
        scored_at=figures.scored_at,
        orders=[_order(order) for order in orders],
    )


@api.get("/orders/{order_id}", responses={404: error("Nothing was heard of the order.")})
async def get_order(order_id: str, rt: Rt) -> OrderOut:
    """One order as told: items, fulfilment, each refund by its id, cancellation (the importer reads which
    refunds the webhooks told of an order before publishing its history, docs/orders.md)."""
    found = await store.order_record(rt, order_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"order_id: nothing was heard of order {order_id!r}")
    return _order(found)


@api.get("/customers")
async def list_customers(
    rt: Rt,
    segment: Annotated[SegmentName | None, Query(description="Only customers of this RFM segment.")] = None,
    sort: Annotated[Sort, Query(description="Field to sort by; '-' for largest or latest first.")] = "-last_order_at",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Find customers instead: an e-mail, a phone number, an order number or id, or the start of a"
            " name (`Jana Nov`); the latest buyers first, `limit` of them.",
        ),
    ] = None,
    customer_id: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=128)]],
        Query(max_length=500, description="These customers' headline figures instead (repeat it; those known)."),
    ] = [],  # noqa: B006 - FastAPI copies a query list's default
) -> CustomerPage:
    """Customers, optionally of one RFM segment, sorted; each with their headline stats. With `q`, those it finds;
    with `customer_id`, those named."""
    if customer_id:
        found = await store.customers_named(rt, customer_id[:limit])
        return CustomerPage(customers=[_summary(customer) for customer in found], limit=limit, offset=0)
    if q is not None:
        found = await store.customers_matching(rt, domain.search_terms(q), limit=limit)
        return CustomerPage(customers=[_summary(customer) for customer in found], limit=limit, offset=0)
    currency = settings_of(rt).reporting_currency
    found = await store.customer_listing(rt, segment, sort, currency, limit=limit, offset=offset)
    return CustomerPage(customers=[_summary(customer) for customer in found], limit=limit, offset=offset)


class CohortOut(BaseModel):
    month: str = Field(examples=["2026-03"])
    customers: int
    retention: list[float] = Field(description="Month k after the first: share of the cohort that ordered in it.")


class LifetimeValueOut(BaseModel):
    customers: int
    average: str
    total: str


class RetentionOut(BaseModel):
    customers: int
    repeat_customers: int
    repeat_purchase_rate: float
    days_to_second_order: float | None
    median_days_to_second_order: float | None
    cohorts: list[CohortOut]
    lifetime_value: dict[str, LifetimeValueOut]


@api.get("/reports/retention")
async def retention_report(rt: Rt) -> RetentionOut:
    """Repeat-purchase rate, monthly cohort retention, time to the second order, historic lifetime value."""
    report = await jobs.retention(rt)
    lifetime_value = {
        currency: LifetimeValueOut(customers=value.customers, average=str(value.average), total=str(value.total))
        for currency, value in report.lifetime_value.items()
    }
    return RetentionOut(**asdict(report) | {"lifetime_value": lifetime_value})


class SegmentSizes(BaseModel):
    segments: dict[str, int] = Field(
        description="Customers per RFM segment of the last scoring round; every segment is named, 0 when empty.",
        json_schema_extra={"propertyNames": {"enum": list(SEGMENTS)}},
    )
    unscored: int = Field(description="Customers who have ordered but are not scored yet (the next round scores them).")


@api.get("/reports/segments")
async def segment_report(rt: Rt) -> SegmentSizes:
    """How many customers each RFM segment holds."""
    sizes, unscored = await store.segment_sizes(rt)
    return SegmentSizes(segments=sizes, unscored=unscored)


class Scored(BaseModel):
    scored: int


@api.post("/segments/refresh", responses={409: error("Another replica is scoring right now.")})
async def refresh_segments(rt: Rt) -> Scored:
    """Score every customer now instead of at the next scheduled round."""
    scored = await jobs.score_customers(rt)
    if scored is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "segments: another replica is scoring right now")
    return Scored(scored=scored)


class Erased(BaseModel):
    customer_id: str
    erased: Literal[True]
    already_erased: bool


@api.post("/customers/{customer_id}/erase", status_code=status.HTTP_202_ACCEPTED, openapi_extra=ADMIN_ONLY)
async def erase_customer(customer_id: str, rt: Rt) -> Erased:
    """Remove the customer's personal data here and, through CustomerErased, in every service."""

    async def erase(unit: OrdersUnit) -> bool:
        return await service.erase_customer(unit, customer_id, unit.now())

    first_time = await rt.transaction(erase)
    return Erased(customer_id=customer_id, erased=True, already_erased=not first_time)


class DataRequestOut(BaseModel):
    """A customer's request, through the platform, for the data the shop keeps about them."""

    request_id: str = Field(examples=["shopify:keramika-kosice.myshopify.com:9999"])
    shop: str
    customer_id: str
    orders_requested: list[str]
    received_at: datetime
    status: Literal["pending"]


class DataRequests(BaseModel):
    data_requests: list[DataRequestOut]


@api.get("/data-requests", openapi_extra=ADMIN_ONLY)
async def list_data_requests(rt: Rt) -> DataRequests:
    """Shopify customers/data_request webhooks received, latest first: fulfil each with the customer's export."""
    found = await store.data_requests(rt)
    return DataRequests(
        data_requests=[
            DataRequestOut(
                request_id=request.request_id,
                shop=request.shop,
                customer_id=request.customer_id,
                orders_requested=list(request.orders_requested),
                received_at=request.received_at,
                status="pending",
            )
            for request in found
        ]
    )


def _summary(customer: CustomerSummary) -> CustomerOut:
    return CustomerOut(
        customer_id=customer.customer_id,
        contact=None if customer.contact is None else dict(customer.contact),
        orders_count=customer.orders_count,
        first_order_at=customer.first_order_at,
        last_order_at=customer.last_order_at,
        total_spent=customer.net_spent,
        segment=customer.segment,
    )


def _scores(rfm: Rfm | None) -> Scores | None:
    return None if rfm is None else Scores(recency=rfm.recency, frequency=rfm.frequency, monetary=rfm.monetary)


def _order(order: OrderRecord) -> OrderOut:
    return OrderOut(
        order_id=order.order_id,
        placed_at=order.placed_at,
        currency=order.currency,
        total=order.total,
        items=[
            ItemOut(sku=item.sku, name=item.name, quantity=item.quantity, unit_price=item.unit_price)
            for item in order.items
        ],
        fulfilled_at=order.fulfilled_at,
        cancelled_at=order.cancelled_at,
        refunds=[_refund(refund) for refund in order.refunds],
    )


def _refund(refund: Refund) -> RefundOut:
    return RefundOut(
        refund_id=refund.refund_id,
        amount=str(refund.amount),
        currency=refund.currency,
        refunded_at=refund.refunded_at,
        reason=refund.reason,
    )


# --- a customer's data (GDPR Art. 15 and 20) ---------------------------------------------------------


class ProfileOut(CustomerOut):
    """The customer's profile: contact details from their latest order, stats, scores."""

    refunded: dict[str, str]
    average_order_value: dict[str, str]
    rfm: Scores | None
    scored_at: datetime | None


class OrderedItem(ItemOut):
    category: str | None


class OrderExport(BaseModel):
    """An order as the shop told it: who placed it (as that order gave it), where it went, what was in it."""

    order_id: str
    order_number: str | None
    placed_at: datetime | None = Field(description="Null for a fulfilment or refund heard of before its order.")
    currency: str | None
    total: str | None
    customer: dict[str, Any] | None = Field(description="The customer's details as this order gave them.")
    shipping_address: dict[str, Any] | None
    items: list[OrderedItem]
    discount_codes: list[str]
    referral_code: str | None
    fulfilled_at: datetime | None
    cancelled_at: datetime | None
    cancellation_reason: str | None
    refunds: list[RefundOut]


class OrdersExport(BaseModel):
    """Everything orders holds on the customer."""

    customer_id: str
    profile: ProfileOut | None = Field(description="Null while none of their orders is known (only a refund, say).")
    orders: list[OrderExport]


@api.get("/customers/{customer_id}/export", openapi_extra=ADMIN_ONLY, responses={404: NOTHING_HELD})
async def export_customer(customer_id: str, rt: Rt) -> OrdersExport:
    """Everything orders holds on the customer, for their copy of their data (read in one transaction, audited)."""

    async def read(unit: OrdersUnit) -> tuple[store.CustomerRecords, bool]:
        return await store.customer_records(unit, customer_id), await store.customer_is_erased(unit, customer_id)

    records, erased = await rt.transaction(read)
    if records.profile is None and not records.orders:
        raise nothing_held(customer_id, erased=erased)
    profile = records.profile
    return OrdersExport(
        customer_id=customer_id,
        profile=None
        if profile is None
        else ProfileOut(
            **_summary(profile).model_dump(),
            refunded=profile.refunded,
            average_order_value=profile.average_order_value,
            rfm=_scores(profile.rfm),
            scored_at=profile.scored_at,
        ),
        orders=[_exported(order) for order in records.orders],
    )


def _exported(order: Order) -> OrderExport:
    placed = order.placed or {}
    return OrderExport(
        order_id=order.order_id,
        order_number=placed.get("order_number"),
        placed_at=placed.get("placed_at"),
        currency=placed.get("currency"),
        total=placed.get("total"),
        customer=placed.get("customer"),
        shipping_address=placed.get("shipping_address"),
        items=[
            OrderedItem(
                sku=item["sku"],
                name=item["name"],
                quantity=item["quantity"],
                unit_price=item["unit_price"],
                category=item.get("category"),
            )
            for item in placed.get("line_items", [])
        ],
        discount_codes=placed.get("discount_codes", []),
        referral_code=placed.get("referral_code"),
        fulfilled_at=order.fulfilled_at,
        cancelled_at=None if order.cancelled is None else order.cancelled.cancelled_at,
        cancellation_reason=None if order.cancelled is None else order.cancelled.reason,
        refunds=[_refund(refund) for refund in order.refunds],
    )
