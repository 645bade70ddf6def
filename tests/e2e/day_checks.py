"""What a whole shop day must come to in every service, read through their APIs, their documented
MongoDB documents and the events on the exchange (tests/shop_day.py works the figures out)."""

from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from shared.events import Envelope, parse_event
from shared.mongo import INBOX
from tests.shop_day import CONSUMERS, ShopDay
from tests.support.infra import Infrastructure
from tests.support.processes import ServiceStack
from tests.support.tap import EventTap, drain_queue, eventually

Mongo = AsyncMongoClient[dict[str, Any]]


async def issue_codes(http: httpx.AsyncClient, stack: ServiceStack, referrers: list[str]) -> dict[str, str]:
    codes = {}
    for customer_id in referrers:
        issued = await http.post(f"{stack['referrals'].url}/referrers/{customer_id}/code")
        assert issued.status_code == 201, issued.text
        codes[customer_id] = issued.json()["code"]
    return codes


async def wait_until_applied(
    mongo: Mongo, stack: ServiceStack, events: list[Envelope[Any]], timeout: float = 60
) -> None:
    """Until every service's inbox holds every one of `events` it consumes: nothing lost on the way in."""
    wanted = {
        service: list({e.id for e in events if service in CONSUMERS[e.type]})
        for service in ("orders", "followups", "loyalty", "referrals")
    }

    async def missing() -> dict[str, int]:
        found = {}
        for service, ids in wanted.items():
            inbox = mongo[stack.topology.database(service)][INBOX]
            found[service] = len(ids) - await inbox.count_documents({"_id": {"$in": ids}})
        return found

    async def none_missing() -> bool:
        return not any((await missing()).values())

    try:
        await eventually(none_missing, timeout=timeout, interval=0.25)
    except TimeoutError as late:
        raise AssertionError(f"events not applied after {timeout}s, by service: {await missing()}") from late


async def balances(http: httpx.AsyncClient, stack: ServiceStack, customers: list[str]) -> dict[str, int]:
    found = {}
    for customer_id in customers:
        member = await http.get(f"{stack['loyalty'].url}/members/{customer_id}")
        assert member.status_code == 200, (customer_id, member.text)
        found[customer_id] = member.json()["balance"]
    return found


def points_on_the_exchange(bodies: list[dict[str, Any]], customers: Iterable[str]) -> dict[str, int]:
    """Per customer, what loyalty's PointsAwarded minus PointsReversed events about them add up to."""
    total = dict.fromkeys(customers, 0)
    for body in bodies:
        sign = {"PointsAwarded": 1, "PointsReversed": -1}.get(body["type"], 0)
        if sign and body["data"]["customer_id"] in total:
            total[body["data"]["customer_id"]] += sign * body["data"]["points"]
    return total


def purchase_awards(bodies: list[dict[str, Any]], day: ShopDay) -> dict[str, list[str]]:
    """Each order of the day → ids of the PointsAwarded events for its purchase points."""
    awards: dict[str, list[str]] = {order.order_id: [] for order in day.orders}
    for body in bodies:
        if body["type"] == "PointsAwarded" and body["data"]["reason"] == "purchase":
            awards.get(body["data"]["order_id"], []).append(body["id"])
    return awards


def conversions(bodies: list[dict[str, Any]], day: ShopDay) -> list[str]:
    """The orders of the day that ReferralConverted events name, one per event."""
    orders = {order.order_id for order in day.orders}
    return sorted(
        b["data"]["order_id"] for b in bodies if b["type"] == "ReferralConverted" and b["data"]["order_id"] in orders
    )


async def check_orders(http: httpx.AsyncClient, stack: ServiceStack, day: ShopDay) -> None:
    """Every customer's order count and net spend (DESIGN.md §6 `GET /customers/{id}`)."""
    counts, spent = day.orders_count(), day.net_spent()
    for customer_id in day.customers:
        customer = await http.get(f"{stack['orders'].url}/customers/{customer_id}")
        assert customer.status_code == 200, customer.text
        body = customer.json()
        assert (body["orders_count"], Decimal(body["total_spent"]["EUR"])) == (
            counts[customer_id],
            spent[customer_id],
        ), customer_id


async def check_followups(mongo: Mongo, stack: ServiceStack, day: ShopDay, promoters: set[str] | None = None) -> None:
    """What followups planned, by the ids docs/followups.md gives them; a full refund cancels what was pending,
    a partial one nothing.

    `promoters`: the customers invited to refer friends, when more than the day's own promoters were.
    """
    planned = {
        doc["_id"]: doc
        async for doc in mongo[stack.topology.database("followups")]["followups"].find(
            {"customer_id": {"$in": day.customers}}
        )
    }
    refunded = day.fully_refunded_orders
    expected = {f"thank_you:{o.order_id}": o.order_id for o in day.orders}
    expected |= {f"feedback_request:{order_id}": order_id for order_id in day.fulfilled_orders}
    statuses = {key: planned[key]["status"] if key in planned else "missing" for key in expected}
    assert statuses == {key: "cancelled" if order in refunded else "pending" for key, order in expected.items()}
    by_kind: defaultdict[str, set[str]] = defaultdict(set)
    for doc in planned.values():
        by_kind[doc["kind"]].add(doc["customer_id"])
    fulfilled_customers = {o.customer.customer_id for o in day.orders if o.order_id in day.fulfilled_orders}
    assert by_kind["call"] == fulfilled_customers  # every customer is an early one here (CALL_CUSTOMERS)
    invitations = [doc for doc in planned.values() if doc["kind"] == "referral_invite"]
    assert sorted(doc["customer_id"] for doc in invitations) == sorted(
        day.promoters if promoters is None else promoters
    )


async def check_referrals(http: httpx.AsyncClient, stack: ServiceStack, day: ShopDay, codes: dict[str, str]) -> None:
    """Each code converted exactly the friends' first orders that carried it, and refused nothing."""
    for referrer, code in codes.items():
        page = await http.get(f"{stack['referrals'].url}/referrals/{code}")
        assert page.status_code == 200, page.text
        body = page.json()
        friends = sorted(c.order_id for c in day.conversions if c.referrer == referrer)
        assert sorted(r["order_id"] for r in body["referrals"] if r["outcome"] == "converted") == friends
        assert (body["conversions"], body["refusals"]) == (len(friends), {})


def published_by_services(tap: EventTap) -> list[Envelope[Any]]:
    """The events services published to each other (once each), to check their consumers applied them too."""
    return [parse_event(body) for kind in ("ReferralConverted", "ReferralInvited") for body in tap.distinct(kind)]


async def check_no_dead_letters(infra: Infrastructure, stack: ServiceStack) -> None:
    for service in stack.services:
        dead = await drain_queue(infra.rabbitmq_url, f"{stack.topology.queue_name(service)}.dlq")
        assert dead == [], [m.headers for m in dead]
