"""Benchmark: loyalty's OrderPlaced throughput and latency next to the raw floor, in one run.

    make bench-loyalty          # or: .venv/bin/python -m tests.bench.loyalty [orders] [customers]

1. Raw floor: the same number of messages through a RabbitMQ quorum queue into a
   minimal aio-pika consumer that, per batch of 100, inserts the idempotency ids
   and `$inc`-upserts one counter per message in one MongoDB transaction, then acks.
2. Loyalty throughput: the queue is filled with a month of OrderPlaced (1–5 line
   items) for a few thousand customers, then the loyalty service drains it:
   inbox, ledger, member and outbox committed per batch. Twice: in the order the
   orders were placed, as a shop's backend sends them, and shuffled, the worst
   case (most orders then arrive before an earlier order of the same customer
   and the member is replayed from their facts).
3. Latency: OrderPlaced placed now, published at a steady 200/s for 15 s, on top
   of the shuffled month's members; time from publish
   to the PointsAwarded it causes arriving on the exchange (p50/p95/p99).

Prints figures; asserts nothing.
"""

import asyncio
import contextlib
import json
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

import aio_pika

from services.loyalty.app import SPEC
from services.loyalty.settings import LoyaltySettings
from shared.events import Customer, LineItem, OrderPlaced, OrderPlacedEvent
from shared.logs import configure_logging
from shared.topology import Topology
from tests.bench.common import FLOOR_BATCH, applied, fill_queue, outbox_drained, raw_floor
from tests.support.infra import provide
from tests.support.running import running_service
from tests.support.tap import EventTap, eventually


def random_order(rng: random.Random, customers: int, n: int, placed_at: datetime | None = None) -> OrderPlacedEvent:
    """Order number `n` of a random customer, placed at `placed_at` (or some time in the last 30 days)."""
    customer_id = f"bench-cus-{rng.randrange(customers)}"
    items = [
        LineItem(
            sku=f"SKU-{rng.randrange(50)}",
            name="Thing",
            quantity=rng.randint(1, 3),
            unit_price=Decimal(rng.randint(300, 9000)) / 100,
            category=rng.choice(["kitchen", "garden", "tea"]),
        )
        for _ in range(rng.randint(1, 5))
    ]
    total = sum((i.unit_price * i.quantity for i in items), Decimal(0))
    data = OrderPlaced(
        order_id=f"bench-ord-{n}-{uuid.uuid4().hex[:6]}",
        customer=Customer(customer_id=customer_id, email=f"{customer_id}@example.com", locale="en"),
        placed_at=placed_at or datetime.now(UTC) - timedelta(minutes=rng.randint(0, 60 * 24 * 30)),
        currency="EUR",
        total=total,
        line_items=items,
    )
    return OrderPlacedEvent.new(data, source="shop", subject=customer_id)


def month_of_orders(rng: random.Random, count: int, customers: int) -> list[OrderPlacedEvent]:
    """`count` orders placed one after another through the last 30 days, in the order placed."""
    start, step = datetime.now(UTC) - timedelta(days=30), timedelta(days=30) / count
    return [random_order(rng, customers, n, placed_at=start + n * step) for n in range(count)]


async def loyalty_throughput(
    settings: LoyaltySettings, orders: list[OrderPlacedEvent], *, drop_after: bool
) -> tuple[float, float]:
    """Orders per second and per commit for loyalty draining `orders` from a full queue."""
    spec = replace(SPEC, name="benchloyalty")
    await fill_queue(spec, settings, orders)
    async with running_service(spec, settings) as (rt, _):
        started = time.perf_counter()
        await eventually(lambda: applied(rt) >= len(orders), timeout=900, interval=0.01)
        consumed = time.perf_counter() - started
        batches = rt.metrics.registry.get_sample_value("rapport_commit_batch_size_count") or 1
        if drop_after:  # the next run starts from no members again
            await outbox_drained(rt)
            await rt.client.drop_database(rt.db.name)
    return len(orders) / consumed, len(orders) / batches


async def loyalty_latency(settings: LoyaltySettings, rng: random.Random, rate: int, seconds: int) -> list[float]:
    spec = replace(SPEC, name="benchloyalty")
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}
    async with running_service(spec, settings) as (rt, _):
        await outbox_drained(rt)  # the throughput run's events may still be going out
        tap = await EventTap.open(settings.rabbitmq_url, settings.topology)

        def stamp(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            if message.type == "PointsAwarded":
                cause = json.loads(message.body)["causationid"]
                if cause in sent:
                    arrived.setdefault(cause, time.perf_counter())

        tap.listeners.append(stamp)
        start = time.perf_counter()
        for n in range(rate * seconds):
            due = start + n / rate
            if (wait := due - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            event = random_order(rng, 5000, 10**7 + n, placed_at=datetime.now(UTC))  # live orders, placed now
            sent[event.id] = time.perf_counter()
            await tap.publish(event)
        with contextlib.suppress(TimeoutError):  # what has not arrived by then is left out, and counted
            await eventually(lambda: len(arrived) >= len(sent), timeout=30)
        await tap.close()
    return sorted((arrived[k] - sent[k]) * 1000 for k in arrived)


async def main(count: int, customers: int) -> None:
    configure_logging("WARNING")  # as the settings below say; in-process services leave logging to the caller
    rng = random.Random(7)  # noqa: S311 - a repeatable shop day, not a secret
    with ExitStack() as cleanup, tempfile.TemporaryDirectory() as workdir:
        infra = provide(Path(workdir), cleanup)
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        settings = LoyaltySettings(
            rabbitmq_url=infra.rabbitmq_url,
            mongodb_url=infra.mongodb_url,
            crm_prefix=prefix,
            log_level="WARNING",
            expiry_interval_seconds=3600,
        )
        orders = month_of_orders(rng, count, customers)
        shuffled = rng.sample(orders, len(orders))
        print(f"{count} OrderPlaced for {customers} customers; infrastructure: {infra.how}")
        floor = await raw_floor(
            infra.rabbitmq_url, infra.mongodb_url, prefix, [o.model_dump_json().encode() for o in orders]
        )
        print(f"raw floor (aio-pika + inbox insert + $inc upsert, {FLOOR_BATCH} per commit): {floor:8.0f} messages/s")
        for arrival, stream in (("in the order placed", orders), ("shuffled", shuffled)):
            throughput, per_commit = await loyalty_throughput(settings, stream, drop_after=stream is orders)
            print(
                f"loyalty OrderPlaced → ledger, member, outbox, {arrival + ':':20} {throughput:6.0f} orders/s "
                f"({per_commit:.1f} per commit, {throughput / floor:.0%} of the floor)"
            )
        latencies = await loyalty_latency(settings, rng, rate=200, seconds=15)
        if latencies:

            def pct(p: float) -> float:
                return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

            print(
                f"latency OrderPlaced → PointsAwarded at 200/s: p50 {pct(0.50):.1f} ms, p95 {pct(0.95):.1f} ms, "
                f"p99 {pct(0.99):.1f} ms, mean {statistics.mean(latencies):.1f} ms ({len(latencies)} orders)"
            )
        connection = await aio_pika.connect(infra.rabbitmq_url)
        async with connection:
            channel = await connection.channel()
            for name in ("benchloyalty", "benchloyalty.dlq"):
                await channel.queue_delete(f"{prefix}.{name}")
            topology = Topology(prefix)
            await channel.exchange_delete(topology.events.name)
            await channel.exchange_delete(topology.dead_letters.name)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000, int(sys.argv[2]) if len(sys.argv) > 2 else 5000))
