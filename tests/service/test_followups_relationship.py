"""The relationship memory of followups against the real broker and MongoDB: the log per customer, call outcomes,
the brief built from other services' events in any order and twice, key-account reviews, win-back calls,
history (imported) that plans nothing, cancelled orders, erasure."""

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from services.followups.app import SPEC
from services.followups.jobs import review_accounts
from services.followups.store import CALLS, FACTS, FOLLOWUPS, NOTES, REVIEWS, STANDING
from shared.events import (
    CustomerErased,
    CustomerErasedEvent,
    CustomerSegmentChanged,
    CustomerSegmentChangedEvent,
    Envelope,
    OrderCancelled,
    OrderCancelledEvent,
    PointsAwarded,
    PointsAwardedEvent,
    PointsRedeemed,
    PointsRedeemedEvent,
    ReferralConverted,
    ReferralConvertedEvent,
    ReferralInvited,
    ReferralInvitedEvent,
    TierChanged,
    TierChangedEvent,
)
from shared.service import Runtime
from shared.settings import ServiceSettings
from tests.service.delivery import deliver
from tests.service.test_followups import ADMIN, fulfilled, own_settings, placed
from tests.support.running import running_service
from tests.support.smtp import SmtpInbox, smtp_server
from tests.support.tap import EventTap

NOW = datetime.now(UTC).replace(microsecond=0)
EVA = ADMIN | {"X-Rapport-Actor": "eva@shop.example"}
Followups = tuple[Runtime, httpx.AsyncClient, SmtpInbox]


@pytest.fixture
async def followups(service_name: str, settings: ServiceSettings) -> AsyncIterator[Followups]:
    with smtp_server() as inbox:
        own = own_settings(settings, inbox.port)
        async with running_service(replace(SPEC, name=service_name), own) as (rt, http):
            yield rt, http, inbox


def tier(customer_id: str, to_tier: str, at: datetime, from_tier: str = "silver") -> Any:
    data = TierChanged(customer_id=customer_id, from_tier=from_tier, to_tier=to_tier)
    return TierChangedEvent.new(data, source="loyalty", subject=customer_id, time=at)


def segment(customer_id: str, to: str, at: datetime, was: str | None = None) -> Any:
    data = CustomerSegmentChanged(customer_id=customer_id, from_segment=was, to_segment=to, scored_at=at)
    return CustomerSegmentChangedEvent.new(data, source="orders", subject=customer_id, time=at)


def awarded(customer_id: str, entry_id: str, points: int, balance: int, at: datetime, tier: str = "gold") -> Any:
    data = PointsAwarded(
        entry_id=entry_id,
        customer_id=customer_id,
        points=points,
        reason="purchase",
        balance=balance,
        tier=tier,
        expires_at=at + timedelta(days=20),
    )
    return PointsAwardedEvent.new(data, source="loyalty", subject=customer_id, time=at)


def redeemed(customer_id: str, balance: int, at: datetime) -> Any:
    data = PointsRedeemed(
        redemption_id=f"rd-{customer_id}", customer_id=customer_id, reward_id="mug", points=100, balance=balance
    )
    return PointsRedeemedEvent.new(data, source="loyalty", subject=customer_id, time=at)


def converted(referrer: str, referral_id: str, at: datetime) -> Any:
    data = ReferralConverted(
        referral_id=referral_id,
        code=f"CODE-{referrer}",
        referrer_customer_id=referrer,
        referee_customer_id=f"friend-{referral_id}",
        order_id=f"o-{referral_id}",
        order_total=Decimal("30.00"),
        currency="EUR",
        converted_at=at,
        program="customer",
    )
    return ReferralConvertedEvent.new(data, source="referrals", subject=referrer, time=at)


def invited(customer_id: str, at: datetime) -> Any:
    data = ReferralInvited(customer_id=customer_id, code=f"CODE-{customer_id}")
    return ReferralInvitedEvent.new(data, source="referrals", subject=customer_id, time=at)


def history(event: Envelope[Any]) -> Any:
    """The event as replayed from the shop's history."""
    return event.model_copy(update={"imported": True})


