"""A customer's data, end to end (issue 15): exported from all four services in one document, and erased for good.

One customer, Zuzana, gets everything the services keep: orders (one with a referral code, so she is a referee),
a refund with a reason naming her, feedback through her e-mailed link with a comment, an escalation resolved with a
note, a call with its note, a promoter's review, her own referral code that converts a friend, points and a
redemption. The gatherer (`python -m shared.export`) brings her data back from the running services; erasure must
then leave nothing of her — her e-mail, names, phone, street, city or raw id — in any string value or key of any
document of any collection of any service's database, and nothing that arrives later (her old feedback link, late
events about her) may bring any of it back.
"""

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from shared.events import (
    FeedbackReceived,
    FeedbackReceivedEvent,
    LineItem,
    OrderRefunded,
    OrderRefundedEvent,
    Ratings,
    ShippingAddress,
)
from tests.e2e.conftest import ADMIN_KEY
from tests.shop_day import order_fulfilled, order_placed
from tests.support.infra import Infrastructure
from tests.support.processes import ROOT, ServiceStack
from tests.support.smtp import SmtpInbox
from tests.support.tap import EventTap, eventually

NOW = datetime.now(UTC).replace(microsecond=0)
SECRET = "e2e-feedback-secret"
ZUZANA = "c-zh71"  # no other id here contains it
FRIEND, LATE_FRIEND, REFERRER = "c-fr5", "c-fr6", "c-rf3"
PERSON = {
    "email": "zuzana.horvathova@example.net",
    "first_name": "Zuzana",
    "last_name": "Horváthová",
    "phone": "+421905123456",
    "city": "Žilina",
}
STREET = "Mariánske námestie 3"
NEEDLES = [*PERSON.values(), STREET, ZUZANA]
SERVICES = ("orders", "followups", "loyalty", "referrals")


@pytest.fixture(scope="module")
def stack_env(smtp: SmtpInbox) -> dict[str, str]:
    return {
        "SMTP_URL": smtp.url,
        "SCHEDULER_INTERVAL_SECONDS": "0.2",
        "FEEDBACK_TOKEN_SECRET": SECRET,
        "FEEDBACK_REQUEST_DELAY_DAYS": "0",  # the feedback request and the call are due at fulfilment
        "CALL_DELAY_DAYS": "0",
    }


def mugs(quantity: int, price: str = "32.00") -> list[LineItem]:
    return [LineItem(sku="MUG-RED", name="Red mug", quantity=quantity, unit_price=Decimal(price))]


def refunded(customer_id: str, order_id: str, refund_id: str, amount: str, reason: str) -> OrderRefundedEvent:
    data = OrderRefunded(
        refund_id=refund_id,
        order_id=order_id,
        customer_id=customer_id,
        amount=Decimal(amount),
        currency="EUR",
        refunded_at=NOW,
        reason=reason,
    )
    return OrderRefundedEvent.new(data, source="shop", subject=customer_id)


async def consumed(stack: ServiceStack, event_type: str) -> dict[str, float]:
    return {service: await stack[service].consumed(event_type) for service in SERVICES}


async def all_taken(stack: ServiceStack, before: dict[str, float], event_type: str, by: tuple[str, ...]) -> None:
    """Wait until each of `by` has taken one more `event_type` than `before`."""

    async def done() -> bool:
        now = await consumed(stack, event_type)
        return all(now[service] >= before[service] + 1 for service in by)

    await eventually(done, timeout=30)


@dataclass(frozen=True)
class History:
    """What the module's customer left in the services, as the test needs to look it up again."""

    token: str  # from her feedback request e-mail
    code: str  # her own referral code
    feedback_id: str


