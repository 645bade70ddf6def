"""The four services as real processes: start, become ready, consume, stop cleanly on SIGTERM."""

import json
import time
from pathlib import Path

import aio_pika
import httpx
import pytest
from pymongo import AsyncMongoClient

from services.asyncapi import SPECS
from shared.events import parse_event
from tests.shop_day import CONSUMERS
from tests.support.infra import Infrastructure
from tests.support.processes import ServiceProcess, ServiceStack
from tests.support.tap import EventTap, drain_queue, eventually

SERVICES = ("orders", "followups", "loyalty", "referrals")
EXPECTED_CONSUMERS = {  # DESIGN.md §2: who reacts to what
    service: {event_type for event_type, takers in CONSUMERS.items() if service in takers} for service in SERVICES
}
SAMPLES = Path(__file__).parents[1] / "fixtures" / "events"


@pytest.fixture(scope="module")
def services(stack: ServiceStack) -> dict[str, ServiceProcess]:
    return stack.processes


def test_every_service_becomes_ready(services: dict[str, ServiceProcess]) -> None:
    for name, process in services.items():
        assert process.ready_after is not None
        print(f"{name} ready after {process.ready_after:.2f}s")
        assert httpx.get(f"{process.url}/healthz").json() == {"status": "alive"}
        assert httpx.get(f"{process.url}/readyz").json() == {"broker": "ok", "database": "ok", "consumer": "ok"}


async def _consumed(process: ServiceProcess, event_type: str, outcome: str = "applied") -> float:
    return await process.metric("rapport_messages_consumed_total", type=event_type, outcome=outcome)


async def _taken(process: ServiceProcess, event_type: str) -> tuple[float, float]:
    """Events of the type the process applied, and those it skipped as duplicates."""
    return await _consumed(process, event_type), await _consumed(process, event_type, "duplicate")


async def _took(process: ServiceProcess, event_type: str, applied: float, duplicate: float = 0) -> bool:
    """Whether the process applied `applied` and skipped `duplicate` events of the type, no more, no less."""
    return await _taken(process, event_type) == (applied, duplicate)


async def _took_at_least(process: ServiceProcess, event_type: str, applied: float, duplicate: float) -> bool:
    """Whether the process applied at least `applied` events of the type and skipped exactly `duplicate`."""
    taken, skipped = await _taken(process, event_type)
    return taken >= applied and skipped == duplicate


async def test_an_order_reaches_every_service_that_consumes_it(
    services: dict[str, ServiceProcess], infra: Infrastructure, stack: ServiceStack
) -> None:
    tap = await EventTap.open(infra.rabbitmq_url, stack.topology)
    try:
        order = parse_event(json.loads((SAMPLES / "OrderPlaced.json").read_text()))
        await tap.publish(order)
        await tap.publish(order)  # a duplicate changes nothing
        for process in services.values():
            await eventually(lambda p=process: _took(p, "OrderPlaced", applied=1, duplicate=1))
        refund = parse_event(json.loads((SAMPLES / "OrderRefunded.json").read_text()))
        await tap.publish(refund)
        for name in ("orders", "followups", "loyalty", "referrals"):
            await eventually(lambda n=name: _took(services[n], "OrderRefunded", applied=1))
        for process in services.values():
            assert await _took(process, "OrderPlaced", applied=1, duplicate=1)
    finally:
        await tap.close()


async def test_every_sample_event_is_accepted_by_the_services_that_consume_it(
    services: dict[str, ServiceProcess], infra: Infrastructure, stack: ServiceStack
) -> None:
    for spec in SPECS:
        assert {event.model_fields["type"].default for event in spec.handlers} == EXPECTED_CONSUMERS[spec.name]
    before = {
        (name, kind): await _taken(services[name], kind) for name, kinds in EXPECTED_CONSUMERS.items() for kind in kinds
    }
    tap = await EventTap.open(infra.rabbitmq_url, stack.topology)
    try:
        for sample in sorted(SAMPLES.glob("*.json")):
            raw = json.loads(sample.read_text())
            raw["id"] = f"sample-{sample.stem}"
            await tap.publish(parse_event(raw))
        await tap.wait_for(lambda e: e["id"].startswith("sample-"), count=len(list(SAMPLES.glob("*.json"))))
    finally:
        await tap.close()
    for (name, kind), (applied, duplicate) in before.items():
        # At least the sample: the services' own answers to the samples (loyalty's PointsAwarded for the sample
        # order, say) reach followups too; none of them is a duplicate.
        await eventually(lambda n=name, k=kind, a=applied, d=duplicate: _took_at_least(services[n], k, a + 1, d))
    for name in services:
        dead = await drain_queue(infra.rabbitmq_url, f"{stack.topology.queue_name(name)}.dlq")
        assert dead == [], [m.headers for m in dead]


async def test_sigterm_drains_in_flight_messages_and_loses_none(
    services: dict[str, ServiceProcess], infra: Infrastructure, stack: ServiceStack
) -> None:
    loyalty = services["loyalty"]
    tap = await EventTap.open(infra.rabbitmq_url, stack.topology)
    raw = json.loads((SAMPLES / "OrderPlaced.json").read_text())
    try:
        for n in range(2000):
            raw["id"], raw["data"]["order_id"] = f"drain-{n}", f"ord-drain-{n}"
            await tap.publish(parse_event(raw))

        async def under_way() -> bool:
            return await _consumed(loyalty, "OrderPlaced") > 1

        await eventually(under_way)
        assert loyalty.terminate() == 0
    finally:
        await tap.close()
    # Every message is either applied (its id in the inbox) or still waiting in the queue.
    mongo: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(infra.mongodb_url)
    applied = await mongo[stack.topology.database("loyalty")].inbox.count_documents({"_id": {"$regex": "^drain-"}})
    await mongo.close()
    connection = await aio_pika.connect(infra.rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(stack.topology.queue_name("loyalty"), passive=True)
        waiting = queue.declaration_result.message_count
    print(f"loyalty stopped with {applied} applied and {waiting} waiting")
    assert applied + waiting == 2000


def test_every_service_stops_cleanly_on_sigterm(services: dict[str, ServiceProcess]) -> None:
    for name, process in services.items():
        started = time.monotonic()
        assert process.terminate() == 0, process.logs()[-2000:]
        print(f"{name} stopped in {time.monotonic() - started:.2f}s")
        assert '"event": "service_stopped"' in process.logs()
