"""A shop's history imported into the four running services, then live orders: the figures worked out by hand.

The history is tests/fixtures/history/shopify_orders_export.csv with its customers export, its dates
moved forward so that the newest fixture day (2026-11-20) is yesterday: the test means the same
whenever it runs. `python -m services.orders.importer` runs as a process, as a shop owner runs it.

By hand, from DESIGN.md §7's defaults (1 point per EUR, tiers from the last 365 days' purchase points,
silver from 500 at ×1.25, points expiring after 365 days, a refund taking back floor(points × refunded
/ total)); "~N months" is the age of an order once the dates are moved:

  Eva (account 7001234567890 in the customers export)
    #1001 ~2.5 years ago 120.00      120 points, expired a year after          → 0
    #1009 ~7 months ago   80.00       80 points                                 → 80
    #1014 ~5 weeks ago    60.00       60 points, 20.00 refunded: −floor(60 × 20 / 60) = −20 → 40
    history: balance 120, bronze; 3 orders, spent 120 + 80 + 60 − 20 = 240.00
    live order 50.00 at bronze ×1: +50                                          → balance 170; 4 orders, 290.00
  Márta (account 7001234567891; the customers export writes her e-mail in capitals)
    #1006 ~3 months ago  600.00      600 points, silver from then on (≥ 500)
    #1011 ~3 weeks ago   100.00      floor(100 × 1.25) = 125
    history: balance 725, silver, 725 tier points; 2 orders, 700.00
    live order 40.00 at silver: floor(40 × 1.25) = 50                           → balance 775; 3 orders, 740.00
  Peter (a guest: guest:peter.horvath@example.com)
    #1002 ~22 months ago  45.50       45 points, expired                        → balance 0; 1 order, 45.50
  Jan (a guest) #1007 35.00, refunded in full: 35 − 35                          → balance 0; 1 order, 0.00
  A POS sale with no e-mail, #1008 ~3 months ago 18.00: a customer of that one order
    (guest:shopify:order:5600000001008)                                           → balance 18; 1 order, 18.00
  Skipped: #1003 (Shopify's test gateway), #1004 (pending), #1012 (expired): no customer, no member.
  Zoé's #1005 was cancelled: what each service makes of OrderCancelled is not asserted here (tests of
  the services that handle it do).

E-mails: none for the history (nor to the POS customer's stand-in address) — only the two live orders'
thank-you notes, one to Eva and one to Márta.
"""

import asyncio
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.events import LineItem
from tests.shop_day import order_placed
from tests.support.processes import ROOT, ServiceStack
from tests.support.smtp import SmtpInbox
from tests.support.tap import EventTap, eventually

HISTORY = Path(__file__).parents[1] / "fixtures" / "history"
FIXTURE_NEWEST_DAY = datetime(2026, 11, 20, tzinfo=UTC)
NOW = datetime.now(UTC).replace(microsecond=0)
SHIFT_DAYS = (NOW - timedelta(days=1) - FIXTURE_NEWEST_DAY).days
EVA, MARTA = "7001234567890", "7001234567891"
PETER, JAN = "guest:peter.horvath@example.com", "guest:jan.novak@example.cz"
POS = "guest:shopify:order:5600000001008"
_TIME = re.compile(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) ([+-]\d{4})")


@pytest.fixture(scope="module")
def stack_env(smtp: SmtpInbox) -> dict[str, str]:
    # E-mails go out within 0.2 s of being due, and expiry runs every half second: both would show at once.
    return {"SMTP_URL": smtp.url, "SCHEDULER_INTERVAL_SECONDS": "0.2", "EXPIRY_INTERVAL_SECONDS": "0.5"}


def moved_history(folder: Path) -> Path:
    """The fixture with every time moved forward by whole days, so its newest day is yesterday."""

    def move(match: re.Match[str]) -> str:
        moment = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S") + timedelta(days=SHIFT_DAYS)
        return f"{moment:%Y-%m-%d %H:%M:%S} {match[2]}"

    moved = folder / "orders_export.csv"
    text = (HISTORY / "shopify_orders_export.csv").read_text(encoding="utf-8")
    moved.write_text(_TIME.sub(move, text), encoding="utf-8")
    return moved


async def run_importer(stack: ServiceStack, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "RABBITMQ_URL": stack["orders"].env["RABBITMQ_URL"], "CRM_PREFIX": stack.topology.prefix}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.orders.importer",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def member(http: httpx.AsyncClient, stack: ServiceStack, customer_id: str) -> dict[str, Any] | None:
    answer = await http.get(f"{stack['loyalty'].url}/members/{customer_id}")
    return answer.json() if answer.status_code == 200 else None


async def customer(http: httpx.AsyncClient, stack: ServiceStack, customer_id: str) -> dict[str, Any] | None:
    answer = await http.get(f"{stack['orders'].url}/customers/{customer_id}")
    return answer.json() if answer.status_code == 200 else None


