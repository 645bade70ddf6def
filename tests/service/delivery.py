"""Driving a service under test through the real broker: what it has consumed, and delivering events to it."""

from typing import Any

from shared.events import Envelope
from shared.mongo import INBOX
from shared.service import Runtime
from tests.support.tap import EventTap, eventually

CONSUMED = "rapport_messages_consumed_total"


def consumed(rt: Runtime, *, type: str | None = None, outcome: str | None = None) -> float:
    """Events the service has taken since it started (applied or skipped as duplicates), of one type or outcome."""
    wanted = {label: value for label, value in (("type", type), ("outcome", outcome)) if value is not None}
    return sum(
        sample.value
        for family in rt.metrics.registry.collect()
        for sample in family.samples
        if sample.name == CONSUMED and wanted.items() <= sample.labels.items()
    )


async def deliver(rt: Runtime, tap: EventTap, *events: Envelope[Any], timeout: float = 30.0) -> None:
    """Publish like the shop, in this order, and wait until the service took every delivery (duplicates too).

    Taken means both: the consumed counter moved by one per delivery, and each distinct event is in the
    inbox, so its effect is committed.
    """
    before = consumed(rt)
    for event in events:
        await tap.publish(event)
    ids = list(dict.fromkeys(event.id for event in events))

    async def taken() -> bool:
        if consumed(rt) < before + len(events):
            return False
        return await rt.db[INBOX].count_documents({"_id": {"$in": ids}}) == len(ids)

    await eventually(taken, timeout=timeout)
