"""Benchmark: consumer throughput with one commit per message vs group commit (DESIGN.md §5).

    make bench-group-commit    # or: .venv/bin/python -m tests.bench.group_commit [messages]

Fills a service queue with OrderPlaced events, then starts the probe service
(inbox insert + one upsert + one outbox event per message, relayed with
publisher confirms) and measures how fast it drains the queue and the outbox,
for several BATCH_SIZE values. Prints figures; asserts nothing about speed.
"""

import asyncio
import json
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import aio_pika

from shared.events import parse_event
from shared.logs import configure_logging
from shared.settings import ServiceSettings
from tests.bench.common import applied, fill_queue, outbox_drained
from tests.service.probe import probe_spec
from tests.support.infra import provide
from tests.support.running import running_service
from tests.support.tap import eventually

SAMPLE = Path(__file__).parents[1] / "fixtures" / "events" / "OrderPlaced.json"


async def measure(settings: ServiceSettings, service: str, messages: int) -> tuple[float, float]:
    spec = probe_spec(service)
    raw = json.loads(SAMPLE.read_text())
    orders = (
        parse_event(raw | {"id": str(uuid.uuid4()), "data": raw["data"] | {"order_id": f"bench-{n}"}})
        for n in range(messages)
    )
    await fill_queue(spec, settings, orders)

    async with running_service(spec, settings) as (rt, _):
        started = time.perf_counter()
        await eventually(lambda: applied(rt) >= messages, timeout=900, interval=0.01)
        consumed = time.perf_counter() - started
        await outbox_drained(rt)
        relayed = time.perf_counter() - started
        batches = rt.metrics.registry.get_sample_value("rapport_commit_batch_size_count") or 1
    print(
        f"  batch_size={settings.batch_size:<4} {messages / consumed:8.0f} events/s consumed, "
        f"{messages / relayed:8.0f} events/s through the outbox, {messages / batches:6.1f} messages per commit"
    )
    return messages / consumed, messages / relayed


async def main(messages: int) -> None:
    configure_logging("WARNING")  # as the settings below say; in-process services leave logging to the caller
    with ExitStack() as cleanup, tempfile.TemporaryDirectory() as workdir:
        infra = provide(Path(workdir), cleanup)
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        print(f"{messages} OrderPlaced per run; infrastructure: {infra.how}")
        results = {}
        for batch_size in (1, 10, 100):
            settings = ServiceSettings(
                rabbitmq_url=infra.rabbitmq_url,
                mongodb_url=infra.mongodb_url,
                crm_prefix=prefix,
                batch_size=batch_size,
                log_level="WARNING",
            )
            results[batch_size] = await measure(settings, f"bench{batch_size}", messages)
        print(f"group commit (100) vs one commit per message: {results[100][0] / results[1][0]:.1f}x")
        connection = await aio_pika.connect(infra.rabbitmq_url)
        async with connection:
            channel = await connection.channel()
            for batch_size in results:
                await channel.queue_delete(f"{prefix}.bench{batch_size}")
                await channel.queue_delete(f"{prefix}.bench{batch_size}.dlq")
            await channel.exchange_delete(f"{prefix}.events")
            await channel.exchange_delete(f"{prefix}.dlx")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000))