async def figures(http: httpx.AsyncClient, stack: ServiceStack, customer_id: str) -> tuple[Any, ...]:
    """(orders, spent in EUR, balance, tier) as the orders and loyalty services tell them."""
    profile, points = await customer(http, stack, customer_id), await member(http, stack, customer_id)
    return (
        profile and profile["orders_count"],
        profile and profile["total_spent"].get("EUR"),
        points and points["balance"],
        points and points["tier"],
    )


async def figures_become(
    http: httpx.AsyncClient, stack: ServiceStack, expected: dict[str, tuple[Any, ...]], timeout: float = 60
) -> None:
    async def all_match() -> bool:
        return {c: await figures(http, stack, c) for c in expected} == expected

    try:
        await eventually(all_match, timeout=timeout, interval=0.25)
    except TimeoutError:
        seen = {c: await figures(http, stack, c) for c in expected}
        raise AssertionError(f"figures {seen} are not {expected}") from None


async def test_a_shopify_history_then_live_orders_give_the_figures_worked_out_by_hand_and_no_email_for_history(
    stack: ServiceStack, tap: EventTap, http: httpx.AsyncClient, smtp: SmtpInbox, tmp_path: Path
) -> None:
    export = moved_history(tmp_path)
    customers = str(HISTORY / "shopify_customers_export.csv")
    code, out, err = await run_importer(stack, "shopify", str(export), "--customers", customers)
    assert code == 0, err
    assert "orders imported   9" in out
    assert "customers         6" in out
    assert "fulfilments       6" in out
    assert "refunds           2" in out
    assert "cancellations     1" in out
    assert "orders skipped    3:" in out
    for reason in ("test order", "unpaid (financial status pending)", "unpaid (financial status expired)"):
        assert reason in out
    assert "events published  18" in out
    assert "orders," in err  # the progress line, on stderr
    assert (tmp_path / "orders_export.csv.import-state.json").exists()

    await figures_become(
        http,
        stack,
        {
            EVA: (3, "240.00", 120, "bronze"),
            MARTA: (2, "700.00", 725, "silver"),
            PETER: (1, "45.50", 0, "bronze"),
            JAN: (1, "0.00", 0, "bronze"),
            POS: (1, "18.00", 18, "bronze"),
        },
    )
    marta = await member(http, stack, MARTA)
    assert marta is not None
    assert marta["tier_points"] == 725
    eva_profile = await customer(http, stack, EVA)
    assert eva_profile is not None
    first_order_at = datetime.fromisoformat(eva_profile["first_order_at"])
    # #1001's own date (2024-06-10 10:14:51 +0200), moved like the rest.
    assert first_order_at.replace(tzinfo=first_order_at.tzinfo or UTC) == datetime(
        2024, 6, 10, 8, 14, 51, tzinfo=UTC
    ) + timedelta(days=SHIFT_DAYS)
    for skipped in ("guest:owner@teapot.example", "guest:anna.kovacs@example.hu", "guest:laszlo@example.hu"):
        assert await customer(http, stack, skipped) is None
        assert await member(http, stack, skipped) is None

    # Importing again publishes nothing: the checkpoint says the file is done.
    code, out, err = await run_importer(stack, "shopify", str(export), "--customers", customers)
    assert code == 0, err
    assert "already imported before: nothing published" in out
    assert "events published  0" in out

    # Live orders: Eva at bronze, Márta at silver, as the shop's backend (or a webhook) tells them.
    live = [
        order_placed(EVA, "live-eva-1", [line("TEA-MATCHA", 1, "50.00")], at=NOW, email="eva@example.sk"),
        order_placed(MARTA, "live-marta-1", [line("CUP-WHITE", 1, "40.00")], at=NOW, email="marta.szabo@example.hu"),
    ]
    for event in live:
        await tap.publish(event)
    await figures_become(
        http,
        stack,
        {
            EVA: (4, "290.00", 170, "bronze"),
            MARTA: (3, "740.00", 775, "silver"),
            PETER: (1, "45.50", 0, "bronze"),
            JAN: (1, "0.00", 0, "bronze"),
        },
    )

    # E-mails: the live orders' thank-you notes and nothing about the history. Both notes arrive within
    # seconds; anything planned for the history (thank-you notes, feedback requests long due) would too.
    # The queue is first in, first out: once the live notes are out, followups has heard the whole history,
    # and what it planned says whether anything about the history will ever be mailed.
    await eventually(lambda: len(smtp.to("eva@example.sk")) >= 1 and len(smtp.to("marta.szabo@example.hu")) >= 1)
    planned = (await http.get(f"{stack['followups'].url}/followups", params={"limit": 500})).json()["followups"]
    assert {f["order_id"] for f in planned if f["channel"] == "email"} == {"live-eva-1", "live-marta-1"}
    assert sorted(message["To"] for message in smtp.messages) == ["eva@example.sk", "marta.szabo@example.hu"], [
        (message["To"], message["Subject"]) for message in smtp.messages
    ]


def line(sku: str, quantity: int, unit_price: str) -> LineItem:
    return LineItem(sku=sku, name=sku.title(), quantity=quantity, unit_price=Decimal(unit_price))
