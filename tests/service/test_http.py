"""Health, readiness, metrics and the admin key, through a running service's HTTP API."""

from collections.abc import Callable

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
        assert ready.json() == {"broker": "ok", "database": "ok"}


async def test_metrics_count_messages_and_the_outbox_backlog(
    service_name: str, settings: ServiceSettings, tap: EventTap, order_placed: Callable[..., OrderPlacedEvent]
) -> None:
    async with running_service(probe_spec(service_name), settings) as (rt, http):
        await tap.publish(order_placed("ord-metrics"))
        await tap.wait_for(lambda e: e["type"] == "PointsAwarded" and e["data"]["order_id"] == "ord-metrics")
        await eventually(lambda: rt.metrics.registry.get_sample_value("rapport_outbox_published_total") == 1)
        text = (await http.get("/metrics")).text
        assert 'rapport_messages_consumed_total{outcome="applied",type="OrderPlaced"} 1.0' in text
        assert "rapport_outbox_backlog 0.0" in text
        assert "rapport_outbox_published_total 1.0" in text
        assert "rapport_messages_dead_lettered_total" in text or "rapport_messages_dead_lettered" in text


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
