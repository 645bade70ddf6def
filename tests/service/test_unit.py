"""The unit of work against the real MongoDB: what a batch's handlers read stays right after they write."""

from shared.mongo import database, open_client
from shared.testing.infra import Infrastructure
from shared.unit import Unit, run_in_transaction


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
        await run_in_transaction(client, db, work)
        stored = {doc["_id"]: doc async for doc in db.histories.find({})}
        assert stored == {
            "h1": {"_id": "h1", "items": [1, 2, 3], "notes": ["late"]},
            "h2": {"_id": "h2", "items": [9]},
            "h3": {"_id": "h3", "items": [7]},
        }
    finally:
        await client.drop_database(db.name)
        await client.close()
