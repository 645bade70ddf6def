"""Publish events the way a shop backend does, and collect what a flow produces, with deadlines."""

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from aiormq.exceptions import AMQPError

from shared.events import Envelope
from shared.topology import Topology


class EventTap:
    """A queue of the test's own bound to the events exchange (every routing key unless told), read as it fills."""

    def __init__(
        self, connection: AbstractRobustConnection, exchange: AbstractExchange, queue: AbstractQueue, *, durable: bool
    ) -> None:
        self._connection = connection
        self._exchange = exchange
        self._queue = queue
        self._durable = durable
        self.received: list[AbstractIncomingMessage] = []
        self._bodies: list[dict[str, Any]] = []
        self.listeners: list[Callable[[AbstractIncomingMessage], None]] = []  # called as each message arrives
        self._arrived = asyncio.Event()

    @classmethod
    async def open(
        cls,
        rabbitmq_url: str,
        topology: Topology,
        *,
        routing_keys: Sequence[str] = ("#",),
        durable_queue: str | None = None,
    ) -> "EventTap":
        """`durable_queue`: a named quorum queue that outlives a broker restart (deleted by close())."""
        connection = await aio_pika.connect_robust(rabbitmq_url)
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            topology.events.name, aio_pika.ExchangeType.TOPIC, durable=True, arguments=topology.events_arguments
        )
        if durable_queue is None:
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        else:
            queue = await channel.declare_queue(durable_queue, durable=True, arguments={"x-queue-type": "quorum"})
        tap = cls(connection, exchange, queue, durable=durable_queue is not None)
        for routing_key in routing_keys:
            await queue.bind(exchange, routing_key=routing_key)
        # A durable tap acks what it has read, so a message in flight when the broker stops comes again.
        await queue.consume(tap._on_message, no_ack=not tap._durable)
        return tap

    async def close(self) -> None:
        if self._durable:
            await self._queue.delete(if_unused=False, if_empty=False)
        await self._connection.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self.received.append(message)
        with contextlib.suppress(ValueError):  # a test's deliberately unreadable message is no body
            self._bodies.append(json.loads(message.body))
        for listener in self.listeners:
            listener(message)
        if self._durable:
            await message.ack()
        self._arrived.set()

    async def publish(self, event: Envelope[Any] | bytes, routing_key: str | None = None, **properties: Any) -> None:
        """Publish like a shop backend: persistent, JSON, message_id and type set (DESIGN.md §3)."""
        if isinstance(event, Envelope):
            body = event.model_dump_json().encode()
            properties = {"message_id": event.id, "type": event.type, **properties}
            routing_key = routing_key or event.routing_key
        else:
            body = event
        properties = {"content_type": "application/json", **properties}  # a test may set another
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **properties)
        await self._exchange.publish(message, routing_key=routing_key or "")

    async def publish_retrying(self, event: Envelope[Any], *, within: float = 120.0) -> None:
        """Publish like a shop backend riding out a broker outage: the same event id again until it is confirmed."""
        deadline = time.monotonic() + within
        while True:
            try:
                await asyncio.wait_for(self.publish(event), timeout=5.0)
                return
            except (AMQPError, ConnectionError, TimeoutError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def publish_many(
        self, events: Iterable[Envelope[Any]], *, in_flight: int = 100, retrying: bool = False
    ) -> None:
        """Publish `events` with up to `in_flight` awaiting their confirms at once (a busy shop backend)."""
        slots = asyncio.Semaphore(in_flight)

        async def one(event: Envelope[Any]) -> None:
            async with slots:
                await (self.publish_retrying(event) if retrying else self.publish(event))

        await asyncio.gather(*(one(event) for event in events))

    def bodies(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """Every event received, duplicates included, in the order they arrived."""
        return [b for b in self._bodies if event_type is None or b.get("type") == event_type]

    def distinct(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """Every event received once, by event id (a copy the outbox sent again after a crash is left out)."""
        return list({b["id"]: b for b in reversed(self.bodies(event_type))}.values())[::-1]

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], count: int = 1, timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        """Wait until `count` received events match; raise with what did arrive at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            matches = [b for b in self.bodies() if predicate(b)]
            if len(matches) >= count:
                return matches
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [b.get("type") for b in self.bodies()]
                raise TimeoutError(
                    f"expected {count} matching events within {timeout}s, got {len(matches)}; saw {seen}"
                )
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout=min(remaining, 0.5))


async def eventually(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll an (async or plain) check until it returns a truthy value; raise at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise TimeoutError(f"condition still false after {timeout}s (last value {last!r})")


async def drain_queue(rabbitmq_url: str, queue_name: str) -> list[AbstractIncomingMessage]:
    """Take every message now in `queue_name` (e.g. a dead-letter queue)."""
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name, ensure=True)
        taken = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            taken.append(message)
        return taken
