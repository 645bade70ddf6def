"""The customer's own pages in a real browser (issue 16 items 6–7): the four services as processes, the link
taken from a real e-mail caught by the test SMTP server, the form filled in Hungarian and in Persian, and what
follows (points, the referral code on the thank-you page, an escalation); the unsubscribe link clicked from a
mail, and the next relationship mail not sent. Every page is checked with axe-core; screenshots are kept under
.data/test-artifacts/screenshots/."""

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from playwright.async_api import Page

from shared.events import LineItem
from shared.topology import Topology
from tests.e2e.conftest import ADMIN_KEY, ALL_SERVICES
from tests.shop_day import order_fulfilled, order_placed
from tests.support.browser import accessibility_violations, describe, screenshot
from tests.support.infra import Infrastructure, remove_declared
from tests.support.processes import ServiceStack, service_process
from tests.support.smtp import SmtpInbox
from tests.support.tap import EventTap, eventually

NOW = datetime.now(UTC).replace(microsecond=0)
SHOP = "Teapot & Co"


@pytest.fixture(scope="module")
async def stack(
    infra: Infrastructure, prefix: str, smtp: SmtpInbox, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceStack]:
    """The four services; followups' e-mails link to its own pages (FEEDBACK_URL, UNSUBSCRIBE_URL on its port)."""
    topology = Topology(f"{prefix}-customer-pages")
    log_dir = tmp_path_factory.mktemp("customer-pages-logs")
    env = {
        "ADMIN_API_KEY": ADMIN_KEY,
        "SMTP_URL": smtp.url,
        "SCHEDULER_INTERVAL_SECONDS": "0.2",
        "FEEDBACK_REQUEST_DELAY_DAYS": "0",  # the feedback request goes out as soon as the order is fulfilled
        "FEEDBACK_TOKEN_SECRET": "e2e-customer-pages",
        "SHOP_NAME": SHOP,
    }
    processes = {
        name: service_process(
            name,
            rabbitmq_url=infra.rabbitmq_url,
            mongodb_url=infra.mongodb_url,
            prefix=topology.prefix,
            log_dir=log_dir,
            **env,
        )
        for name in ALL_SERVICES
    }
    followups = processes["followups"]
    followups.env |= {
        "FEEDBACK_URL": f"{followups.url}/feedback/form",
        "UNSUBSCRIBE_URL": f"{followups.url}/unsubscribe",
    }
    started = ServiceStack(topology, processes)
    try:
        for process in started:
            process.start()
        for process in started:
            process.wait_ready()
        yield started
    finally:
        for key, code in started.stop().items():
            if code != 0:
                print(f"{key} stopped with {code}:\n{started[key].logs()[-3000:]}")
        await remove_declared(infra, topology, started.services)


def tea(total: str) -> list[LineItem]:
    return [LineItem(sku="POT-CAST", name="Cast iron teapot", quantity=1, unit_price=Decimal(total))]


async def mail_with(smtp: SmtpInbox, address: str, containing: str, count: int = 1) -> EmailMessage:
    """The `count`-th message to `address` whose text contains `containing`, once it has arrived."""

    def arrived() -> list[EmailMessage]:
        found = smtp.to(address, containing=containing)
        return found if len(found) >= count else []

    return (await eventually(arrived, timeout=30))[count - 1]


def link(mail: EmailMessage, page: str) -> str:
    found = re.search(rf"http://127\.0\.0\.1:\d+{page}\?token=[\w.\-]+", SmtpInbox.text(mail))
    assert found is not None, SmtpInbox.text(mail)
    return found[0]


async def feedback_link(
    stack: ServiceStack, tap: EventTap, smtp: SmtpInbox, customer: str, locale: str, total: str
) -> str:
    """An order placed and fulfilled; the link in the feedback request e-mail followups sends for it."""
    order_id = f"ord-{customer}"
    await tap.publish(order_placed(customer, order_id, tea(total), at=NOW - timedelta(days=3), locale=locale))
    await tap.publish(order_fulfilled(customer, order_id, at=NOW - timedelta(days=1)))
    return link(await mail_with(smtp, f"{customer}@example.com", "/feedback/form?token="), "/feedback/form")


