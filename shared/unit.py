"""A unit of work: one MongoDB transaction, with the events it will publish.

Handlers and HTTP routes change state through a Unit; events they publish are
written to the outbox in the same transaction (DESIGN.md §5).
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession

from shared.events import Envelope
from shared.mongo import OUTBOX, Database

T = TypeVar("T")


@dataclass
class Unit:
    """What a handler gets: the service database, the transaction's session, and publish().

    Pass `session=unit.session` to every read and write so it joins the transaction.
    """

    db: Database
    session: AsyncClientSession
    pending_events: list[Envelope[Any]] = field(default_factory=list)

    def publish(self, event: Envelope[Any]) -> None:
        """Publish `event` once this unit commits (through the outbox)."""
        self.pending_events.append(event)

    async def write_outbox(self) -> int:
        if not self.pending_events:
            return 0
        now = datetime.now(UTC)
        await self.db[OUTBOX].insert_many(
            [outbox_entry(event, now) for event in self.pending_events], session=self.session
        )
        return len(self.pending_events)


def outbox_entry(event: Envelope[Any], now: datetime) -> dict[str, Any]:
    return {
        "_id": event.id,
        "type": event.type,
        "routing_key": event.routing_key,
        "body": event.model_dump(mode="json"),
        "status": "pending",
        "created_at": now,
        "attempts": 0,
        "next_attempt_at": now,
        "lease_until": now,
    }


async def run_in_transaction(
    client: AsyncMongoClient[dict[str, Any]],
    db: Database,
    work: Callable[[Unit], Awaitable[T]],
) -> tuple[T, int]:
    """Run `work` in one transaction with its outbox writes; return its result and how many events it published.

    PyMongo retries the whole callback on transient errors, so `work` must not
    have side effects outside MongoDB.
    """

    async def attempt(session: AsyncClientSession) -> tuple[T, int]:
        unit = Unit(db=db, session=session)
        result = await work(unit)
        return result, await unit.write_outbox()

    async with client.start_session() as session:
        return await session.with_transaction(attempt)
