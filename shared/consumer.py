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
- a body over `MAX_MESSAGE_BYTES` is dead-lettered unread;
- the consumer goes on either way: no header, property or body can end it. If
  dead-lettering itself fails, the message is rejected and the queue's own
  dead-letter exchange keeps it; if the loop fails outside a handler (a defect of
  ours), the batch goes back to the queue and the loop starts again, counted in
  `rapport_consumer_restarts_total`. `/readyz` says `stopped` or `stalled` when
  the loop is gone or messages wait with no batch finished for a while.

Why not FastStream's subscriber: its per-message path (middlewares, dependency
injection, a worker-thread hop for the message context) capped consumption near
2,000 messages/s here, against 8,700/s for aio-pika with the same validation
(docs/benchmarks.md). FastStream still declares the topology, publishes, and
documents the subscriber in the AsyncAPI files (`describe_subscriber`).
"""

import asyncio
import contextlib
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property, reduce
from operator import or_
from typing import Annotated, Any

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from faststream.rabbit import RabbitBroker, RabbitExchange, RabbitQueue
from pydantic import Field

from shared.amqp import connect
from shared.cloudevents import read_event
from shared.events import ANNOUNCED, Envelope, InvalidEvent
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

    def read(self, message: AbstractIncomingMessage) -> Envelope[Any]:
        """The message's event (structured or binary mode); raises InvalidEvent naming the field when it is not
        an event this service handles."""
        event = read_event(message.body, message.content_type, message.headers)
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
        max_message_bytes: int = 1_048_576,
        stall_seconds: float = 60.0,
    ) -> None:
        self._consumer = consumer
        self._group = group
        self._broker = broker  # publishes dead letters, with confirms
        self._url = rabbitmq_url
        self._max_batch = max_batch
        self._max_wait = max_wait_seconds
        self._prefetch = prefetch
        self._grace = grace_seconds
        self._max_bytes = max_message_bytes
        self._stall = stall_seconds
        self._stopping = False
        self._in_hand: list[AbstractIncomingMessage] = []  # the batch being applied: given back if the loop fails
        self._progress_at = time.monotonic()  # when the loop last finished a batch or had nothing to do
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
        self._task = asyncio.create_task(self._supervised(), name=f"consume-{self._consumer.service}")
        self._tag = await self._queue.consume(self._deliver)

    async def waiting(self, queue_name: str) -> int:
        """Messages ready in `queue_name` (say, `crm.unrouted`), asked on the consumer's connection."""
        if self._connection is None:
            return 0
        channel = await self._connection.channel()
        try:
            declared = await channel.declare_queue(queue_name, passive=True)
            return declared.declaration_result.message_count or 0
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    def state(self) -> str:
        """For /readyz: "ok", "stopped" (the loop is gone) or "stalled" (messages wait, no batch finished lately)."""
        if self._task is None or self._task.done():
            return "stopped"
        waiting = bool(self._in_hand) or not self._received.empty()
        if waiting and time.monotonic() - self._progress_at > self._stall:
            return "stalled"
        return "ok"

    async def stop(self) -> None:
        """Stop deliveries, commit and ack what has arrived, and close; what is left unacked goes back to the queue."""
        self._stopping = True
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

    async def _supervised(self) -> None:
        """Run the consume loop; if it fails (never by a message's doing), give its batch back and start it again."""
        while True:
            try:
                await self._run()
                return
            except Exception as error:
                self._consumer.metrics.consumer_restarts.inc()
                log.error("consumer_restarted", error=repr(error), batch=len(self._in_hand), exc_info=error)
                batch, self._in_hand = self._in_hand, []
                for message in batch:  # redelivered, counted by the queue, dead-lettered at its delivery limit
                    with contextlib.suppress(Exception):
                        await message.nack(requeue=True)
                if self._stopping:
                    return
                await asyncio.sleep(self._consumer.retry_backoff_seconds)

    async def _run(self) -> None:
        while True:
            if self._received.empty():
                self._progress_at = time.monotonic()  # idle: nothing waits
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
            self._in_hand = batch
            await self._apply(batch)
            self._in_hand = []
            self._progress_at = time.monotonic()
            if stopping:
                return

    async def _apply(self, batch: list[AbstractIncomingMessage]) -> None:
        readable: list[tuple[AbstractIncomingMessage, Envelope[Any]]] = []
        for message in batch:
            if len(message.body) > self._max_bytes:
                reason = f"body: {len(message.body)} bytes is over the limit of {self._max_bytes} (MAX_MESSAGE_BYTES)"
                await self._dead_letter(message, reason=reason, field="body", kind="too_large")
                continue
            try:
                readable.append((message, self._consumer.read(message)))
            except InvalidEvent as invalid:
                await self._dead_letter(message, reason=invalid.reason, field=invalid.field, kind="invalid")
            except Exception as error:  # noqa: BLE001 - e.g. JSON nested too deep to parse: unreadable all the same
                await self._dead_letter(
                    message, reason=f"body: cannot be read: {error!r}", field="body", kind="invalid"
                )
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
        try:
            bind_message(_text(message.message_id), _text(message.correlation_id), _text(message.type))
            headers = dict(message.headers or {})
            headers[ERROR_HEADER] = reason[:1000]
            headers[DELIVERIES_HEADER] = _deliveries(message)
            if field:
                headers[ERROR_FIELD_HEADER] = field
            topology = self._consumer.topology
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
        except Exception as error:  # noqa: BLE001 - keep the message: the queue's dead-letter exchange takes it
            log.error("dead_letter_failed", reason=reason, error=repr(error))
            with contextlib.suppress(Exception):
                await message.reject(requeue=False)
            self._consumer.metrics.dead_lettered.labels(reason=kind).inc()
            return
        await _ack(message)
        self._consumer.metrics.dead_lettered.labels(reason=kind).inc()
        log.warning("message_dead_lettered", reason=reason, kind=kind)


