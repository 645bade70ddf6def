"""The owner's console in a real browser (Debian's Chromium), in front of the four services as real processes.

A shop with a call due, an unhappy customer and a happy one is made through the event contract and the
services' own APIs; then the owner (and a staff member) use the console as they would each morning.
"""

import asyncio
import json
import os
import re
import sys
from asyncio.subprocess import PIPE
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from playwright.async_api import Page, expect

from shared.events import LineItem
from tests.e2e.conftest import ADMIN_KEY, CONSOLE_OWNER
from tests.shop_day import order_fulfilled, order_placed
from tests.support.browser import accessibility_violations, describe, screenshot
from tests.support.processes import ROOT, ServiceProcess, ServiceStack
from tests.support.smtp import mail_catcher
from tests.support.tap import EventTap, eventually

NOW = datetime.now(UTC).replace(microsecond=0)
CALLED = "cus_console_jana"  # her call is due: fulfilled 15 days ago
UNHAPPY = "cus_console_peter"  # rated 1 of 5: an open escalation
HAPPY = "cus_console_eva"  # NPS 10: invited to refer friends
STAFF = ("staff@teapot.example", "the staff password")


@pytest.fixture(scope="module")
def mail_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mail")


@pytest.fixture(scope="module")
def catcher(mail_folder: Path) -> Iterator[str]:
    with mail_catcher(mail_folder) as url:
        yield url


@pytest.fixture(scope="module")
def stack_env(catcher: str) -> dict[str, str]:
    return {
        "SMTP_URL": catcher,
        "SCHEDULER_INTERVAL_SECONDS": "0.2",
        "SHOP_NAME": "Teapot & Co",
        "FEEDBACK_TOKEN_SECRET": "e2e-console-links",  # relationship mail carries a signed unsubscribe link
    }


@pytest.fixture(scope="module")
def console_env(mail_folder: Path) -> dict[str, str]:
    return {"MAIL_FOLDER": str(mail_folder)}


def mug(quantity: int = 1) -> LineItem:
    return LineItem(sku="MUG-RED", name="Red mug", quantity=quantity, unit_price=Decimal("12.50"))


@pytest.fixture(scope="module")
async def shop(infra: Any, stack: ServiceStack, console: ServiceProcess) -> ServiceProcess:
    """The shop's morning: Jana's call due, Peter waiting for an answer, Eva invited to refer friends."""
    tap = await EventTap.open(infra.rabbitmq_url, stack.topology)
    placed = NOW - timedelta(days=20)
    people = {
        CALLED: {"first_name": "Jana", "last_name": "Nováková", "phone": "+421900123456", "city": "Košice"},
        UNHAPPY: {"first_name": "Peter", "last_name": "Horváth", "phone": "+421900654321", "city": "Prešov"},
        HAPPY: {"first_name": "Eva", "last_name": "Kováčová", "city": "Žilina"},
    }
    for number, (customer_id, person) in enumerate(people.items(), start=1):
        order_id = f"ord_console_{number}"
        await tap.publish(order_placed(customer_id, order_id, [mug(number)], at=placed, **person))
        await tap.publish(order_fulfilled(customer_id, order_id, at=NOW - timedelta(days=15)))
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10) as http:

        async def heard() -> bool:
            due = await http.get(f"{stack['followups'].url}/followups", params={"status": "due", "kind": "call"})
            member = await http.get(f"{stack['loyalty'].url}/members/{CALLED}")
            profile = await http.get(f"{stack['orders'].url}/customers/{HAPPY}")
            calls = {f["customer_id"] for f in due.json()["followups"]}
            return CALLED in calls and member.status_code == 200 and profile.status_code == 200

        await eventually(heard, timeout=60)
        for customer_id, order_id, overall, nps in ((UNHAPPY, "ord_console_2", 1, 2), (HAPPY, "ord_console_3", 5, 10)):
            feedback = {"customer_id": customer_id, "order_id": order_id, "ratings": {"overall": overall}, "nps": nps}
            feedback["comment"] = "The mug arrived broken." if overall == 1 else "Lovely mug, thank you!"
            answer = await http.post(f"{stack['followups'].url}/feedback", json=feedback)
            assert answer.status_code == 201, answer.text

        async def answered() -> bool:
            open_ = await http.get(f"{stack['followups'].url}/escalations", params={"open": "true"})
            invited = await http.get(
                f"{stack['followups'].url}/followups", params={"kind": "referral_invite", "status": "sent"}
            )
            return bool(open_.json()["escalations"]) and bool(invited.json()["followups"])

        await eventually(answered, timeout=60)
    await tap.close()
    await set_aside_in_loyalty(infra.rabbitmq_url, stack)
    env = {**console.env, "CONSOLE_NEW_PASSWORD": STAFF[1]}
    command = ["-m", "services.console", "add-user", "--email", STAFF[0], "--name", "Staff", "--role", "staff"]
    added = await asyncio.create_subprocess_exec(sys.executable, *command, cwd=ROOT, env=env, stderr=PIPE)
    _, errors = await asyncio.wait_for(added.communicate(), timeout=60)
    assert added.returncode == 0, errors.decode()
    return console


