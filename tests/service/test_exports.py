"""Each service's `GET /customers/{customer_id}/export` against the real broker and MongoDB (issue 15, GDPR Art. 15
and 20): everything the service holds on the customer and nothing on anyone else, for an admin key only, 404 once
it holds nothing (never heard of them, or erased), and each export left in the audit trail."""

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from services.followups.app import SPEC as FOLLOWUPS
from services.followups.settings import FollowupsSettings
from services.loyalty.app import SPEC as LOYALTY
from services.loyalty.settings import LoyaltySettings
from services.orders.app import SPEC as ORDERS
from services.orders.settings import OrdersSettings
from services.referrals.app import SPEC as REFERRALS
from services.referrals.settings import ReferralsSettings
from shared.aliases import erased_alias
from shared.events import (
    CustomerErased,
    CustomerErasedEvent,
    FeedbackReceived,
    FeedbackReceivedEvent,
    LineItem,
    OrderRefunded,
    OrderRefundedEvent,
    Ratings,
    ShippingAddress,
)
from shared.keys import new_key
from shared.service import Runtime
from shared.settings import ServiceSettings
from tests.service.delivery import deliver
from tests.shop_day import order_fulfilled, order_placed
from tests.support.running import running_service
from tests.support.tap import EventTap, eventually

ADMIN = {"Authorization": "Bearer test-admin-key"}
WRITER, WRITER_ENTRY = new_key("console", "write")
NOW = datetime.now(UTC).replace(microsecond=0)
EVA = {"email": "eva.novak@example.org", "first_name": "Eva", "last_name": "Nováková", "phone": "+421911222333"}
ADDRESS = ShippingAddress(line1="Hlavná 5", postal_code="040 01", city="Košice", country="SK")

Service = tuple[Runtime, httpx.AsyncClient]


@pytest.fixture
def keyed(settings: ServiceSettings) -> dict[str, Any]:
    """The common settings with a second key, of write scope: enough to change things, not to export."""
    return settings.model_dump() | {"api_keys": WRITER_ENTRY}


@pytest.fixture
async def orders(service_name: str, keyed: dict[str, Any]) -> AsyncIterator[Service]:
    own = OrdersSettings(**keyed, segment_interval_seconds=3600)
    async with running_service(replace(ORDERS, name=service_name), own) as running:
        yield running


@pytest.fixture
async def followups(service_name: str, keyed: dict[str, Any]) -> AsyncIterator[Service]:
    own = FollowupsSettings(**keyed, feedback_token_secret="export-test-secret", scheduler_interval_seconds=3600)
    async with running_service(replace(FOLLOWUPS, name=service_name), own) as running:
        yield running


@pytest.fixture
async def loyalty(service_name: str, keyed: dict[str, Any]) -> AsyncIterator[Service]:
    own = LoyaltySettings(**keyed, expiry_interval_seconds=3600)
    async with running_service(replace(LOYALTY, name=service_name), own) as running:
        yield running


@pytest.fixture
async def referrals(service_name: str, keyed: dict[str, Any]) -> AsyncIterator[Service]:
    async with running_service(replace(REFERRALS, name=service_name), ReferralsSettings(**keyed)) as running:
        yield running


def mugs(quantity: int) -> list[LineItem]:
    return [LineItem(sku="MUG", name="Red mug", quantity=quantity, unit_price=Decimal("20.00"), category="kitchen")]


def refunded(customer_id: str, order_id: str, amount: str, reason: str | None = None) -> OrderRefundedEvent:
    data = OrderRefunded(
        refund_id=f"r-{order_id}",
        order_id=order_id,
        customer_id=customer_id,
        amount=Decimal(amount),
        currency="EUR",
        refunded_at=NOW - timedelta(days=1),
        reason=reason,
    )
    return OrderRefundedEvent.new(data, source="shop", subject=customer_id)


def feedback(customer_id: str, order_id: str, nps: int, comment: str) -> FeedbackReceivedEvent:
    data = FeedbackReceived(
        feedback_id=f"fb-{order_id}",
        customer_id=customer_id,
        order_id=order_id,
        ratings=Ratings(overall=5),
        nps=nps,
        comment=comment,
        channel="email",
        received_at=NOW - timedelta(hours=1),
    )
    return FeedbackReceivedEvent.new(data, source="followups", subject=customer_id)