def same_again(event: Envelope[Any]) -> Any:
    """The same fact told again under a new event id (a replay or a second publisher)."""
    return event.model_copy(update={"id": f"again-{event.id}"})


async def get(http: httpx.AsyncClient, url: str, **params: Any) -> Any:
    answer = await http.get(url, params=params, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def kinds(rt: Runtime, customer_id: str, kind: str) -> dict[str, str]:
    return {f["_id"]: f["status"] async for f in rt.db[FOLLOWUPS].find({"customer_id": customer_id, "kind": kind})}


# --- the log -------------------------------------------------------------------------------------------------


async def test_notes_facts_and_tasks_keep_their_author_and_erasure_deletes_them_all(
    followups: Followups, tap: EventTap
) -> None:
    rt, http, _inbox = followups
    await deliver(rt, tap, placed("cus-log", "o-log", city="Eger", first_name="Réka", locale="hu"))
    base = "/customers/cus-log"
    note = await http.post(f"{base}/notes", json={"text": "Prefers calls after 5 pm."}, headers=EVA)
    assert note.status_code == 201, note.text
    assert (note.json()["author"], note.json()["text"]) == ("eva@shop.example", "Prefers calls after 5 pm.")
    keyed = await http.post(f"{base}/notes", json={"text": "Asked about green tea."}, headers=ADMIN)
    assert keyed.json()["author"] == "admin"  # no person named: the key's name
    empty = await http.post(f"{base}/notes", json={"text": ""}, headers=EVA)
    assert (empty.status_code, empty.json()["detail"][0]["loc"]) == (422, ["body", "text"])

    fact = await http.post(f"{base}/facts", json={"kind": "family", "value": "Daughter Lili"}, headers=EVA)
    assert fact.status_code == 201
    fact_id = fact.json()["fact_id"]
    bad_kind = await http.post(f"{base}/facts", json={"kind": "shoe_size", "value": "38"}, headers=EVA)
    assert (bad_kind.status_code, bad_kind.json()["detail"][0]["loc"]) == (422, ["body", "kind"])
    changed = await http.put(
        f"{base}/facts/{fact_id}", json={"kind": "family", "value": "Daughters Lili and Bori"}, headers=ADMIN
    )
    assert (changed.json()["value"], changed.json()["changed_by"], changed.json()["author"]) == (
        "Daughters Lili and Bori",
        "admin",
        "eva@shop.example",
    )
    birthday = await http.post(f"{base}/facts", json={"kind": "birthday", "value": "14 May"}, headers=EVA)
    assert (await http.delete(f"{base}/facts/{birthday.json()['fact_id']}", headers=EVA)).status_code == 204
    assert (await http.delete(f"{base}/facts/{birthday.json()['fact_id']}", headers=EVA)).status_code == 404
    assert (
        await http.put(f"/customers/cus-other/facts/{fact_id}", json={"kind": "other", "value": "x"}, headers=EVA)
    ).status_code == 404  # another customer's fact is not theirs to edit
    facts = (await get(http, f"{base}/facts"))["facts"]
    assert [(f["kind"], f["value"]) for f in facts] == [("family", "Daughters Lili and Bori")]

    task = await http.post(
        f"{base}/tasks", json={"title": "Send the spring catalogue", "due_at": "2026-04-01T09:00:00+02:00"}, headers=EVA
    )
    assert task.status_code == 201, task.text
    assert (task.json()["kind"], task.json()["title"], task.json()["due_at"]) == (
        "task",
        "Send the spring catalogue",
        "2026-04-01T07:00:00Z",
    )
    listed = (await get(http, "/followups", kind="task"))["followups"]
    assert [t["followup_id"] for t in listed] == [task.json()["followup_id"]]
    assert (await http.post(f"{base}/tasks", json={"title": "x", "due_at": "tomorrow"}, headers=EVA)).status_code == 422

    brief = await get(http, f"{base}/brief")
    assert (brief["first_name"], brief["city"], brief["language"]) == ("Réka", "Eger", "hu")
    assert [n["text"] for n in brief["notes"]] == ["Asked about green tea.", "Prefers calls after 5 pm."]
    assert [f["value"] for f in brief["facts"]] == ["Daughters Lili and Bori"]
    assert [t["title"] for t in brief["open_tasks"]] == ["Send the spring catalogue"]
    page = await get(http, f"{base}/notes", limit=1)
    assert (len(page["notes"]), page["next_offset"]) == (1, 1)
    last = await get(http, f"{base}/notes", limit=1, offset=1)
    assert [n["text"] for n in last["notes"]] == ["Prefers calls after 5 pm."]
    audit = await get(http, "/audit", target="cus-log")
    assert "admin/eva@shop.example" in {record["actor"] for record in audit}
    assert "POST /customers/{customer_id}/notes" in {record["action"] for record in audit}

    erased = CustomerErasedEvent.new(
        CustomerErased(customer_id="cus-log", requested_at=NOW), source="orders", subject="cus-log"
    )
    await deliver(rt, tap, erased, erased)
    for log in (NOTES, FACTS, CALLS, REVIEWS, STANDING):
        assert await rt.db[log].count_documents({}) == 0, log
    stored = str([d async for d in rt.db[FOLLOWUPS].find({})])
    assert "spring catalogue" not in stored
    assert "cus-log" not in stored
    assert (await http.get(f"{base}/brief", headers=ADMIN)).status_code == 404
    refused = await http.post(f"{base}/notes", json={"text": "Still here?"}, headers=EVA)
    assert refused.status_code == 410
    assert await rt.db[NOTES].count_documents({}) == 0


# --- call outcomes ------------------------------------------------------------------------------------------


async def test_an_unanswered_call_is_tried_again_then_closed_and_a_reached_one_completes(
    followups: Followups, tap: EventTap
) -> None:
    rt, http, _inbox = followups
    for customer in ("cus-ring", "cus-talk"):
        await deliver(
            rt, tap, placed(customer, f"o-{customer}"), fulfilled(customer, f"o-{customer}", NOW - timedelta(days=15))
        )

    async def outcome(customer: str, result: str, **extra: Any) -> httpx.Response:
        body = {"outcome": result, "summary": "", "followup_id": f"call:{customer}"} | extra
        return await http.post(f"/customers/{customer}/calls", json=body, headers=EVA)

    first = await outcome("cus-ring", "no_answer")
    assert first.status_code == 201, first.text
    task = first.json()["task"]
    assert (task["status"], task["attempts"], task["gave_up"]) == ("pending", 1, False)
    assert datetime.fromisoformat(task["due_at"]) > NOW + timedelta(days=1, hours=23)
    assert (await outcome("cus-ring", "voicemail", summary="Left a message")).json()["task"]["attempts"] == 2
    last = (await outcome("cus-ring", "no_answer")).json()["task"]
    assert (last["status"], last["attempts"], last["gave_up"]) == ("done", 3, True)
    assert (await outcome("cus-ring", "reached")).status_code == 404  # nothing pending any more

    reached = await outcome("cus-talk", "reached", summary="Loves the Assam; wants a bigger tin.")
    assert reached.json()["task"]["status"] == "done"
    assert (await kinds(rt, "cus-talk", "call")) == {"call:cus-talk": "done"}
    # A call with no task (the customer rang the shop) is logged all the same.
    spontaneous = await http.post(
        "/customers/cus-talk/calls", json={"outcome": "reached", "summary": "Rang about delivery"}, headers=EVA
    )
    assert spontaneous.json()["task"] is None
    calls = (await get(http, "/customers/cus-talk/calls"))["calls"]
    assert [c["summary"] for c in calls] == ["Rang about delivery", "Loves the Assam; wants a bigger tin."]
    assert calls[0]["author"] == "eva@shop.example"
    assert (await http.post("/customers/cus-talk/calls", json={"outcome": "busy"}, headers=EVA)).status_code == 422
    stranger = await outcome("cus-talk", "reached", followup_id="call:cus-ring")
    assert stranger.status_code == 404  # another customer's task


# --- the brief from events in any order, twice ----------------------------------------------------------------


def _story(customer: str) -> list[Any]:
    t = NOW - timedelta(days=3)
    first = placed(customer, f"{customer}-o1", at=t, city="Győr", first_name="Anna", locale="hu")
    second = placed(customer, f"{customer}-o2", at=t + timedelta(days=1), city="Győr", first_name="Anna", locale="hu")
    second = second.model_copy(update={"data": second.data.model_copy(update={"order_number": "#1002"})})
    return [
        first,
        second,
        awarded(customer, f"{customer}-le1", 600, 600, t, tier="silver"),
        awarded(customer, f"{customer}-le2", 1000, 1600, t + timedelta(days=1), tier="gold"),
        tier(customer, "gold", t + timedelta(days=1)),
        redeemed(customer, 1500, t + timedelta(days=2)),
        invited(customer, t + timedelta(days=1)),
        converted(customer, f"{customer}-rf1", t + timedelta(days=2)),
        converted(customer, f"{customer}-rf2", t + timedelta(days=2)),
        segment(customer, "loyal", t),
        segment(customer, "champions", t + timedelta(days=2), was="loyal"),
    ]


def _comparable(brief: dict[str, Any]) -> dict[str, Any]:
    text = str(brief)
    for name in ("cus-brief-a", "cus-brief-b"):
        text = text.replace(name, "X")
    kept = eval(text)  # noqa: S307 - our own repr of JSON values
    for task in kept["open_tasks"]:
        task.pop("created_at")
        task.pop("due_at")  # due when it was opened
    kept["account"].pop("next_review_at")
    return kept


async def test_the_brief_is_the_same_from_events_in_order_or_shuffled_and_told_twice(
    followups: Followups, tap: EventTap
) -> None:
    rt, http, _inbox = followups
    await deliver(rt, tap, *_story("cus-brief-a"))
    told = _story("cus-brief-b")
    shuffled = [*told, *(same_again(e) for e in told), *told]  # duplicates by id and by content
    random.Random(7).shuffle(shuffled)  # noqa: S311 - a repeatable order, not a secret
    for start in range(0, len(shuffled), 5):
        await deliver(rt, tap, *shuffled[start : start + 5])
    a = await get(http, "/customers/cus-brief-a/brief")
    b = await get(http, "/customers/cus-brief-b/brief")
    assert _comparable(a) == _comparable(b)
    assert a["loyalty"]["tier"] == "gold"
    assert a["loyalty"]["balance"] == 1500
    assert a["loyalty"]["points_expiring"] == 1500  # 1600 awarded expire within 30 days; 1500 are left
    assert a["orders"]["count"] == 2
    assert (a["orders"]["last_order"]["order_id"], a["orders"]["last_order"]["order_number"]) == (
        "cus-brief-a-o2",
        "#1002",
    )
    assert a["referrals"] == {"code": "CODE-cus-brief-a", "friends_converted": 2}
    assert (a["account"]["segment"], a["account"]["key_account"]) == ("champions", True)
    assert [t["kind"] for t in a["open_tasks"]].count("review") == 1
    assert await kinds(rt, "cus-brief-b", "review") == {"review:cus-brief-b:1": "pending"}


async def test_the_brief_shows_the_latest_feedback_and_open_escalations(followups: Followups, tap: EventTap) -> None:
    rt, http, _inbox = followups
    await deliver(rt, tap, placed("cus-said", "o-said"))
    for overall, comment in ((5, "Lovely."), (1, "The lid was cracked.")):
        body = {"customer_id": "cus-said", "ratings": {"overall": overall}, "comment": comment, "channel": "phone"}
        assert (await http.post("/feedback", json=body, headers=ADMIN)).status_code == 201
    brief = await get(http, "/customers/cus-said/brief")
    assert (brief["latest_feedback"]["overall"], brief["latest_feedback"]["comment"]) == (1, "The lid was cracked.")
    [escalation] = brief["open_escalations"]
    assert escalation["breached"] is False
    assert (await http.get("/customers/nobody-at-all/brief", headers=ADMIN)).status_code == 404


# --- key accounts and reviews --------------------------------------------------------------------------------


async def test_a_key_account_gets_a_review_task_every_ninety_days_and_others_none(
    followups: Followups, tap: EventTap
) -> None:
    rt, http, _inbox = followups
    champion = segment("cus-key", "champions", NOW)
    await deliver(rt, tap, champion, champion, segment("cus-plain", "loyal", NOW), tier("cus-top", "vip", NOW))
    assert await kinds(rt, "cus-key", "review") == {"review:cus-key:1": "pending"}
    assert await kinds(rt, "cus-top", "review") == {"review:cus-top:1": "pending"}  # the top tier is one too
    assert await kinds(rt, "cus-plain", "review") == {}

    review = {
        "needs": "A gift set for her shop's clients",
        "went_well": "Fast deliveries",
        "went_badly": "",
        "next_step": "Offer the corporate gift box in October",
    }
    recorded = await http.post("/customers/cus-key/reviews", json=review, headers=EVA)
    assert recorded.status_code == 201, recorded.text
    assert (recorded.json()["followup_id"], recorded.json()["author"]) == ("review:cus-key:1", "eva@shop.example")
    assert await kinds(rt, "cus-key", "review") == {"review:cus-key:1": "done"}
    assert (await http.post("/customers/cus-key/reviews", json={"needs": "x"}, headers=EVA)).status_code == 422

    assert await review_accounts(rt, at=NOW + timedelta(days=80)) == 0
    assert set(await kinds(rt, "cus-key", "review")) == {"review:cus-key:1"}
    later = NOW + timedelta(days=91)
    await asyncio.gather(review_accounts(rt, at=later), review_accounts(rt, at=later))  # two replicas at once
    assert await kinds(rt, "cus-key", "review") == {"review:cus-key:1": "done", "review:cus-key:2": "pending"}
    # cus-top never recorded theirs: no second open review, the next is pushed on.
    assert await kinds(rt, "cus-top", "review") == {"review:cus-top:1": "pending"}
    assert await kinds(rt, "cus-plain", "review") == {}
    brief = await get(http, "/customers/cus-key/brief")
    assert [r["next_step"] for r in brief["reviews"]] == ["Offer the corporate gift box in October"]
    due = (await get(http, "/followups", kind="review", status="pending"))["followups"]
    assert {f["followup_id"] for f in due} >= {"review:cus-key:2", "review:cus-top:1"}


# --- win-back ------------------------------------------------------------------------------------------------


async def test_a_vip_slipping_away_gets_one_call_per_slide_in_either_order_of_arrival(
    followups: Followups, tap: EventTap
) -> None:
    rt, http, _inbox = followups
    at_risk = NOW - timedelta(hours=2)
    await deliver(rt, tap, tier("cus-w1", "gold", at_risk), segment("cus-w1", "at_risk", at_risk, was="loyal"))
    await deliver(rt, tap, segment("cus-w2", "at_risk", at_risk, was="loyal"))
    await deliver(rt, tap, tier("cus-w2", "gold", at_risk))
    await deliver(rt, tap, segment("cus-w3", "at_risk", at_risk), tier("cus-w3", "silver", at_risk))  # below gold
    for customer in ("cus-w1", "cus-w2"):
        assert await kinds(rt, customer, "win_back") == {f"win_back:{customer}:1": "pending"}
    assert await kinds(rt, "cus-w3", "win_back") == {}
    listed = (await get(http, "/followups", kind="win_back", status="due"))["followups"]
    assert {f["followup_id"] for f in listed} == {"win_back:cus-w1:1", "win_back:cus-w2:1"}

    deeper = segment("cus-w1", "hibernating", at_risk + timedelta(hours=1), was="at_risk")
    await deliver(rt, tap, deeper, deeper, same_again(tier("cus-w1", "gold", at_risk)))
    assert set(await kinds(rt, "cus-w1", "win_back")) == {"win_back:cus-w1:1"}  # the same slide
    stale = segment("cus-w1", "loyal", at_risk - timedelta(days=1))  # an older scoring heard late
    await deliver(rt, tap, stale)
    assert (await get(http, "/customers/cus-w1/brief"))["account"]["segment"] == "hibernating"
    await deliver(rt, tap, segment("cus-w1", "loyal", NOW - timedelta(minutes=30), was="hibernating"))
    await deliver(rt, tap, segment("cus-w1", "cant_lose", NOW - timedelta(minutes=10), was="loyal"))
    assert set(await kinds(rt, "cus-w1", "win_back")) == {"win_back:cus-w1:1", "win_back:cus-w1:2"}
    brief = await get(http, "/customers/cus-w1/brief")
    assert brief["account"]["slipping_away"] is True
    assert "win_back" in {t["kind"] for t in brief["open_tasks"]}


# --- history and cancellations -------------------------------------------------------------------------------


async def test_history_builds_the_brief_but_plans_nothing_until_the_import_settles(
    followups: Followups, tap: EventTap
) -> None:
    rt, http, inbox = followups
    old = NOW - timedelta(days=300)
    told = [
        placed("cus-hist", "o-hist", at=old),
        fulfilled("cus-hist", "o-hist", old + timedelta(days=1)),
        invited("cus-hist", old + timedelta(days=20)),
        tier("cus-hist", "vip", old),
        segment("cus-hist", "at_risk", NOW - timedelta(days=1)),
    ]
    await deliver(rt, tap, *(history(e) for e in told))
    assert await rt.db[FOLLOWUPS].count_documents({"customer_id": "cus-hist"}) == 0
    brief = await get(http, "/customers/cus-hist/brief")
    assert (brief["orders"]["count"], brief["referrals"]["code"], brief["loyalty"]["tier"]) == (
        1,
        "CODE-cus-hist",
        "vip",
    )
    assert (brief["account"]["key_account"], brief["account"]["slipping_away"]) == (True, True)
    await review_accounts(rt, at=NOW + timedelta(minutes=5))  # the import may still be running
    assert await rt.db[FOLLOWUPS].count_documents({"customer_id": "cus-hist"}) == 0
    await review_accounts(rt, at=NOW + timedelta(minutes=11))
    assert await kinds(rt, "cus-hist", "win_back") == {"win_back:cus-hist:1": "pending"}
    assert await kinds(rt, "cus-hist", "review") == {"review:cus-hist:1": "pending"}
    await review_accounts(rt, at=NOW + timedelta(minutes=12))
    assert await rt.db[FOLLOWUPS].count_documents({"customer_id": "cus-hist"}) == 2
    assert inbox.to("cus-hist@example.com") == []


async def test_a_cancellation_cancels_what_is_pending_whether_it_comes_before_or_after_the_order(
    followups: Followups, tap: EventTap
) -> None:
    rt, _http, _inbox = followups

    def cancelled(customer: str, order: str) -> Any:
        data = OrderCancelled(order_id=order, customer_id=customer, cancelled_at=NOW)
        return OrderCancelledEvent.new(data, source="shop", subject=customer)

    late = cancelled("cus-c1", "o-c1")
    await deliver(rt, tap, placed("cus-c1", "o-c1"), fulfilled("cus-c1", "o-c1", NOW), late, late)
    early = cancelled("cus-c2", "o-c2")
    await deliver(rt, tap, early)
    await deliver(rt, tap, placed("cus-c2", "o-c2"), fulfilled("cus-c2", "o-c2", NOW))
    found = {
        f["kind"]: (f["status"], f.get("cancelled_because")) async for f in rt.db[FOLLOWUPS].find({"order_id": "o-c1"})
    }
    assert found == dict.fromkeys(("thank_you", "feedback_request", "call"), ("cancelled", "cancelled"))
    planned_after = {f["kind"]: f["status"] async for f in rt.db[FOLLOWUPS].find({"order_id": "o-c2"})}
    assert planned_after == dict.fromkeys(("thank_you", "feedback_request", "call"), "cancelled")  # planned cancelled
