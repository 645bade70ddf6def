"""Both CloudEvents modes through the real broker (DESIGN.md §4): a binary-mode event is applied like a
structured one, and a message in neither mode is dead-lettered with the reason."""

import json
from collections.abc import Callable

from shared.consumer import ERROR_HEADER
from shared.events import OrderPlacedEvent
from shared.settings import ServiceSettings
from tests.service.probe import applied_count, probe_spec
from tests.support.running import running_service
from tests.support.tap import EventTap, drain_queue, eventually

NewOrder = Callable[..., OrderPlacedEvent]


async def test_binary_and_structured_events_are_applied_and_other_content_is_dead_lettered(
    service_name: str, settings: ServiceSettings, tap: EventTap, order_placed: NewOrder
) -> None:
    async with running_service(probe_spec(service_name), settings) as (rt, _):
        as_binary = order_placed("ord-binary")
        attributes = json.loads(as_binary.model_dump_json(exclude={"data", "datacontenttype"}, exclude_none=True))
        await tap.publish(
            as_binary.data.model_dump_json().encode(),
            routing_key="order.placed",
            headers={f"cloudEvents_{name}": value for name, value in attributes.items()},
        )
        as_structured = order_placed("ord-cloudevents-json")
        await tap.publish(as_structured, content_type="application/cloudevents+json; charset=utf-8")
        await tap.publish(
            order_placed("ord-text").model_dump_json().encode(),
            routing_key="order.placed",
            content_type="text/plain",
            message_id="text-1",
        )

        await eventually(lambda: applied_count(rt, "ord-binary"))
        await eventually(lambda: applied_count(rt, "ord-cloudevents-json"))
        dlq = settings.topology.dead_letter_queue(service_name).name
        dead = await eventually(lambda: drain_queue(settings.rabbitmq_url, dlq))
        assert [m.message_id for m in dead] == ["text-1"]
        assert dead[0].headers[ERROR_HEADER].startswith("content_type: text/plain is neither a structured CloudEvent")
        assert await applied_count(rt, "ord-text") == 0