def _deliveries(message: AbstractIncomingMessage) -> int:
    """Which delivery of the message this is (quorum queues count earlier ones in `x-delivery-count`).

    The header is the broker's, but a publisher can set one too: whatever is not a count reads as none.
    """
    earlier = (message.headers or {}).get("x-delivery-count", 0)
    if isinstance(earlier, bool) or not isinstance(earlier, int | str | bytes):
        return 1
    try:
        count = int(earlier)
    except ValueError:
        return 1
    return 1 + min(max(count, 0), MAX_DELIVERIES)


def _text(value: object) -> str | None:
    """A message property for the log: a string, or None (properties come from whoever published)."""
    return value[:200] if isinstance(value, str) else None


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


async def declare_topology(rabbitmq_url: str, consumer: Consumer) -> None:
    """The events exchange with its alternate exchange and queue for unrouted events, the announcements exchange
    bound to it, the service's queue bound to its routing keys, and its dead-letter queue (DESIGN.md §4)."""
    topology = consumer.topology
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        unrouted = await _declare_exchange(channel, topology.unrouted)
        kept = await _declare_queue(channel, topology.unrouted_queue)
        await kept.bind(unrouted)
        try:
            events = await _declare_exchange(channel, topology.events)
        except aio_pika.exceptions.ChannelPreconditionFailed:
            # Declared before it had an alternate exchange; arguments cannot change, a policy can add it.
            log.warning(
                "events_exchange_without_alternate_exchange",
                exchange=topology.events.name,
                fix=f"rabbitmqctl set_policy unrouted '^{re.escape(topology.events.name)}$' "
                f'\'{{"alternate-exchange":"{topology.unrouted.name}"}}\' --apply-to exchanges',
            )
            channel = await connection.channel()
            events = await channel.get_exchange(topology.events.name, ensure=True)
        announcements = await _declare_exchange(channel, topology.announcements)
        for announced in ANNOUNCED:
            await announcements.bind(events, routing_key=announced.routing_key)
        queue = await _declare_queue(channel, topology.queue(consumer.service))
        for routing_key in consumer.routing_keys:
            await queue.bind(events, routing_key=routing_key)
        dead_letters = await _declare_exchange(channel, topology.dead_letters)
        dlq = topology.dead_letter_queue(consumer.service)
        declared = await _declare_queue(channel, dlq)
        await declared.bind(dead_letters, routing_key=dlq.routing_key)


async def _declare_exchange(channel: AbstractChannel, exchange: RabbitExchange) -> AbstractExchange:
    return await channel.declare_exchange(
        exchange.name, aio_pika.ExchangeType(exchange.type.value), durable=True, arguments=exchange.arguments
    )


async def _declare_queue(channel: AbstractChannel, queue: RabbitQueue) -> AbstractQueue:
    return await channel.declare_queue(queue.name, durable=True, arguments=queue.arguments)


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
