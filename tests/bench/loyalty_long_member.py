"""Benchmark: the cost per order of one member with a long history (5,000 orders over twenty years).

    .venv/bin/python -m tests.bench.loyalty_long_member [orders] [years]    # default 5000 over 20 years

The orders of one customer, placed one after another (a regular: five a week by
default), each go through loyalty's use case in its own transaction against the
real MongoDB (load the member, decide, save the member, ledger and outbox). Prints the wall and CPU
time per order for the first few hundred orders, for as many a year in (once a
whole tier window lies behind the member) and for the last ones, and the size of
the member document and of the largest history document (member_facts) at the end.
Flat is the goal: the member keeps only what an in-order fact can still change
(docs/loyalty.md, "The checkpoint stays bounded"), and the history is one small
document per fact.
The machine may be shared: CPU time is the steadier figure.

Prints figures; asserts nothing.
"""

import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bson

from services.loyalty import service
from services.loyalty.app import SPEC
from services.loyalty.settings import LoyaltySettings, LoyaltyUnit
from shared.events import OrderPlacedEvent
from shared.logs import configure_logging
from tests.bench.loyalty import random_order
from tests.support.infra import provide
from tests.support.running import running_service

WINDOW = 300  # orders in each of the first and last windows measured


async def main(count: int, years: int) -> None:
    configure_logging("WARNING")
    rng = random.Random(11)  # noqa: S311 - a repeatable customer, not a secret
    with ExitStack() as cleanup, tempfile.TemporaryDirectory() as workdir:
        infra = provide(Path(workdir), cleanup)
        settings = LoyaltySettings(
            rabbitmq_url=infra.rabbitmq_url,
            mongodb_url=infra.mongodb_url,
            crm_prefix=f"bench{uuid.uuid4().hex[:6]}",
            log_level="WARNING",
            expiry_interval_seconds=3600,
        )
        span = timedelta(days=365 * years)
        start = datetime.now(UTC) - span
        orders = [random_order(rng, 1, n, placed_at=start + n * span / count) for n in range(count)]
        customer_id = orders[0].data.customer.customer_id
        print(f"one member, {count} OrderPlaced in order over {years} years; infrastructure: {infra.how}")
        async with running_service(replace(SPEC, name="benchlongmember"), settings) as (rt, _):
            wall: list[float] = []
            cpu: list[float] = []
            for event in orders:

                async def award(unit: LoyaltyUnit, placed: OrderPlacedEvent = event) -> None:
                    await service.award_purchase_points(unit, placed)

                started, started_cpu = time.perf_counter(), time.process_time()
                await rt.transaction(award)
                wall.append((time.perf_counter() - started) * 1000)
                cpu.append((time.process_time() - started_cpu) * 1000)
            member = await rt.db["members"].find_one({"_id": customer_id})
            size = len(bson.encode(member)) if member is not None else 0
            history = await (
                await rt.db["member_facts"].aggregate(
                    [{"$group": {"_id": None, "docs": {"$sum": 1}, "largest": {"$max": {"$bsonSize": "$$ROOT"}}}}]
                )
            ).to_list()
            await rt.client.drop_database(rt.db.name)
        a_year_in = -(-count // years)  # the first order placed a whole tier window after the first one
        windows = (
            (f"orders 1–{WINDOW}", slice(0, WINDOW)),
            (f"orders {a_year_in + 1}–{a_year_in + WINDOW} (a year in)", slice(a_year_in, a_year_in + WINDOW)),
            (f"orders {count - WINDOW + 1}–{count} (the last)", slice(-WINDOW, None)),
        )
        for label, part in windows:
            print(
                f"{label:32} {statistics.mean(wall[part]):6.2f} ms wall, "
                f"{statistics.mean(cpu[part]):6.2f} ms CPU per order "
                f"(median wall {statistics.median(wall[part]):.2f} ms)"
            )
        print(f"member document at the end: {size / 1024:.1f} KiB")
        if history:
            docs, largest = history[0]["docs"], history[0]["largest"]
            print(f"member_facts at the end: {docs} documents, the largest {largest / 1024:.1f} KiB")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000, int(sys.argv[2]) if len(sys.argv) > 2 else 20))
