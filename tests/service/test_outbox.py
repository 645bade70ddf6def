"""The outbox: an event committed while RabbitMQ is unreachable goes out once the broker is back; one about a
customer erased meanwhile goes out too, and is then forgotten."""

from collections.abc import Callable
from typing import Any

from yarl import URL

from shared.erasure import forget_sent_events
from shared.events import Envelope, OrderPlacedEvent, PointsAwarded
from shared.mongo import OUTBOX
from shared.settings import ServiceSettings
from shared.unit import Unit
from tests.service.probe import probe_spec
from tests.support.proxy import CuttableProxy
from tests.support.running import running_service
from tests.support.tap import EventTap, eventually


async def test_an_event_written_while_the_broker_is_away_is_published_once_it_is_back(
    service_name: str, settings: ServiceSettings, tap: EventTap, order_placed: Callable[..., OrderPlacedEvent]
) -> None:
    broker = URL(settings.rabbitmq_url)
    proxy = CuttableProxy(broker.host or "127.0.0.1", broker.port or 5672)
    await proxy.start()
    through_proxy = settings.model_copy(
        update={"rabbitmq_url": str(broker.with_host("127.0.0.1").with_port(proxy.port))}
    )
    async with running_service(probe_spec(service_name), through_proxy) as (rt, http):
        await proxy.cut()

        async def broker_unreachable() -> bool:
            return not await rt.broker.ping(timeout=0.5)

        await eventually(broker_unreachable)
        assert (await http.get("/readyz")).status_code == 503

        award_points = PointsAwarded(
            entry_id="le_outage", customer_id="cus_1", points=10, reason="adjustment", balance=10, tier="bronze"
        )

        async def publish_award(unit: Unit) -> Envelope[Any]:
            return unit.publish(award_points, subject="cus_1")

        award = await rt.transaction(publish_award)
        # The relay tries, fails, and keeps the entry pending while the broker is away.
        await eventually(lambda: rt.metrics.registry.get_sample_value("rapport_outbox_publish_failures_total"))
        assert await rt.db[OUTBOX].find_one({"_id": award.id, "status": "pending"}) is not None
        assert [e for e in tap.bodies() if e["id"] == award.id] == []

        await proxy.start()
        sent = await eventually(lambda: rt.db[OUTBOX].find_one({"_id": award.id, "status": "sent"}), timeout=30)
        assert sent["sent_at"] is not None
        received = await tap.wait_for(lambda e: e["id"] == award.id)
        # Later traffic flows too, and the outage left exactly one copy downstream.
        await tap.publish(order_placed("ord-after-outage"))
        await tap.wait_for(lambda e: e["type"] == "PointsAwarded" and e["data"]["order_id"] == "ord-after-outage")
        assert len([e for e in tap.bodies() if e["id"] == award.id]) == 1
        assert received[0]["data"]["entry_id"] == "le_outage"
        assert (await http.get("/readyz")).status_code == 200
    await proxy.cut()


async def test_an_event_about_a_customer_erased_while_it_waited_is_sent_and_then_forgotten(
    service_name: str, settings: ServiceSettings, tap: EventTap
) -> None:
    broker = URL(settings.rabbitmq_url)
    proxy = CuttableProxy(broker.host or "127.0.0.1", broker.port or 5672)
    await proxy.start()
    through_proxy = settings.model_copy(
        update={"rabbitmq_url": str(broker.with_host("127.0.0.1").with_port(proxy.port))}
    )
    async with running_service(probe_spec(service_name), through_proxy) as (rt, _http):
        await proxy.cut()
        await eventually(lambda: _unreachable(rt))
        award_points = PointsAwarded(
            entry_id="le_gone", customer_id="cus_gone", points=10, reason="adjustment", balance=10, tier="bronze"
        )

        async def publish_award(unit: Unit) -> Envelope[Any]:
            return unit.publish(award_points, subject="cus_gone")

        award = await rt.transaction(publish_award)
        await eventually(lambda: rt.metrics.registry.get_sample_value("rapport_outbox_publish_failures_total"))

        async def erase(unit: Unit) -> None:
            forget_sent_events(unit, "cus_gone")

        await rt.transaction(erase)  # the customer is erased while their event still waits for the broker
        assert await rt.db[OUTBOX].find_one({"_id": award.id, "status": "pending"}) is not None

        await proxy.start()
        await tap.wait_for(lambda e: e["id"] == award.id, timeout=30)  # it still goes out: the others must hear it
        await eventually(lambda: _gone(rt, award.id), timeout=30)  # and is not kept for inspection afterwards
    await proxy.cut()


async def _unreachable(rt: Any) -> bool:
    return not await rt.broker.ping(timeout=0.5)


async def _gone(rt: Any, event_id: str) -> bool:
    return await rt.db[OUTBOX].find_one({"_id": event_id}) is None
