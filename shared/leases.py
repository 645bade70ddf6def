"""Scheduled work claimed with an atomic lease (DESIGN.md §5), the one way every service does it.

`claim` takes one due document and holds it for `lease` with an atomic
find-and-update, so any number of replicas can work the same collection and
each document is worked by one at a time; a document held by a replica that
died is free again when its lease runs out. A free document has no lease or an
expired one (`lease_until`), whoever held it (`lease_owner`).
"""

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

Collection = AsyncCollection[dict[str, Any]]


async def claim(
    collection: Collection,
    due: Mapping[str, Any],
    *,
    lease: timedelta,
    owner: str,
    sort: Sequence[tuple[str, int]] | None = None,
    projection: Mapping[str, Any] | None = None,
    create: bool = False,
) -> dict[str, Any] | None:
    """Hold one free document matching `due` for `lease`; None when there is none.

    With `create`, a missing document is created held (a job document, one per job).
    """
    wall = datetime.now(UTC)
    try:
        return await collection.find_one_and_update(
            {**due, "$or": [{"lease_until": None}, {"lease_until": {"$lte": wall}}]},
            {"$set": {"lease_until": wall + lease, "lease_owner": owner}},
            sort=sort,
            projection=projection,
            upsert=create,
            return_document=ReturnDocument.AFTER,
        )
    except DuplicateKeyError:  # `create`: the document exists and is held, so the upsert's insert collided
        return None


async def release(collection: Collection, document_id: Any, owner: str, *, until: datetime | None = None) -> None:
    """Free a document this owner holds now (or at `until`, to hold it back till then)."""
    await collection.update_one(
        {"_id": document_id, "lease_owner": owner}, {"$set": {"lease_until": until or datetime.now(UTC)}}
    )
