"""No message can stop a consumer (issue 15): odd headers, odd properties and oversized bodies are dead-lettered
with their reason, the consume loop is supervised, and /readyz says when consuming has stopped."""

import json
from collections.abc import Callable
from typing import Any

import aio_pika
import pytest

from shared.consumer import ERROR_HEADER
from shared.events import OrderPlacedEvent
from shared.settings import ServiceSettings
from tests.service.delivery import consumed
from tests.service.probe import applied_count, probe_spec
from tests.support.running import running_service
from tests.support.tap import EventTap, drain_queue, eventually

NewOrder = Callable[..., OrderPlacedEvent]

# Header values a careless or hostile publisher may set where the broker puts a count.
ODD_DELIVERY_COUNTS: list[Any] = ["abc", "", "1e9", -3, 2.5, None, ["x"], {"a": 1}, True, 2**62]


async def _dead_letters(settings: ServiceSettings, service: str, expected: int) -> list[aio_pika.IncomingMessage]:
    found: list[aio_pika.IncomingMessage] = []

    async def arrived() -> bool:
        found.extend(await drain_queue(settings.rabbitmq_url, settings.topology.dead_letter_queue(service).name))
        return len(found) >= expected

    await eventually(arrived)
    return found


@pytest.mark.parametrize("count", ODD_DELIVERY_COUNTS, ids=repr)
async def test_an_odd_delivery_count_header_on_a_bad_message_dead_letters_it_and_the_consumer_goes_on(
    count: Any, service_name: str, settings: ServiceSettings, tap: EventTap, order_placed: NewOrder
) -> None:
    async with running_service(probe_spec(service_name), settings) as (rt, http):
        await tap.publish(
            b"not json", routing_key="order.placed", message_id="odd-1", headers={"x-delivery-count": count}
        )
        good = order_placed("ord-after-odd-header")
        await tap.publish(good)

        await eventually(lambda: consumed(rt, outcome="applied") == 1)
        assert await applied_count(rt, "ord-after-odd-header") == 1
        dead = await _dead_letters(settings, service_name, expected=1)
        assert [m.message_id for m in dead] == ["odd-1"]
        assert dead[0].headers[ERROR_HEADER].startswith("body is not valid JSON")
        assert (await http.get("/readyz")).status_code == 200


async def test_an_odd_delivery_count_on_a_failing_handler_is_retried_and_dead_lettered_not_fatal(
    service_name: str, settings: ServiceSettings, tap: EventTap, order_placed: NewOrder
) -> None:
    async with running_service(probe_spec(service_name), settings) as (rt, _):
        await tap.publish(order_placed("boom-odd"), headers={"x-delivery-count": "abc"})
        good = order_placed("ord-after-boom")
        await tap.publish(good)

        await eventually(lambda: consumed(rt, outcome="applied") == 1)
        dead = await _dead_letters(settings, service_name, expected=1)
        assert dead[0].headers[ERROR_HEADER].startswith("handler failed")


async def test_a_message_over_the_size_limit_is_dead_lettered_with_the_reason_and_the_next_is_consumed(
    service_name: str, settings: ServiceSettings, tap: EventTap, order_placed: NewOrder
) -> None:
    small = settings.model_copy(update={"max_message_bytes": 4096})
    async with running_service(probe_spec(service_name), small) as (rt, _):
        big = json.loads(order_placed("ord-big").model_dump_json())
        big["data"]["padding"] = "x" * 10_000  # unknown fields are ignored: only the size is wrong
        await tap.publish(json.dumps(big).encode(), routing_key="order.placed", message_id="big-1")
        await tap.publish(order_placed("ord-after-big"))

        await eventually(lambda: consumed(rt, outcome="applied") == 1)
        assert await applied_count(rt, "ord-big") == 0
        dead = await _dead_letters(settings, service_name, expected=1)
        assert dead[0].message_id == "big-1"
        assert dead[0].headers[ERROR_HEADER].startswith("body: ")
        assert "4096" in dead[0].headers[ERROR_HEADER]
        assert (
            rt.metrics.registry.get_sample_value("rapport_messages_dead_lettered_total", {"reason": "too_large"}) == 1
        )


async def test_a_consume_loop_that_dies_is_restarted_counted_and_its_messages_kept(
    service_name: str, settings: ServiceSettings, tap: EventTap, order_placed: NewOrder
) -> None:
    async with running_service(probe_spec(service_name), settings) as (rt, http):
        failures = iter([RuntimeError("the group commit blew up outside its own error handling")])
        original = rt.queue_consumer._apply

        async def apply_once_failing(batch: list[Any]) -> None:
            if (error := next(failures, None)) is not None:
                raise error
            await original(batch)

        rt.queue_consumer._apply = apply_once_failing  # type: ignore[method-assign]  # a defect in our own code
        await tap.publish(order_placed("ord-in-failed-batch"))

        await eventually(lambda: consumed(rt, outcome="applied") == 1, timeout=30)
        assert await applied_count(rt, "ord-in-failed-batch") == 1
        assert rt.metrics.registry.get_sample_value("rapport_consumer_restarts_total") == 1
        assert (await http.get("/readyz")).status_code == 200


async def test_readyz_says_not_ready_when_the_consumer_is_gone(service_name: str, settings: ServiceSettings) -> None:
    async with running_service(probe_spec(service_name), settings) as (rt, http):
        assert (await http.get("/readyz")).json()["consumer"] == "ok"
        await rt.queue_consumer.stop()

        answer = await http.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["consumer"] == "stopped"


async def test_json_nested_too_deep_and_odd_properties_are_dead_lettered_and_the_consumer_goes_on(
    service_name: str, settings: ServiceSettings, tap: EventTap, order_placed: NewOrder
) -> None:
    async with running_service(probe_spec(service_name), settings) as (rt, _):
        deep = b"[" * 100_000 + b"]" * 100_000
        await tap.publish(deep, routing_key="order.placed", message_id="deep-1")
        await tap.publish(b"{}", routing_key="order.placed", type="\x00" * 255, correlation_id="x" * 255)
        await tap.publish(order_placed("ord-after-deep"))

        await eventually(lambda: consumed(rt, outcome="applied") == 1)
        dead = await _dead_letters(settings, service_name, expected=2)
        assert "deep-1" in {m.message_id for m in dead}
        assert all(m.headers[ERROR_HEADER] for m in dead)
