"""Dead letters inspected and replayed (shared/deadletters.py) against the real broker and a running service."""

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aio_pika
import pytest
from pymongo import UpdateOne

from shared.consumer import DELIVERIES_HEADER, ERROR_FIELD_HEADER, ERROR_HEADER
from shared.deadletters import REPLAYS_HEADER, DeadLetterError, list_dead_letters, replay_dead_letters
from shared.events import OrderPlacedEvent
from shared.keys import new_key
from shared.service import ServiceSpec
from shared.settings import ServiceSettings
from shared.topology import MAX_DELIVERIES, Topology
from shared.unit import Unit
from tests.service.delivery import consumed
from tests.service.probe import applied_count, probe_spec
from tests.support.running import running_service
from tests.support.tap import EventTap, drain_queue, eventually

NewOrder = Callable[..., OrderPlacedEvent]


async def on_order_placed_fixed(event: OrderPlacedEvent, unit: Unit) -> None:
    """The probe's handler after "the fix": orders whose id starts with "boom" are applied like any other."""
    unit.write("orders_seen", UpdateOne({"_id": event.data.order_id}, {"$inc": {"applied": 1}}, upsert=True))


def fixed_spec(name: str) -> ServiceSpec:
    return ServiceSpec(name=name, handlers={OrderPlacedEvent: on_order_placed_fixed})


async def waiting(rabbitmq_url: str, queue: str) -> int:
    """Messages ready in `queue` now."""
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0


async def dead_lettered(settings: ServiceSettings, service: str, count: int) -> None:
    """Wait until `count` dead letters of `service` wait in its dead-letter queue."""
    dlq = settings.topology.dead_letter_queue(service).name

    async def reached() -> bool:
        return await waiting(settings.rabbitmq_url, dlq) == count

    await eventually(reached)


@asynccontextmanager
async def events_copy(rabbitmq_url: str, topology: Topology) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """A queue bound to every order event on the events exchange, to see what a replay sends there."""
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            topology.events.name, aio_pika.ExchangeType.TOPIC, durable=True, arguments=topology.events_arguments
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key="order.#")

        async def count() -> int:
            declared = await channel.declare_queue(queue.name, passive=True)
            return declared.declaration_result.message_count or 0

        yield count


async def test_a_dead_letter_is_listed_with_its_reason_replayed_after_the_fix_and_applied_once(
    service_name: str, settings: ServiceSettings, tap: EventTap, order_placed: NewOrder
) -> None:
    poison = order_placed("boom-replay")
    float_money = json.loads(order_placed("ord-float").model_dump_json())
    float_money["data"]["total"] = 49.9
    async with running_service(probe_spec(service_name), settings):
        await tap.publish(poison)
        await tap.publish(json.dumps(float_money).encode(), routing_key="order.placed", message_id="bad-money")
        await dead_lettered(settings, service_name, 2)

    letters = {
        letter.message_id: letter
        for letter in await list_dead_letters(settings.rabbitmq_url, settings.topology, service_name, None)
    }
    assert letters[poison.id].event_type == "OrderPlaced"
    assert letters[poison.id].reason == (
        f"handler failed {MAX_DELIVERIES} times: RuntimeError('cannot handle boom-replay')"
    )
    assert letters[poison.id].deliveries == MAX_DELIVERIES
    assert letters[poison.id].replays == 0
    assert letters["bad-money"].field == "data.total"
    assert letters["bad-money"].reason.startswith("data.total: money must be a decimal string")
    assert await waiting(settings.rabbitmq_url, settings.topology.dead_letter_queue(service_name).name) == 2

    async with (
        running_service(fixed_spec(service_name), settings) as (rt, _),
        events_copy(settings.rabbitmq_url, settings.topology) as order_events,
    ):
        result = await replay_dead_letters(settings.rabbitmq_url, settings.topology, service_name, ids=[poison.id])
        assert result.replayed == [poison.id]
        assert result.left == 1  # the invalid message stays: no fix of a handler makes it an event

        await eventually(lambda: applied_count(rt, "boom-replay"))
        assert await applied_count(rt, "boom-replay") == 1
        assert consumed(rt, outcome="applied") == 1
        assert await order_events() == 0, "a replay must reach the one service, not every consumer of order.placed"

    remaining = await list_dead_letters(settings.rabbitmq_url, settings.topology, service_name, None)
    assert [letter.message_id for letter in remaining] == ["bad-money"]


