"""The one way to open MongoDB: PyMongo's async client, one database per service."""

from datetime import UTC, datetime
from typing import Any

import structlog
from pymongo import ASCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

Database = AsyncDatabase[dict[str, Any]]

log = structlog.get_logger("rapport.mongo")

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
    """Indexes of the inbox, the outbox and the audit trail every service has."""
    await db["audit"].create_indexes([IndexModel([("target.id", ASCENDING)]), IndexModel([("at", ASCENDING)])])
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


async def end_orphaned_transactions(client: AsyncMongoClient[dict[str, Any]]) -> int:
    """Abort the transactions of clients that are gone (a process killed mid-commit); return how many.

    MongoDB keeps such a transaction, and the documents it wrote locked, until its
    lifetime runs out (`transactionLifetimeLimitSeconds`, a minute by default):
    meanwhile every transaction writing one of them fails with a write conflict,
    so the messages a killed replica held, redelivered, wait that long. Each
    service calls this as it starts; transactions of clients still connected are
    left alone. It needs the `inprog` and `killAnySession` privileges; without
    them it logs a warning and MongoDB ends the transaction in its own time.
    """
    try:
        admin = client.get_database("admin", read_concern=ReadConcern("local"))  # all $currentOp accepts
        cursor = await admin.aggregate(
            [{"$currentOp": {"idleSessions": True, "idleConnections": True, "allUsers": True}}]
        )
        ops = await cursor.to_list()
        connected = {op.get("connectionId") for op in ops if op.get("desc") == f"conn{op.get('connectionId')}"}
        orphans = [
            op["lsid"]
            for op in ops
            if op.get("type") == "idleSession" and "transaction" in op and op.get("connectionId") not in connected
        ]
        if orphans:
            await admin.command("killSessions", orphans)
    except OperationFailure as refused:  # a user without the `inprog` / `killAnySession` privileges
        log.warning("orphaned_transactions_left", error=str(refused))
        return 0
    return len(orphans)
