"""The backbone against the real broker and MongoDB: inbox, dead letters, retries, group commit."""

import json
from collections.abc import Callable

from shared.consumer import ERROR_FIELD_HEADER, ERROR_HEADER
from shared.events import OrderPlacedEvent
from shared.mongo import OUTBOX
from shared.settings import ServiceSettings
from shared.topology import MAX_DELIVERIES
from tests.service.delivery import consumed
from tests.service.probe import applied_count, probe_spec
from tests.support.running import running_service
from tests.support.tap import EventTap, drain_queue, eventually

NewOrder = Callable[..., OrderPlacedEvent]


async def test_the_same_event_delivered_twice_is_applied_once(
    service_name: str, settings: ServiceSettings, tap: EventTap, order_placed: NewOrder
) -> None:
    async with running_service(probe_spec(service_name), settings) as (rt, _):
        event = order_placed("ord-dup")
        await tap.publish(event)
        await tap.publish(event)

        await eventually(lambda: consumed(rt) == 2)
        assert consumed(rt, outcome="applied") == 1
        assert consumed(rt, outcome="duplicate") == 1
        assert await applied_count(rt, "ord-dup") == 1
        awarded = await tap.wait_for(lambda e: e["type"] == "PointsAwarded" and e["causationid"] == event.id)
        assert await rt.db[OUTBOX].count_documents({"body.causationid": event.id}) == 1
        assert awarded[0]["data"]["points"] == 49


async def test_a_malformed_message_is_dead_lettered_with_its_reason_and_the_next_is_consumed(
    service_name: str, settings: ServiceSettings, tap: EventTap, order_placed: NewOrder
) -> None:
    async with running_service(probe_spec(service_name), settings) as (rt, _):
        good = order_placed("ord-after-bad")
        float_money = json.loads(order_placed("ord-float").model_dump_json())
        float_money["data"]["total"] = 49.9
        await tap.publish(b"this is not json at all", routing_key="order.placed", message_id="bad-1")
        await tap.publish(json.dumps(float_money).encode(), routing_key="order.placed", message_id="bad-2")
        await tap.publish(good)

        await eventually(lambda: consumed(rt, outcome="applied") == 1)
        assert await applied_count(rt, "ord-after-bad") == 1

        dead = await eventually(lambda: _dead_letters(settings, service_name, expected=2))
        reasons = {m.message_id: m.headers for m in dead}
        assert reasons["bad-1"][ERROR_HEADER].startswith("body is not valid JSON")
        assert reasons["bad-2"][ERROR_HEADER].startswith("data.total: money must be a decimal string")
        assert reasons["bad-2"][ERROR_FIELD_HEADER] == "data.total"
        assert json.loads(next(m.body for m in dead if m.message_id == "bad-2"))["data"]["total"] == 49.9
        assert rt.metrics.registry.get_sample_value("rapport_messages_dead_lettered_total", {"reason": "invalid"}) == 2
        assert await applied_count(rt, "ord-float") == 0


async def test_a_handler_that_keeps_failing_is_dead_lettered_after_bounded_deliveries(
    service_name: str, settings: ServiceSettings, tap: EventTap, order_placed: NewOrder
) -> None:
    async with running_service(probe_spec(service_name), settings) as (rt, _):
        poison = order_placed("boom-1")
        await tap.publish(poison)
        await tap.publish(order_placed("ord-after-boom"))

        await eventually(lambda: consumed(rt, outcome="applied") == 1)
        dead = await eventually(lambda: _dead_letters(settings, service_name, expected=1))
        assert dead[0].message_id == poison.id
        assert dead[0].headers[ERROR_HEADER] == (
            f"handler failed {MAX_DELIVERIES} times: RuntimeError('cannot handle boom-1')"
        )
        failures = rt.metrics.registry.get_sample_value("rapport_messages_failed_total", {"type": "OrderPlaced"})
        assert failures == MAX_DELIVERIES
        assert await applied_count(rt, "boom-1") == 0
        assert await rt.db[OUTBOX].count_documents({"body.causationid": poison.id}) == 0


async def test_one_bad_message_in_a_batch_does_not_hold_back_the_others(
    service_name: str, settings: ServiceSettings, tap: EventTap, order_placed: NewOrder
) -> None:
    async with running_service(probe_spec(service_name), settings) as (rt, _):
        orders = [order_placed(f"ord-batch-{n}") for n in range(300)]
        for n, event in enumerate(orders):
            await tap.publish(event)
            if n == 150:
                await tap.publish(order_placed("boom-in-batch"))

        await eventually(lambda: consumed(rt, outcome="applied") == 300, timeout=60)
        for event in orders[::37]:
            assert await applied_count(rt, event.data.order_id) == 1
        batches = rt.metrics.registry.get_sample_value("rapport_commit_batch_size_count") or 0
        assert batches < 300, "group commit should commit several messages per transaction"
        await tap.wait_for(
            lambda e: e["type"] == "PointsAwarded" and e["data"]["order_id"].startswith("ord-batch"), 300
        )


async def _dead_letters(settings: ServiceSettings, service: str, expected: int) -> list:  # type: ignore[type-arg]
    taken = await drain_queue(settings.rabbitmq_url, f"{settings.topology.queue_name(service)}.dlq")
    _dead_letters.kept = getattr(_dead_letters, "kept", {})  # type: ignore[attr-defined]
    kept = _dead_letters.kept.setdefault(service, [])  # type: ignore[attr-defined]
    kept.extend(taken)
    return kept if len(kept) >= expected else []
