"""Benchmark: what one MongoDB operation costs the service's CPU, back to back and at a shop's pace.

    make bench-op-cost          # or: .venv/bin/python -m tests.bench.op_cost

A service at low load commits each message on its own (a batch of one): a
transaction of a few reads, a few bulk writes and the commit. This measures the
CPU time PyMongo's async client spends on a `find_one` and on such a
transaction (one read, one write, the commit) when they run back to back, and
when they are 20 ms apart, as they are at 50 messages/s. Prints figures;
asserts nothing.
"""

import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path

from pymongo import InsertOne
from pymongo.asynchronous.client_session import AsyncClientSession

from shared.mongo import open_client
from tests.support.infra import provide

PACE_SECONDS = 0.02


async def cpu_per_call(work: Callable[[], Awaitable[object]], calls: int, pause: float) -> float:
    """Microseconds of this process's CPU per call of `work`, pausing `pause` seconds between calls."""
    busy = 0.0
    for _ in range(calls):
        started = time.process_time()
        await work()
        busy += time.process_time() - started
        if pause:
            await asyncio.sleep(pause)
    return busy / calls * 1e6


async def main() -> None:
    with ExitStack() as cleanup, tempfile.TemporaryDirectory() as workdir:
        infra = provide(Path(workdir), cleanup)
        client = open_client(infra.mongodb_url, "op-cost")
        db = client[f"opcost{uuid.uuid4().hex[:6]}"]
        await db.profiles.insert_one({"_id": "cus-1", "orders": 3})
        await db.inbox.insert_one({"_id": "first"})

        async def read() -> object:
            return await db.profiles.find_one({"_id": "cus-1"})

        async def transaction() -> object:
            async def work(session: AsyncClientSession) -> None:
                await db.profiles.find_one({"_id": "cus-1"}, session=session)
                await db.inbox.bulk_write([InsertOne({"_id": str(uuid.uuid4())})], session=session)

            async with client.start_session() as session:
                return await session.with_transaction(work)

        print(f"infrastructure: {infra.how}")
        for label, work in (("find_one", read), ("transaction: find_one + bulk write + commit", transaction)):
            warm = await cpu_per_call(work, 1000, 0)
            paced = await cpu_per_call(work, 250, PACE_SECONDS)
            print(
                f"{label}: {warm:,.0f} µs CPU back to back, {paced:,.0f} µs {PACE_SECONDS * 1000:.0f} ms apart "
                f"({paced / warm:.1f}×)"
            )
        await client.drop_database(db.name)
        await client.close()


if __name__ == "__main__":
    asyncio.run(main())
