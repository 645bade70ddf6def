"""The outbox relay: publishes committed outbox entries with publisher confirms.

Entries are claimed with a lease, so several replicas can relay the same outbox
without publishing an entry twice in the normal case; a duplicate after a crash
between publish and mark-sent is absorbed by the consumers' inbox.
"""

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from faststream.rabbit import RabbitBroker, RabbitExchange

from shared.mongo import OUTBOX, Database

Publish = Callable[[dict[str, Any]], Awaitable[None]]

log = structlog.get_logger("rapport.outbox")

LEASE = timedelta(seconds=30)
MAX_ENTRY_BACKOFF_SECONDS = 60.0
MAX_RELAY_BACKOFF_SECONDS = 5.0


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

    def wake(self) -> None:
        """Something was committed to the outbox: relay it now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
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
            if broker_down:
                failures += 1
                await asyncio.sleep(min(0.25 * 2**failures, MAX_RELAY_BACKOFF_SECONDS))
                continue
            failures = 0
            if sent < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll)

    async def relay_once(self) -> tuple[int, bool]:
        """Publish one batch of due entries; return (published, whether every publish failed)."""
        entries = await self._claim()
        if not entries:
            return 0, False
        results = await asyncio.gather(*(self._publish(entry) for entry in entries), return_exceptions=True)
        sent = [
            entry["_id"]
            for entry, result in zip(entries, results, strict=True)
            if not isinstance(result, BaseException)
        ]
        failed = [
            (entry, result) for entry, result in zip(entries, results, strict=True) if isinstance(result, BaseException)
        ]
        now = datetime.now(UTC)
        outbox = self._db[OUTBOX]
        if failed:
            self._on_failed(len(failed))
        if sent:
            await outbox.update_many(
                {"_id": {"$in": sent}},
                {"$set": {"status": "sent", "sent_at": now}, "$unset": {"lease_owner": ""}},
            )
            self._on_published(len(sent))
        if failed and not sent:
            # Nothing went through: the broker is away. Release the entries untouched.
            await outbox.update_many(
                {"_id": {"$in": [entry["_id"] for entry, _ in failed]}}, {"$set": {"lease_until": now}}
            )
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

    async def _claim(self) -> list[dict[str, Any]]:
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
            {"$set": {"lease_until": now + LEASE, "lease_owner": lease}},
        )
        claimed = outbox.find({"_id": {"$in": ids}, "lease_owner": lease}, sort=[("next_attempt_at", 1)])
        return [doc async for doc in claimed]


def broker_publisher(broker: RabbitBroker, exchange: RabbitExchange) -> Publish:
    """Publish an outbox entry with publisher confirms and the AMQP properties of DESIGN.md §3."""

    async def publish(entry: dict[str, Any]) -> None:
        body = entry["body"]
        await broker.publish(
            json.dumps(body, ensure_ascii=False).encode(),
            exchange=exchange,
            routing_key=entry["routing_key"],
            persist=True,
            mandatory=False,
            content_type="application/json",
            message_id=body["id"],
            message_type=body["type"],
            correlation_id=body.get("correlationid"),
            timeout=10.0,
        )

    return publish
