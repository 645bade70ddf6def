"""Follow-up messages: every kind in every language, the customer's name and place, locale fallback."""

import re
from typing import Any

import pytest

from services.followups.messages import KINDS, LOCALES, TEMPLATES, render, template_locale

SHOP = "Kvetinárstvo Ruža"
CITY = "Košice"
REGION = "Košický kraj"

VALUES: dict[str, dict[str, Any]] = {
    "thank_you": {"order_id": "ord_5001"},
    "feedback_request": {
        "order_id": "ord_5001",
        "feedback_url": "https://shop.example/feedback?t=abc.def.ghi",
        "unsubscribe_url": "https://shop.example/unsubscribe?token=u.v.w",
    },
    "referral_invite": {
        "code": "K7QX-M2PA",
        "referral_url": "https://shop.example/r/K7QX-M2PA",
        "unsubscribe_url": "https://shop.example/unsubscribe?token=u.v.w",
    },
}

# A letter each language's text must contain, so that no template is an English copy.
SCRIPT = {
    "en": r"[A-Za-z]",
    "hu": r"[áéíóöőúüű]",
    "sk": r"[áäčďéíľĺňóôŕšťúýž]",
    "lv": r"[āčēģīķļņšūž]",
    "fa": r"[\u0600-\u06ff]",
    "hy": r"[\u0531-\u058f]",
}


def values(kind: str, **overrides: Any) -> dict[str, Any]:
    return {"first_name": None, "city": None, "region": None, "shop_name": SHOP} | VALUES[kind] | overrides


def test_every_kind_has_a_template_in_every_locale() -> None:
    shipped = {(path.parent.name, path.stem) for path in TEMPLATES.glob("*/*.txt")}
    assert shipped == {(locale, kind) for locale in LOCALES for kind in KINDS}


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kind", KINDS)
def test_renders_with_every_optional_value_unknown(kind: str, locale: str) -> None:
    message = render(kind, locale, **values(kind))
    assert message.locale == locale
    assert message.subject
    assert "\n" not in message.subject
    assert SHOP in message.subject
    assert SHOP in message.body
    assert "None" not in message.subject + message.body
    assert "{" not in message.body  # no template syntax left over
    assert "\n\n\n" not in message.body
    assert not message.body.startswith("\n")
    # Relationship mail ends with the way out (a visible unsubscribe link); the thank-you note with the shop.
    ending = VALUES[kind].get("unsubscribe_url", SHOP)
    assert message.body.endswith(f"{ending}\n")
    assert re.search(SCRIPT[locale], message.body)
    for value in VALUES[kind].values():
        assert value in message.body


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kind", KINDS)
def test_renders_with_a_name_and_a_city(kind: str, locale: str) -> None:
    message = render(kind, locale, **values(kind, first_name="Eva", city=CITY, region=REGION))
    assert "Eva" in message.body.splitlines()[0]  # greeted by name
    assert "None" not in message.body


@pytest.mark.parametrize("locale", LOCALES)
def test_the_thank_you_names_the_customer_and_their_city(locale: str) -> None:
    message = render("thank_you", locale, **values("thank_you", first_name="Eva", city=CITY, region=REGION))
    assert "Eva" in message.body
    assert CITY in message.body
    assert REGION not in message.body  # the city is enough


@pytest.mark.parametrize("locale", LOCALES)
def test_the_thank_you_names_the_region_when_the_city_is_unknown(locale: str) -> None:
    message = render("thank_you", locale, **values("thank_you", region=REGION))
    assert REGION in message.body


@pytest.mark.parametrize("locale", LOCALES)
def test_the_thank_you_leaves_out_the_place_sentence_when_no_place_is_known(locale: str) -> None:
    with_city = render("thank_you", locale, **values("thank_you", city=CITY)).body
    without = render("thank_you", locale, **values("thank_you")).body
    place_lines = [line for line in with_city.splitlines() if CITY in line]
    assert len(place_lines) == 1
    assert without.splitlines() == [line for line in with_city.splitlines() if CITY not in line]


def test_a_missing_name_gets_a_neutral_greeting() -> None:
    assert render("thank_you", "en", **values("thank_you")).body.startswith("Hello,\n")
    assert render("thank_you", "en", **values("thank_you", first_name="Eva")).body.startswith("Hi Eva,\n")
    assert render("thank_you", "hu", **values("thank_you")).body.startswith("Kedves Vásárlónk!\n")


