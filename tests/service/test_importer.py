"""The history importer against the real broker: what it publishes, and how it resumes after a crash.

A "crash" is the importer's own process failing between two windows (or after a window was
confirmed but before its checkpoint was saved): the publish function raises, as a process killed at
that point would stop. The broker, its confirms and the checkpoint file are all real.
"""

import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.orders.importer.exports import read_customer_ids
from services.orders.importer.run import Checkpoint, MissingQueues, check_queues, fingerprint, import_history
from shared.outbox import EventPublisher, Publish
from shared.topology import Topology
from shared.unit import OutboxEntry
from tests.support.infra import Infrastructure, remove_declared
from tests.support.tap import EventTap

HISTORY = Path(__file__).parents[1] / "fixtures" / "history"
SHOPIFY = HISTORY / "shopify_orders_export.csv"
WOOCOMMERCE = HISTORY / "woocommerce_orders_export.csv"
# The fixture's counted orders and their events (tests/unit/test_orders_importer.py reads them one by one).
SHOPIFY_EVENTS = 9 + 6 + 2 + 1  # placed, fulfilled, refunded, cancelled


class Crash(Exception):
    """The importer's process stopping at this point."""


def crashing(publish: Publish, *, before_call: int | None = None, after_call: int | None = None) -> Publish:
    """The real publish, but the process stops before its n-th call, or right after the n-th call was confirmed."""
    calls = 0

    async def publish_or_crash(entries: list[OutboxEntry]) -> list[BaseException | None]:
        nonlocal calls
        calls += 1
        if calls == before_call:
            raise Crash
        outcome = await publish(entries)
        if calls == after_call:
            raise Crash
        return outcome

    return publish_or_crash


@pytest.fixture
async def shop(infra: Infrastructure, prefix: str) -> AsyncIterator[Topology]:
    topology = Topology(f"{prefix}-import-{uuid.uuid4().hex[:6]}")
    yield topology
    await remove_declared(infra, topology, [])


@pytest.fixture
async def loyalty_queue(infra: Infrastructure, shop: Topology) -> AsyncIterator[EventTap]:
    """A queue named as loyalty's, bound to every event: what a consuming service would be handed."""
    tap = await EventTap.open(infra.rabbitmq_url, shop, durable_queue=shop.queue_name("loyalty"))
    yield tap
    await tap.close()


@pytest.fixture
async def publisher(infra: Infrastructure, shop: Topology) -> AsyncIterator[EventPublisher]:
    started = EventPublisher(infra.rabbitmq_url, shop.events.name, name="test-importer")
    await started.start()
    yield started
    await started.stop()


async def received(tap: EventTap, count: int) -> list[dict[str, Any]]:
    return await tap.wait_for(lambda body: True, count=count, timeout=15)


async def test_the_history_is_refused_while_no_service_queue_would_take_it(
    infra: Infrastructure, shop: Topology
) -> None:
    with pytest.raises(MissingQueues, match=shop.events.name):
        await check_queues(infra.rabbitmq_url, shop, ["loyalty"])
    tap = await EventTap.open(infra.rabbitmq_url, shop)  # declares the exchange, not loyalty's queue
    try:
        with pytest.raises(MissingQueues, match=shop.queue_name("loyalty")):
            await check_queues(infra.rabbitmq_url, shop, ["loyalty"])
    finally:
        await tap.close()


async def test_a_shopify_history_is_published_imported_with_true_dates_and_the_properties_of_the_contract(
    infra: Infrastructure, shop: Topology, loyalty_queue: EventTap, publisher: EventPublisher, tmp_path: Path
) -> None:
    await check_queues(infra.rabbitmq_url, shop, ["loyalty"])
    ids = read_customer_ids((HISTORY / "shopify_customers_export.csv").read_text().splitlines(keepends=True))
    checkpoint = Checkpoint(tmp_path / "state.json", fingerprint(SHOPIFY))
    report = await import_history("shopify", SHOPIFY, publisher.publish, checkpoint, customer_ids=ids)

    bodies = await received(loyalty_queue, SHOPIFY_EVENTS)
    assert report.published == SHOPIFY_EVENTS
    assert Counter(body["type"] for body in bodies) == {
        "OrderPlaced": 9,
        "OrderFulfilled": 6,
        "OrderRefunded": 2,
        "OrderCancelled": 1,
    }
    assert all(body["imported"] is True and body["source"] == "orders" for body in bodies)
    by_id = {body["id"]: body for body in bodies}
    eva = by_id["shopify:order:5600000001001:placed"]
    assert (eva["time"], eva["data"]["placed_at"], eva["subject"]) == (
        "2024-06-10T10:14:51+02:00",
        "2024-06-10T10:14:51+02:00",
        "7001234567890",
    )
    fulfilled = by_id["shopify:order:5600000001001:fulfilled"]
    assert fulfilled["time"] == fulfilled["data"]["fulfilled_at"] == "2024-06-11T16:00:00+02:00"
    cancelled = by_id["shopify:order:5600000001005:cancelled"]
    assert cancelled["data"] | {"time": cancelled["time"]} == {
        "order_id": "5600000001005",
        "customer_id": "guest:zoe@example.fr",
        "cancelled_at": "2026-04-02T09:00:00+02:00",
        "reason": None,
        "time": "2026-04-02T09:00:00+02:00",
    }
    message = next(m for m in loyalty_queue.received if m.message_id == "shopify:order:5600000001014:refunded")
    assert (message.type, message.content_type, message.delivery_mode, message.routing_key) == (
        "OrderRefunded",
        "application/json",
        2,
        "order.refunded",
    )
    assert json.loads(message.body)["data"]["amount"] == "20.00"
    assert Checkpoint.load(checkpoint.path, checkpoint.export_sha256).finished

    # Run again: the checkpoint says it is done, nothing goes out; the summary still tells the whole file.
    again = await import_history("shopify", SHOPIFY, publisher.publish, checkpoint, customer_ids=ids)
    assert (again.published, again.already_finished, again.tally.orders) == (0, True, 9)
    assert "already imported before: nothing published" in again.summary()