POISON = "evt_console_float_money"  # an OrderPlaced whose total is a float: loyalty sets it aside


async def set_aside_in_loyalty(rabbitmq_url: str, stack: ServiceStack) -> None:
    """A message loyalty cannot take (money as a float), straight to its queue: it is dead-lettered at once."""
    body = json.loads(order_placed("cus_console_float", "ord_console_float", [mug()], at=NOW).model_dump_json())
    body["id"], body["data"]["total"] = POISON, 12.5
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        message = aio_pika.Message(
            json.dumps(body).encode(), content_type="application/json", message_id=POISON, type="OrderPlaced"
        )
        await channel.default_exchange.publish(message, routing_key=stack.topology.queue_name("loyalty"))
        dlq = stack.topology.dead_letter_queue("loyalty").name

        async def set_aside() -> bool:
            declared = await channel.declare_queue(dlq, passive=True)
            return (declared.declaration_result.message_count or 0) == 1

        await eventually(set_aside, timeout=30)


async def signed_in(page: Page, console: ServiceProcess, who: tuple[str, str] = CONSOLE_OWNER) -> Page:
    await page.goto(f"{console.url}/login")
    await page.get_by_label("E-mail address").fill(who[0])
    await page.get_by_label("Password").fill(who[1])
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(f"{console.url}/today")
    return page


async def accessible(page: Page) -> None:
    violations = await accessibility_violations(page)
    assert violations == [], describe(violations)


async def test_today_shows_the_call_due_with_its_brief(page: Page, shop: ServiceProcess) -> None:
    await signed_in(page, shop)
    call = page.locator("section", has=page.get_by_role("heading", name="Calls due")).locator("li.task").first
    await expect(call.get_by_role("link", name="Jana Nováková")).to_be_visible()
    await expect(call).to_contain_text("+421900123456")
    await expect(call).to_contain_text("€12.50")  # her last order
    await expect(call).to_contain_text("Bronze · 12 points")  # her tier and balance
    await expect(call).to_contain_text("due 1 day ago")
    await accessible(page)


PAGES = ["today", "customers", f"customers/{CALLED}", "programs", "reports", "operations", "mail", "settings"]


@pytest.mark.parametrize("language", ["en", "fa"])
async def test_every_page_is_accessible_and_kept_as_a_screenshot(
    page: Page, shop: ServiceProcess, language: str
) -> None:
    await page.goto(f"{shop.url}/login?lang={language}")
    await screenshot(page, f"console-sign-in-{language}")
    await accessible(page)
    await signed_in(page, shop) if language == "en" else await _signed_in_in(page, shop, language)
    for name in PAGES:
        await page.goto(f"{shop.url}/{name}")
        await expect(page.locator("html")).to_have_attribute("lang", language)
        await screenshot(page, f"console-{name.split('/')[0]}-{language}")
        await accessible(page)
    if language != "en":
        await _choose(page, "en")


async def _signed_in_in(page: Page, console: ServiceProcess, language: str) -> None:
    await signed_in(page, console)
    await _choose(page, language)


async def _choose(page: Page, language: str) -> None:
    await page.locator("#language").select_option(language)
    await page.locator("header.top form.inline button").first.click()
    await expect(page.locator("html")).to_have_attribute("lang", language)