async def test_replaying_a_dead_letter_that_was_applied_meanwhile_changes_nothing(
    service_name: str, settings: ServiceSettings, tap: EventTap, order_placed: NewOrder
) -> None:
    poison = order_placed("boom-resent")
    async with running_service(probe_spec(service_name), settings):
        await tap.publish(poison)
        await dead_lettered(settings, service_name, 1)

    async with running_service(fixed_spec(service_name), settings) as (rt, _):
        await tap.publish(poison)  # the shop sends the order again after the fix
        await eventually(lambda: consumed(rt, outcome="applied") == 1)

        result = await replay_dead_letters(settings.rabbitmq_url, settings.topology, service_name)
        assert result.replayed == [poison.id]
        await eventually(lambda: consumed(rt, outcome="duplicate") == 1)
        assert consumed(rt, outcome="applied") == 1
        assert await applied_count(rt, "boom-resent") == 1
    assert await waiting(settings.rabbitmq_url, settings.topology.dead_letter_queue(service_name).name) == 0


async def _cli(settings: ServiceSettings, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "RABBITMQ_URL": settings.rabbitmq_url, "CRM_PREFIX": settings.crm_prefix}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.deadletters",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_command_lists_without_personal_data_and_replays_keeping_the_event_intact(
    service_name: str, settings: ServiceSettings, tap: EventTap, order_placed: NewOrder
) -> None:
    poison = order_placed("boom-cli")
    async with running_service(probe_spec(service_name), settings):
        await tap.publish(poison, correlation_id="boom-cli")
        await dead_lettered(settings, service_name, 1)

    code, listed, _ = await _cli(settings, "list", service_name)
    assert code == 0
    assert poison.id in listed
    assert "OrderPlaced" in listed
    assert f"handler failed {MAX_DELIVERIES} times" in listed
    customer = poison.data.customer
    for personal in (customer.email, customer.first_name, customer.last_name, customer.phone, customer.city):
        assert personal
        assert personal not in listed

    code, as_json, _ = await _cli(settings, "list", service_name, "--json")
    assert code == 0
    assert json.loads(as_json)["message_id"] == poison.id

    # No service runs now: the replayed message waits in the service's queue, where we can look at it.
    code, replayed, _ = await _cli(settings, "replay", service_name)
    assert code == 0, replayed
    assert f"1 dead letter(s) moved back to {settings.topology.queue_name(service_name)}; 0 left" in replayed
    [message] = await drain_queue(settings.rabbitmq_url, settings.topology.queue_name(service_name))
    assert message.body == poison.model_dump_json().encode()
    assert (message.message_id, message.type, message.correlation_id) == (poison.id, "OrderPlaced", "boom-cli")
    assert message.content_type == "application/json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    headers = message.headers or {}
    assert headers[REPLAYS_HEADER] == 1
    assert not {ERROR_HEADER, ERROR_FIELD_HEADER, DELIVERIES_HEADER, "x-death"} & set(headers)


async def test_the_command_names_a_service_without_dead_letter_queue(settings: ServiceSettings) -> None:
    code, _, err = await _cli(settings, "list", "no-such-service")
    assert code == 1
    assert f"there is no queue {settings.crm_prefix}.no-such-service.dlq" in err


