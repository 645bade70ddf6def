"""What the benchmarks share: a queue filled before its service starts, and how far it has got."""

from collections.abc import Iterable
from typing import Any

from shared.events import Envelope
from shared.service import Runtime, ServiceSpec
from shared.settings import ServiceSettings
from shared.testing.running import running_service
from shared.testing.tap import EventTap, eventually


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