async def test_keyboard_alone_reaches_the_outcome_buttons_with_the_focus_visible(
    page: Page, shop: ServiceProcess
) -> None:
    await signed_in(page, shop)
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent.trim()") == "Skip to the page"
    reached: list[str] = []
    for _ in range(80):
        await page.keyboard.press("Tab")
        label = await page.evaluate(
            "(() => { const e = document.activeElement; return e.tagName + ':' + (e.textContent || '').trim(); })()"
        )
        if label.startswith("BODY"):  # past the last control
            break
        reached.append(label)
        outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none", f"no visible focus on {label}"
    assert reached[0] == "A:Today"
    talked = reached.index("BUTTON:Talked to them")
    assert reached.index("A:Jana Nováková") < reached.index("TEXTAREA:") < talked
    assert reached[talked + 1 : talked + 4] == ["BUTTON:No answer", "BUTTON:Left a voicemail", "BUTTON:Wrong number"]


async def test_logging_the_call_takes_it_off_today_and_the_customer_page_shows_the_note(
    page: Page, shop: ServiceProcess
) -> None:
    await signed_in(page, shop)
    calls = page.locator("section", has=page.get_by_role("heading", name="Calls due"))
    call = calls.locator("li.task", has=page.get_by_role("link", name="Jana Nováková"))
    await call.get_by_label("What they said").fill("Loves the red mug; wants a matching teapot.")
    await call.get_by_label("Something to remember about them").fill("Daughter Lili starts school in September")
    await call.get_by_label("What kind of fact").select_option("family")
    await call.get_by_role("button", name="Talked to them").click()
    await expect(page.get_by_role("status")).to_have_text("The call is logged.")
    await expect(page.get_by_role("link", name="Jana Nováková")).to_have_count(0)
    await page.goto(f"{shop.url}/customers/{CALLED}")
    remembered = page.locator("section", has=page.get_by_role("heading", name="What to remember"))
    await expect(remembered.locator("input[value='Daughter Lili starts school in September']")).to_have_count(1)
    timeline = page.locator("section", has=page.get_by_role("heading", name="Everything that happened"))
    await expect(timeline).to_contain_text("Talked to them · Loves the red mug; wants a matching teapot.")
    await accessible(page)
    # The fact is edited in place, and the next brief says it as edited.
    await remembered.locator("input[value='Daughter Lili starts school in September']").fill("Lili started school")
    await remembered.get_by_role("button", name="Save").first.click()
    await expect(page.get_by_role("status")).to_have_text("Remembered.")
    await expect(remembered.locator("input[value='Lili started school']")).to_have_count(1)


async def test_resolving_the_escalation_takes_it_off_today(page: Page, shop: ServiceProcess) -> None:
    await signed_in(page, shop)
    waiting = page.locator("section", has=page.get_by_role("heading", name="Unhappy customers waiting for an answer"))
    escalation = waiting.locator("li.task", has=page.get_by_role("link", name="Peter Horváth"))
    await expect(escalation).to_contain_text("min left")
    await escalation.get_by_role("button", name="Resolve").click()  # without saying what was done: refused
    await expect(escalation.locator(".field-error")).to_have_text("Write what was done for the customer.")
    await expect(escalation.get_by_label("What was done for them")).to_have_attribute("aria-invalid", "true")
    await escalation.get_by_label("What was done for them").fill("Called him, sent a new mug.")
    await escalation.get_by_role("button", name="Resolve").click()
    await expect(page.get_by_role("status")).to_have_text("Resolved. The customer is off the list.")
    await expect(waiting).to_contain_text("Nobody is waiting for an answer.")


@pytest.mark.parametrize(
    "typed", ["jana", "Jana Nov", "cus_console_jana@example.com", "+421 900 123 456", "ord_console_1"]
)
async def test_search_finds_a_customer_by_what_the_owner_knows(page: Page, shop: ServiceProcess, typed: str) -> None:
    await signed_in(page, shop)
    await page.goto(f"{shop.url}/customers")
    await page.get_by_label("Find a customer").fill(typed)
    await page.get_by_role("button", name="Find").click()
    found = page.locator("table tbody tr")
    await expect(found).to_have_count(1)
    await expect(found.get_by_role("link", name="Jana Nováková")).to_be_visible()