async def accessible(page: Page, name: str) -> None:
    """No serious or critical axe-core violation on the page as shown; its screenshot kept."""
    violations = await accessibility_violations(page)
    assert violations == [], describe(violations)
    await screenshot(page, name)


async def choose(page: Page, legend: str, number: str) -> None:
    """Pick `number` (as the page writes it) in the radio group whose legend starts with `legend`."""
    await page.get_by_role("group", name=re.compile(f"^{re.escape(legend)}")).get_by_label(number, exact=True).check()


async def balance_is(http: httpx.AsyncClient, stack: ServiceStack, customer: str, points: int) -> bool:
    answer = await http.get(f"{stack['loyalty'].url}/members/{customer}")
    return answer.status_code == 200 and answer.json()["balance"] == points


async def test_a_hungarian_promoter_answers_in_the_browser_earns_points_and_sees_the_referral_code(
    stack: ServiceStack, tap: EventTap, http: httpx.AsyncClient, smtp: SmtpInbox, page: Page
) -> None:
    url = await feedback_link(stack, tap, smtp, "cus-eva", "hu-HU", "40.00")
    opened = await page.goto(url)
    assert opened is not None
    assert opened.status == 200
    assert (await page.get_attribute("html", "lang"), await page.get_attribute("html", "dir")) == ("hu", "ltr")
    assert await page.title() == f"Milyen volt a rendelése? – {SHOP}"
    button = page.get_by_role("button", name="Válaszaim elküldése")
    # The stylesheet is inline and allowed by its hash in the Content-Security-Policy: it did apply.
    assert await button.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(27, 79, 156)"
    await accessible(page, "feedback-form-hu")

    await choose(page, "Összességében", "5")
    await choose(page, "Hogyan értékeli a terméket", "5")
    await choose(page, "Hogyan értékeli a kiszolgálásunkat", "4")
    await choose(page, "Mennyire valószínű", "10")
    await page.get_by_label("Szeretne még valamit elmondani nekünk?").fill("Gyönyörű teáskanna, gyorsan megjött!")
    await button.click()
    await page.wait_for_url(re.compile(r"/feedback/thanks\?token="))
    assert await page.get_by_role("heading", level=1).inner_text() == "Köszönjük!"

    [received] = await tap.wait_for(lambda e: e["type"] == "FeedbackReceived" and e["subject"] == "cus-eva")
    assert (received["data"]["nps"], received["data"]["channel"], received["data"]["order_id"]) == (
        10,
        "web",
        "ord-cus-eva",
    )
    assert received["data"]["ratings"] == {"overall": 5, "product": 5, "service": 4}
    await eventually(lambda: balance_is(http, stack, "cus-eva", 40 + 50 + 20), timeout=30)  # purchase, review, NPS
    [invited] = await tap.wait_for(lambda e: e["type"] == "ReferralInvited" and e["subject"] == "cus-eva", timeout=30)
    code = invited["data"]["code"]

    async def code_shown() -> bool:
        if await page.locator("#referral-code").count() == 0:
            await page.get_by_role("link", name="Mutassa a kódomat").click()  # the page's own way to look again
        return await page.locator("#referral-code").count() == 1

    await eventually(code_shown, timeout=30, interval=0.5)
    assert await page.locator("#referral-code").inner_text() == code
    assert (await page.locator("#share-link").inner_text()).endswith(code)
    await accessible(page, "feedback-thanks-hu")
    await mail_with(smtp, "cus-eva@example.com", code)  # the invitation e-mail carries the same code

    # The link again: the answers arrived, nothing is taken twice.
    again = await page.goto(url)
    assert again is not None
    assert again.status == 200
    assert await page.get_by_role("heading", level=1).inner_text() == "A válaszait már megkaptuk"
    await accessible(page, "feedback-already-hu")