def erased(customer_id: str) -> CustomerErasedEvent:
    data = CustomerErased(customer_id=customer_id, requested_at=NOW)
    return CustomerErasedEvent.new(data, source="orders", subject=customer_id)


async def export(http: httpx.AsyncClient, customer_id: str) -> dict[str, Any]:
    answer = await http.get(f"/customers/{customer_id}/export", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def only_admins_export_and_each_export_is_audited(http: httpx.AsyncClient, customer_id: str) -> None:
    path = f"/customers/{customer_id}/export"
    assert (await http.get(path)).status_code == 401
    refused = await http.get(path, headers={"Authorization": f"Bearer {WRITER}"})
    assert (refused.status_code, refused.json()) == (
        403,
        {"detail": "the key 'console' has the write scope; this needs admin"},
    )
    unknown = await http.get("/customers/nobody-here/export", headers=ADMIN)
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "customer_id: 'nobody-here' is not known"})
    trail = (await http.get("/audit", headers=ADMIN, params={"target": customer_id})).json()
    exports = [r for r in trail if r["action"] == "GET /customers/{customer_id}/export"]
    assert [(r["actor"], r["target"]) for r in exports] == [("admin", {"customer_id": customer_id})]


async def erased_holds_nothing(rt: Runtime, http: httpx.AsyncClient, tap: EventTap, customer_id: str) -> None:
    await deliver(rt, tap, erased(customer_id))
    gone = await http.get(f"/customers/{customer_id}/export", headers=ADMIN)
    assert (gone.status_code, gone.json()) == (404, {"detail": f"customer_id: {customer_id!r} was erased"})
    trail = (await http.get("/audit", headers=ADMIN, params={"target": erased_alias(customer_id)})).json()
    assert {r["action"] for r in trail} >= {"GET /customers/{customer_id}/export"}  # the export, named by the alias


# --- orders ---------------------------------------------------------------------------------------------------


async def test_orders_exports_the_profile_and_every_order_as_told_with_its_refunds(
    orders: Service, tap: EventTap
) -> None:
    rt, http = orders
    placed_at = NOW - timedelta(days=3)
    await deliver(
        rt,
        tap,
        order_placed("cus-eva", "o-eva-1", mugs(2), at=placed_at, shipping_address=ADDRESS, city="Košice", **EVA),
        order_fulfilled("cus-eva", "o-eva-1", at=NOW - timedelta(days=2)),
        refunded("cus-eva", "o-eva-1", "5.00", reason="one mug chipped"),
        order_placed("cus-other", "o-other-1", mugs(1), at=placed_at),
    )
    got = await export(http, "cus-eva")
    assert got["customer_id"] == "cus-eva"
    profile = got["profile"]
    assert profile["contact"] == EVA | {"city": "Košice"}
    assert (profile["orders_count"], profile["total_spent"], profile["refunded"]) == (
        1,
        {"EUR": "35.00"},
        {"EUR": "5.00"},
    )
    [order] = got["orders"]
    assert (order["order_id"], order["total"], order["currency"]) == ("o-eva-1", "40.00", "EUR")
    assert datetime.fromisoformat(order["placed_at"]) == placed_at
    assert order["customer"]["phone"] == EVA["phone"]
    assert order["shipping_address"]["line1"] == "Hlavná 5"
    assert order["items"] == [
        {"sku": "MUG", "name": "Red mug", "quantity": 2, "unit_price": "20.00", "category": "kitchen"}
    ]
    assert datetime.fromisoformat(order["fulfilled_at"]) == NOW - timedelta(days=2)
    assert [(r["refund_id"], r["amount"], r["reason"]) for r in order["refunds"]] == [
        ("r-o-eva-1", "5.00", "one mug chipped")
    ]
    assert "cus-other" not in str(got)
    await only_admins_export_and_each_export_is_audited(http, "cus-eva")

    assert (await http.post("/customers/cus-eva/erase", headers=ADMIN)).status_code == 202
    gone = await http.get("/customers/cus-eva/export", headers=ADMIN)
    assert (gone.status_code, gone.json()) == (404, {"detail": "customer_id: 'cus-eva' was erased"})


