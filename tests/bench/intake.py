"""Benchmark: how fast orders and followups take in OrderPlaced (a queue drained by the service).

    .venv/bin/python -m tests.bench.intake [orders] [customers]

The queue of each service is filled first, then the service drains it: inbox,
its documents and (followups) the planned thank-you notes, committed per batch.
Prints figures; asserts nothing.
"""

import asyncio
import random
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from services.followups.app import SPEC as FOLLOWUPS
from services.followups.settings import FollowupsSettings
from services.orders.app import SPEC as ORDERS
from services.orders.settings import OrdersSettings
from shared.logs import configure_logging
from tests.bench.common import applied, fill_queue
from tests.bench.loyalty import random_order
from tests.support.infra import provide
from tests.support.running import running_service
from tests.support.tap import eventually


async def main(count: int, customers: int) -> None:
    configure_logging("WARNING")  # as the settings below say; in-process services leave logging to the caller
    rng = random.Random(7)  # noqa: S311 - a repeatable shop day, not a secret
    with ExitStack() as cleanup, tempfile.TemporaryDirectory() as workdir:
        infra = provide(Path(workdir), cleanup)
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        common = {
            "rabbitmq_url": infra.rabbitmq_url,
            "mongodb_url": infra.mongodb_url,
            "crm_prefix": prefix,
            "log_level": "WARNING",
        }
        orders = [random_order(rng, customers, n) for n in range(count)]
        print(f"{count} OrderPlaced for {customers} customers")
        for service, settings in (
            (ORDERS, OrdersSettings(**common, segment_interval_seconds=24 * 3600)),
            (FOLLOWUPS, FollowupsSettings(**common, scheduler_interval_seconds=24 * 3600)),
        ):
            spec = replace(service, name=f"bench{service.name}")
            await fill_queue(spec, settings, orders)
            async with running_service(spec, settings) as (rt, _):
                started = time.perf_counter()
                await eventually(lambda rt=rt: applied(rt) >= len(orders), timeout=900, interval=0.01)
                elapsed = time.perf_counter() - started
                await rt.client.drop_database(rt.db.name)
            print(f"{spec.name}: {count / elapsed:6.0f} OrderPlaced/s")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000, int(sys.argv[2]) if len(sys.argv) > 2 else 2000))
