"""The one way to open MongoDB: PyMongo's async client, one database per service."""

from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

Database = AsyncDatabase[dict[str, Any]]

INBOX = "inbox"
OUTBOX = "outbox"
# How long applied event ids are remembered; a duplicate later than this would be
# applied again, so keep it well past any redelivery or replay window.
INBOX_RETENTION_SECONDS = 90 * 24 * 3600
# Sent outbox entries are kept a week for inspection, then removed.
OUTBOX_RETENTION_SECONDS = 7 * 24 * 3600


def open_client(url: str, app_name: str) -> AsyncMongoClient[dict[str, Any]]:
    return AsyncMongoClient(
        url,
        appname=app_name,
        tz_aware=True,
        w="majority",
        readConcernLevel="majority",
        serverSelectionTimeoutMS=5000,
    )


def database(client: AsyncMongoClient[dict[str, Any]], name: str) -> Database:
    return client.get_database(name, write_concern=WriteConcern(w="majority"), read_concern=ReadConcern("majority"))


async def ensure_plumbing_indexes(db: Database) -> None:
    """Indexes of the inbox and outbox every service has."""
    await db[INBOX].create_indexes(
        [IndexModel([("applied_at", ASCENDING)], expireAfterSeconds=INBOX_RETENTION_SECONDS)]
    )
    await db[OUTBOX].create_indexes(
        [
            IndexModel(
                [("next_attempt_at", ASCENDING)],
                name="pending_by_due",
                partialFilterExpression={"status": "pending"},
            ),
            IndexModel([("sent_at", ASCENDING)], expireAfterSeconds=OUTBOX_RETENTION_SECONDS),
        ]
    )


async def ping(client: AsyncMongoClient[dict[str, Any]]) -> bool:
    try:
        await client.admin.command("ping")
    except Exception:  # noqa: BLE001 - readiness reports any failure as "not reachable"
        return False
    return True


def as_stored(moment: datetime) -> datetime:
    """`moment` as MongoDB keeps it (UTC, whole milliseconds), so values compare the same before and after a save."""
    return moment.astimezone(UTC).replace(microsecond=moment.microsecond // 1000 * 1000)
