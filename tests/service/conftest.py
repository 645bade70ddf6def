import itertools
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from shared.events import OrderPlacedEvent, parse_event
from shared.settings import ServiceSettings
from shared.topology import Topology
from tests.support.infra import Infrastructure, delete_queues
from tests.support.tap import EventTap

_numbers = itertools.count(1)
SAMPLES = Path(__file__).parents[1] / "fixtures" / "events"


@pytest.fixture
async def service_name(used_services: list[str], infra: Infrastructure, topology: Topology) -> AsyncIterator[str]:
    """A fresh service name per test, so queues and databases never mix between tests; its queues go with it."""
    name = f"probe{next(_numbers)}"
    used_services.append(name)
    yield name
    await delete_queues(infra, topology, name)


@pytest.fixture
def settings(infra: Infrastructure, prefix: str) -> ServiceSettings:
    return ServiceSettings(
        rabbitmq_url=infra.rabbitmq_url,
        mongodb_url=infra.mongodb_url,
        crm_prefix=prefix,
        admin_api_key="test-admin-key",
        retry_backoff_seconds=0.02,
        log_format="console",
    )


@pytest.fixture
async def tap(infra: Infrastructure, topology: Topology) -> AsyncIterator[EventTap]:
    opened = await EventTap.open(infra.rabbitmq_url, topology)
    yield opened
    await opened.close()


@pytest.fixture
def order_placed() -> Callable[..., OrderPlacedEvent]:
    """A valid OrderPlaced from the sample, with a fresh event id and the given order id."""
    raw: dict[str, Any] = json.loads((SAMPLES / "OrderPlaced.json").read_text())

    def make(order_id: str, total: str = "49.90", event_id: str | None = None) -> OrderPlacedEvent:
        body = json.loads(json.dumps(raw))
        body["id"] = event_id or str(uuid.uuid4())
        body["data"]["order_id"] = order_id
        body["data"]["total"] = total
        event = parse_event(body)
        assert isinstance(event, OrderPlacedEvent)
        return event

    return make
