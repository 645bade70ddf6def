"""Nothing lost at the exchange (DESIGN.md §4): an event whose routing key no service binds is kept in
`<prefix>.unrouted`, counted in a metric, listed with its key, and replayed once something binds it."""

from collections.abc import Callable
from datetime import UTC, datetime

import aio_pika

from shared.deadletters import UNROUTED, list_dead_letters, replay_dead_letters
from shared.events import FollowUpSent, FollowUpSentEvent, OrderPlacedEvent
from shared.settings import ServiceSettings
from tests.service.probe import probe_spec
from tests.support.running import running_service
from tests.support.tap import EventTap, drain_queue, eventually

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


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


async def test_events_rapport_announces_for_the_shops_systems_do_not_pile_up_as_unrouted(
    service_name: str, settings: ServiceSettings
) -> None:
    """FollowUpSent and FeedbackEscalated are published for the shop's own systems (a helpdesk, a CRM export);
    no Rapport service consumes them. With nobody listening they go nowhere, not into crm.unrouted with every
    e-mail sent; a system that binds their key on crm.events gets each one."""
    topology = settings.topology
    sent = FollowUpSentEvent.new(
        FollowUpSent(followup_id="fu_1", kind="thank_you", customer_id="cus_1", channel="email", sent_at=NOW),
        source="followups",
        subject="cus_1",
    )
    async with running_service(probe_spec(service_name), settings):
        await drain_queue(settings.rabbitmq_url, topology.unrouted_queue.name)
        shop = await EventTap.open(settings.rabbitmq_url, topology, routing_keys=())
        connection = await aio_pika.connect(settings.rabbitmq_url)
        async with connection:
            channel = await connection.channel()
            await shop.publish(sent)  # nobody listens yet
            helpdesk = await channel.declare_queue(exclusive=True)
            await helpdesk.bind(topology.events.name, routing_key="followup.sent")
            await shop.publish(sent)
            arrived = await helpdesk.get(timeout=10)
            assert arrived.message_id == sent.id
            await shop.publish(b"{}", routing_key="followup.teleported", message_id="typo")  # still kept: unknown
            await shop.close()
            unrouted = topology.unrouted_queue.name

            async def only_the_typo_kept() -> bool:
                declared = await channel.declare_queue(unrouted, passive=True)
                return declared.declaration_result.message_count == 1

            await eventually(only_the_typo_kept)
            kept = await list_dead_letters(settings.rabbitmq_url, topology, UNROUTED, limit=None)
            assert [letter.message_id for letter in kept] == ["typo"]
