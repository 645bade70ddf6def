"""The unit of work against the real MongoDB: what handlers read stays right after they write, and a killed
process's half-done transaction does not hold the documents it wrote."""

import asyncio
import json
import sys
from pathlib import Path

import pytest
import structlog
from pymongo import UpdateOne
from pymongo.errors import OperationFailure

from shared.events import OrderPlacedEvent, parse_event
from shared.groupcommit import GroupCommit
from shared.mongo import database, end_orphaned_transactions, open_client
from shared.settings import ServiceSettings
from shared.unit import Transactions, Unit
from tests.support.infra import Infrastructure


async def test_appending_keeps_a_known_document_known_and_grown(infra: Infrastructure, prefix: str) -> None:
    client = open_client(infra.mongodb_url, "test-unit")
    db = database(client, f"{prefix}_unit")
    await db.histories.insert_one({"_id": "h1", "items": [1]})

    async def work(unit: Unit) -> None:
        await unit.preload("histories", ["h1", "h2"])
        unit.append("histories", "h1", {"items": [2, 3], "notes": ["late"]})
        unit.append("histories", "h2", {"items": [9]})  # known missing: created
        unit.append("histories", "h3", {"items": [7]})  # never read: written, not guessed
        assert await unit.find_one("histories", {"_id": "h1"}) == {"_id": "h1", "items": [1, 2, 3], "notes": ["late"]}
        assert unit.known["histories"]["h2"] == {"_id": "h2", "items": [9]}
        assert "h3" not in unit.known["histories"]
        unit.append("histories", "h1", {"items": []})  # nothing to append: nothing written
        assert len(unit.pending_writes) == 3

    try:
        await Transactions(client, db, ServiceSettings(), source="test").run(work)
        stored = {doc["_id"]: doc async for doc in db.histories.find({})}
        assert stored == {
            "h1": {"_id": "h1", "items": [1, 2, 3], "notes": ["late"]},
            "h2": {"_id": "h2", "items": [9]},
            "h3": {"_id": "h3", "items": [7]},
        }
    finally:
        await client.drop_database(db.name)
        await client.close()


HALF_DONE = """
import asyncio, os, sys
from pymongo import AsyncMongoClient

async def main():
    client = AsyncMongoClient(sys.argv[1])
    session = client.start_session()
    await session.start_transaction()
    await client[sys.argv[2]].members.update_one({"_id": "m1"}, {"$set": {"balance": 999}}, session=session)
    print("written", flush=True)
    await asyncio.Event().wait()  # killed while waiting here, before the commit

asyncio.run(main())
"""


async def test_a_transaction_left_open_by_a_killed_process_is_ended_at_once_instead_of_holding_its_documents(
    infra: Infrastructure, prefix: str, tmp_path: Path
) -> None:
    client = open_client(infra.mongodb_url, "test-unit")
    db = database(client, f"{prefix}_orphans")
    await db.members.insert_one({"_id": "m1", "balance": 10})
    script = tmp_path / "half_done.py"
    script.write_text(HALF_DONE)
    killed = await asyncio.create_subprocess_exec(
        sys.executable, str(script), infra.mongodb_url, db.name, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert killed.stdout is not None
        assert (await killed.stdout.readline()).strip() == b"written"
        killed.kill()
        await killed.wait()

        async def update_in_transaction(unit: Unit) -> None:
            unit.write("members", UpdateOne({"_id": "m1"}, {"$inc": {"balance": 5}}))
            await unit.flush()

        with pytest.raises(OperationFailure, match="WriteConflict"):  # the orphan still holds the document
            async with client.start_session() as session, await session.start_transaction():
                await db.members.update_one({"_id": "m1"}, {"$inc": {"balance": 5}}, session=session)
        assert await end_orphaned_transactions(client) == 1
        transactions = Transactions(client, db, ServiceSettings(), source="test")
        await asyncio.wait_for(transactions.run(update_in_transaction), timeout=10)
        assert await db.members.find_one({"_id": "m1"}) == {"_id": "m1", "balance": 15}  # the orphan's write is gone
    finally:
        if killed.returncode is None:
            killed.kill()
        await end_orphaned_transactions(client)
        await client.drop_database(db.name)
        await client.close()


async def test_a_batch_leaves_no_event_ids_bound_to_later_log_lines(infra: Infrastructure, prefix: str) -> None:
    client = open_client(infra.mongodb_url, "test-unit")
    db = database(client, f"{prefix}_logids")
    group = GroupCommit(Transactions(client, db, ServiceSettings(), source="test"))
    raw = json.loads((Path(__file__).parents[1] / "fixtures/events/OrderPlaced.json").read_text())
    seen: list[dict[str, object]] = []

    async def note_ids(event: OrderPlacedEvent, unit: Unit) -> None:
        seen.append(structlog.contextvars.get_contextvars())

    try:
        structlog.contextvars.clear_contextvars()
        event = parse_event(raw)
        outcomes = await group.commit([(event, note_ids)])
        assert outcomes == [True]
        assert seen[0]["event_id"] == event.id  # bound while its handler ran …
        assert structlog.contextvars.get_contextvars() == {}  # … and gone once the batch is done
    finally:
        await client.drop_database(db.name)
        await client.close()
