"""Group commit (DESIGN.md §5): handlers are one-message code, commits happen a batch at a time.

The consumer hands a batch of events with their handlers to `commit`; every
handler runs in one transaction together with the inbox and outbox writes, which
commits once. A failed batch is retried one message at a time so one bad message
cannot hold back the others.
"""

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession

from shared.events import Envelope
from shared.inbox import already_applied, record_applied
from shared.logs import bind_event
from shared.mongo import Database
from shared.settings import ServiceSettings
from shared.unit import OutboxEntry, Unit

EventHandler = Callable[[Any, Unit], Awaitable[None]]
Prefetch = Callable[[Unit, list[Envelope[Any]]], Awaitable[None]]
# What became of one event of a batch: applied now (True), a duplicate (False), or why its handler failed.
Outcome = bool | Exception

log = structlog.get_logger("rapport.groupcommit")


class GroupCommit:
    def __init__(
        self,
        client: AsyncMongoClient[dict[str, Any]],
        db: Database,
        *,
        on_committed: Callable[[list[OutboxEntry]], None] = lambda entries: None,
        on_batch: Callable[[int], None] = lambda size: None,
        prefetch: Prefetch | None = None,
        settings: ServiceSettings | None = None,
        outbox_owner: str | None = None,
    ) -> None:
        self._client = client
        self._db = db
        self._on_committed = on_committed
        self._on_batch = on_batch
        self._prefetch = prefetch
        self._settings = settings
        self._outbox_owner = outbox_owner

    async def commit(self, batch: list[tuple[Envelope[Any], EventHandler]]) -> list[Outcome]:
        """Apply every event of `batch` once, in one transaction if they all succeed; one outcome per event."""
        try:
            outcomes, unit = await self._transact(batch)
        except Exception as error:  # noqa: BLE001 - the failure is reported per event
            if len(batch) == 1:
                return [error]
            log.warning("batch_failed_retrying_one_by_one", size=len(batch), error=repr(error))
            return [outcome for item in batch for outcome in await self.commit([item])]
        self._on_batch(len(batch))
        unit.committed()
        if unit.outbox_entries:
            self._on_committed(unit.outbox_entries)
        return list(outcomes)

    async def _transact(self, batch: list[tuple[Envelope[Any], EventHandler]]) -> tuple[list[bool], Unit]:
        async def attempt(session: AsyncClientSession) -> tuple[list[bool], Unit]:
            unit = Unit(db=self._db, session=session, settings=self._settings, outbox_owner=self._outbox_owner)
            seen = await already_applied(unit, (event.id for event, _ in batch))
            if self._prefetch is not None:
                await self._prefetch(unit, [event for event, _ in batch if event.id not in seen])
            outcomes: list[bool] = []
            fresh: list[Envelope[Any]] = []
            for event, handler in batch:
                if event.id in seen:
                    outcomes.append(False)
                    continue
                seen.add(event.id)
                bind_event(event)
                await handler(event, unit)
                fresh.append(event)
                outcomes.append(True)
            record_applied(unit, fresh)
            await unit.commit_writes()
            return outcomes, unit

        async with self._client.start_session() as session:
            return await session.with_transaction(attempt)
