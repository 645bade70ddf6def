"""Every flow of DESIGN.md §2, with the four services as real processes, the real broker, MongoDB and SMTP.

Each scenario has its own customers and ends with exact figures worked out by
hand from DESIGN.md §7's defaults: balances, counts, e-mails, and every event
about the customer on the exchange — nothing lost, nothing doubled.
"""

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from shared.events import LineItem
from tests.shop_day import CONSUMERS, order_fulfilled, order_placed, order_refunded
from tests.support.processes import ServiceStack
from tests.support.smtp import SmtpInbox
from tests.support.tap import EventTap, eventually

NOW = datetime.now(UTC).replace(microsecond=0)
SHOP = "Teapot & Co"


@pytest.fixture(scope="module")
def stack_env(smtp: SmtpInbox) -> dict[str, str]:
    # The scheduler looks for due e-mails every 0.2 s instead of 5 s, so a thank-you goes out at once.
    return {"SMTP_URL": smtp.url, "SCHEDULER_INTERVAL_SECONDS": "0.2", "SHOP_NAME": SHOP}


def line(sku: str, quantity: int, unit_price: str) -> LineItem:
    return LineItem(sku=sku, name=sku.title(), quantity=quantity, unit_price=Decimal(unit_price))


class Taken:
    """How many events of one type each consuming service has taken so far, to wait for exactly `n` more."""

    def __init__(self, stack: ServiceStack, event_type: str) -> None:
        self.stack, self.event_type = stack, event_type
        self.before: dict[str, float] = {}

    async def snapshot(self) -> "Taken":
        self.before = {s: await self.stack[s].consumed(self.event_type) for s in CONSUMERS[self.event_type]}
        return self

    async def wait(self, more: int = 1) -> None:
        async def done() -> bool:
            now = {s: await self.stack[s].consumed(self.event_type) for s in self.before}
            return now == {s: count + more for s, count in self.before.items()}

        await eventually(done, timeout=30)


async def taken(stack: ServiceStack, event_type: str) -> Taken:
    return await Taken(stack, event_type).snapshot()