# --- followups ------------------------------------------------------------------------------------------------


async def test_followups_exports_contact_orders_followups_feedback_and_escalations(
    followups: Service, tap: EventTap
) -> None:
    rt, http = followups
    await deliver(
        rt,
        tap,
        order_placed("cus-eva", "o-eva-1", mugs(1), at=NOW - timedelta(days=20), city="Košice", **EVA),
        order_fulfilled("cus-eva", "o-eva-1", at=NOW - timedelta(days=16)),
        order_placed("cus-other", "o-other-1", mugs(1), at=NOW - timedelta(days=20)),
    )
    unhappy = {"customer_id": "cus-eva", "order_id": "o-eva-1", "ratings": {"overall": 1}, "nps": 2}
    posted = await http.post("/feedback", json=unhappy | {"comment": "The mug was cracked."}, headers=ADMIN)
    assert posted.status_code == 201, posted.text
    escalation_id = posted.json()["escalation_id"]
    resolution = {"note": "Called Eva, new mug on its way."}
    assert (await http.post(f"/escalations/{escalation_id}/resolve", json=resolution, headers=ADMIN)).status_code == 200
    assert (
        await http.post("/followups/call:cus-eva/done", json={"note": "Eva loves green tea."}, headers=ADMIN)
    ).status_code == 200

    got = await export(http, "cus-eva")
    assert (got["customer_id"], got["contact"]["email"], got["contact"]["phone"]) == (
        "cus-eva",
        EVA["email"],
        EVA["phone"],
    )
    assert datetime.fromisoformat(got["first_order_at"]) == NOW - timedelta(days=20)
    assert [(o["order_id"], o["total"], o["refunds"]) for o in got["orders"]] == [("o-eva-1", "20.00", [])]
    kinds = {f["followup_id"]: (f["kind"], f["status"], f["note"]) for f in got["followups"]}
    assert kinds == {
        "thank_you:o-eva-1": ("thank_you", "pending", None),
        "feedback_request:o-eva-1": ("feedback_request", "pending", None),
        "call:cus-eva": ("call", "done", "Eva loves green tea."),
    }
    [given] = got["feedback"]
    assert (given["comment"], given["nps"], given["ratings"]["overall"], given["followup_id"]) == (
        "The mug was cracked.",
        2,
        1,
        None,
    )
    [escalation] = got["escalations"]
    assert (escalation["escalation_id"], escalation["note"]) == (escalation_id, resolution["note"])
    assert escalation["resolved_at"] is not None
    assert "cus-other" not in str(got)
    await only_admins_export_and_each_export_is_audited(http, "cus-eva")
    await erased_holds_nothing(rt, http, tap, "cus-eva")


# --- loyalty --------------------------------------------------------------------------------------------------


