"""The whole system under faults: every event twice in shuffled order, and a service killed mid-stream.

The four services run as real processes. Each test sends a generated shop day
(tests/shop_day.py) and ends with the figures DESIGN.md §7 gives for it, worked
out independently of the services: every member's balance, every customer's
orders and spend, what followups planned, what each referral code converted —
nothing lost, nothing doubled.

After a crash, the outbox may publish an event again (a relay that died between
the broker's confirm and marking the entry sent): consumers' inboxes absorb it,
so the crash test counts loyalty's events by their event ids.
"""

import asyncio
import random
import signal
from collections import Counter
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from shared.mongo import INBOX
from tests.e2e.day_checks import (
    balances,
    check_followups,
    check_no_dead_letters,
    check_orders,
    check_referrals,
    conversions,
    issue_codes,
    points_on_the_exchange,
    published_by_services,
    purchase_awards,
    wait_until_applied,
)
from tests.shop_day import plan_shop_day, referrers_of
from tests.support.infra import Infrastructure
from tests.support.processes import ServiceStack
from tests.support.tap import EventTap, eventually

Mongo = AsyncMongoClient[dict[str, Any]]


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    return {
        # Nothing falls due while a test runs, so what followups planned can be compared exactly.
        "THANK_YOU_DELAY_SECONDS": str(30 * 24 * 3600),
        "SCHEDULER_INTERVAL_SECONDS": "3600",
        "CALL_CUSTOMERS": "1000000",  # every customer is an early one: calls do not depend on arrival order
    }


async def test_every_event_twice_in_shuffled_order_ends_in_the_in_order_figures(
    stack: ServiceStack, tap: EventTap, http: httpx.AsyncClient, mongo: Mongo, infra: Infrastructure
) -> None:
    tag, customers = "shuffled", 60
    codes = await issue_codes(http, stack, referrers_of(tag, customers))
    day = plan_shop_day(1122, tag=tag, customers=customers, orders=300, codes=codes)
    deliveries = day.events * 2
    # Refunds before their orders, feedback before the order it is about; a repeatable shuffle, not a secret.
    random.Random(2211).shuffle(deliveries)  # noqa: S311
    await tap.publish_many(deliveries)

    await wait_until_applied(mongo, stack, day.events)
    expected = day.expected_balances()
    await eventually(lambda: points_on_the_exchange(tap.bodies(), expected) == expected, timeout=60)
    assert await balances(http, stack, sorted(expected)) == expected
    awards = purchase_awards(tap.bodies(), day)
    assert Counter(len(ids) for ids in awards.values()) == Counter({1: len(day.orders)})  # one message per order
    assert conversions(tap.bodies(), day) == sorted(c.order_id for c in day.conversions)
    mine = set(day.customers)
    await tap.wait_for(lambda e: e["type"] == "ReferralInvited" and e["subject"] in mine, count=len(day.promoters))
    await wait_until_applied(mongo, stack, [*day.events, *published_by_services(tap)])
    assert sorted(e["subject"] for e in tap.bodies("ReferralInvited") if e["subject"] in mine) == sorted(day.promoters)
    await check_orders(http, stack, day)
    await check_followups(mongo, stack, day)
    await check_referrals(http, stack, day, codes)
    await check_no_dead_letters(infra, stack)
    print(f"{len(deliveries)} deliveries of {len(day.events)} events; {len(day.conversions)} conversions")


async def test_loyalty_killed_mid_stream_and_restarted_loses_nothing_and_doubles_nothing(
    stack: ServiceStack, tap: EventTap, http: httpx.AsyncClient, mongo: Mongo, infra: Infrastructure
) -> None:
    tag, customers = "killed", 150
    codes = await issue_codes(http, stack, referrers_of(tag, customers))
    day = plan_shop_day(3344, tag=tag, customers=customers, orders=1200, codes=codes)
    loyalty = stack["loyalty"]
    inbox = mongo[stack.topology.database("loyalty")][INBOX]
    ids = [event.id for event in day.events]
    publishing = asyncio.create_task(tap.publish_many(day.events))

    async def partly_applied() -> bool:
        return await inbox.count_documents({"_id": {"$in": ids}}) >= len(ids) // 5

    await eventually(partly_applied, timeout=60)
    loyalty.kill()
    assert loyalty.process is not None
    assert loyalty.process.returncode == -signal.SIGKILL
    applied_before = await inbox.count_documents({"_id": {"$in": ids}})
    loyalty.start()
    await asyncio.to_thread(loyalty.wait_ready)
    await publishing
    print(f"loyalty killed with {applied_before} of {len(ids)} events applied")

    # A claim the killed relay held on outbox entries runs out after its lease (30 s), then they go out.
    await wait_until_applied(mongo, stack, day.events, timeout=120)
    expected = day.expected_balances()
    await eventually(lambda: points_on_the_exchange(tap.distinct(), expected) == expected, timeout=120, interval=0.25)
    assert await balances(http, stack, sorted(expected)) == expected
    awards = purchase_awards(tap.distinct(), day)
    assert {order: found for order, found in awards.items() if len(found) != 1} == {}  # each order awarded once
    assert conversions(tap.distinct(), day) == sorted(c.order_id for c in day.conversions)
    await wait_until_applied(mongo, stack, [*day.events, *published_by_services(tap)])
    await check_orders(http, stack, day)
    await check_followups(mongo, stack, day)
    await check_referrals(http, stack, day, codes)
    await check_no_dead_letters(infra, stack)
    again = len(tap.bodies("PointsAwarded")) - len(tap.distinct("PointsAwarded"))
    print(f"PointsAwarded published again after the crash (absorbed downstream): {again}")