async def get(http: httpx.AsyncClient, url: str, **params: Any) -> Any:
    answer = await http.get(url, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def balance_is(http: httpx.AsyncClient, stack: ServiceStack, customer_id: str, balance: int) -> bool:
    answer = await http.get(f"{stack['loyalty'].url}/members/{customer_id}")
    return answer.status_code == 200 and answer.json()["balance"] == balance


async def followups_of(http: httpx.AsyncClient, stack: ServiceStack, customer_id: str) -> dict[str, dict[str, Any]]:
    listed = await get(http, f"{stack['followups'].url}/followups", limit=500)
    return {f["followup_id"]: f for f in listed["followups"] if f["customer_id"] == customer_id}


def about(tap: EventTap, customer_id: str) -> Counter[str]:
    """Every event on the exchange about the customer, by type (the test's own publishes included)."""
    return Counter(body["type"] for body in tap.bodies() if body.get("subject") == customer_id)


async def thanked(tap: EventTap, customer_id: str, notes: int = 1) -> None:
    """Wait for the thank-you notes followups sends for the customer's orders (each a FollowUpSent)."""
    await tap.wait_for(
        lambda e: e["type"] == "FollowUpSent" and e["subject"] == customer_id and e["data"]["kind"] == "thank_you",
        count=notes,
        timeout=30,
    )


def instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- OrderPlaced ---------------------------------------------------------------------------------------------


async def test_an_order_is_recorded_earns_its_points_and_brings_a_thank_you_note(
    stack: ServiceStack, tap: EventTap, http: httpx.AsyncClient, smtp: SmtpInbox
) -> None:
    items = [line("POT-CAST", 1, "64.00"), line("MUG-RED", 2, "12.50"), line("TEA-BLACK", 1, "31.00")]
    placed = order_placed(
        "cus-anna", "ord-anna-1", items, at=NOW, email="anna@example.com", first_name="Anna", city="Košice"
    )
    assert placed.data.total == Decimal("120.00")
    orders = await taken(stack, "OrderPlaced")
    await tap.publish(placed)
    await tap.publish(placed)  # the shop's retry: the same event again
    await orders.wait(more=2)

    [awarded] = await tap.wait_for(lambda e: e["type"] == "PointsAwarded" and e["subject"] == "cus-anna")
    assert {k: awarded["data"][k] for k in ("points", "balance", "reason", "order_id", "tier")} == {
        "points": 120,
        "balance": 120,
        "reason": "purchase",
        "order_id": "ord-anna-1",
        "tier": "bronze",
    }
    member = await get(http, f"{stack['loyalty'].url}/members/cus-anna")
    assert (member["balance"], member["tier"], member["next_tier"]) == (
        120,
        "bronze",
        {"name": "silver", "points_needed": 380},
    )
    customer = await get(http, f"{stack['orders'].url}/customers/cus-anna")
    assert (customer["orders_count"], customer["total_spent"]) == (1, {"EUR": "120.00"})
    assert [o["order_id"] for o in customer["orders"]] == ["ord-anna-1"]

    await thanked(tap, "cus-anna")
    [note] = smtp.to("anna@example.com")
    assert note["Subject"] == f"Thank you for your order – {SHOP}"
    text = SmtpInbox.text(note)
    assert "Hi Anna," in text
    assert "your order ord-anna-1" in text
    assert "heading to Košice" in text
    [sent] = [e for e in tap.bodies("FollowUpSent") if e["subject"] == "cus-anna"]
    assert sent["data"]["order_id"] == "ord-anna-1"
    assert about(tap, "cus-anna") == Counter({"OrderPlaced": 2, "PointsAwarded": 1, "FollowUpSent": 1})


async def test_reaching_silver_multiplies_the_next_order(
    stack: ServiceStack, tap: EventTap, http: httpx.AsyncClient
) -> None:
    first = order_placed("cus-hana", "ord-hana-1", [line("CUP-SET", 15, "40.00")], at=NOW - timedelta(hours=2))
    await tap.publish(first)
    await tap.wait_for(lambda e: e["type"] == "TierChanged" and e["subject"] == "cus-hana")
    second = order_placed("cus-hana", "ord-hana-2", [line("BOOK-TEA", 4, "25.00")], at=NOW - timedelta(hours=1))
    await tap.publish(second)
    awarded = await tap.wait_for(lambda e: e["type"] == "PointsAwarded" and e["subject"] == "cus-hana", count=2)

    # 600.00 at bronze ×1.0 = 600, which reaches silver (500); then 100.00 at silver ×1.25 = 125.
    assert [(e["data"]["order_id"], e["data"]["points"], e["data"]["balance"], e["data"]["tier"]) for e in awarded] == [
        ("ord-hana-1", 600, 600, "silver"),
        ("ord-hana-2", 125, 725, "silver"),
    ]
    [changed] = [e for e in tap.bodies("TierChanged") if e["subject"] == "cus-hana"]
    assert (changed["data"]["from_tier"], changed["data"]["to_tier"]) == ("bronze", "silver")
    member = await get(http, f"{stack['loyalty'].url}/members/cus-hana")
    assert (member["balance"], member["tier"], member["tier_points"]) == (725, "silver", 725)
    assert member["next_tier"] == {"name": "gold", "points_needed": 775}
    await thanked(tap, "cus-hana", notes=2)
    assert about(tap, "cus-hana") == Counter(
        {"OrderPlaced": 2, "PointsAwarded": 2, "TierChanged": 1, "FollowUpSent": 2}
    )


# --- OrderFulfilled ---------------------------------------------------------------------------------------------


async def test_a_fulfilled_order_plans_the_feedback_request_and_the_call_fourteen_days_later(
    stack: ServiceStack, tap: EventTap, http: httpx.AsyncClient
) -> None:
    placed_at, fulfilled_at = NOW - timedelta(days=3), NOW - timedelta(days=2)
    placed = order_placed(
        "cus-ola", "ord-ola-1", [line("TEA-GREEN", 3, "15.00")], at=placed_at, first_name="Ola", phone="+48600100200"
    )
    await tap.publish(placed)
    fulfilments = await taken(stack, "OrderFulfilled")
    fulfilled = order_fulfilled("cus-ola", "ord-ola-1", at=fulfilled_at)
    await tap.publish(fulfilled)
    await tap.publish(fulfilled)
    await fulfilments.wait(more=2)

    planned = await followups_of(http, stack, "cus-ola")
    assert sorted(planned) == ["call:cus-ola", "feedback_request:ord-ola-1", "thank_you:ord-ola-1"]
    request, call = planned["feedback_request:ord-ola-1"], planned["call:cus-ola"]
    assert (request["status"], instant(request["due_at"])) == ("pending", fulfilled_at + timedelta(days=14))
    assert (call["status"], instant(call["due_at"])) == ("pending", fulfilled_at + timedelta(days=14))
    assert (call["customer"]["first_name"], call["customer"]["phone"]) == ("Ola", "+48600100200")
    customer = await get(http, f"{stack['orders'].url}/customers/cus-ola")
    assert instant(customer["orders"][0]["fulfilled_at"]) == fulfilled_at


# --- ReferralConverted ---------------------------------------------------------------------------------------------


async def test_a_friend_ordering_with_a_code_converts_once_and_both_earn_referral_points(
    stack: ServiceStack, tap: EventTap, http: httpx.AsyncClient
) -> None:
    await tap.publish(order_placed("cus-ivo", "ord-ivo-1", [line("SEED-HERB", 10, "5.00")], at=NOW))
    await tap.wait_for(lambda e: e["type"] == "PointsAwarded" and e["subject"] == "cus-ivo")
    issued = await http.post(f"{stack['referrals'].url}/referrers/cus-ivo/code")
    assert issued.status_code == 201, issued.text
    code = issued.json()["code"]

    friend = order_placed("cus-jan", "ord-jan-1", [line("POT-CLAY", 2, "35.00")], at=NOW, code=code.lower())
    await tap.publish(friend)
    await tap.publish(friend)
    [converted] = await tap.wait_for(lambda e: e["type"] == "ReferralConverted" and e["subject"] == "cus-jan")
    assert {k: converted["data"][k] for k in ("referrer_customer_id", "order_id", "order_total", "program")} == {
        "referrer_customer_id": "cus-ivo",
        "order_id": "ord-jan-1",
        "order_total": "70.00",
        "program": "customer",
    }
    await eventually(lambda: balance_is(http, stack, "cus-ivo", 50 + 500))
    await eventually(lambda: balance_is(http, stack, "cus-jan", 70 + 250))
    rewarded = [e["data"] for e in tap.bodies("PointsAwarded") if e["data"]["reason"] == "referral"]
    assert sorted((d["customer_id"], d["points"]) for d in rewarded) == [("cus-ivo", 500), ("cus-jan", 250)]

    orders = await taken(stack, "OrderPlaced")
    await tap.publish(order_placed("cus-ivo", "ord-ivo-2", [line("SEED-HERB", 2, "5.00")], at=NOW, code=code))
    await orders.wait()  # Ivo's own order with his own code: refused, and only its purchase points
    await eventually(lambda: balance_is(http, stack, "cus-ivo", 50 + 500 + 10))
    page = await get(http, f"{stack['referrals'].url}/referrals/{code}")
    assert (page["conversions"], page["status"]) == (1, "active")
    assert {r["order_id"]: (r["outcome"], r["reason"]) for r in page["referrals"]} == {
        "ord-jan-1": ("converted", None),
        "ord-ivo-2": ("refused", "own_order"),
    }
    await thanked(tap, "cus-jan")
    await thanked(tap, "cus-ivo", notes=2)
    assert about(tap, "cus-jan") == Counter(
        {"OrderPlaced": 2, "ReferralConverted": 1, "PointsAwarded": 2, "FollowUpSent": 1}
    )
    assert about(tap, "cus-ivo") == Counter({"OrderPlaced": 2, "PointsAwarded": 3, "FollowUpSent": 2})


# --- FeedbackReceived ---------------------------------------------------------------------------------------------


async def order_and_feedback(
    stack: ServiceStack, tap: EventTap, http: httpx.AsyncClient, customer_id: str, total: str, **feedback: Any
) -> dict[str, Any]:
    """An order, its points, then feedback logged by the owner; returns the stored feedback once both took it."""
    order_id = f"ord-{customer_id.removeprefix('cus-')}-1"
    await tap.publish(order_placed(customer_id, order_id, [line("CUP-SET", 1, total)], at=NOW - timedelta(days=1)))
    await eventually(lambda: balance_is(http, stack, customer_id, int(Decimal(total))))
    received = await taken(stack, "FeedbackReceived")
    body = {"customer_id": customer_id, "order_id": order_id, "channel": "phone", **feedback}
    posted = await http.post(f"{stack['followups'].url}/feedback", json=body)
    assert posted.status_code == 201, posted.text
    await received.wait()
    stored: dict[str, Any] = posted.json()
    return stored


async def test_a_review_with_an_nps_answer_earns_fifty_and_twenty_points(
    stack: ServiceStack, tap: EventTap, http: httpx.AsyncClient
) -> None:
    stored = await order_and_feedback(
        stack, tap, http, "cus-dora", "80.00", ratings={"overall": 4}, nps=8, comment="Lovely pot, pours well too."
    )
    await eventually(lambda: balance_is(http, stack, "cus-dora", 80 + 50 + 20))
    [received] = [e for e in tap.bodies("FeedbackReceived") if e["subject"] == "cus-dora"]
    assert received["data"]["feedback_id"] == stored["feedback_id"]
    earned = [e["data"] for e in tap.bodies("PointsAwarded") if e["subject"] == "cus-dora"]
    assert sorted((d["reason"], d["points"]) for d in earned) == [("purchase", 80), ("review", 50), ("survey", 20)]
    assert stored["escalation_id"] is None  # a passive (NPS 8, rated 4) is neither escalated nor invited
    await thanked(tap, "cus-dora")
    assert about(tap, "cus-dora") == Counter(
        {"OrderPlaced": 1, "PointsAwarded": 3, "FeedbackReceived": 1, "FollowUpSent": 1}
    )


async def test_a_detractor_opens_an_escalation_due_within_sixty_minutes(
    stack: ServiceStack, tap: EventTap, http: httpx.AsyncClient
) -> None:
    comment = "The handle came off the first time I used it."
    stored = await order_and_feedback(
        stack, tap, http, "cus-emil", "60.00", ratings={"overall": 2, "product": 1}, nps=3, comment=comment
    )
    [escalated] = await tap.wait_for(lambda e: e["type"] == "FeedbackEscalated" and e["subject"] == "cus-emil")
    due_by = instant(stored["received_at"]) + timedelta(minutes=60)
    assert instant(escalated["data"]["due_by"]) == due_by
    assert escalated["data"]["escalation_id"] == stored["escalation_id"]
    listed = await get(http, f"{stack['followups'].url}/escalations", open="true")
    [open_one] = [e for e in listed["escalations"] if e["customer_id"] == "cus-emil"]
    assert (open_one["order_id"], open_one["breached"]) == ("ord-emil-1", False)
    assert 3500 < open_one["seconds_left"] <= 3600
    await eventually(lambda: balance_is(http, stack, "cus-emil", 60 + 50 + 20))
    await thanked(tap, "cus-emil")
    assert about(tap, "cus-emil") == Counter(
        {"OrderPlaced": 1, "PointsAwarded": 3, "FeedbackReceived": 1, "FeedbackEscalated": 1, "FollowUpSent": 1}
    )


async def test_a_promoter_is_invited_once_and_the_invitation_is_emailed_with_the_code(
    stack: ServiceStack, tap: EventTap, http: httpx.AsyncClient, smtp: SmtpInbox
) -> None:
    stored = await order_and_feedback(stack, tap, http, "cus-fay", "40.00", ratings={"overall": 5}, nps=10)
    [invited] = await tap.wait_for(lambda e: e["type"] == "ReferralInvited" and e["subject"] == "cus-fay")
    code = invited["data"]["code"]
    assert invited["data"]["feedback_id"] == stored["feedback_id"]
    await tap.wait_for(
        lambda e: e["type"] == "FollowUpSent" and e["subject"] == "cus-fay" and e["data"]["kind"] == "referral_invite",
        timeout=30,
    )
    [invitation] = smtp.to("cus-fay@example.com", containing=f"Your personal code is {code}")
    assert invitation["Subject"] == f"Know someone who'd like us? – {SHOP}"
    page = await get(http, f"{stack['referrals'].url}/referrals/{code}")
    assert (page["referrer_customer_id"], page["status"], page["conversions"]) == ("cus-fay", "active", 0)
    await eventually(lambda: balance_is(http, stack, "cus-fay", 40 + 20))

    received = await taken(stack, "FeedbackReceived")
    again = {"customer_id": "cus-fay", "order_id": "ord-fay-1", "ratings": {"overall": 5}, "nps": 9, "channel": "phone"}
    posted = await http.post(f"{stack['followups'].url}/feedback", json=again)
    assert posted.status_code == 201, posted.text
    await received.wait()  # a second promoter answer: no second invitation, no second NPS points for the order
    invites = [f for f in (await followups_of(http, stack, "cus-fay")).values() if f["kind"] == "referral_invite"]
    assert [f["status"] for f in invites] == ["sent"]
    assert len(smtp.to("cus-fay@example.com", containing=code)) == 1
    assert (await get(http, f"{stack['loyalty'].url}/members/cus-fay"))["balance"] == 40 + 20
    await thanked(tap, "cus-fay")
    assert about(tap, "cus-fay") == Counter(
        {"OrderPlaced": 1, "PointsAwarded": 2, "FeedbackReceived": 2, "ReferralInvited": 1, "FollowUpSent": 2}
    )


# --- OrderRefunded ---------------------------------------------------------------------------------------------


async def test_a_refund_reverses_points_and_claws_back_the_commission_and_only_a_full_one_cancels_what_is_pending(
    stack: ServiceStack, tap: EventTap, http: httpx.AsyncClient
) -> None:
    enrolled = await http.post(f"{stack['referrals'].url}/affiliates", json={"name": "Tea blog", "email": "b@blog.io"})
    assert enrolled.status_code == 201, enrolled.text
    affiliate_id, code = enrolled.json()["affiliate_id"], enrolled.json()["code"]["code"]
    items = [line("POT-CAST", 1, "64.00"), line("TEA-BLACK", 2, "28.00")]
    await tap.publish(order_placed("cus-cleo", "ord-cleo-1", items, at=NOW - timedelta(days=3), code=code))
    [converted] = await tap.wait_for(lambda e: e["type"] == "ReferralConverted" and e["subject"] == "cus-cleo")
    assert (converted["data"]["program"], converted["data"]["commission"]) == ("affiliate", "12.00")
    # Affiliates are paid in cash: only the friend earns points (120 for the order, 250 for the referral).
    await eventually(lambda: balance_is(http, stack, "cus-cleo", 120 + 250))
    await thanked(tap, "cus-cleo")
    fulfilments = await taken(stack, "OrderFulfilled")
    await tap.publish(order_fulfilled("cus-cleo", "ord-cleo-1", at=NOW - timedelta(days=2)))
    await fulfilments.wait()

    refund = order_refunded("cus-cleo", "ord-cleo-1", Decimal("30.00"), at=NOW - timedelta(days=1), refund_id="r-cleo")
    refunds = await taken(stack, "OrderRefunded")
    await tap.publish(refund)
    await tap.publish(refund)
    await refunds.wait(more=2)

    [reversed_] = await tap.wait_for(lambda e: e["type"] == "PointsReversed" and e["subject"] == "cus-cleo")
    assert {k: reversed_["data"][k] for k in ("points", "reason", "order_id", "balance")} == {
        "points": 30,  # floor(120 × 30.00 / 120.00)
        "reason": "refund",
        "order_id": "ord-cleo-1",
        "balance": 340,
    }
    assert (await get(http, f"{stack['loyalty'].url}/members/cus-cleo"))["balance"] == 340
    commissions = await get(http, f"{stack['referrals'].url}/affiliates/{affiliate_id}/commissions")
    [commission] = commissions["commissions"]
    assert (commission["commission"], commission["clawed_back"], commission["commission_due"]) == (
        "12.00",
        "3.00",  # 10 % of the 30.00 refunded
        "9.00",
    )
    planned = await followups_of(http, stack, "cus-cleo")
    assert {key: f["status"] for key, f in planned.items()} == {  # 30.00 of 120.00: a partial refund cancels nothing
        "thank_you:ord-cleo-1": "sent",
        "feedback_request:ord-cleo-1": "pending",
        "call:cus-cleo": "pending",
    }
    customer = await get(http, f"{stack['orders'].url}/customers/cus-cleo")
    assert (customer["total_spent"], customer["refunded"]) == ({"EUR": "90.00"}, {"EUR": "30.00"})
    assert [r["refund_id"] for r in customer["orders"][0]["refunds"]] == ["r-cleo"]

    # The rest of the money back: now the order is refunded in full and what was pending for it is cancelled.
    rest = order_refunded(
        "cus-cleo", "ord-cleo-1", Decimal("90.00"), at=NOW - timedelta(hours=12), refund_id="r-cleo-2"
    )
    refunds = await taken(stack, "OrderRefunded")
    await tap.publish(rest)
    await refunds.wait()

    async def cancelled() -> bool:
        statuses = {key: f["status"] for key, f in (await followups_of(http, stack, "cus-cleo")).items()}
        return statuses == {
            "thank_you:ord-cleo-1": "sent",
            "feedback_request:ord-cleo-1": "cancelled",
            "call:cus-cleo": "cancelled",
        }

    await eventually(cancelled)
    assert about(tap, "cus-cleo") == Counter(
        {
            "OrderPlaced": 1,
            "ReferralConverted": 1,
            "PointsAwarded": 2,
            "FollowUpSent": 1,
            "OrderFulfilled": 1,
            "OrderRefunded": 3,  # the first refund told twice, then the rest
            "PointsReversed": 2,
        }
    )


# --- CustomerErased: tests/e2e/test_customer_data.py (every document of every service searched) -----------
