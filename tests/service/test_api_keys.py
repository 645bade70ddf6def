"""Named, scoped API keys and the audit trail (issue 15): several keys at once, each with a scope; authentication
before validation; every state-changing call recorded in its own transaction, readable at GET /audit."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from shared.events import OrderPlacedEvent
from shared.keys import new_key
from shared.service import Runtime, ServiceSpec, runtime
from shared.settings import ServiceSettings
from shared.unit import Unit
from tests.support.running import running_service

READER, READER_ENTRY = new_key("dashboard", "read")
WRITER, WRITER_ENTRY = new_key("console", "write")
NEW_WRITER, NEW_WRITER_ENTRY = new_key("console-2026-12", "write")


class Thing(BaseModel):
    colour: str


things = APIRouter()


@things.get("/things/{thing_id}")
async def read_thing(thing_id: str) -> dict[str, str]:
    return {"thing_id": thing_id}


@things.put("/things/{thing_id}")
async def paint_thing(thing_id: str, body: Thing, rt: Annotated[Runtime, Depends(runtime)]) -> dict[str, str]:
    async def paint(unit: Unit[Any]) -> None:
        await unit.db.things.replace_one({"_id": thing_id}, {"colour": body.colour}, upsert=True, session=unit.session)

    await rt.transaction(paint)
    return {"thing_id": thing_id, "colour": body.colour}


def spec(name: str) -> ServiceSpec:
    async def ignore(event: OrderPlacedEvent, unit: Unit[Any]) -> None:
        return None

    return ServiceSpec(name=name, handlers={OrderPlacedEvent: ignore}, api=things)


def bearer(token: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **more}


async def test_each_key_does_what_its_scope_allows_and_two_keys_can_be_live_at_once(
    service_name: str, settings: ServiceSettings
) -> None:
    keyed = settings.model_copy(update={"api_keys": f"{READER_ENTRY}, {WRITER_ENTRY},{NEW_WRITER_ENTRY}"})
    async with running_service(spec(service_name), keyed) as (_, http):
        assert (await http.get("/things/t1", headers=bearer(READER))).status_code == 200
        refused = await http.put("/things/t1", json={"colour": "red"}, headers=bearer(READER))
        assert refused.status_code == 403
        assert refused.json() == {"detail": "the key 'dashboard' has the read scope; this needs write"}
        for token in (WRITER, NEW_WRITER, "test-admin-key"):  # ADMIN_API_KEY is one more (admin) key
            assert (await http.put("/things/t1", json={"colour": "red"}, headers=bearer(token))).status_code == 200
        assert (await http.get("/audit", headers=bearer(WRITER))).status_code == 403  # admin only
        assert (await http.get("/audit", headers=bearer("test-admin-key"))).status_code == 200


async def test_an_unauthenticated_request_gets_401_whatever_its_body(
    service_name: str, settings: ServiceSettings
) -> None:
    async with running_service(spec(service_name), settings) as (_, http):
        for body in (b"not json", b'{"colour": 5}', b"{}", b"x" * 5_000_000):
            answer = await http.put("/things/t1", content=body, headers={"Content-Type": "application/json"})
            assert answer.status_code == 401, body[:20]
            assert answer.headers["www-authenticate"] == "Bearer"
        forged = await http.put("/things/t1", json={"colour": "red"}, headers=bearer("forged"))
        assert forged.status_code == 401
        unknown = await http.get("/no/such/route")
        assert unknown.status_code == 401  # an unknown route tells a stranger nothing either


async def test_a_change_is_audited_in_its_own_transaction_with_who_what_and_on_what(
    service_name: str, settings: ServiceSettings
) -> None:
    keyed = settings.model_copy(update={"api_keys": WRITER_ENTRY})
    async with running_service(spec(service_name), keyed) as (rt, http):
        painted = await http.put(
            "/things/t7", json={"colour": "blue"}, headers=bearer(WRITER, **{"X-Rapport-Actor": "eva@shop.example"})
        )
        assert painted.status_code == 200
        assert (await http.put("/things/t8", json={"colour": 5}, headers=bearer(WRITER))).status_code == 422
        assert (await http.get("/things/t7", headers=bearer(WRITER))).status_code == 200

        records = (await http.get("/audit", headers=bearer("test-admin-key"))).json()
        assert [(r["actor"], r["action"], r["target"]) for r in records] == [
            ("console/eva@shop.example", "PUT /things/{thing_id}", {"thing_id": "t7"})
        ]  # the refused change and the read left no record
        by_target = (await http.get("/audit?target=t7", headers=bearer("test-admin-key"))).json()
        assert [r["record_id"] for r in by_target] == [records[0]["record_id"]]
        assert await rt.db.things.find_one({"_id": "t7"}) == {"_id": "t7", "colour": "blue"}
        assert isinstance(rt, Runtime)