async def test_loyalty_exports_the_member_the_whole_ledger_and_what_it_was_worked_out_from(
    loyalty: Service, tap: EventTap
) -> None:
    rt, http = loyalty
    await deliver(
        rt,
        tap,
        order_placed("cus-eva", "o-eva-1", mugs(10), at=NOW - timedelta(days=5), **EVA),
        refunded("cus-eva", "o-eva-1", "20.00"),
        feedback("cus-eva", "o-eva-1", 10, "Lovely mugs, and so well packed."),
        order_placed("cus-other", "o-other-1", mugs(1), at=NOW - timedelta(days=5)),
    )
    reward = await http.post("/rewards", json={"name": "Tea towel", "points_price": 100}, headers=ADMIN)
    assert reward.status_code == 201, reward.text
    reward_id = reward.json()["reward_id"]
    taken = await http.post(
        "/members/cus-eva/redemptions", json={"reward_id": reward_id}, headers=ADMIN | {"Idempotency-Key": "k1"}
    )
    assert taken.status_code == 201, taken.text

    got = await export(http, "cus-eva")
    # 200 purchase points, 20 reversed for the €20 refund, 50 for the review, 20 for the NPS answer, 100 spent.
    assert got["member"] == {"balance": 150, "tier": "bronze", "tier_points": 180}
    ledger = [(e["kind"], e["reason"], e["points"]) for e in got["ledger"]]
    assert ledger[-1] == ("redeem", "redemption", -100)
    assert sorted(ledger[:-1]) == [  # the three events came in one batch: entries of one moment
        ("earn", "purchase", 200),
        ("earn", "review", 50),
        ("earn", "survey", 20),
        ("reverse", "refund", -20),
    ]
    assert sum(e["points"] for e in got["ledger"]) == got["member"]["balance"]
    assert [(p["order_id"], p["total"]) for p in got["purchases"]] == [("o-eva-1", "200.00")]
    assert [(r["refund_id"], r["amount"]) for r in got["refunds"]] == [("r-o-eva-1", "20.00")]
    assert sorted((a["reason"], a["points"]) for a in got["activities"]) == [("review", 50), ("survey", 20)]
    assert [(r["reward_id"], r["points"]) for r in got["redemptions"]] == [(reward_id, 100)]
    assert "cus-other" not in str(got)
    await only_admins_export_and_each_export_is_audited(http, "cus-eva")
    await erased_holds_nothing(rt, http, tap, "cus-eva")


# --- referrals ------------------------------------------------------------------------------------------------


async def test_referrals_exports_codes_referrals_both_ways_and_affiliate_commissions(
    referrals: Service, tap: EventTap
) -> None:
    rt, http = referrals
    await deliver(rt, tap, order_placed("cus-ref", "o-ref-1", mugs(1), at=NOW - timedelta(days=9)))
    issued = await http.post("/referrers/cus-ref/code", headers=ADMIN)
    assert issued.status_code == 201, issued.text
    code = issued.json()["code"]
    partner = {"name": "Eva's tea blog", "email": "blog@example.org", "customer_id": "cus-eva"}
    enrolled = await http.post("/affiliates", json=partner, headers=ADMIN)
    assert enrolled.status_code == 201, enrolled.text
    affiliate = enrolled.json()
    await deliver(
        rt,
        tap,
        order_placed(
            "cus-eva", "o-eva-1", mugs(2), at=NOW - timedelta(days=3), code=code, shipping_address=ADDRESS, **EVA
        ),
        order_placed("cus-reader", "o-reader-1", mugs(5), at=NOW - timedelta(days=2), code=affiliate["code"]["code"]),
    )

    async def converted() -> bool:
        page = (await http.get(f"/referrals/{code}", headers=ADMIN)).json()
        return page["conversions"] == 1

    await eventually(converted)
    got = await export(http, "cus-eva")
    assert got["customer_id"] == "cus-eva"
    assert (got["customer"]["first_order_id"], got["customer"]["emails"]) == ("o-eva-1", [EVA["email"]])
    assert (got["codes"], got["as_referrer"], got["invitations"]) == ([], [], [])
    [referred] = got["as_referee"]
    assert (referred["code"], referred["referrer_customer_id"], referred["outcome"]) == (code, "cus-ref", "converted")
    assert referred["referee_email"] == EVA["email"]
    assert [a["affiliate_id"] for a in got["affiliates"]] == [affiliate["affiliate_id"]]
    [commission] = got["commissions"]
    assert (commission["referee_customer_id"], commission["commission"]) == ("cus-reader", "10.00")

    referrer = await export(http, "cus-ref")
    assert [(c["code"], c["status"], c["conversions"]) for c in referrer["codes"]] == [(code, "active", 1)]
    assert [(r["order_id"], r["outcome"]) for r in referrer["as_referrer"]] == [("o-eva-1", "converted")]
    assert "referee_email" not in referrer["as_referrer"][0]  # the friend's identities are theirs, not the referrer's
    assert referrer["as_referee"] == []
    await only_admins_export_and_each_export_is_audited(http, "cus-eva")
    await erased_holds_nothing(rt, http, tap, "cus-eva")