@pytest.fixture(scope="module")
async def zuzana(stack: ServiceStack, infra: Infrastructure, smtp: SmtpInbox) -> History:
    """Give Zuzana a history in every service, through the shop's events and the services' APIs."""
    tap = await EventTap.open(infra.rabbitmq_url, stack.topology)
    url = {service: stack[service].url for service in SERVICES}
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10) as http:
        await tap.publish(order_placed(REFERRER, "ord-rf3-1", mugs(1), at=NOW - timedelta(days=9)))
        issued = await http.post(f"{url['referrals']}/referrers/{REFERRER}/code")
        assert issued.status_code == 201, issued.text
        address = ShippingAddress(line1=STREET, postal_code="010 01", city=PERSON["city"], country="SK")
        first = order_placed(
            ZUZANA,
            "ord-zh-1",
            mugs(2),
            at=NOW - timedelta(days=5),
            code=issued.json()["code"],
            shipping_address=address,
            **PERSON,
        )
        second = order_placed(
            ZUZANA, "ord-zh-2", mugs(1), at=NOW - timedelta(days=4), shipping_address=address, **PERSON
        )
        await tap.publish(first)
        await tap.publish(second)
        await tap.wait_for(lambda e: e["type"] == "ReferralConverted" and e["data"]["referee_customer_id"] == ZUZANA)
        await tap.publish(order_fulfilled(ZUZANA, "ord-zh-1", at=NOW - timedelta(days=1)))
        await tap.publish(refunded(ZUZANA, "ord-zh-2", "rf-zh-2", "10.00", f"call Zuzana at {PERSON['phone']}"))

        async def feedback_request() -> list[Any]:
            return smtp.to(PERSON["email"], containing="token=")

        [request] = await eventually(feedback_request, timeout=30)
        token = re.search(r"token=([\w.\-]+)", smtp.text(request))
        assert token is not None
        unhappy = {"token": token.group(1), "ratings": {"overall": 2}, "nps": 3}
        complaint = f"{PERSON['first_name']} {PERSON['last_name']} from {PERSON['city']}: one mug came cracked."
        async with httpx.AsyncClient(timeout=10) as link:  # the customer's browser: the token, no key
            posted = await link.post(f"{url['followups']}/feedback", json=unhappy | {"comment": complaint})
        assert posted.status_code == 201, posted.text
        resolved = await http.post(
            f"{url['followups']}/escalations/{posted.json()['escalation_id']}/resolve",
            json={"note": f"Rang {PERSON['phone']}, Zuzana gets a new mug."},
        )
        assert resolved.status_code == 200, resolved.text
        call = await http.post(
            f"{url['followups']}/followups/call:{ZUZANA}/done", json={"note": f"Zuzana moved to {STREET}."}
        )
        assert call.status_code == 200, call.text
        promoter = {"customer_id": ZUZANA, "order_id": "ord-zh-2", "ratings": {"overall": 5}, "nps": 10}
        review = "Zuzana here: the red mug is lovely, thank you!"
        praised = await http.post(f"{url['followups']}/feedback", json=promoter | {"comment": review})
        assert praised.status_code == 201, praised.text
        await tap.wait_for(lambda e: e["type"] == "ReferralInvited" and e["subject"] == ZUZANA, timeout=30)
        own = await http.post(f"{url['referrals']}/referrers/{ZUZANA}/code")
        assert own.status_code in (200, 201), own.text
        code = own.json()["code"]
        await tap.publish(order_placed(FRIEND, "ord-fr5-1", mugs(1), at=NOW - timedelta(hours=1), code=code))
        await tap.wait_for(lambda e: e["type"] == "ReferralConverted" and e["data"]["referrer_customer_id"] == ZUZANA)

        async def balance() -> int:
            member = await http.get(f"{url['loyalty']}/members/{ZUZANA}")
            return int(member.json()["balance"]) if member.status_code == 200 else 0

        await eventually(lambda: _at_least(balance, 500 + 250), timeout=30)  # referrer's and referee's points
        reward = await http.post(f"{url['loyalty']}/rewards", json={"name": "Tea towel", "points_price": 100})
        assert reward.status_code == 201, reward.text
        redeemed = await http.post(
            f"{url['loyalty']}/members/{ZUZANA}/redemptions",
            json={"reward_id": reward.json()["reward_id"]},
            headers={"Idempotency-Key": "towel-1"},
        )
        assert redeemed.status_code == 201, redeemed.text
    await tap.close()
    return History(token=token.group(1), code=code, feedback_id=posted.json()["feedback_id"])


async def _at_least(read: Any, wanted: int) -> bool:
    return int(await read()) >= wanted


# --- searching every document ---------------------------------------------------------------------------


