"""HTTP API of orders: customers with their history and segment, the retention report, erasure."""

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status

from services.orders import jobs, service
from services.orders.insight import SEGMENTS
from services.orders.settings import OrdersUnit, orders_settings
from services.orders.store import CUSTOMERS, ORDERS, listing_order, money
from shared.erasure import ERASED, erased_id
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


@api.get("/customers/{customer_id}")
async def get_customer(customer_id: str, rt: Rt) -> dict[str, Any]:
    """Contact details, stats, lifetime value, RFM segment and the order history of one customer."""
    profile = await rt.db[CUSTOMERS].find_one({"_id": customer_id})
    if profile is None:
        erased = await rt.db[ERASED].find_one({"_id": erased_id(customer_id)})
        detail = "was erased" if erased is not None else "is not known"
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"customer_id: {customer_id!r} {detail}")
    orders = await rt.db[ORDERS].find({"customer_id": customer_id}, sort=[("placed.placed_at", -1)]).to_list(100)
    return _summary(profile) | {
        "refunded": money(profile.get("refunded")),
        "average_order_value": money(profile.get("average_order_value")),
        "lifetime_value": money(profile.get("net_spent")),  # historic: what they have spent, net of refunds
        "rfm": profile.get("rfm"),
        "scored_at": profile.get("scored_at"),
        "orders": [_order(order) for order in orders],
    }


@api.get("/customers")
async def list_customers(
    rt: Rt,
    segment: Annotated[str | None, Query(description=f"One of: {', '.join(SEGMENTS)}.")] = None,
    sort: Annotated[Sort, Query(description="Field to sort by; '-' for largest or latest first.")] = "-last_order_at",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> dict[str, Any]:
    """Customers, optionally of one RFM segment, sorted; each with their headline stats."""
    if segment is not None and segment not in SEGMENTS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"segment: {segment!r} is not one of {', '.join(SEGMENTS)}"
        )
    query = {} if segment is None else {"segment": segment}  # a profile exists once its customer has ordered
    found = rt.db[CUSTOMERS].find(
        query,
        {"orders": 0},
        sort=listing_order(sort, orders_settings(rt.settings).reporting_currency),
        skip=offset,
        limit=limit,
    )
    return {"customers": [_summary(profile) async for profile in found], "limit": limit, "offset": offset}


@api.get("/reports/retention")
async def retention_report(rt: Rt) -> dict[str, Any]:
    """Repeat-purchase rate, monthly cohort retention, time to the second order, historic lifetime value."""
    report = await jobs.retention(rt)
    body = asdict(report)
    body["lifetime_value"] = {
        currency: {"customers": value.customers, "average": str(value.average), "total": str(value.total)}
        for currency, value in report.lifetime_value.items()
    }
    return body


@api.post("/segments/refresh")
async def refresh_segments(rt: Rt) -> dict[str, Any]:
    """Score every customer now instead of at the next scheduled round."""
    scored = await jobs.score_customers(rt)
    if scored is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "segments: another replica is scoring right now")
    return {"scored": scored}


@api.post("/customers/{customer_id}/erase", status_code=status.HTTP_202_ACCEPTED)
async def erase_customer(customer_id: str, rt: Rt) -> dict[str, Any]:
    """Remove the customer's personal data here and, through CustomerErased, in every service."""

    async def erase(unit: OrdersUnit) -> bool:
        return await service.erase_customer(unit, customer_id, service.now())

    first_time = await rt.transaction(erase)
    return {"customer_id": customer_id, "erased": True, "already_erased": not first_time}


def _summary(profile: dict[str, Any]) -> dict[str, Any]:
    return {
        "customer_id": profile["_id"],
        "contact": profile.get("contact"),
        "orders_count": profile.get("orders_count", 0),
        "first_order_at": profile.get("first_order_at"),
        "last_order_at": profile.get("last_order_at"),
        "total_spent": money(profile.get("net_spent")),
        "segment": profile.get("segment"),
    }


def _order(order: dict[str, Any]) -> dict[str, Any]:
    placed = order["placed"] or {}
    return {
        "order_id": order["_id"],
        "placed_at": placed.get("placed_at"),
        "currency": placed.get("currency"),
        "total": placed.get("total"),
        "items": [
            {"sku": item["sku"], "name": item["name"], "quantity": item["quantity"], "unit_price": item["unit_price"]}
            for item in placed.get("line_items", [])
        ],
        "fulfilled_at": order["fulfilled_at"],
        "refunds": [
            {k: r[k] for k in ("refund_id", "amount", "currency", "refunded_at", "reason")} for r in order["refunds"]
        ],
    }
