"""The customer's pages and what they agreed to (issue 16 items 6–7, issue 15 item 7): the feedback form from
the e-mail's link, its thank-you, one-click unsubscribe, and mail that follows consent — against the real
broker, MongoDB and an SMTP server in the test process."""

import hashlib
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from services.followups.app import SPEC
from services.followups.jobs import send_due
from services.followups.settings import FollowupsSettings
from services.followups.store import FOLLOWUPS
from services.followups.tokens import issue_token, issue_unsubscribe_token
from shared.events import (
    CustomerErased,
    CustomerErasedEvent,
    OrderPlacedEvent,
    ReferralInvited,
    ReferralInvitedEvent,
    no_email_for,
)
from shared.service import Runtime
from shared.settings import ServiceSettings
from tests.service.delivery import deliver
from tests.service.test_followups import NOW, SECRET, fulfilled, own_settings, placed
from tests.support.running import running_service
from tests.support.smtp import SmtpInbox, smtp_server
from tests.support.tap import EventTap

FORM = "application/x-www-form-urlencoded"
LATER = NOW + timedelta(days=15)  # when the feedback requests of orders fulfilled now are due
Followups = tuple[Runtime, httpx.AsyncClient, SmtpInbox]


@pytest.fixture
def smtp() -> Iterator[SmtpInbox]:
    with smtp_server() as inbox:
        yield inbox


def page_settings(settings: ServiceSettings, inbox: SmtpInbox, **changes: Any) -> FollowupsSettings:
    """The service test settings (tests/service/test_followups.py), with the pages' addresses."""
    own = own_settings(settings, inbox.port)
    pages = {
        "feedback_url": "https://shop.example/feedback/form",
        "unsubscribe_url": "https://shop.example/unsubscribe",
    }
    return own.model_copy(update=pages | changes)


@pytest.fixture
async def followups(service_name: str, settings: ServiceSettings, smtp: SmtpInbox) -> AsyncIterator[Followups]:
    async with running_service(replace(SPEC, name=service_name), page_settings(settings, smtp)) as (rt, http):
        yield rt, http, smtp


def link_in(mail: EmailMessage, page: str) -> str:
    """The path and query of the link to `page` in the mail's text, as the service serves it."""
    found = re.search(rf"https://shop\.example{page}\?token=[\w.\-]+", SmtpInbox.text(mail))
    assert found is not None, SmtpInbox.text(mail)
    parts = urlsplit(found[0])
    return f"{parts.path}?{parts.query}"


def token_of(link: str) -> str:
    return link.split("token=", 1)[1]


async def feedback_request(rt: Runtime, tap: EventTap, inbox: SmtpInbox, customer: str, **who: Any) -> EmailMessage:
    """An order of the customer placed and fulfilled, and the feedback request mailed for it 14 days on."""
    await deliver(rt, tap, placed(customer, f"o-{customer}", **who), fulfilled(customer, f"o-{customer}", NOW))
    await send_due(rt, at=LATER)
    [mail] = [m for m in inbox.to(f"{customer}@example.com") if m["X-Rapport-Followup"].startswith("feedback_request")]
    return mail


def html_attributes(page: str) -> tuple[str, str]:
    found = re.search(r'<html lang="(\w+)" dir="(\w+)">', page)
    assert found is not None, page[:300]
    return found[1], found[2]


# --- the feedback page --------------------------------------------------------------------------------


async def test_the_link_in_the_email_opens_the_form_in_the_customers_language(
    followups: Followups, tap: EventTap
) -> None:
    rt, http, inbox = followups
    hungarian = link_in(await feedback_request(rt, tap, inbox, "cus-hu", locale="hu-HU"), "/feedback/form")
    persian = link_in(await feedback_request(rt, tap, inbox, "cus-fa", locale="fa-IR"), "/feedback/form")

    form = await http.get(hungarian, headers={"Accept-Language": "en"})  # their e-mail's language wins
    assert form.status_code == 200
    assert form.headers["content-type"].startswith("text/html")
    assert html_attributes(form.text) == ("hu", "ltr")
    assert "Milyen volt a rendelése?" in form.text
    for name in ("overall", "product", "service", "nps"):
        assert f'<fieldset id="{name}"' in form.text
    assert form.text.count('name="overall"') == 5
    assert form.text.count('name="nps"') == 11
    assert '<textarea id="comment" name="comment"' in form.text
    assert f'name="token" value="{token_of(hungarian)}"' in form.text
    policy = form.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src" not in policy  # no script may run at all
    assert form.headers["referrer-policy"] == "no-referrer"

    rtl = await http.get(persian)
    assert html_attributes(rtl.text) == ("fa", "rtl")
    assert "سفارشتان چطور بود؟" in rtl.text
    assert "۱۰" in rtl.text  # the 0–10 scale in Persian digits


