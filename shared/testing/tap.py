"""Publish events the way a shop backend does, and collect what a flow produces, with deadlines."""

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection

from shared.events import Envelope
from shared.topology import Topology


class EventTap:
    """An exclusive queue bound to every routing key of the events exchange."""

    def __init__(self, connection: AbstractRobustConnection, exchange: AbstractExchange) -> None:
        self._connection = connection
        self._exchange = exchange
        self.received: list[AbstractIncomingMessage] = []
        self.listeners: list[Callable[[AbstractIncomingMessage], None]] = []  # called as each message arrives
        self._arrived = asyncio.Event()

    @classmethod
    async def open(cls, rabbitmq_url: str, topology: Topology) -> "EventTap":
        connection = await aio_pika.connect_robust(rabbitmq_url)
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(topology.events.name, aio_pika.ExchangeType.TOPIC, durable=True)
        tap = cls(connection, exchange)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key="#")
        await queue.consume(tap._on_message, no_ack=True)
        return tap

    async def close(self) -> None:
        await self._connection.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self.received.append(message)
        for listener in self.listeners:
            listener(message)
        self._arrived.set()

    async def publish(self, event: Envelope[Any] | bytes, routing_key: str | None = None, **properties: Any) -> None:
        """Publish like a shop backend: persistent, JSON, message_id and type set (DESIGN.md §3)."""
        if isinstance(event, Envelope):
            body = event.model_dump_json().encode()
            properties = {"message_id": event.id, "type": event.type, **properties}
            routing_key = routing_key or event.routing_key
        else:
            body = event
        message = aio_pika.Message(
            body, content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **properties
        )
        await self._exchange.publish(message, routing_key=routing_key or "")

    def bodies(self, event_type: str | None = None) -> list[dict[str, Any]]:
        found = [json.loads(m.body) for m in self.received]
        return [b for b in found if event_type is None or b.get("type") == event_type]

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
