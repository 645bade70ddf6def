"""The inbox: ids of applied events, stored in the same transaction as their effect."""

from collections.abc import Iterable
from typing import Any

from pymongo import InsertOne

from shared.events import Envelope
from shared.mongo import INBOX
from shared.unit import Unit


async def already_applied(unit: Unit[Any], event_ids: Iterable[str]) -> set[str]:
    found = await unit.find(INBOX, {"_id": {"$in": list(set(event_ids))}}, projection={"_id": 1})
    return {doc["_id"] for doc in found}


def record_applied(unit: Unit[Any], events: list[Envelope[Any]]) -> None:
    """Write the ids of `events` with the unit's other writes.

    A concurrent replica recording the same id makes one of the transactions fail;
    its retry then finds the id in already_applied().
    """
    now = unit.now()
    unit.write(INBOX, *(InsertOne({"_id": event.id, "type": event.type, "applied_at": now}) for event in events))