async def test_a_persian_detractor_answers_right_to_left_and_an_escalation_opens(
    stack: ServiceStack, tap: EventTap, http: httpx.AsyncClient, smtp: SmtpInbox, page: Page
) -> None:
    url = await feedback_link(stack, tap, smtp, "cus-sara", "fa-IR", "25.00")
    opened = await page.goto(url)
    assert opened is not None
    assert opened.status == 200
    assert (await page.get_attribute("html", "lang"), await page.get_attribute("html", "dir")) == ("fa", "rtl")
    assert await page.get_by_role("heading", level=1).inner_text() == "سفارشتان چطور بود؟"
    await accessible(page, "feedback-form-fa")

    await choose(page, "در مجموع", "۱")  # Persian digits on the scale
    await choose(page, "چقدر احتمال دارد", "۲")
    await page.get_by_label("چیز دیگری هست که بخواهید به ما بگویید؟").fill("قوری شکسته به دستم رسید.")
    await page.get_by_role("button", name="ارسال پاسخ‌ها").focus()
    await page.keyboard.press("Enter")  # the form works from the keyboard
    await page.wait_for_url(re.compile(r"/feedback/thanks\?token="))
    assert await page.get_by_role("heading", level=1).inner_text() == "سپاسگزاریم!"
    assert await page.get_by_text("یکی از همکاران ما به‌زودی با شما تماس می‌گیرد").count() == 1
    await accessible(page, "feedback-thanks-fa")

    [escalated] = await tap.wait_for(lambda e: e["type"] == "FeedbackEscalated" and e["subject"] == "cus-sara")
    listed = (await http.get(f"{stack['followups'].url}/escalations", params={"open": "true"})).json()
    [open_one] = [e for e in listed["escalations"] if e["customer_id"] == "cus-sara"]
    assert open_one["escalation_id"] == escalated["data"]["escalation_id"]
    [received] = [e for e in tap.bodies("FeedbackReceived") if e["subject"] == "cus-sara"]
    assert (received["data"]["ratings"]["overall"], received["data"]["nps"]) == (1, 2)
    assert received["data"]["comment"] == "قوری شکسته به دستم رسید."

    broken = await page.goto(url[:-3])  # a link cut short in a mail client
    assert broken is not None
    assert broken.status == 401
    await accessible(page, "feedback-link-invalid")


async def test_the_unsubscribe_link_from_a_mail_stops_the_next_relationship_mail(
    stack: ServiceStack, tap: EventTap, http: httpx.AsyncClient, smtp: SmtpInbox, page: Page
) -> None:
    await feedback_link(stack, tap, smtp, "cus-jan", "sk-SK", "30.00")
    request = await mail_with(smtp, "cus-jan@example.com", "/unsubscribe?token=")
    url = link(request, "/unsubscribe")
    assert request["List-Unsubscribe"] == f"<{url}>"
    assert request["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    opened = await page.goto(url)
    assert opened is not None
    assert opened.status == 200
    assert await page.get_attribute("html", "lang") == "sk"
    await accessible(page, "unsubscribe-sk")
    await page.get_by_role("button", name="Odhlásiť sa").click()
    assert await page.get_by_role("heading", level=1).inner_text() == "Boli ste odhlásení"
    await accessible(page, "unsubscribed-sk")

    # The next order: its thank-you note still goes; its feedback request is not sent, with the reason kept.
    await tap.publish(order_placed("cus-jan", "ord-jan-2", tea("12.00"), at=NOW - timedelta(hours=2), locale="sk"))
    await tap.publish(order_fulfilled("cus-jan", "ord-jan-2", at=NOW - timedelta(hours=1)))
    await tap.wait_for(
        lambda e: e["type"] == "FollowUpSent" and e["data"]["followup_id"] == "thank_you:ord-jan-2", timeout=30
    )

    async def not_sent() -> Any:
        listed = await http.get(f"{stack['followups'].url}/followups", params={"status": "cancelled", "limit": 500})
        return [f for f in listed.json()["followups"] if f["followup_id"] == "feedback_request:ord-jan-2"]

    [skipped] = await eventually(not_sent, timeout=30)
    assert skipped["cancelled_because"] == "unsubscribed"
    requests = [m for m in smtp.to("cus-jan@example.com") if m["X-Rapport-Followup"].startswith("feedback_request")]
    assert [m["X-Rapport-Followup"] for m in requests] == ["feedback_request:ord-cus-jan"]