async def test_customers_are_listed_by_tier_and_the_report_counts_them(page: Page, shop: ServiceProcess) -> None:
    await signed_in(page, shop)
    await page.goto(f"{shop.url}/customers")
    await page.get_by_label("Tier").select_option("bronze")
    await page.get_by_role("button", name="Find").click()
    await expect(page.get_by_role("heading", name="Bronze")).to_be_visible()
    await expect(page.locator("table tbody tr")).to_have_count(3)  # Jana, Peter and Eva, each with some points
    await page.goto(f"{shop.url}/reports")
    tiers = page.locator("section", has=page.get_by_role("heading", name="Members per tier"))
    await tiers.get_by_text("The numbers").click()
    await expect(tiers.locator("tbody tr", has_text="Bronze")).to_contain_text("3")


async def test_a_staff_member_cannot_reach_settings(page: Page, shop: ServiceProcess) -> None:
    await signed_in(page, shop, STAFF)
    await expect(page.get_by_role("link", name="Settings")).to_have_count(0)
    answer = await page.goto(f"{shop.url}/settings")
    assert answer is not None
    assert answer.status == 403
    await expect(page.get_by_role("heading", level=1)).to_have_text("Only an owner can do this.")


async def test_staff_adjusts_points_with_a_reason_and_a_bad_value_names_the_field(
    page: Page, shop: ServiceProcess, stack: ServiceStack
) -> None:
    await signed_in(page, shop, STAFF)
    await page.goto(f"{shop.url}/customers/{HAPPY}")
    points = page.locator("section", has=page.get_by_role("heading", name="Points and rewards"))
    balance = points.locator("dt:text-is('Balance') + dd")
    before = int((await balance.inner_text()).replace(",", ""))
    form = points.locator("form", has=page.get_by_role("button", name="Adjust the points"))
    await form.get_by_label("Points (a minus takes them away)").fill("a lot")
    await form.get_by_label("Why, in your words").fill("Parcel lost in the post")
    await form.get_by_role("button", name="Adjust the points").click()
    field = page.get_by_label("Points (a minus takes them away)")
    await expect(field).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#adjust-points-error")).to_have_text(
        "Points: a whole number from -1,000,000 to 1,000,000, not 0."
    )
    await expect(page.get_by_label("Why, in your words")).to_have_value("Parcel lost in the post")  # kept
    await accessible(page)
    await field.fill("100")
    await form.get_by_role("button", name="Adjust the points").click()
    await expect(page.get_by_role("status")).to_have_text("The points are adjusted.")
    await expect(balance).to_have_text(f"{before + 100:,}")
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10) as http:
        audit = (await http.get(f"{stack['loyalty'].url}/audit")).json()
    made = [r for r in audit if r["action"] == "POST /members/{customer_id}/adjustments"]
    assert [r["target"] for r in made] == [{"customer_id": HAPPY}]
    assert made[0]["actor"].endswith(f"<{STAFF[0]}>")  # in the staff member's name: admin/Staff <e-mail>


async def test_persian_is_right_to_left(page: Page, shop: ServiceProcess) -> None:
    await signed_in(page, shop, STAFF)
    await page.get_by_label("Language").select_option("fa")
    await page.get_by_role("button", name="Switch").click()
    html = page.locator("html")
    await expect(html).to_have_attribute("dir", "rtl")
    await expect(html).to_have_attribute("lang", "fa")
    nav = await page.locator("header.top nav").bounding_box()
    brand = await page.locator("header.top .brand").bounding_box()
    assert nav is not None
    assert brand is not None
    assert brand["x"] > nav["x"]  # the name of the app stands at the right, where a Persian reader starts
    await page.get_by_label("زبان").select_option("en")  # back, so the other tests read English
    await page.locator("header.top form.inline button").first.click()
    await expect(html).to_have_attribute("dir", "ltr")


async def test_a_form_error_names_the_field(page: Page, shop: ServiceProcess) -> None:
    await signed_in(page, shop)
    await page.goto(f"{shop.url}/programs")
    form = page.locator("form", has=page.get_by_role("button", name="Add the reward"))
    await form.get_by_label("Price in points").fill("a lot")
    await form.get_by_role("button", name="Add the reward").click()
    price = page.get_by_label("Price in points")
    await expect(price).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#reward-points_price-error")).to_have_text("Price in points: a whole number, 1 or more.")
    await expect(page.locator("#reward-name-error")).to_have_text("Name: write a name.")
    await expect(price).to_have_value("a lot")  # what was typed is kept
    await accessible(page)