async def test_a_crash_between_windows_resumes_with_the_rest_and_publishes_nothing_twice(
    infra: Infrastructure, shop: Topology, loyalty_queue: EventTap, publisher: EventPublisher, tmp_path: Path
) -> None:
    checkpoint = Checkpoint(tmp_path / "state.json", fingerprint(SHOPIFY))
    with pytest.raises(Crash):
        # Windows of at least 3 events: whole orders, 2 windows confirmed before the third never goes out.
        await import_history(
            "shopify",
            SHOPIFY,
            crashing(publisher.publish, before_call=3),
            checkpoint,
            window_events=3,
            windows_in_flight=1,
        )
    saved = Checkpoint.load(checkpoint.path, checkpoint.export_sha256)
    done_before = saved.orders_done
    assert done_before == 5  # #1014 (3 events), then #1011, #1006 and #1008 (4): two windows confirmed
    assert not saved.finished

    resumed = await import_history("shopify", SHOPIFY, publisher.publish, saved, window_events=3, windows_in_flight=1)
    bodies = await received(loyalty_queue, SHOPIFY_EVENTS)
    assert resumed.resumed_after == done_before
    assert resumed.published == 11  # #1007, #1009, #1005, #1002 and #1001: after the last confirmed window
    counted = Counter(body["id"] for body in loyalty_queue.bodies())
    assert len(counted) == SHOPIFY_EVENTS  # every event of the history arrived
    assert set(counted.values()) == {1}  # and none twice
    assert resumed.tally.orders == 9  # the summary covers the whole file, the resumed part included
    assert "resumed after order" in resumed.summary()
    assert {body["id"] for body in bodies} == set(counted)


async def test_a_crash_after_a_confirmed_window_sends_that_window_again_under_the_same_ids(
    infra: Infrastructure, shop: Topology, loyalty_queue: EventTap, publisher: EventPublisher, tmp_path: Path
) -> None:
    checkpoint = Checkpoint(tmp_path / "state.json", fingerprint(WOOCOMMERCE))
    with pytest.raises(Crash):
        await import_history(
            "woocommerce",
            WOOCOMMERCE,
            crashing(publisher.publish, after_call=2),
            checkpoint,
            window_events=1,
            windows_in_flight=1,
        )
    saved = Checkpoint.load(checkpoint.path, checkpoint.export_sha256)
    resumed = await import_history(
        "woocommerce", WOOCOMMERCE, publisher.publish, saved, window_events=1, windows_in_flight=1
    )
    # The fixture's counted orders: 731 and 728 placed, 725 placed and refunded, 715 placed and refunded.
    await received(loyalty_queue, 6 + 1)
    counted = Counter(body["id"] for body in loyalty_queue.bodies())
    assert len(counted) == 6
    # Only the window that was confirmed but not checkpointed came twice — with the same id, which an
    # inbox recognises; the bodies are the same too.
    twice = [event_id for event_id, times in counted.items() if times > 1]
    assert twice == ["woocommerce:order:728:placed"]
    copies = [body for body in loyalty_queue.bodies() if body["id"] == twice[0]]
    assert copies[0] == copies[1]
    assert resumed.published == 5


async def test_with_windows_in_flight_a_crash_sends_again_only_what_followed_the_last_confirmed_window(
    infra: Infrastructure, shop: Topology, loyalty_queue: EventTap, publisher: EventPublisher, tmp_path: Path
) -> None:
    checkpoint = Checkpoint(tmp_path / "state.json", fingerprint(SHOPIFY))
    with pytest.raises(Crash):
        await import_history(
            "shopify",
            SHOPIFY,
            crashing(publisher.publish, before_call=4),
            checkpoint,
            window_events=2,
            windows_in_flight=3,
        )
    saved = Checkpoint.load(checkpoint.path, checkpoint.export_sha256)
    done_before = saved.orders_done
    resumed = await import_history("shopify", SHOPIFY, publisher.publish, saved, window_events=2, windows_in_flight=3)
    await received(loyalty_queue, SHOPIFY_EVENTS)
    counted = Counter(body["id"] for body in loyalty_queue.bodies())
    assert len(counted) == SHOPIFY_EVENTS
    assert resumed.resumed_after == done_before
    # Sent twice, if at all: only events of the orders the resumed run published again.
    first_run = {body["id"] for body in loyalty_queue.bodies()[: sum(counted.values()) - resumed.published]}
    assert {event_id for event_id, times in counted.items() if times > 1} <= first_run
    assert sum(counted.values()) - SHOPIFY_EVENTS == len(first_run) - (SHOPIFY_EVENTS - resumed.published)
