"""Health, readiness, metrics and the admin key, through a running service's HTTP API."""

from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shared.events import OrderPlacedEvent
from shared.settings import ServiceSettings
from tests.service.probe import probe_spec
from tests.support.running import running_service
from tests.support.tap import EventTap, eventually


async def test_health_and_readiness(service_name: str, settings: ServiceSettings) -> None:
    async with running_service(probe_spec(service_name), settings) as (_, http):
        assert (await http.get("/healthz")).json() == {"status": "alive"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"broker": "ok", "database": "ok", "consumer": "ok"}


Sample = tuple[str, frozenset[tuple[str, str]]]  # a sample's name and labels


async def exported(http: httpx.AsyncClient) -> dict[Sample, float]:
    """Every sample /metrics exports, by name and labels."""
    text = (await http.get("/metrics")).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


APPLIED: Sample = ("rapport_messages_consumed_total", frozenset({"type": "OrderPlaced", "outcome": "applied"}.items()))
DEAD_LETTERED: Sample = ("rapport_messages_dead_lettered_total", frozenset({"reason": "invalid"}.items()))
PUBLISHED: Sample = ("rapport_outbox_published_total", frozenset())
BACKLOG: Sample = ("rapport_outbox_backlog", frozenset())


async def test_metrics_count_messages_dead_letters_and_the_outbox_backlog(
    service_name: str, settings: ServiceSettings, tap: EventTap, order_placed: Callable[..., OrderPlacedEvent]
) -> None:
    async with running_service(probe_spec(service_name), settings) as (rt, http):
        before = await exported(http)
        await tap.publish(b"not an event", routing_key="order.placed", message_id="bad-metrics")
        await tap.publish(order_placed("ord-metrics"))
        await tap.wait_for(lambda e: e["type"] == "PointsAwarded" and e["data"]["order_id"] == "ord-metrics")
        await eventually(lambda: rt.metrics.registry.get_sample_value("rapport_outbox_published_total") == 1)
        await eventually(
            lambda: rt.metrics.registry.get_sample_value("rapport_messages_dead_lettered_total", {"reason": "invalid"})
        )
        after = await exported(http)
        moved = {key: after[key] - before.get(key, 0.0) for key in (APPLIED, DEAD_LETTERED, PUBLISHED)}
        assert moved == {APPLIED: 1.0, DEAD_LETTERED: 1.0, PUBLISHED: 1.0}
        assert (before[BACKLOG], after[BACKLOG]) == (0.0, 0.0)


async def test_the_api_needs_the_admin_key(service_name: str, settings: ServiceSettings) -> None:
    async with running_service(probe_spec(service_name), settings) as (_, http):
        assert (await http.get("/orders-seen/o1")).status_code == 401
        wrong = await http.get("/orders-seen/o1", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == "Bearer"
        right = await http.get("/orders-seen/o1", headers={"Authorization": "Bearer test-admin-key"})
        assert right.status_code == 200
        assert right.json()["order_id"] == "o1"


async def test_without_an_admin_key_the_api_refuses_everything_but_health(
    service_name: str, settings: ServiceSettings
) -> None:
    keyless = settings.model_copy(update={"admin_api_key": None})
    async with running_service(probe_spec(service_name), keyless) as (_, http):
        refused = await http.get("/orders-seen/o1", headers={"Authorization": "Bearer anything"})
        assert refused.status_code == 403
        assert "ADMIN_API_KEY" in refused.json()["detail"]
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200
