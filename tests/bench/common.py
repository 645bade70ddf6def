"""What the benchmarks share: a queue filled before its service starts, how far it has got, and the raw floor."""

import asyncio
import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

import aio_pika
from pymongo import InsertOne, UpdateOne

from shared.events import Envelope
from shared.mongo import database, open_client
from shared.service import Runtime, ServiceSpec
from shared.settings import ServiceSettings
from tests.support.running import running_service
from tests.support.tap import EventTap, eventually


async def fill_queue(spec: ServiceSpec, settings: ServiceSettings, events: Iterable[Envelope[Any]]) -> None:
    """Declare the service's queue (by starting it once), then publish `events` into it while it is stopped."""
    async with running_service(spec, settings):
        pass
    tap = await EventTap.open(settings.rabbitmq_url, settings.topology)
    for event in events:
        await tap.publish(event)
    await tap.close()


def applied(rt: Runtime) -> float:
    sample = {"type": "OrderPlaced", "outcome": "applied"}
    return rt.metrics.registry.get_sample_value("rapport_messages_consumed_total", sample) or 0


async def outbox_drained(rt: Runtime) -> None:
    async def empty() -> bool:
        return not await rt.relay.backlog()

    await eventually(empty, timeout=900, interval=0.01)


FLOOR_BATCH = 100


async def raw_floor(rabbitmq_url: str, mongodb_url: str, prefix: str, bodies: list[bytes]) -> float:
    """A minimal consumer doing the least work that is still idempotent and durable."""
    connection = await aio_pika.connect(rabbitmq_url)
    client = open_client(mongodb_url, "raw-floor")
    db = database(client, f"{prefix}_rawfloor")
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(f"{prefix}.rawfloor", durable=True, arguments={"x-queue-type": "quorum"})
        for body in bodies:
            await channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=str(uuid.uuid4())),
                routing_key=queue.name,
            )
        await channel.set_qos(prefetch_count=FLOOR_BATCH)
        pending: list[aio_pika.abc.AbstractIncomingMessage] = []
        done = asyncio.Event()
        handled = 0
        started = time.perf_counter()

        async def commit() -> None:
            nonlocal handled
            batch, pending[:] = list(pending), []
            async with client.start_session() as session, await session.start_transaction():
                await db.inbox.bulk_write([InsertOne({"_id": m.message_id}) for m in batch], session=session)
                await db.counters.bulk_write(
                    [UpdateOne({"_id": json.loads(m.body)["subject"]}, {"$inc": {"n": 1}}, upsert=True) for m in batch],
                    session=session,
                )
            await batch[-1].ack(multiple=True)
            handled += len(batch)
            if handled >= len(bodies):
                done.set()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            pending.append(message)
            if len(pending) >= FLOOR_BATCH or handled + len(pending) >= len(bodies):
                await commit()

        tag = await queue.consume(on_message)
        await done.wait()
        elapsed = time.perf_counter() - started
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
    await client.drop_database(db.name)
    await client.close()
    return len(bodies) / elapsed
