"""The one way a service consumes its queue.

`subscribe()` wires a handler table ({event class: handler}) to the service's
quorum queue: FastStream validates each message against the events the service
handles, the group commit applies it exactly once, and the message is acked only
after the commit. `DeadLetters` is the error policy around it: a message that is
not a valid event goes to the dead-letter queue at once with the reason in the
`x-rapport-error` header; one whose handler fails is redelivered with back-off
and dead-lettered on its last allowed delivery. The consumer goes on either way.
"""

import asyncio
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property, reduce
from operator import or_
from typing import Annotated, Any

import structlog
from faststream.middlewares import AckPolicy, BaseMiddleware
from faststream.rabbit import Channel, RabbitBroker, RabbitMessage
from pydantic import Field, ValidationError

from shared.events import Envelope, InvalidEvent, parse_event
from shared.groupcommit import EventHandler, GroupCommit
from shared.logs import bind_message
from shared.metrics import ServiceMetrics
from shared.topology import MAX_DELIVERIES, Topology

ERROR_HEADER = "x-rapport-error"
ERROR_FIELD_HEADER = "x-rapport-error-field"
DELIVERIES_HEADER = "x-rapport-deliveries"

log = structlog.get_logger("rapport.consumer")

Handlers = Mapping[type[Envelope[Any]], EventHandler]


@dataclass(frozen=True)
class Consumer:
    """What a service consumes and how it reacts: the registry the app is built from."""

    service: str
    topology: Topology
    handlers: Handlers
    metrics: ServiceMetrics
    retry_backoff_seconds: float

    @property
    def routing_keys(self) -> list[str]:
        return [event.routing_key for event in self.handlers]

    def handler_for(self, event_type: str) -> EventHandler:
        return self._by_type[event_type]

    @cached_property  # read for every message
    def _by_type(self) -> dict[str, EventHandler]:
        return {event.model_fields["type"].default: handler for event, handler in self.handlers.items()}

    def reason_invalid(self, body: bytes) -> tuple[str, str | None] | None:
        """Why `body` is not an event this service handles, or None when it is one."""
        try:
            event = parse_event(body)
        except InvalidEvent as invalid:
            return invalid.reason, invalid.field
        if event.type not in self._by_type:
            return f"type: {event.type} is not consumed by {self.service}", "type"
        return None


def subscribe(broker: RabbitBroker, consumer: Consumer, group: GroupCommit, prefetch: int) -> None:
    """Register the service's one subscriber on its queue."""
    topology = consumer.topology
    events = list(consumer.handlers)
    body_type: Any = events[0] if len(events) == 1 else Annotated[reduce(or_, events), Field(discriminator="type")]
    metrics = consumer.metrics

    async def consume(event: Any, message: RabbitMessage) -> None:
        structlog.contextvars.bind_contextvars(correlation_id=event.correlationid or event.id, subject=event.subject)
        applied = await group.apply(event, consumer.handler_for(event.type))
        metrics.consumed.labels(type=event.type, outcome="applied" if applied else "duplicate").inc()
        if not applied:
            log.info("duplicate_skipped", event_id=event.id)
        await message.ack()

    consume.__annotations__["event"] = body_type
    consume.__name__ = f"consume_{consumer.service}"
    consume.__doc__ = f"Events the {consumer.service} service reacts to: {', '.join(consumer.routing_keys)}."

    broker.subscriber(
        topology.queue(consumer.service, routing_key=consumer.routing_keys[0]),
        topology.events,
        channel=Channel(prefetch_count=prefetch),
        ack_policy=AckPolicy.MANUAL,
        title=f"{topology.queue_name(consumer.service)}:consume",
    )(consume)


async def declare_bindings(broker: RabbitBroker, consumer: Consumer) -> None:
    """The routing keys beyond the subscriber's first, and the dead-letter queue."""
    topology = consumer.topology
    queue = await broker.declare_queue(topology.queue(consumer.service))
    events = await broker.declare_exchange(topology.events)
    for routing_key in consumer.routing_keys[1:]:
        await queue.bind(events, routing_key=routing_key)
    dead_letters = await broker.declare_exchange(topology.dead_letters)
    dlq = topology.dead_letter_queue(consumer.service)
    declared = await broker.declare_queue(dlq)
    await declared.bind(dead_letters, routing_key=dlq.routing_key)


def dead_letters(consumer: Consumer, broker: RabbitBroker) -> type[BaseMiddleware]:
    """The error policy as a FastStream middleware bound to this consumer."""

    class DeadLetters(BaseMiddleware):
        async def consume_scope(self, call_next: Any, msg: RabbitMessage) -> Any:  # type: ignore[override]
            raw = msg.raw_message
            bind_message(msg.message_id, msg.correlation_id, raw.type)
            try:
                return await call_next(msg)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - every failure is retried or dead-lettered
                await _on_failure(msg, error)
            return None

    async def _on_failure(msg: RabbitMessage, error: Exception) -> None:
        metrics = consumer.metrics
        if isinstance(error, (ValidationError, json.JSONDecodeError, UnicodeDecodeError)):
            invalid = consumer.reason_invalid(msg.body)
            if invalid is not None:
                await _dead_letter(msg, reason=invalid[0], field=invalid[1], kind="invalid")
                return
        deliveries = 1 + int((msg.headers or {}).get("x-delivery-count", 0))
        metrics.failed.labels(type=msg.raw_message.type or "unknown").inc()
        log.warning("handler_failed", deliveries=deliveries, error=repr(error), exc_info=error)
        if deliveries >= MAX_DELIVERIES:
            await _dead_letter(msg, reason=f"handler failed {deliveries} times: {error!r}", kind="handler_failed")
            return
        backoff = consumer.retry_backoff_seconds * 2 ** (deliveries - 1)
        await asyncio.sleep(backoff * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not crypto
        await msg.nack(requeue=True)

    async def _dead_letter(msg: RabbitMessage, *, reason: str, kind: str, field: str | None = None) -> None:
        raw = msg.raw_message
        headers = dict(msg.headers or {})
        headers[ERROR_HEADER] = reason[:1000]
        headers[DELIVERIES_HEADER] = 1 + int(headers.get("x-delivery-count", 0))
        if field:
            headers[ERROR_FIELD_HEADER] = field
        topology = consumer.topology
        try:
            await broker.publish(
                msg.body,
                exchange=topology.dead_letters,
                routing_key=topology.queue_name(consumer.service),
                headers=headers,
                persist=True,
                content_type=raw.content_type,
                message_id=raw.message_id,
                message_type=raw.type,
                correlation_id=raw.correlation_id,
            )
        except Exception as error:  # noqa: BLE001 - keep the message: the broker will redeliver it
            log.error("dead_letter_failed", error=repr(error))
            await msg.nack(requeue=True)
            return
        await msg.ack()
        consumer.metrics.dead_lettered.labels(reason=kind).inc()
        log.warning("message_dead_lettered", reason=reason, kind=kind)

    return DeadLetters