async def test_a_dead_letter_stays_when_the_service_queue_refuses_the_copy(
    service_name: str, settings: ServiceSettings, used_services: list[str]
) -> None:
    """Acked only after the broker confirmed the copy: a refused publish leaves the dead letter where it was."""
    topology = settings.topology
    dlq = topology.dead_letter_queue(service_name).name
    connection = await aio_pika.connect(settings.rabbitmq_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(dlq, durable=True, arguments={"x-queue-type": "quorum"})
        # A full queue that refuses what comes in, standing in for a broker that cannot take the copy.
        await channel.declare_queue(
            topology.queue_name(service_name),
            durable=True,
            arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
        )
        await channel.default_exchange.publish(
            aio_pika.Message(b"{}", message_id="kept-1", headers={ERROR_HEADER: "test"}), routing_key=dlq
        )

    with pytest.raises(DeadLetterError, match="did not take the copy of kept-1"):
        await replay_dead_letters(settings.rabbitmq_url, topology, service_name)
    assert [
        letter.message_id for letter in await list_dead_letters(settings.rabbitmq_url, topology, service_name, None)
    ] == ["kept-1"]


ADMIN = {"Authorization": "Bearer test-admin-key", "X-Rapport-Actor": "console/eva@shop.example"}


async def test_the_api_lists_dead_letters_and_replays_one_in_an_admins_name(
    service_name: str, settings: ServiceSettings, tap: EventTap, order_placed: NewOrder
) -> None:
    """`GET /dead-letters` and `POST /dead-letters/replay` (what the console's Operations page uses)."""
    poison = order_placed("boom-http")
    async with running_service(probe_spec(service_name), settings):
        await tap.publish(poison)
        await tap.publish(b"{not json", routing_key="order.placed", message_id="not-json")
        await dead_lettered(settings, service_name, 2)

    reader, reader_entry = new_key("dashboard", "write")
    keyed = settings.model_copy(update={"api_keys": reader_entry})
    async with running_service(fixed_spec(service_name), keyed) as (rt, http):
        assert (await http.get("/dead-letters")).status_code == 401
        assert (await http.get("/dead-letters", headers={"Authorization": f"Bearer {reader}"})).status_code == 403
        listed = await http.get("/dead-letters", headers=ADMIN)
        assert listed.status_code == 200
        page = listed.json()
        assert page["queue"] == settings.topology.dead_letter_queue(service_name).name
        assert page["waiting"] == 2
        letters = {letter["message_id"]: letter for letter in page["dead_letters"]}
        assert set(letters) == {poison.id, "not-json"}
        assert letters[poison.id]["reason"].startswith(f"handler failed {MAX_DELIVERIES} times")
        assert "not valid JSON" in letters["not-json"]["reason"], letters["not-json"]
        assert poison.data.customer.email not in listed.text, "a listing shows no body (it carries personal data)"

        wrong = await http.post("/dead-letters/replay", json={"message_ids": [" "]}, headers=ADMIN)
        assert wrong.status_code == 422
        assert "message_ids" in wrong.text
        refused = await http.post("/dead-letters/replay", json={}, headers={"Authorization": f"Bearer {reader}"})
        assert refused.status_code == 403

        replayed = await http.post("/dead-letters/replay", json={"message_ids": [poison.id]}, headers=ADMIN)
        assert replayed.status_code == 200, replayed.text
        assert replayed.json() == {
            "queue": settings.topology.queue_name(service_name),
            "replayed": [poison.id],
            "left": 1,
        }
        await eventually(lambda: applied_count(rt, "boom-http"))
        assert await applied_count(rt, "boom-http") == 1

        audit = (await http.get("/audit", headers=ADMIN)).json()
        assert [(r["actor"], r["action"]) for r in audit] == [
            ("admin/console/eva@shop.example", "POST /dead-letters/replay")
        ]
        left = (await http.get("/dead-letters", headers=ADMIN)).json()["dead_letters"]
        assert [letter["message_id"] for letter in left] == ["not-json"]


async def test_the_api_lists_unrouted_events_beside_the_services_own(
    service_name: str, settings: ServiceSettings, tap: EventTap, order_placed: NewOrder
) -> None:
    async with running_service(probe_spec(service_name), settings) as (_, http):
        shown = await http.get("/dead-letters", params={"queue": "unrouted"}, headers=ADMIN)
        assert shown.status_code == 200, shown.text
        assert shown.json()["queue"] == settings.topology.unrouted_queue.name
        wrong = await http.get("/dead-letters", params={"queue": "everything"}, headers=ADMIN)
        assert wrong.status_code == 422
        assert "queue" in wrong.text
