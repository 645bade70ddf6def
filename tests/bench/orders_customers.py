"""Benchmark: orders' customer listing, segment scoring and retention report on 100,000 customers.

    make bench-orders            # or: .venv/bin/python -m tests.bench.orders_customers [customers]

Profiles are written straight into the service's database the way the service
writes them (`store.with_lines`), 1–12 orders each over two years; then the
scoring job runs once and `GET /customers` is timed for each sort, with and
without a segment filter, through the HTTP API. Prints figures; asserts nothing.
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
from decimal import Decimal
from pathlib import Path

from services.orders.app import SPEC
from services.orders.domain import OrderLine, stats_of
from services.orders.jobs import score_customers
from services.orders.settings import OrdersSettings
from services.orders.store import CUSTOMERS, new_profile, with_lines
from shared.logs import configure_logging
from tests.support.infra import provide
from tests.support.running import running_service

ADMIN = {"Authorization": "Bearer bench-key"}
NOW = datetime(2026, 11, 22, tzinfo=UTC)


def profile(rng: random.Random, n: int) -> dict[str, object]:
    customer_id = f"bench-cus-{n}"
    first = NOW - timedelta(days=rng.randint(0, 730))
    lines = []
    for k in range(rng.choice([1, 1, 1, 2, 2, 3, 4, 6, 12])):
        placed_at = min(NOW, first + timedelta(days=k * rng.randint(5, 90)))
        total = Decimal(rng.randint(500, 25000)) / 100
        lines.append(OrderLine(f"{customer_id}-o{k}", placed_at, "EUR", total, Decimal(0)))
    contact = {"email": f"{customer_id}@example.com", "first_name": "Eva", "city": "Košice"}
    return with_lines(new_profile(customer_id), lines, stats_of(lines)) | {"contact": contact}


async def main(count: int) -> None:
    configure_logging("WARNING")  # as the settings below say; in-process services leave logging to the caller
    rng = random.Random(11)  # noqa: S311 - a repeatable shop, not a secret
    with ExitStack() as cleanup, tempfile.TemporaryDirectory() as workdir:
        infra = provide(Path(workdir), cleanup)
        settings = OrdersSettings(
            rabbitmq_url=infra.rabbitmq_url,
            mongodb_url=infra.mongodb_url,
            crm_prefix=f"bench{uuid.uuid4().hex[:6]}",
            admin_api_key="bench-key",
            log_level="WARNING",
            segment_interval_seconds=24 * 3600,
        )
        async with running_service(replace(SPEC, name="benchorders"), settings) as (rt, http):
            started = time.perf_counter()
            for start in range(0, count, 5000):
                await rt.db[CUSTOMERS].insert_many([profile(rng, n) for n in range(start, min(count, start + 5000))])
            print(f"{count} customer profiles written in {time.perf_counter() - started:.1f} s")
            started = time.perf_counter()
            scored = await score_customers(rt, at=NOW)
            print(f"segment scoring of {scored} customers: {time.perf_counter() - started:.1f} s")
            for params in (
                {"sort": "-last_order_at"},
                {"sort": "-spent"},
                {"sort": "-orders_count"},
                {"segment": "champions", "sort": "-spent"},
                {"segment": "at_risk", "sort": "-last_order_at"},
                {"segment": "hibernating", "sort": "-orders_count", "offset": 1000},
            ):
                timings = []
                for _ in range(20):
                    began = time.perf_counter()
                    got = await http.get("/customers", params={**params, "limit": 50}, headers=ADMIN)
                    timings.append((time.perf_counter() - began) * 1000)
                    got.raise_for_status()
                print(
                    f"GET /customers {params}: median {statistics.median(timings):.1f} ms, "
                    f"max {max(timings):.1f} ms ({len(got.json()['customers'])} rows)"
                )
            began = time.perf_counter()
            (await http.get("/reports/retention", headers=ADMIN)).raise_for_status()
            print(f"GET /reports/retention: {(time.perf_counter() - began):.1f} s")
            await rt.client.drop_database(rt.db.name)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
