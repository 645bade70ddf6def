"""The inbox: ids of applied events, stored in the same transaction as their effect."""

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from shared.events import Envelope
from shared.mongo import INBOX, Database


async def already_applied(db: Database, session: AsyncClientSession, event_ids: Iterable[str]) -> set[str]:
    ids = list(set(event_ids))
    cursor = db[INBOX].find({"_id": {"$in": ids}}, {"_id": 1}, session=session)
    return {doc["_id"] async for doc in cursor}


async def record_applied(db: Database, session: AsyncClientSession, events: list[Envelope[Any]]) -> None:
    # A concurrent replica recording the same id makes this transaction conflict and retry,
    # and the retry then finds the id in already_applied().
    if events:
        now = datetime.now(UTC)
        await db[INBOX].insert_many(
            [{"_id": event.id, "type": event.type, "applied_at": now} for event in events], session=session
        )
