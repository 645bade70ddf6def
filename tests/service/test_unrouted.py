"""Nothing lost at the exchange (DESIGN.md §4): an event whose routing key no service binds is kept in
`<prefix>.unrouted`, counted in a metric, listed with its key, and replayed once something binds it."""

from collections.abc import Callable

import aio_pika

from shared.deadletters import UNROUTED, list_dead_letters, replay_dead_letters
from shared.events import OrderPlacedEvent
from shared.settings import ServiceSettings
from tests.service.probe import probe_spec
from tests.support.running import running_service
from tests.support.tap import EventTap, drain_queue, eventually


async def test_an_event_no_service_binds_is_kept_counted_listed_and_replayed(
    service_name: str, settings: ServiceSettings, order_placed: Callable[..., OrderPlacedEvent]
) -> None:
    # No tap here: a tap binds every routing key ("#"), and then nothing is unrouted.
    topology = settings.topology
    async with running_service(probe_spec(service_name), settings) as (_, http):
        await drain_queue(settings.rabbitmq_url, topology.unrouted_queue.name)  # other tests of this run may leave some
        stray = order_placed("ord-stray")
        shop = await EventTap.open(settings.rabbitmq_url, topology, routing_keys=())
        await shop.publish(stray, routing_key="order.teleported")
        await shop.close()

        async def counted() -> bool:
            metrics = (await http.get("/metrics")).text
            return "rapport_unrouted_events 1.0" in metrics.splitlines()

        await eventually(counted)
        listed = await list_dead_letters(settings.rabbitmq_url, topology, UNROUTED, limit=None)
        assert [(letter.message_id, letter.reason) for letter in listed] == [
            (stray.id, "unrouted: no queue binds routing key 'order.teleported'")
        ]

        connection = await aio_pika.connect(settings.rabbitmq_url)
        async with connection:
            channel = await connection.channel()
            late = await channel.declare_queue(exclusive=True)
            await late.bind(topology.events.name, routing_key="order.teleported")  # "the new service"
            replayed = await replay_dead_letters(settings.rabbitmq_url, topology, UNROUTED)
            assert (replayed.replayed, replayed.left) == ([stray.id], 0)
            arrived = await late.get(timeout=10)
            assert arrived.message_id == stray.id
            assert arrived.routing_key == "order.teleported"