async def test_the_form_records_feedback_once_then_thanks_and_a_second_submit_says_it_arrived(
    followups: Followups, tap: EventTap
) -> None:
    rt, http, inbox = followups
    link = link_in(await feedback_request(rt, tap, inbox, "cus-form", locale="sk"), "/feedback/form")
    token = token_of(link)
    answers = {"token": token, "overall": "2", "product": "1", "nps": "3", "comment": "Čajník prišiel prasknutý."}

    sent = await http.post("/feedback/form", data=answers)
    assert sent.status_code == 303
    assert sent.headers["location"] == f"thanks?token={token}"
    thanks = await http.get(f"/feedback/{sent.headers['location']}")
    assert thanks.status_code == 200
    assert "Ďakujeme!" in thanks.text
    assert "Niekto z nášho tímu sa Vám čoskoro ozve." in thanks.text  # unhappy: a person answers

    [received] = await tap.wait_for(lambda e: e["type"] == "FeedbackReceived" and e["subject"] == "cus-form")
    data = received["data"]
    assert (data["order_id"], data["channel"], data["nps"]) == ("o-cus-form", "web", 3)
    assert data["ratings"] == {"overall": 2, "product": 1, "service": None}
    assert data["comment"] == "Čajník prišiel prasknutý."
    await tap.wait_for(lambda e: e["type"] == "FeedbackEscalated" and e["subject"] == "cus-form")

    again = await http.post("/feedback/form", data=answers | {"overall": "5"})
    assert again.status_code == 303
    assert again.headers["location"] == f"form?token={token}"
    already = await http.get(link)
    assert already.status_code == 200
    assert "Vaše odpovede už máme" in already.text
    assert await rt.db["feedback"].count_documents({"customer_id": "cus-form"}) == 1
    assert await rt.db["escalations"].count_documents({"customer_id": "cus-form"}) == 1
    # The JSON route takes the same link once too: the page used it.
    assert (await http.post("/feedback", json={"token": token, "ratings": {"overall": 5}})).status_code == 409


async def test_a_missing_or_wrong_answer_shows_the_form_again_with_the_error_and_stores_nothing(
    followups: Followups, tap: EventTap
) -> None:
    rt, http, inbox = followups
    link = link_in(await feedback_request(rt, tap, inbox, "cus-lv", locale="lv"), "/feedback/form")
    wrong = {"token": token_of(link), "product": "4", "nps": "11", "comment": "Skaista tējkanna"}
    again = await http.post("/feedback/form", data=wrong)
    assert again.status_code == 422
    assert "Lūdzu, izvēlieties kopējo vērtējumu no 1 līdz 5." in again.text
    assert "Lūdzu, izvēlieties skaitli no 0 līdz 10." in again.text
    assert 'value="4" checked' in again.text  # what was chosen stays chosen
    assert "Skaista tējkanna</textarea>" in again.text
    too_long = await http.post("/feedback/form", data={"token": token_of(link), "overall": "4", "comment": "x" * 5001})
    assert too_long.status_code == 422
    assert "Lūdzu, lai komentārs būtu īsāks par" in too_long.text
    assert await rt.db["feedback"].count_documents({}) == 0
    assert (await http.get(f"/feedback/thanks?token={token_of(link)}")).status_code == 303  # nothing to thank for


