"""The one way a service consumes its queue: a batch at a time, straight from aio-pika.

`QueueConsumer` takes the messages the broker delivers (up to the prefetch),
reads each as an event of the service's handler table, hands the batch to the
group commit (one transaction for all of it), and acks each message after the
commit. The error policy (DESIGN.md §4, §5):
- a message that is not a valid event of this service goes to the dead-letter
  queue at once, with the reason in `x-rapport-error` (and the field in
  `x-rapport-error-field`);
- one whose handler fails is redelivered with back-off and dead-lettered on its
  last allowed delivery with the error;
- the consumer goes on either way.

Why not FastStream's subscriber: its per-message path (middlewares, dependency
injection, a worker-thread hop for the message context) capped consumption near
2,000 messages/s here, against 8,700/s for aio-pika with the same validation
(docs/benchmarks.md). FastStream still declares the topology, publishes, and
documents the subscriber in the AsyncAPI files (`describe_subscriber`).
"""

import asyncio
import contextlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property, reduce
from operator import or_
from typing import Annotated, Any

import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from faststream.rabbit import RabbitBroker
from pydantic import Field

from shared.amqp import connect
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

    def read(self, body: bytes) -> Envelope[Any]:
        """The event in `body`; raises InvalidEvent naming the field when it is not an event this service handles."""
        event = parse_event(body)
        if event.type not in self._by_type:
            raise InvalidEvent(f"type: {event.type} is not consumed by {self.service}", "type")
        return event