def test_subject_line_is_taken_off_the_body() -> None:
    message = render("feedback_request", "sk", **values("feedback_request"))
    assert message.subject == f"Ako sa Vám u nás nakupovalo? – {SHOP}"
    assert "Subject" not in message.body


def test_persian_is_right_to_left_and_the_others_left_to_right() -> None:
    directions = {locale: render("thank_you", locale, **values("thank_you")).direction for locale in LOCALES}
    assert directions == {"en": "ltr", "hu": "ltr", "sk": "ltr", "fa": "rtl", "hy": "ltr", "lv": "ltr"}


def test_values_are_not_html_escaped() -> None:
    message = render("thank_you", "en", **values("thank_you", shop_name="Tom & Jerry's <Mugs>"))
    assert "Tom & Jerry's <Mugs>" in message.body


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("hu-HU", "hu"),
        ("hu", "hu"),
        ("sk", "sk"),
        ("sk-SK", "sk"),
        ("FA-IR", "fa"),
        ("fa-Arab-IR", "fa"),
        ("hy-AM", "hy"),
        ("lv_LV", "lv"),
        ("en-GB", "en"),
        ("de-DE", "en"),
        ("de", "en"),
        (None, "en"),
        ("", "en"),
        ("   ", "en"),
        ("hungarian", "en"),
        ("h", "en"),
        ("-hu", "en"),
        ("🙂", "en"),
    ],
)
def test_template_locale_matches_the_primary_language_or_falls_back_to_english(tag: str | None, expected: str) -> None:
    assert template_locale(tag) == expected


def test_an_unknown_locale_renders_in_english() -> None:
    message = render("thank_you", "de-AT", **values("thank_you", first_name="Eva"))
    assert message.locale == "en"
    assert message.body.startswith("Hi Eva,")


def test_an_unknown_kind_raises() -> None:
    with pytest.raises(ValueError, match="call"):
        render("call", "en", **values("thank_you"))


@pytest.mark.parametrize("missing", ["shop_name", "order_id", "city"])
def test_a_missing_variable_raises(missing: str) -> None:
    given = values("thank_you")
    del given[missing]
    with pytest.raises(ValueError, match=missing):
        render("thank_you", "lv", **given)


def test_a_missing_url_raises() -> None:
    given = values("feedback_request")
    del given["feedback_url"]
    with pytest.raises(ValueError, match="feedback_url"):
        render("feedback_request", "fa", **given)


def test_an_email_carries_the_headers_mail_servers_expect_and_its_links_as_links() -> None:
    from datetime import UTC, datetime
    from email import message_from_bytes, policy
    from email.utils import parsedate_to_datetime

    from services.followups.mail import email_of
    from services.followups.messages import Message

    link = "https://shop.example/feedback?token=a.b&lang=sk"
    message = Message(
        subject="Ako sa vám páči?", body=f"Dobrý deň,\n\n{link}\n\nĎakujeme", locale="sk", direction="ltr"
    )
    sent_at = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    email = email_of(
        message,
        sender="Obchod <ahoj@shop.example>",
        to="eva@example.sk",
        followup_id="fu:ord-1:feedback_request",
        sent_at=sent_at,
        unsubscribe_url="https://shop.example/unsubscribe?token=t",
    )
    parsed = message_from_bytes(email.as_bytes(), policy=policy.default)
    assert parsedate_to_datetime(parsed["Date"]) == sent_at
    assert parsed["Message-ID"].endswith("@shop.example>")
    assert parsed["List-Unsubscribe"] == "<https://shop.example/unsubscribe?token=t>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html_part = parsed.get_body(("html",)).get_content()
    assert '<a href="https://shop.example/feedback?token=a.b&amp;lang=sk">' in html_part
    assert parsed.get_body(("plain",)).get_content().count(link) == 1


def test_a_transactional_email_has_no_unsubscribe_header() -> None:
    from datetime import UTC, datetime

    from services.followups.mail import email_of
    from services.followups.messages import Message

    email = email_of(
        Message(subject="Thank you", body="Thanks", locale="en", direction="ltr"),
        sender="hello@shop.example",
        to="a@example.com",
        followup_id="fu:1",
        sent_at=datetime(2026, 12, 1, tzinfo=UTC),
    )
    assert "List-Unsubscribe" not in email
