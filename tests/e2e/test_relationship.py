"""Relationship memory across the four services as real processes: orders' RFM scoring moves a gold customer to
`at_risk` and followups opens a "slipping away" call with the brief to make it; a key account gets its review."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.test_flows import get, line
from tests.shop_day import order_placed
from tests.support.processes import ServiceStack
from tests.support.smtp import SmtpInbox
from tests.support.tap import EventTap, eventually

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def stack_env(smtp: SmtpInbox) -> dict[str, str]:
    # Orders scores only when the test asks (POST /segments/refresh); followups looks for due work every 0.2 s.
    return {"SMTP_URL": smtp.url, "SCHEDULER_INTERVAL_SECONDS": "0.2", "SEGMENT_INTERVAL_SECONDS": "3600"}


async def test_a_vip_slipping_away_gets_a_win_back_call_with_its_brief_and_a_key_account_its_review(
    stack: ServiceStack, tap: EventTap, http: httpx.AsyncClient
) -> None:
    orders, followups, loyalty = stack["orders"].url, stack["followups"].url, stack["loyalty"].url
    # Five customers, so the quintiles say something: the VIP ordered a lot, long ago (recency 1, frequency 4:
    # at risk); the champion often and lately (5, 4); three others once each, lately.
    plan: list[tuple[str, int, str]] = [("vip", days, "400.00") for days in (300, 290, 280, 270)]
    plan += [("champ", days, "20.00") for days in (10, 8, 6, 4)]
    plan += [("new1", 30, "15.00"), ("new2", 20, "15.00"), ("new3", 15, "15.00")]
    for number, (customer, days, price) in enumerate(plan):
        event = order_placed(
            f"rel-{customer}",
            f"rel-{customer}-{number}",
            [line("POT-CAST", 1, price)],
            at=NOW - timedelta(days=days),
            first_name=customer.title(),
            city="Pécs",
            locale="hu",
        )
        await tap.publish(event)

    async def counted() -> bool:
        answer = await http.get(f"{orders}/customers/rel-vip")
        return answer.status_code == 200 and answer.json()["orders_count"] == 4

    await eventually(counted, timeout=30)
    for customer, count in (("champ", 4), ("new1", 1), ("new2", 1), ("new3", 1)):
        await eventually(lambda c=customer, n=count: _has_orders(http, orders, f"rel-{c}", n), timeout=30)

    async def gold() -> bool:  # 400 + 400 + 500 + 500 purchase points (silver ×1.25 from the third)
        member = await http.get(f"{loyalty}/members/rel-vip")
        return member.status_code == 200 and member.json()["tier"] == "gold"

    await eventually(gold, timeout=30)

    refreshed = await http.post(f"{orders}/segments/refresh")
    assert refreshed.json() == {"scored": 5}
    [moved] = await tap.wait_for(lambda e: e["type"] == "CustomerSegmentChanged" and e["subject"] == "rel-vip")
    assert moved["data"]["to_segment"] == "at_risk"
    assert "from_segment" not in moved["data"] or moved["data"]["from_segment"] is None

    async def win_back() -> list[dict[str, Any]]:
        listed = await get(http, f"{followups}/followups", kind="win_back", status="due")
        return [f for f in listed["followups"] if f["customer_id"] == "rel-vip"]

    [call] = await eventually(win_back, timeout=30)
    assert (call["followup_id"], call["channel"], call["status"]) == ("win_back:rel-vip:1", "person", "pending")
    assert call["customer"]["first_name"] == "Vip"

    async def tier_known() -> dict[str, Any] | None:
        brief: dict[str, Any] = await get(http, f"{followups}/customers/rel-vip/brief")
        return brief if brief["loyalty"]["tier"] == "gold" else None

    brief = await eventually(tier_known, timeout=30)
    assert (brief["first_name"], brief["city"], brief["language"]) == ("Vip", "Pécs", "hu")
    assert brief["orders"]["count"] == 4
    assert brief["orders"]["last_order"]["order_id"] == "rel-vip-3"
    assert brief["loyalty"]["balance"] == 1800
    assert (brief["account"]["segment"], brief["account"]["slipping_away"]) == ("at_risk", True)
    assert brief["account"]["key_account"] is False  # gold is not the top tier
    assert [t["followup_id"] for t in brief["open_tasks"] if t["kind"] == "win_back"] == ["win_back:rel-vip:1"]

    async def review() -> list[dict[str, Any]]:
        listed = await get(http, f"{followups}/followups", kind="review")
        return [f for f in listed["followups"] if f["customer_id"] == "rel-champ"]

    [task] = await eventually(review, timeout=30)
    assert (task["followup_id"], task["status"]) == ("review:rel-champ:1", "pending")
    champ = await get(http, f"{followups}/customers/rel-champ/brief")
    assert (champ["account"]["segment"], champ["account"]["key_account"]) == ("champions", True)

    # Nobody else slipped or became a key account, and scoring again (nobody moved) opens nothing more.
    await http.post(f"{orders}/segments/refresh")
    everything = (await get(http, f"{followups}/followups", limit=500))["followups"]
    opened = sorted(f["followup_id"] for f in everything if f["kind"] in ("win_back", "review"))
    assert opened == ["review:rel-champ:1", "win_back:rel-vip:1"]


async def _has_orders(http: httpx.AsyncClient, orders: str, customer_id: str, count: int) -> bool:
    answer = await http.get(f"{orders}/customers/{customer_id}")
    return answer.status_code == 200 and answer.json()["orders_count"] == count