async def test_an_owner_changes_a_rule_and_a_bad_value_names_its_field(page: Page, shop: ServiceProcess) -> None:
    await signed_in(page, shop)
    await page.goto(f"{shop.url}/programs")
    silver = page.get_by_label("Multiplier for Silver")
    await silver.fill("eleven")
    await page.get_by_role("button", name="Save the rules").click()
    await expect(silver).to_have_attribute("aria-invalid", "true")  # loyalty's 422 names tiers.1.multiplier
    await expect(page.locator("#rules-tiers-1-multiplier-error")).to_have_text("This value is not accepted.")
    await expect(silver).to_have_value("eleven")  # what was typed is kept
    await expect(page.get_by_label("Points per EUR")).not_to_have_attribute("aria-invalid", "true")
    await accessible(page)

    await silver.fill("1.5")
    await page.get_by_label("Points per EUR").fill("2")
    await page.get_by_role("button", name="Save the rules").click()
    await expect(page.get_by_text("The rules are saved")).to_be_visible()
    await expect(page.get_by_label("Points per EUR")).to_have_value("2")
    await expect(page.get_by_label("Multiplier for Silver")).to_have_value("1.5")

    # A campaign whose end is not after its start is refused at that field; then one runs and is ended.
    campaign = page.locator("form", has=page.get_by_role("button", name="Start the campaign"))
    await campaign.get_by_label("Name").fill("Christmas double")
    await campaign.get_by_label("Starts on").fill("2026-12-24")
    await campaign.get_by_label("Ends on").fill("2026-12-01")
    await campaign.get_by_label("Multiplier").fill("2")
    await campaign.get_by_role("button", name="Start the campaign").click()
    await expect(page.locator("#campaign-ends_at-error")).to_have_text("Ends on: a day after the start.")
    await expect(page.get_by_label("Starts on")).to_have_value("2026-12-24")
    await page.get_by_label("Ends on").fill("2026-12-31")
    await page.get_by_role("button", name="Start the campaign").click()
    await expect(page.get_by_text("The campaign is added.")).to_be_visible()
    await expect(page.locator("li", has_text="Christmas double")).to_contain_text("×2")
    await page.locator("li", has_text="Christmas double").get_by_role("button", name="End it now").click()
    await expect(page.get_by_text("The campaign is ended")).to_be_visible()

    review = page.get_by_label("For a review")
    await review.fill("lots")
    await page.get_by_role("button", name="Save the rules").click()
    await expect(review).to_have_attribute("aria-invalid", "true")  # loyalty's 422 names review_points
    await review.fill("75")
    await page.get_by_label("The referred friend earns too").select_option("no")
    await page.get_by_role("button", name="Save the rules").click()
    await expect(page.get_by_text("The rules are saved")).to_be_visible()
    await expect(page.get_by_label("For a review")).to_have_value("75")
    await expect(page.get_by_label("The referred friend earns too")).to_have_value("no")

    await page.get_by_label("Points per EUR").fill("1")  # back to the shop's rules for the other tests
    await page.get_by_label("For a review").fill("50")
    await page.get_by_label("The referred friend earns too").select_option("yes")
    await page.get_by_role("button", name="Save the rules").click()
    await expect(page.get_by_label("Points per EUR")).to_have_value("1")
    await expect(page.get_by_label("For a review")).to_have_value("50")

    # A tier is added (a bad threshold refused at its own field first), then removed again.
    await page.get_by_label("Name of a new tier").fill("Platinum")
    await page.get_by_label("Points in a year for the new tier").fill("lots")
    await page.get_by_role("button", name="Save the rules").click()
    await expect(page.get_by_label("Points in a year for the new tier")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_label("Name of a new tier")).to_have_value("Platinum")
    await page.get_by_label("Points in a year for the new tier").fill("10000")  # above VIP (5,000)
    await page.get_by_label("Multiplier for the new tier").fill("2")
    await page.get_by_role("button", name="Save the rules").click()
    await expect(page.get_by_text("The rules are saved")).to_be_visible()
    await expect(page.get_by_label("Multiplier for Platinum")).to_have_value("2")
    await page.get_by_label("Remove Platinum").check()
    await page.get_by_role("button", name="Save the rules").click()
    await expect(page.get_by_text("The rules are saved")).to_be_visible()
    await expect(page.get_by_label("Multiplier for Platinum")).to_have_count(0)
    await expect(page.get_by_label("Multiplier for Gold")).to_be_visible()


