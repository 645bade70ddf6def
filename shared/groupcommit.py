"""Group commit (DESIGN.md §5): handlers are one-message code, commits happen a batch at a time.

A consumer calls `await group.apply(event, handler)`; the batcher runs every
waiting handler in one transaction together with the inbox and outbox writes,
commits once, and then each `apply` returns. A failed batch is retried one
message at a time so one bad message cannot hold back the others.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession

from shared.events import Envelope
from shared.inbox import already_applied, record_applied
from shared.mongo import Database
from shared.settings import ServiceSettings
from shared.unit import Unit

EventHandler = Callable[[Any, Unit], Awaitable[None]]
Prefetch = Callable[[Unit, list[Envelope[Any]]], Awaitable[None]]

log = structlog.get_logger("rapport.groupcommit")


@dataclass
class _Waiting:
    event: Envelope[Any]
    handler: EventHandler
    done: "asyncio.Future[bool]"


class GroupCommit:
    def __init__(
        self,
        client: AsyncMongoClient[dict[str, Any]],
        db: Database,
        *,
        max_batch: int,
        max_wait_seconds: float,
        on_published: Callable[[], None] = lambda: None,
        on_batch: Callable[[int], None] = lambda size: None,
        prefetch: Prefetch | None = None,
        settings: ServiceSettings | None = None,
    ) -> None:
        self._client = client
        self._db = db
        self._max_batch = max_batch
        self._max_wait = max_wait_seconds
        self._on_published = on_published
        self._on_batch = on_batch
        self._prefetch = prefetch
        self._settings = settings
        self._queue: asyncio.Queue[_Waiting | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        """Commit what is waiting, then stop."""
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
            self._task = None

    async def apply(self, event: Envelope[Any], handler: EventHandler) -> bool:
        """Apply `event` with `handler` once; True if applied now, False if it was a duplicate."""
        if self._task is None:
            raise RuntimeError("group commit is not running")
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Waiting(event, handler, done))
        return await done

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            if self._queue.qsize() < self._max_batch - 1 and self._max_wait > 0:
                await asyncio.sleep(self._max_wait)  # let concurrent handlers join the batch
            batch = [first]
            stopping = False
            while len(batch) < self._max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            await self._commit(batch)
            if stopping:
                return

    async def _commit(self, batch: list[_Waiting]) -> None:
        try:
            outcomes = await self._transact(batch)
        except Exception as error:  # noqa: BLE001 - the failure is handed to each waiting consumer
            if len(batch) == 1:
                _settle(batch[0].done, error=error)
                return
            log.warning("batch_failed_retrying_one_by_one", size=len(batch), error=repr(error))
            for item in batch:
                await self._commit([item])
            return
        self._on_batch(len(batch))
        for item, applied in zip(batch, outcomes, strict=True):
            _settle(item.done, result=applied)

    async def _transact(self, batch: list[_Waiting]) -> list[bool]:
        async def attempt(session: AsyncClientSession) -> tuple[list[bool], int]:
            unit = Unit(db=self._db, session=session, settings=self._settings)
            seen = await already_applied(unit, (item.event.id for item in batch))
            if self._prefetch is not None:
                await self._prefetch(unit, [item.event for item in batch if item.event.id not in seen])
            outcomes: list[bool] = []
            fresh: list[Envelope[Any]] = []
            for item in batch:
                if item.event.id in seen:
                    outcomes.append(False)
                    continue
                seen.add(item.event.id)
                await item.handler(item.event, unit)
                fresh.append(item.event)
                outcomes.append(True)
            record_applied(unit, fresh)
            return outcomes, await unit.commit_writes()

        async with self._client.start_session() as session:
            outcomes, published = await session.with_transaction(attempt)
        if published:
            self._on_published()
        return outcomes


def _settle(done: "asyncio.Future[bool]", *, result: bool = False, error: BaseException | None = None) -> None:
    if done.done():  # the consumer gave up waiting (shutdown)
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)