async def test_a_bad_expired_or_erased_link_gets_a_page_that_says_so_in_the_right_language(
    followups: Followups, tap: EventTap
) -> None:
    rt, http, inbox = followups
    link = link_in(await feedback_request(rt, tap, inbox, "cus-old", locale="hy"), "/feedback/form")

    for broken in ("/feedback/form", "/feedback/form?token=garbled", f"{link}x", "/feedback/thanks?token=x"):
        page = await http.get(broken, headers={"Accept-Language": "sk-SK,en;q=0.5"})
        assert page.status_code == 401, broken
        assert page.headers["content-type"].startswith("text/html")
        assert "Tento odkaz nefunguje" in page.text
    broken_body = await http.post(
        "/feedback/form",
        content=b"token=abc",
        headers={"Content-Type": "multipart/form-data", "Accept-Language": "sk"},  # no boundary: unreadable
    )
    assert broken_body.status_code == 400
    assert "Formulár sa nepodarilo prečítať" in broken_body.text
    forged = issue_token(
        "not-our-secret", followup_id="feedback_request:o-cus-old", customer_id="cus-old", order_id=None
    )
    assert (await http.post("/feedback/form", data={"token": forged, "overall": "5"})).status_code == 401

    expired = issue_token(
        SECRET, followup_id="feedback_request:o-cus-old", customer_id="cus-old", order_id="o-cus-old", now=0.0
    )
    old = await http.get(f"/feedback/form?token={expired}", headers={"Accept-Language": "en"})
    assert old.status_code == 410
    assert "Այս հղման ժամկետը լրացել է" in old.text  # the language their e-mail was in

    erased = CustomerErasedEvent.new(
        CustomerErased(customer_id="cus-old", requested_at=NOW), source="orders", subject="cus-old"
    )
    await deliver(rt, tap, erased)
    gone = await http.post("/feedback/form", data={"token": token_of(link), "overall": "1", "comment": "I am Ani"})
    assert gone.status_code == 410
    assert "Այս հղումն այլևս չի աշխատում" in gone.text
    assert await rt.db["feedback"].count_documents({}) == 0


async def test_a_promoter_sees_their_referral_code_on_the_thank_you_page_once_it_arrives(
    followups: Followups, tap: EventTap
) -> None:
    rt, http, inbox = followups
    link = link_in(await feedback_request(rt, tap, inbox, "cus-happy", locale="en"), "/feedback/form")
    token = token_of(link)
    sent = await http.post("/feedback/form", data={"token": token, "overall": "5", "service": "5", "nps": "10"})
    assert sent.status_code == 303
    waiting = await http.get(f"/feedback/thanks?token={token}")
    assert "We are so glad you would recommend us!" in waiting.text
    assert "is on its way to you by e-mail" in waiting.text  # referrals has not answered yet
    assert 'id="referral-code"' not in waiting.text

    invited = ReferralInvitedEvent.new(
        ReferralInvited(customer_id="cus-happy", code="TEA-HAPPY-1", feedback_id="fb-x"),
        source="referrals",
        subject="cus-happy",
    )
    await deliver(rt, tap, invited, invited)
    shown = await http.get(f"/feedback/thanks?token={token}")
    assert '<span class="code" id="referral-code">TEA-HAPPY-1</span>' in shown.text
    assert 'href="http://localhost/r/TEA-HAPPY-1"' in shown.text  # REFERRAL_URL with the code: the link to share
    assert "mailto:?subject=" in shown.text


async def test_without_marketing_consent_the_thank_you_page_does_not_promise_an_email(
    followups: Followups, tap: EventTap
) -> None:
    rt, http, inbox = followups
    link = link_in(await feedback_request(rt, tap, inbox, "cus-shy", accepts_marketing=False), "/feedback/form")
    await http.post("/feedback/form", data={"token": token_of(link), "overall": "5", "nps": "9"})
    page = await http.get(f"/feedback/thanks?token={token_of(link)}")
    assert "It will appear on this page in a moment." in page.text
    assert "by e-mail" not in page.text


# --- unsubscribe and consent ---------------------------------------------------------------------------------


