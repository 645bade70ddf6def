"""The outbox relay: publishes committed outbox entries with publisher confirms.

A service's own commits hand their entries straight to its relay (`send`), which
publishes them at once: they were written leased to this relay, so no other
replica takes them meanwhile. Entries nobody published (the process died, the
broker was away) are found by polling once their lease runs out, claimed with a
new lease, published and marked sent. A duplicate after a crash between publish
and mark-sent is absorbed by the consumers' inbox.
"""

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import cast

import structlog
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq import Channel
from aiormq.exceptions import ChannelInvalidStateError
from pamqp.commands import Basic

from shared.amqp import connect
from shared.mongo import OUTBOX, Database
from shared.unit import FORGET_ONCE_SENT, OUTBOX_LEASE, OutboxEntry

# Publishes a batch of entries; for each, None when the broker confirmed it, else why not.
Publish = Callable[[list[OutboxEntry]], Awaitable[list[BaseException | None]]]

log = structlog.get_logger("rapport.outbox")

MAX_ENTRY_BACKOFF_SECONDS = 60.0
MAX_RELAY_BACKOFF_SECONDS = 5.0
PUBLISH_TIMEOUT_SECONDS = 10.0  # for a whole batch's confirmations


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        publish: Publish,
        *,
        batch_size: int = 100,
        poll_seconds: float = 1.0,
        on_published: Callable[[int], None] = lambda count: None,
        on_failed: Callable[[int], None] = lambda count: None,
    ) -> None:
        self._db = db
        self._publish = publish
        self._batch_size = batch_size
        self._poll = poll_seconds
        self._on_published = on_published
        self._on_failed = on_failed
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._committed: list[OutboxEntry] = []
        self._idle = asyncio.Event()  # set while nothing this process committed waits to be published
        self.owner = f"relay-{uuid.uuid4()}"  # the lease holder of the entries this process commits

    def send(self, entries: list[OutboxEntry]) -> None:
        """These entries were just committed (leased to this relay): publish them now."""
        self._committed.extend(entries)
        self._idle.clear()
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Publish what this process committed (for up to `grace_seconds`), then stop.

        What is left is published by whichever relay polls first once its lease runs out.
        """
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=grace_seconds)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def backlog(self) -> int:
        return await self._db[OUTBOX].count_documents({"status": "pending"})

    async def _run(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            try:
                sent, broker_down = await self.relay_once()
            except Exception as error:  # noqa: BLE001 - the relay must outlive a MongoDB hiccup
                log.warning("outbox_relay_failed", error=repr(error))
                sent, broker_down = 0, True
            if not self._committed:
                self._idle.set()
            if broker_down:
                failures += 1
                await asyncio.sleep(min(0.25 * 2**failures, MAX_RELAY_BACKOFF_SECONDS))
                continue
            failures = 0
            if sent < self._batch_size and not self._committed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll)

    async def relay_once(self) -> tuple[int, bool]:
        """Publish what was just committed, or else one batch of due entries.

        Return (published, whether every publish failed).
        """
        if self._committed:
            entries, self._committed = self._committed[: self._batch_size], self._committed[self._batch_size :]
        else:
            entries = await self._claim()
        if not entries:
            return 0, False
        return await self._send_entries(entries)

    async def _send_entries(self, entries: list[OutboxEntry]) -> tuple[int, bool]:
        results = await self._publish(entries)
        sent = [entry["_id"] for entry, error in zip(entries, results, strict=True) if error is None]
        failed = [(entry, error) for entry, error in zip(entries, results, strict=True) if error is not None]
        now = datetime.now(UTC)
        outbox = self._db[OUTBOX]
        if failed:
            self._on_failed(len(failed))
        if sent:
            await outbox.update_many(
                {"_id": {"$in": sent}},
                {"$set": {"status": "sent", "sent_at": now}, "$unset": {"lease_owner": ""}},
            )
            # Events about an erased customer are not kept for inspection once the broker has them.
            await outbox.delete_many({"_id": {"$in": sent}, FORGET_ONCE_SENT: True})
            self._on_published(len(sent))
        if failed and not sent:
            # Nothing went through: the broker is away. Release the entries untouched, and those
            # committed meanwhile, for the poll to take once the broker is back.
            released = [entry["_id"] for entry, _ in failed] + [entry["_id"] for entry in self._committed]
            self._committed.clear()
            await outbox.update_many({"_id": {"$in": released}}, {"$set": {"lease_until": now}})
            log.warning("outbox_broker_unreachable", pending=len(failed), error=repr(failed[0][1]))
            return 0, True
        for entry, error in failed:
            attempts = entry.get("attempts", 0) + 1
            retry_at = now + timedelta(seconds=min(0.5 * 2**attempts, MAX_ENTRY_BACKOFF_SECONDS))
            await outbox.update_one(
                {"_id": entry["_id"]},
                {
                    "$set": {
                        "attempts": attempts,
                        "next_attempt_at": retry_at,
                        "lease_until": now,
                        "last_error": repr(error),
                    }
                },
            )
            log.warning("outbox_publish_failed", event_id=entry["_id"], attempts=attempts, error=repr(error))
        return len(sent), False

    async def _claim(self) -> list[OutboxEntry]:
        now = datetime.now(UTC)
        outbox = self._db[OUTBOX]
        due = outbox.find(
            {"status": "pending", "next_attempt_at": {"$lte": now}, "lease_until": {"$lte": now}},
            {"_id": 1},
            sort=[("next_attempt_at", 1)],
            limit=self._batch_size,
        )
        ids = [doc["_id"] async for doc in due]
        if not ids:
            return []
        lease = str(uuid.uuid4())
        await outbox.update_many(
            {"_id": {"$in": ids}, "status": "pending", "lease_until": {"$lte": now}},
            {"$set": {"lease_until": now + OUTBOX_LEASE, "lease_owner": lease}},
        )
        claimed = outbox.find({"_id": {"$in": ids}, "lease_owner": lease}, sort=[("next_attempt_at", 1)])
        return [doc async for doc in claimed]


class EventPublisher:
    """Publishes outbox entries on a connection of its own, with publisher confirms and DESIGN.md §3's properties.

    It writes straight to aio-pika's underlying aiormq channel: building an
    aio-pika or FastStream message per event cost more than the publish itself
    here (docs/benchmarks.md). The connection is robust: it reconnects by
    itself, and a publish while it is away raises, so the relay retries later.
    """

    def __init__(self, rabbitmq_url: str, exchange: str, name: str) -> None:
        self._url = rabbitmq_url
        self._name = name
        self._exchange = exchange
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None

    async def start(self) -> None:
        self._connection = await connect(self._url, self._name)
        self._channel = await self._connection.channel(publisher_confirms=True)

    async def stop(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def publish(self, entries: list[OutboxEntry]) -> list[BaseException | None]:
        """Publish every entry at once; for each, None when the broker confirmed it, else the error."""
        if self._channel is None or self._channel.is_closed:  # away: fail now, don't wait for the reconnect
            return [ChannelInvalidStateError("the broker connection is down")] * len(entries)
        channel = cast(Channel, await self._channel.get_underlay_channel())  # `wait` is on the concrete class
        try:
            # One deadline for the batch: a timer per publish cost more than the publish's own work.
            async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                results = await asyncio.gather(
                    *(_publish(channel, self._exchange, e) for e in entries), return_exceptions=True
                )
        except TimeoutError as timeout:  # which ones arrived is not known: all are tried again (inboxes de-duplicate)
            return [timeout] * len(entries)
        return [result if isinstance(result, BaseException) else None for result in results]


async def _publish(channel: Channel, exchange: str, entry: OutboxEntry) -> None:
    body = entry["body"]
    properties = Basic.Properties(
        content_type="application/json",
        delivery_mode=2,  # persistent
        message_id=body["id"],
        message_type=body["type"],
        correlation_id=body.get("correlationid"),
    )
    confirmation = await channel.basic_publish(
        json.dumps(body, ensure_ascii=False).encode(),
        exchange=exchange,
        routing_key=entry["routing_key"],
        properties=properties,
        wait=False,  # the confirmation says it arrived; no need to also wait for the socket write
    )
    if not isinstance(confirmation, Basic.Ack):
        raise PublishRefused(f"the broker did not confirm {body['id']}: {confirmation!r}")


class PublishRefused(Exception):
    """The broker answered a publish with a nack."""