async def test_a_staff_member_sees_the_rules_but_cannot_change_them(page: Page, shop: ServiceProcess) -> None:
    await signed_in(page, shop, STAFF)
    await page.goto(f"{shop.url}/programs")
    await expect(page.get_by_role("button", name="Save the rules")).to_have_count(0)
    await expect(page.get_by_role("button", name="Start the campaign")).to_have_count(0)
    await expect(page.locator("section", has_text="Points rules")).to_contain_text("Points per EUR")
    csrf = await page.locator('input[name="csrf"]').first.get_attribute("value")
    assert csrf
    refused = await page.request.post(f"{shop.url}/programs/rules", form={"csrf": csrf, "rates-EUR": "9"})
    assert refused.status == 403


async def test_reports_chart_customers_per_segment_and_the_points(
    page: Page, shop: ServiceProcess, stack: ServiceStack
) -> None:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10) as http:
        balances = [
            (await http.get(f"{stack['loyalty'].url}/members/{c}")).json()["balance"] for c in (CALLED, UNHAPPY, HAPPY)
        ]
    await signed_in(page, shop)
    await page.goto(f"{shop.url}/reports")
    segments = page.locator("section", has=page.get_by_role("heading", name="Customers per segment"))
    await expect(segments.locator('svg[role="img"]')).to_have_attribute("aria-label", "Customers per segment")
    await segments.get_by_text("The numbers").click()
    counts = await segments.locator("tbody tr td:nth-child(2)").all_inner_texts()
    assert sum(int(count) for count in counts) == 3  # Jana, Peter and Eva, scored or waiting for the round

    points = page.locator(
        "section", has=page.get_by_role("heading", name="Points issued, redeemed, expired and outstanding")
    )
    await expect(points.locator('svg[role="img"]')).to_be_visible()
    await points.get_by_text("The numbers").click()
    month = points.locator("tbody tr", has_text=NOW.strftime("%Y-%m"))
    await expect(month.locator("td").nth(5)).to_have_text(str(sum(balances)))  # outstanding: what the three hold
    await accessible(page)


async def test_an_affiliates_commissions_and_the_refused_codes_are_on_programs(
    page: Page, shop: ServiceProcess, stack: ServiceStack, infra: Any
) -> None:
    await signed_in(page, shop)
    await page.goto(f"{shop.url}/programs")
    enrol = page.locator("form", has=page.get_by_role("button", name="Add the affiliate"))
    await enrol.get_by_label("Name").fill("Tea Blog")
    await enrol.get_by_label("E-mail", exact=True).fill("editor@teablog.example")
    await enrol.get_by_label("Commission (0 to 1, optional)").fill("0.1")
    await enrol.get_by_role("button", name="Add the affiliate").click()
    await expect(page.get_by_role("status")).to_have_text("The affiliate is added.")
    await page.get_by_role("link", name="Tea Blog").click()
    code = await page.locator("dt:text-is('Code') + dd code").inner_text()
    affiliate_page = page.url

    tap = await EventTap.open(infra.rabbitmq_url, stack.topology)
    # A new customer brings 10 % of €25.00; Jana has ordered before, so her order with the code is refused.
    await tap.publish(order_placed("cus_console_blog_reader", "ord_console_blog", [mug(2)], at=NOW, code=code))
    await tap.publish(order_placed(CALLED, "ord_console_jana_again", [mug()], at=NOW, code=code))
    await tap.close()
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10) as http:

        async def decided() -> bool:
            answer = await http.get(f"{stack['referrals'].url}/referrals/{code}")
            return answer.status_code == 200 and len(answer.json()["referrals"]) == 2

        await eventually(decided, timeout=60)
    await page.reload()
    commissions = page.locator("section", has=page.get_by_role("heading", name="Commissions, order by order"))
    await expect(commissions.locator("tr", has_text="ord_console_blog")).to_contain_text("€2.50")
    await expect(page.locator("dt:text-is('New customers brought') + dd")).to_have_text("1")
    await accessible(page)

    await screenshot(page, "console-affiliate-en")
    await page.get_by_role("link", name="The code's orders and limits").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(f"Referral code {code}")
    orders = page.locator("section", has=page.get_by_role("heading", name="Orders that carried it"))
    await expect(orders.locator("tr", has_text="ord_console_blog").locator("td").nth(3)).to_have_text("a new customer")
    jana = orders.locator("tr", has_text="ord_console_jana_again").locator("td").nth(3)
    await expect(jana).to_have_text("not a new customer")
    await accessible(page)
    limits = page.locator("form", has=page.get_by_role("button", name="Save the limits"))
    await limits.get_by_label("New customers it pays for at most").fill("-3")
    await limits.get_by_role("button", name="Save the limits").click()
    cap = page.get_by_label("New customers it pays for at most")
    await expect(cap).to_have_attribute("aria-invalid", "true")  # referrals' 422 names max_conversions
    await expect(cap).to_have_value("-3")
    await cap.fill("5")
    await page.get_by_role("button", name="Save the limits").click()
    await expect(page.get_by_role("status")).to_have_text("The code's limits are saved.")
    await expect(page.locator("dt:text-is('New customers brought') + dd")).to_have_text("1 / 5")
    await screenshot(page, "console-code-en")

    await page.goto(f"{shop.url}/programs")
    refused = page.locator("section", has=page.get_by_role("heading", name="Refused referrals"))
    await expect(refused.locator("tr", has_text="ord_console_jana_again")).to_contain_text("not a new customer")
    await accessible(page)

    await _choose(page, "fa")  # the two pages in Persian too
    for name, url in (("affiliate", affiliate_page), ("code", f"{shop.url}/programs/codes/{code}")):
        await page.goto(url)
        await expect(page.locator("html")).to_have_attribute("dir", "rtl")
        await screenshot(page, f"console-{name}-fa")
        await accessible(page)
    await _choose(page, "en")