class QueueConsumer:
    """Consumes the service's quorum queue and applies its events in group commits."""

    def __init__(
        self,
        consumer: Consumer,
        group: GroupCommit,
        broker: RabbitBroker,
        *,
        rabbitmq_url: str,
        max_batch: int,
        max_wait_seconds: float,
        prefetch: int,
        grace_seconds: float,
    ) -> None:
        self._consumer = consumer
        self._group = group
        self._broker = broker  # publishes dead letters, with confirms
        self._url = rabbitmq_url
        self._max_batch = max_batch
        self._max_wait = max_wait_seconds
        self._prefetch = prefetch
        self._grace = grace_seconds
        self._received: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        self._redeliveries: set[asyncio.Task[None]] = set()
        self._connection: AbstractRobustConnection | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start consuming (the queue must have been declared: `declare_topology`)."""
        self._connection = await connect(self._url, name=f"rapport-{self._consumer.service}-consumer")
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=self._prefetch)
        self._queue = await channel.declare_queue(
            self._consumer.topology.queue_name(self._consumer.service), passive=True
        )
        self._task = asyncio.create_task(self._run(), name=f"consume-{self._consumer.service}")
        self._tag = await self._queue.consume(self._deliver)

    async def stop(self) -> None:
        """Stop deliveries, commit and ack what has arrived, and close; what is left unacked goes back to the queue."""
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):  # the broker may be away; closing returns the messages anyway
                await asyncio.wait_for(self._queue.cancel(self._tag), timeout=self._grace)
        if self._task is not None:
            self._received.put_nowait(None)
            try:
                await asyncio.wait_for(self._task, timeout=self._grace)
            except TimeoutError:
                log.warning("consumer_stop_timed_out", waiting=self._received.qsize())
        for redelivery in list(self._redeliveries):
            redelivery.cancel()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._connection.close(), timeout=self._grace)

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        self._received.put_nowait(message)

    async def _run(self) -> None:
        while True:
            first = await self._received.get()
            if first is None:
                return
            if self._received.qsize() < self._max_batch - 1 and self._max_wait > 0:
                await asyncio.sleep(self._max_wait)  # let messages on their way join the batch
            batch = [first]
            stopping = False
            while len(batch) < self._max_batch and not self._received.empty():
                message = self._received.get_nowait()
                if message is None:
                    stopping = True
                    break
                batch.append(message)
            await self._apply(batch)
            if stopping:
                return

    async def _apply(self, batch: list[AbstractIncomingMessage]) -> None:
        readable: list[tuple[AbstractIncomingMessage, Envelope[Any]]] = []
        for message in batch:
            try:
                readable.append((message, self._consumer.read(message.body)))
            except InvalidEvent as invalid:
                await self._dead_letter(message, reason=invalid.reason, field=invalid.field, kind="invalid")
        if not readable:
            return
        outcomes = await self._group.commit([(event, self._consumer.handler_for(event.type)) for _, event in readable])
        done: list[AbstractIncomingMessage] = []
        for (message, event), outcome in zip(readable, outcomes, strict=True):
            if isinstance(outcome, Exception):
                await self._failed(message, event, outcome)
                continue
            self._consumer.metrics.consumed.labels(type=event.type, outcome="applied" if outcome else "duplicate").inc()
            if not outcome:
                log.info("duplicate_skipped", event_id=event.id, event_type=event.type)
            done.append(message)
        await self._ack(done)

    async def _ack(self, messages: list[AbstractIncomingMessage]) -> None:
        """Ack messages applied (or skipped as duplicates): one frame for the batch when that acks nothing else."""
        if not messages:
            return
        last = messages[-1]
        if self._redeliveries:  # an earlier message is held for its back-off: `multiple` would ack it too
            for message in messages:
                await _ack(message)
            return
        # Messages delivered before a reconnect belong to a closed channel; the broker redelivers them anyway.
        await _ack(last, multiple=True)

    async def _failed(self, message: AbstractIncomingMessage, event: Envelope[Any], error: Exception) -> None:
        self._consumer.metrics.failed.labels(type=event.type).inc()
        deliveries = _deliveries(message)
        log.warning("handler_failed", event_id=event.id, deliveries=deliveries, error=repr(error), exc_info=error)
        if deliveries >= MAX_DELIVERIES:
            await self._dead_letter(
                message, reason=f"handler failed {deliveries} times: {error!r}", kind="handler_failed"
            )
            return
        backoff = self._consumer.retry_backoff_seconds * 2 ** (deliveries - 1)
        redelivery = asyncio.create_task(_redeliver_after(message, backoff * random.uniform(0.8, 1.2)))  # noqa: S311 - jitter
        self._redeliveries.add(redelivery)
        redelivery.add_done_callback(self._redeliveries.discard)

    async def _dead_letter(
        self, message: AbstractIncomingMessage, *, reason: str, kind: str, field: str | None = None
    ) -> None:
        bind_message(message.message_id, message.correlation_id, message.type)
        headers = dict(message.headers or {})
        headers[ERROR_HEADER] = reason[:1000]
        headers[DELIVERIES_HEADER] = _deliveries(message)
        if field:
            headers[ERROR_FIELD_HEADER] = field
        topology = self._consumer.topology
        try:
            await self._broker.publish(
                message.body,
                exchange=topology.dead_letters,
                routing_key=topology.queue_name(self._consumer.service),
                headers=headers,
                persist=True,
                content_type=message.content_type,
                message_id=message.message_id,
                message_type=message.type,
                correlation_id=message.correlation_id,
            )
        except Exception as error:  # noqa: BLE001 - keep the message: the broker will redeliver it
            log.error("dead_letter_failed", error=repr(error))
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            return
        await _ack(message)
        self._consumer.metrics.dead_lettered.labels(reason=kind).inc()
        log.warning("message_dead_lettered", reason=reason, kind=kind)


def _deliveries(message: AbstractIncomingMessage) -> int:
    """Which delivery of the message this is (quorum queues count earlier ones in `x-delivery-count`)."""
    earlier = (message.headers or {}).get("x-delivery-count", 0)
    return 1 + int(earlier) if isinstance(earlier, int | str) else 1


async def _ack(message: AbstractIncomingMessage, *, multiple: bool = False) -> None:
    try:
        await message.ack(multiple=multiple)
    except Exception as error:  # noqa: BLE001 - the channel closed under it: the broker redelivers, the inbox de-duplicates
        log.warning("ack_failed", event_id=message.message_id, error=repr(error))


async def _redeliver_after(message: AbstractIncomingMessage, seconds: float) -> None:
    await asyncio.sleep(seconds)
    try:
        await message.nack(requeue=True)
    except Exception as error:  # noqa: BLE001 - the channel closed under it: the broker redelivers it anyway
        log.warning("nack_failed", event_id=message.message_id, error=repr(error))


async def declare_topology(broker: RabbitBroker, consumer: Consumer) -> None:
    """The events exchange, the service's queue bound to its routing keys, and its dead-letter queue."""
    topology = consumer.topology
    queue = await broker.declare_queue(topology.queue(consumer.service))
    events = await broker.declare_exchange(topology.events)
    for routing_key in consumer.routing_keys:
        await queue.bind(events, routing_key=routing_key)
    dead_letters = await broker.declare_exchange(topology.dead_letters)
    dlq = topology.dead_letter_queue(consumer.service)
    declared = await broker.declare_queue(dlq)
    await declared.bind(dead_letters, routing_key=dlq.routing_key)


def describe_subscriber(broker: RabbitBroker, consumer: Consumer) -> None:
    """Register the service's subscriber with FastStream for the AsyncAPI document only; it never consumes."""
    events = list(consumer.handlers)
    body_type: Any = events[0] if len(events) == 1 else Annotated[reduce(or_, events), Field(discriminator="type")]

    async def consume(event: Any) -> None:
        raise RuntimeError("documentation only: QueueConsumer consumes the queue")

    consume.__annotations__["event"] = body_type
    consume.__name__ = f"consume_{consumer.service}"
    consume.__doc__ = f"Events the {consumer.service} service reacts to: {', '.join(consumer.routing_keys)}."
    topology = consumer.topology
    broker.subscriber(
        topology.queue(consumer.service, routing_key=consumer.routing_keys[0]),
        topology.events,
        title=f"{topology.queue_name(consumer.service)}:consume",
    )(consume)