def _strings(value: Any) -> Iterator[str]:
    """Every string in a document: values and keys, at any depth."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield str(key)
            yield from _strings(inner)
    elif isinstance(value, list | tuple):
        for inner in value:
            yield from _strings(inner)


async def traces(mongo: AsyncMongoClient[dict[str, Any]], stack: ServiceStack) -> list[str]:
    """Where any needle is found: every collection of every database of this stack, listed by the client."""
    prefix = f"{stack.topology.prefix}_"
    databases = [name for name in await mongo.list_database_names() if name.startswith(prefix)]
    assert sorted(databases) == sorted(stack.topology.database(service) for service in SERVICES)
    lowered = [needle.lower() for needle in NEEDLES]
    found = []
    for name in databases:
        db = mongo[name]
        for collection in await db.list_collection_names():
            async for doc in db[collection].find({}):
                text = "\n".join(_strings(doc)).lower()
                found += [f"{name}.{collection}/{doc['_id']}: {needle!r}" for needle in lowered if needle in text]
    return found


# --- the gatherer ------------------------------------------------------------------------------------------


def gather(stack: ServiceStack, out: Path, *, urls: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m shared.export` as the shop's operator would, with the services' URLs and a key."""
    env = {
        **os.environ,
        "RAPPORT_API_KEY": ADMIN_KEY,
        **{f"{service.upper()}_URL": (urls or {}).get(service, stack[service].url) for service in SERVICES},
    }
    return subprocess.run(
        [sys.executable, "-m", "shared.export", ZUZANA, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )


async def test_the_gatherer_writes_one_document_with_everything_all_four_services_hold(
    stack: ServiceStack, zuzana: History, tmp_path: Path
) -> None:
    out = tmp_path / "zuzana.json"
    ran = await asyncio.to_thread(gather, stack, out)
    assert ran.returncode == 0, ran.stderr
    document = json.loads(out.read_text())
    assert (document["customer_id"], document["missing"]) == (ZUZANA, [])
    assert datetime.fromisoformat(document["exported_at"]).tzinfo is not None
    orders, followups, loyalty, referrals = (document["services"][service] for service in SERVICES)

    assert orders["profile"]["contact"]["email"] == PERSON["email"]
    assert sorted(order["order_id"] for order in orders["orders"]) == ["ord-zh-1", "ord-zh-2"]
    [second] = [order for order in orders["orders"] if order["order_id"] == "ord-zh-2"]
    assert second["shipping_address"]["line1"] == STREET
    assert [refund["reason"] for refund in second["refunds"]] == [f"call Zuzana at {PERSON['phone']}"]

    assert followups["contact"]["phone"] == PERSON["phone"]
    assert {f["kind"] for f in followups["followups"]} >= {"thank_you", "feedback_request", "call", "referral_invite"}
    [call] = [f for f in followups["followups"] if f["kind"] == "call"]
    assert call["note"] == f"Zuzana moved to {STREET}."
    assert sorted(f["nps"] for f in followups["feedback"]) == [3, 10]
    [escalation] = followups["escalations"]
    assert (escalation["feedback_id"], escalation["note"]) == (
        zuzana.feedback_id,
        f"Rang {PERSON['phone']}, Zuzana gets a new mug.",
    )

    assert loyalty["member"]["balance"] == sum(entry["points"] for entry in loyalty["ledger"])
    assert {entry["reason"] for entry in loyalty["ledger"]} >= {"purchase", "referral", "review", "survey"}
    assert [(r["reward_id"] is not None, r["points"]) for r in loyalty["redemptions"]] == [(True, 100)]

    assert [code["code"] for code in referrals["codes"]] == [zuzana.code]
    assert [r["referee_customer_id"] for r in referrals["as_referrer"]] == [FRIEND]
    [referred] = referrals["as_referee"]
    assert (referred["referrer_customer_id"], referred["referee_email"]) == (REFERRER, PERSON["email"])


# --- erasure --------------------------------------------------------------------------------------------


async def test_erasure_leaves_nothing_of_the_customer_anywhere_and_nothing_later_brings_it_back(
    stack: ServiceStack,
    zuzana: History,
    infra: Infrastructure,
    http: httpx.AsyncClient,
    mongo: AsyncMongoClient[dict[str, Any]],
) -> None:
    before = await traces(mongo, stack)
    assert {service for service in SERVICES if any(f"_{service}." in found for found in before)} == set(SERVICES)

    erasures = await consumed(stack, "CustomerErased")
    erased = await http.post(f"{stack['orders'].url}/customers/{ZUZANA}/erase")
    assert (erased.status_code, erased.json()["already_erased"]) == (202, False), erased.text
    await all_taken(stack, erasures, "CustomerErased", ("followups", "loyalty", "referrals"))
    again = await http.post(f"{stack['orders'].url}/customers/{ZUZANA}/erase")
    assert again.json()["already_erased"] is True  # and no second CustomerErased: each service took one
    left = await settled_traces(mongo, stack)
    assert left == [], "\n".join(left)

    # What was handed out before the erasure works no more.
    old_link = {"token": zuzana.token, "ratings": {"overall": 1}, "comment": "Zuzana again, still cross."}
    async with httpx.AsyncClient(timeout=10) as link:  # the customer's browser: the token, no key
        refused = await link.post(f"{stack['followups'].url}/feedback", json=old_link)
    assert (refused.status_code, refused.json()["detail"]) == (401, "token: names no feedback request of this shop")
    code = await http.get(f"{stack['referrals'].url}/referrals/{zuzana.code}")
    assert code.json()["status"] == "revoked"
    assert (await http.post(f"{stack['referrals'].url}/referrers/{ZUZANA}/code")).status_code == 409
    logged = {"customer_id": ZUZANA, "ratings": {"overall": 1}, "comment": "Zuzana called to complain."}
    assert (await http.post(f"{stack['followups'].url}/feedback", json=logged)).status_code == 409

    # What arrives later about her keeps nothing of her either.
    tap = await EventTap.open(infra.rabbitmq_url, stack.topology)
    try:
        counts = {kind: await consumed(stack, kind) for kind in ("OrderPlaced", "OrderFulfilled", "OrderRefunded")}
        feedback_counts = await consumed(stack, "FeedbackReceived")
        address = ShippingAddress(line1=STREET, postal_code="010 01", city=PERSON["city"], country="SK")
        await tap.publish(
            order_placed(ZUZANA, "ord-zh-3", mugs(3), at=NOW, code=zuzana.code, shipping_address=address, **PERSON)
        )
        await tap.publish(order_fulfilled(ZUZANA, "ord-zh-3", at=NOW))
        await tap.publish(refunded(ZUZANA, "ord-zh-3", "rf-zh-3", "5.00", f"Zuzana, {PERSON['phone']}"))
        late_feedback = FeedbackReceived(
            feedback_id=f"fb_{uuid.uuid4().hex[:16]}",
            customer_id=ZUZANA,
            order_id="ord-zh-3",
            ratings=Ratings(overall=5),
            nps=10,
            comment="Zuzana Horváthová from Žilina loves the mugs.",
            channel="email",
            received_at=NOW,
        )
        await tap.publish(FeedbackReceivedEvent.new(late_feedback, source="followups", subject=ZUZANA))
        await tap.publish(order_placed(LATE_FRIEND, "ord-fr6-1", mugs(1), at=NOW, code=zuzana.code))
        everyone = ("orders", "followups", "loyalty", "referrals")
        await all_taken(stack, counts["OrderPlaced"], "OrderPlaced", everyone)
        await all_taken(stack, counts["OrderFulfilled"], "OrderFulfilled", ("orders", "followups"))
        await all_taken(stack, counts["OrderRefunded"], "OrderRefunded", everyone)
        await all_taken(stack, feedback_counts, "FeedbackReceived", ("loyalty", "referrals"))
    finally:
        await tap.close()
    left = await settled_traces(mongo, stack)
    assert left == [], "\n".join(left)
    assert (await http.get(f"{stack['orders'].url}/customers/{ZUZANA}")).status_code == 404
    assert (await http.get(f"{stack['loyalty'].url}/members/{ZUZANA}")).status_code == 404
    for service in SERVICES:  # nothing held on her any more: no service exports anything
        export = await http.get(f"{stack[service].url}/customers/{ZUZANA}/export")
        assert (export.status_code, export.json()["detail"]) == (404, f"customer_id: {ZUZANA!r} was erased"), service


async def settled_traces(mongo: AsyncMongoClient[dict[str, Any]], stack: ServiceStack) -> list[str]:
    """The traces once none are left, or those still there after 30 s (an outbox entry waits to be sent, say)."""
    with contextlib.suppress(TimeoutError):
        await eventually(lambda: _nothing_found(mongo, stack), timeout=30)
    return await traces(mongo, stack)


async def _nothing_found(mongo: AsyncMongoClient[dict[str, Any]], stack: ServiceStack) -> bool:
    return await traces(mongo, stack) == []


# --- the gatherer when a service is down (last: it stops one) ----------------------------------------------


async def test_a_service_that_is_down_is_listed_as_missing_and_the_gatherer_exits_non_zero(
    stack: ServiceStack, zuzana: History, tmp_path: Path
) -> None:
    assert stack["referrals"].terminate() == 0
    out = tmp_path / "partial.json"
    ran = await asyncio.to_thread(gather, stack, out)
    assert ran.returncode != 0
    assert "referrals" in ran.stderr
    document = json.loads(out.read_text())
    assert document["missing"] == ["referrals"]
    assert set(document["services"]) == {"orders", "followups", "loyalty"}