async def test_an_owner_sees_why_a_message_was_set_aside_and_sends_it_back(page: Page, shop: ServiceProcess) -> None:
    await signed_in(page, shop)
    await page.goto(f"{shop.url}/operations")
    section = page.locator("section", has=page.get_by_role("heading", name="Messages set aside"))
    row = section.locator("tr", has_text=POISON)
    await expect(row).to_contain_text("OrderPlaced")
    await expect(row).to_contain_text("data.total: money must be a decimal string")
    await expect(row).to_contain_text("sent back 0")
    await expect(section.get_by_text("Nothing set aside.")).to_have_count(4)  # orders, followups, referrals, unrouted
    health = page.locator("section", has=page.get_by_role("heading", name="Health of each service"))
    await expect(health.locator("tr", has_text="loyalty").locator("td").nth(2)).to_have_text("1")  # waiting now
    mail = page.locator("section", has=page.get_by_role("heading", name="E-mail, the last 14 days"))
    await expect(mail).to_contain_text(re.compile(r"[1-9][0-9]* sent, 0 failed"))  # the thank-you notes, at least
    await accessible(page)
    await row.get_by_role("button", name=f"Send back {POISON}").click()
    await expect(page.get_by_role("status")).to_have_text("Sent back to the service.")

    async def set_aside_again() -> bool:  # the money is still a float: loyalty sets it aside once more
        await page.goto(f"{shop.url}/operations")
        return await section.locator("tr", has_text=POISON).filter(has_text="sent back 1").count() == 1

    await eventually(set_aside_again, timeout=30)


async def test_a_staff_member_sees_what_was_set_aside_but_cannot_send_it_back(page: Page, shop: ServiceProcess) -> None:
    await signed_in(page, shop, STAFF)
    await page.goto(f"{shop.url}/operations")
    section = page.locator("section", has=page.get_by_role("heading", name="Messages set aside"))
    await expect(section.locator("tr", has_text=POISON)).to_be_visible()
    await expect(section.get_by_role("button")).to_have_count(0)


async def test_the_thank_you_note_shows_in_the_mail_page(page: Page, shop: ServiceProcess) -> None:
    await signed_in(page, shop)
    await page.goto(f"{shop.url}/mail")
    await expect(page.locator("article.letter").first).to_be_visible(timeout=15_000)
    await expect(page.locator("main")).to_contain_text("Jana")
    await accessible(page)


def test_the_console_process_logs_no_errors(shop: ServiceProcess) -> None:
    logs = shop.logs()
    assert '"level": "error"' not in logs, logs[-3000:]
    assert os.environ.get("ADMIN_API_KEY") is None or os.environ["ADMIN_API_KEY"] not in logs
    assert ADMIN_KEY not in logs
    assert re.search(r"console_owner_created", logs)
