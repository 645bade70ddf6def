"""Group commit (DESIGN.md §5): handlers are one-message code, commits happen a batch at a time.

The consumer hands a batch of events with their handlers to `commit`; every
handler runs in one transaction together with the inbox and outbox writes, which
commits once. A failed batch is retried one message at a time so one bad message
cannot hold back the others.
"""

from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from shared.events import Envelope
from shared.inbox import already_applied, record_applied
from shared.logs import bind_event
from shared.unit import Transactions, Unit

EventHandler = Callable[[Any, Unit[Any]], Awaitable[None]]
Prefetch = Callable[[Unit[Any], list[Envelope[Any]]], Awaitable[None]]
# What became of one event of a batch: applied now (True), a duplicate (False), or why its handler failed.
Outcome = bool | Exception

log = structlog.get_logger("rapport.groupcommit")


class GroupCommit:
    def __init__(
        self,
        transactions: Transactions[Any],
        *,
        on_batch: Callable[[int], None] = lambda size: None,
        prefetch: Prefetch | None = None,
    ) -> None:
        self._transactions = transactions  # hands each batch's outbox entries to the relay after its commit
        self._on_batch = on_batch
        self._prefetch = prefetch

    async def commit(self, batch: list[tuple[Envelope[Any], EventHandler]]) -> list[Outcome]:
        """Apply every event of `batch` once, in one transaction if they all succeed; one outcome per event."""
        try:
            outcomes = await self._transactions.run(lambda unit: self._apply(unit, batch))
        except Exception as error:  # noqa: BLE001 - the failure is reported per event
            if len(batch) == 1:
                return [error]
            log.warning("batch_failed_retrying_one_by_one", size=len(batch), error=repr(error))
            return [outcome for item in batch for outcome in await self.commit([item])]
        finally:
            structlog.contextvars.clear_contextvars()  # the batch's last event's ids must not stick to later lines
        self._on_batch(len(batch))
        return outcomes

    async def _apply(self, unit: Unit[Any], batch: list[tuple[Envelope[Any], EventHandler]]) -> list[Outcome]:
        seen = await already_applied(unit, (event.id for event, _ in batch))
        if self._prefetch is not None:
            await self._prefetch(unit, [event for event, _ in batch if event.id not in seen])
        outcomes: list[Outcome] = []
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
        return outcomes
