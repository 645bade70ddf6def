"""Refer-a-friend end to end, with referrals, loyalty and followups running as real processes.

A customer gets a code, a new customer orders with it: one ReferralConverted,
and loyalty rewards both sides. A promoter's feedback brings one invitation,
which followups e-mails to a real (in-process) SMTP server.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from shared.events import Customer, LineItem, OrderPlaced, OrderPlacedEvent
from tests.support.processes import ServiceProcess, ServiceStack
from tests.support.smtp import SmtpInbox
from tests.support.tap import EventTap, eventually


@pytest.fixture(scope="module")
def stack_services() -> tuple[str, ...]:
    return ("referrals", "loyalty", "followups")


@pytest.fixture(scope="module")
def stack_env(smtp: SmtpInbox) -> dict[str, str]:
    return {"SMTP_URL": smtp.url, "SCHEDULER_INTERVAL_SECONDS": "0.2", "SHOP_NAME": "Teapot & Co"}


def order(customer_id: str, order_id: str, mail: str, code: str | None = None) -> OrderPlacedEvent:
    data = OrderPlaced(
        order_id=order_id,
        customer=Customer(customer_id=customer_id, email=mail, first_name=customer_id.title(), locale="en"),
        placed_at=datetime.now(UTC) - timedelta(minutes=1),
        currency="EUR",
        total=Decimal("42.00"),
        line_items=[LineItem(sku="TEA", name="Tea", quantity=2, unit_price=Decimal("21.00"))],
        referral_code=code,
    )
    return OrderPlacedEvent.new(data, source="shop", subject=customer_id)


async def has_consumed(process: ServiceProcess, event_type: str, count: int) -> bool:
    return await process.consumed(event_type) == count


async def test_a_friend_ordering_with_a_code_converts_once_and_loyalty_rewards_both(
    stack: ServiceStack, tap: EventTap, http: httpx.AsyncClient
) -> None:
    referrals = stack["referrals"]
    await tap.publish(order("cus-ada", "ord-ada-1", "ada@example.com"))
    await eventually(lambda: has_consumed(referrals, "OrderPlaced", 1))
    issued = await http.post(f"{referrals.url}/referrers/cus-ada/code")
    assert issued.status_code == 201, issued.text
    code = issued.json()["code"]

    friend = order("cus-ben", "ord-ben-1", "ben@example.com", code=code.lower())
    await tap.publish(friend)
    await tap.publish(friend)  # delivered twice
    [converted] = await tap.wait_for(lambda e: e["type"] == "ReferralConverted" and e["subject"] == "cus-ben")
    assert (converted["data"]["referrer_customer_id"], converted["data"]["program"]) == ("cus-ada", "customer")
    rewarded = await tap.wait_for(
        lambda e: e["type"] == "PointsAwarded" and e["data"]["reason"] == "referral", count=2, timeout=30
    )
    assert sorted((e["data"]["customer_id"], e["data"]["points"]) for e in rewarded) == [
        ("cus-ada", 500),
        ("cus-ben", 250),
    ]

    await tap.publish(order("cus-ada", "ord-ada-2", "ada@example.com", code=code))  # Ada's own order
    await eventually(lambda: has_consumed(referrals, "OrderPlaced", 4))
    page = (await http.get(f"{referrals.url}/referrals/{code}")).json()
    assert {r["order_id"]: (r["outcome"], r["reason"]) for r in page["referrals"]} == {
        "ord-ben-1": ("converted", None),
        "ord-ada-2": ("refused", "own_order"),
    }
    assert page["conversions"] == 1
    assert [e["data"]["order_id"] for e in tap.bodies("ReferralConverted")] == ["ord-ben-1"]


async def test_a_promoter_is_invited_once_and_followups_emails_the_invitation(
    stack: ServiceStack,
    tap: EventTap,
    smtp: SmtpInbox,
    http: httpx.AsyncClient,
) -> None:
    processes, inbox = stack, smtp
    await tap.publish(order("cus-pia", "ord-pia-1", "pia@example.com"))
    await eventually(lambda: inbox.to("pia@example.com"), timeout=30)  # the thank-you: followups knows her now

    happy = {"customer_id": "cus-pia", "ratings": {"overall": 5}, "nps": 10, "channel": "phone"}
    posted = await http.post(f"{processes['followups'].url}/feedback", json=happy)
    assert posted.status_code == 201, posted.text
    [invited] = await tap.wait_for(lambda e: e["type"] == "ReferralInvited" and e["subject"] == "cus-pia")
    code = invited["data"]["code"]
    assert invited["data"]["feedback_id"] == posted.json()["feedback_id"]
    await tap.wait_for(lambda e: e["type"] == "FollowUpSent" and e["data"]["kind"] == "referral_invite", timeout=30)
    [invitation] = inbox.to("pia@example.com", containing=code)
    assert "Teapot & Co" in invitation["Subject"]

    again = await http.post(f"{processes['followups'].url}/feedback", json=happy | {"nps": 9})
    assert again.status_code == 201, again.text
    await eventually(lambda: has_consumed(processes["referrals"], "FeedbackReceived", 2))
    listed = await http.get(f"{processes['followups'].url}/followups", params={"kind": "referral_invite"})
    planned = listed.json()["followups"]
    assert [(f["customer_id"], f["status"]) for f in planned] == [("cus-pia", "sent")]
    assert len([e for e in tap.bodies("ReferralInvited") if e["subject"] == "cus-pia"]) == 1
    assert len(inbox.to("pia@example.com", containing=code)) == 1