async def test_relationship_mail_carries_a_one_click_unsubscribe_and_the_thank_you_note_none(
    followups: Followups, tap: EventTap
) -> None:
    rt, _http, inbox = followups
    request = await feedback_request(rt, tap, inbox, "cus-mail", locale="hu")
    [note] = [m for m in inbox.to("cus-mail@example.com") if m["X-Rapport-Followup"].startswith("thank_you")]
    assert note["List-Unsubscribe"] is None
    visible = link_in(request, "/unsubscribe")
    assert request["List-Unsubscribe"] == f"<https://shop.example{visible}>"
    assert request["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "itt leiratkozhat" in SmtpInbox.text(request)
    html = request.get_body(("html",))
    assert isinstance(html, EmailMessage)
    assert f'<a href="https://shop.example{visible}">' in html.get_content()


async def test_one_click_unsubscribe_stops_relationship_mail_and_the_thank_you_still_goes(
    followups: Followups, tap: EventTap
) -> None:
    rt, http, inbox = followups
    link = link_in(await feedback_request(rt, tap, inbox, "cus-out", locale="sk"), "/unsubscribe")

    asked = await http.get(link)  # what a mail scanner does: it changes nothing
    assert asked.status_code == 200
    assert "Chcete prestať dostávať žiadosti o hodnotenie a pozvánky" in asked.text
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in asked.text
    assert await rt.db["consents"].count_documents({"_id": "cus-out"}) == 0

    not_one_click = await http.post(link, data={"List-Unsubscribe": "Yes"})
    assert not_one_click.status_code == 422
    assert await rt.db["consents"].count_documents({"_id": "cus-out"}) == 0

    # A mail client's one-click POST (RFC 8058: multipart/form-data, or form-urlencoded), then the person on the
    # page: once is enough, and the first time stays.
    one_click = await http.post(link, files={"List-Unsubscribe": (None, "One-Click")})
    assert one_click.status_code == 200
    assert "Boli ste odhlásení" in one_click.text
    first = await rt.db["consents"].find_one({"_id": "cus-out"})
    assert first is not None
    assert first["unsubscribed_at"] is not None
    button = await http.post(link, content=b"List-Unsubscribe=One-Click", headers={"Content-Type": FORM})
    assert button.status_code == 200
    assert "Boli ste odhlásení" in button.text
    assert await rt.db["consents"].find_one({"_id": "cus-out"}) == first
    assert (await http.get(link)).text.count("Už ste odhlásení") >= 1

    # A second order: its thank-you note goes (transactional), its feedback request and an invitation do not.
    invited = ReferralInvitedEvent.new(
        ReferralInvited(customer_id="cus-out", code="OUT-1"), source="referrals", subject="cus-out"
    )
    await deliver(rt, tap, placed("cus-out", "o-out-2", locale="sk"), fulfilled("cus-out", "o-out-2", NOW), invited)
    await send_due(rt, at=LATER)
    kinds = [m["X-Rapport-Followup"].split(":")[0] for m in inbox.to("cus-out@example.com")]
    assert kinds == ["thank_you", "feedback_request", "thank_you"]
    skipped = {f["_id"]: (f["status"], f.get("cancelled_because")) async for f in rt.db[FOLLOWUPS].find({})}
    assert skipped["feedback_request:o-out-2"] == ("cancelled", "unsubscribed")
    assert skipped[f"referral_invite:{invited.id}"] == ("cancelled", "unsubscribed")
    metrics = (await http.get("/metrics")).text
    assert re.search(r'^followups_not_sent_total\{kind="feedback_request",reason="unsubscribed"\} 1\.0', metrics, re.M)


async def test_an_unsubscribe_link_must_be_signed_by_the_shop(followups: Followups) -> None:
    _rt, http, _inbox = followups
    forged = issue_unsubscribe_token("not-our-secret", customer_id="cus-x")
    feedback_token = issue_token(SECRET, followup_id="f", customer_id="cus-x", order_id=None)
    for token in (forged, feedback_token, "garbled"):  # a feedback token cannot stand in for an unsubscribe one
        refused = await http.post(f"/unsubscribe?token={token}", data={"List-Unsubscribe": "One-Click"})
        assert refused.status_code == 401
        assert "This link does not work" in refused.text


async def test_referral_invitations_need_marketing_consent_from_the_latest_order_that_says(
    followups: Followups, tap: EventTap
) -> None:
    rt, _http, inbox = followups

    def invitation(customer: str) -> Any:
        data = ReferralInvited(customer_id=customer, code=f"CODE-{customer}")
        return ReferralInvitedEvent.new(data, source="referrals", subject=customer)

    earlier, later = NOW - timedelta(days=2), NOW - timedelta(days=1)
    said_no = placed("cus-no", "o-no-2", at=later, accepts_marketing=False)
    await deliver(rt, tap, said_no, said_no)  # told twice
    await deliver(rt, tap, placed("cus-no", "o-no-1", at=earlier, accepts_marketing=True))  # older, heard late
    await deliver(rt, tap, placed("cus-no", "o-no-3", at=NOW, accepts_marketing=None))  # silent: "no" stands
    await deliver(rt, tap, placed("cus-yes", "o-yes-1", at=earlier, accepts_marketing=False))
    await deliver(rt, tap, placed("cus-yes", "o-yes-2", at=later, accepts_marketing=True))
    await deliver(rt, tap, placed("cus-unsaid", "o-unsaid"))  # MARKETING_CONSENT_DEFAULT decides: true
    invites = [invitation(c) for c in ("cus-no", "cus-yes", "cus-unsaid")]
    await deliver(rt, tap, *invites)
    await send_due(rt)
    invited_by_mail = sorted(m["To"] for m in inbox.messages if m["X-Rapport-Followup"].startswith("referral_invite"))
    assert invited_by_mail == ["cus-unsaid@example.com", "cus-yes@example.com"]
    no = await rt.db[FOLLOWUPS].find_one({"_id": f"referral_invite:{invites[0].id}"})
    assert no is not None
    assert (no["status"], no["cancelled_because"]) == ("cancelled", "no marketing consent")
    assert len(inbox.to("cus-no@example.com")) == 3  # the thank-you notes are not marketing


async def test_a_shop_that_says_no_consent_by_default_invites_only_those_who_said_yes(
    service_name: str, settings: ServiceSettings, smtp: SmtpInbox, tap: EventTap
) -> None:
    strict = page_settings(settings, smtp, marketing_consent_default=False)
    async with running_service(replace(SPEC, name=service_name), strict) as (rt, _http):
        await deliver(rt, tap, placed("cus-d1", "o-d1"), placed("cus-d2", "o-d2", accepts_marketing=True))
        await deliver(
            rt,
            tap,
            *(
                ReferralInvitedEvent.new(ReferralInvited(customer_id=c, code=f"C-{c}"), source="referrals", subject=c)
                for c in ("cus-d1", "cus-d2")
            ),
        )
        await send_due(rt)
        cancelled = {
            f["customer_id"]: f.get("cancelled_because")
            async for f in rt.db[FOLLOWUPS].find({"kind": "referral_invite"})
        }
    assert cancelled == {"cus-d1": "no marketing consent", "cus-d2": None}
    assert [m["To"] for m in smtp.messages if m["X-Rapport-Followup"].startswith("referral_invite")] == [
        "cus-d2@example.com"
    ]


async def test_erasure_deletes_the_consent_but_keeps_the_unsubscribed_address_as_a_hash(
    followups: Followups, tap: EventTap
) -> None:
    rt, http, inbox = followups
    link = link_in(await feedback_request(rt, tap, inbox, "cus-gdpr", locale="en"), "/unsubscribe")
    assert (await http.post(link, data={"List-Unsubscribe": "One-Click"})).status_code == 200
    erased = CustomerErasedEvent.new(
        CustomerErased(customer_id="cus-gdpr", requested_at=NOW), source="orders", subject="cus-gdpr"
    )
    await deliver(rt, tap, erased)
    assert await rt.db["consents"].count_documents({}) == 0
    kept = [doc async for doc in rt.db["unsubscribed_addresses"].find({})]
    assert [doc["_id"] for doc in kept] == [hashlib.sha256(b"cus-gdpr@example.com").hexdigest()]
    assert "cus-gdpr" not in str(kept)
    late = await http.post(link, data={"List-Unsubscribe": "One-Click"})  # an old link after the erasure
    assert late.status_code == 200
    assert await rt.db["consents"].count_documents({}) == 0

    # The same address comes back as a new customer: their order is thanked, no relationship mail follows.
    first = placed("cus-new", "o-new")
    who = first.data.customer.model_copy(update={"email": "CUS-GDPR@Example.com"})
    comeback = OrderPlacedEvent.new(first.data.model_copy(update={"customer": who}), source="shop", subject="cus-new")
    await deliver(rt, tap, comeback, fulfilled("cus-new", "o-new", NOW))
    await send_due(rt, at=LATER)
    request = await rt.db[FOLLOWUPS].find_one({"_id": "feedback_request:o-new"})
    assert request is not None
    assert (request["status"], request["cancelled_because"]) == ("cancelled", "unsubscribed")
    assert [m["X-Rapport-Followup"] for m in inbox.messages if "o-new" in m["X-Rapport-Followup"]] == [
        "thank_you:o-new"
    ]


async def test_a_customer_the_shop_has_no_address_for_gets_no_mail_and_the_reason_is_kept(
    followups: Followups, tap: EventTap
) -> None:
    rt, _http, inbox = followups
    event = placed("cus-no-address", "o-no-address")
    without = event.model_copy(
        update={
            "data": event.data.model_copy(
                update={"customer": event.data.customer.model_copy(update={"email": no_email_for("cus-no-address")})}
            )
        }
    )
    await deliver(rt, tap, without, placed("cus-with-address", "o-with-address"))
    await send_due(rt)
    note = await rt.db[FOLLOWUPS].find_one({"kind": "thank_you", "customer_id": "cus-no-address"})
    assert note is not None
    assert (note["status"], note["cancelled_because"]) == ("cancelled", "no e-mail address")
    assert inbox.to(no_email_for("cus-no-address")) == []
    assert len(inbox.to("cus-with-address@example.com")) == 1
