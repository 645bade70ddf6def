"""The console's rules and page pieces, without I/O: roles, passwords, throttling, Today's order, briefs, charts,
and every text in every language."""

from datetime import UTC, datetime, timedelta
from typing import get_args

import pytest

from services.console import charts, domain, views
from services.console.calls import Reading, _fields
from services.console.pages import RULE_NUMBERS, SEGMENTS, _adjusted_points
from services.console.web import CATALOGUES, HERE
from services.followups.domain import Kind, Status
from services.loyalty.domain import DEFAULT_TIERS
from services.orders.domain import search_terms
from services.orders.insight import SEGMENTS as ORDERS_SEGMENTS
from services.referrals.domain import CodeStatus, ContestReason, RefusalReason
from shared.i18n import LANGUAGES, Formats, unknown_ids

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_every_id_a_template_uses_has_its_text_in_every_language() -> None:
    assert unknown_ids(HERE / "templates", CATALOGUES) == {}
    assert set(CATALOGUES.by_language) == set(LANGUAGES)


def test_every_name_the_services_give_has_its_text() -> None:
    english = CATALOGUES.by_language["en"]
    assert SEGMENTS == ORDERS_SEGMENTS
    names = [f"segment.{s}" for s in SEGMENTS] + [f"kind.{k}" for k in get_args(Kind)]
    names += [f"status.{s}" for s in get_args(Status)] + [f"event.followup.{k}" for k in get_args(Kind)]
    names += [f"refusal.{r}" for r in RefusalReason] + [f"contest.{r}" for r in ContestReason]
    names += [f"code_status.{s}" for s in get_args(CodeStatus)] + [label for _, label, _ in RULE_NUMBERS]
    names += [f"tier.{tier.name}" for tier in DEFAULT_TIERS]
    assert [name for name in names if name not in english] == []


def test_translations_are_not_english_copies() -> None:
    english = CATALOGUES.by_language["en"]
    for language in LANGUAGES:
        if language == "en":
            continue
        same = [k for k, text in CATALOGUES.by_language[language].items() if text == english[k]]
        assert len(same) <= 8, (language, same)  # names and figures the languages share ("E-mail", "NPS {nps}")


def test_staff_may_do_everything_but_the_owners_things() -> None:
    for action in ("settings", "people", "erasure", "keys", "replay", "export"):
        assert not domain.may("staff", action)
        assert domain.may("owner", action)
    assert domain.may("staff", "log_call")


def test_passwords_are_argon2id_and_checked() -> None:
    stored = domain.hash_password("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert domain.password_matches(stored, "correct horse battery")
    assert not domain.password_matches(stored, "wrong")
    assert not domain.password_matches(None, "anything")
    assert not domain.password_matches("not a hash", "anything")
    assert domain.password_problem("short") == "people.error.password_short"
    assert domain.password_problem("long enough!") is None


def test_sign_in_is_refused_after_too_many_failures() -> None:
    assert not domain.Throttle(domain.MAX_FAILURES_PER_EMAIL - 1, 0).refuses
    assert domain.Throttle(domain.MAX_FAILURES_PER_EMAIL, 0).refuses
    assert domain.Throttle(0, domain.MAX_FAILURES_PER_IP).refuses


def test_tokens_compare_only_when_both_are_there() -> None:
    assert domain.same_token("abc", "abc")
    assert not domain.same_token("abc", "abd")
    assert not domain.same_token(None, None)
    assert not domain.same_token("", "")
    assert domain.token_digest("x") != "x"


@pytest.mark.parametrize(
    ("seconds", "breached", "urgency"),
    [(3000, False, "open"), (900, False, "soon"), (-1, False, "breached"), (600, True, "breached")],
)
def test_an_escalation_is_red_once_breached(seconds: int, breached: bool, urgency: str) -> None:
    assert domain.urgency(seconds, breached) == urgency


def test_escalations_come_fewest_minutes_left_first() -> None:
    found = [
        {"escalation_id": "a", "customer_id": "c1", "seconds_left": 1800, "breached": False, "due_by": None},
        {"escalation_id": "b", "customer_id": "c2", "seconds_left": -600, "breached": True, "due_by": None},
        {"escalation_id": "c", "customer_id": "c3", "seconds_left": 120, "breached": False, "due_by": None},
    ]
    rows = views.escalation_rows(found, {"c2": "Peter"})
    assert [row.escalation_id for row in rows] == ["b", "c", "a"]
    assert [row.urgency for row in rows] == ["breached", "soon", "open"]
    assert rows[0].name == "Peter"
    assert rows[0].minutes_left == -10


def test_a_brief_gathers_what_to_mention() -> None:
    brief = Reading(
        "followups",
        {
            "first_name": "Jana",
            "last_name": "Nováková",
            "phone": "+421900",
            "facts": [{"kind": "family", "value": "Daughter Lili starts school"}],
            "notes": [{"text": "Prefers calls after six"}],
            "calls": [{"outcome": "no_answer", "summary": ""}],
            "latest_feedback": {"overall": 5, "comment": "Lovely mug"},
            "loyalty": {
                "tier": "silver",
                "balance": 620,
                "points_expiring": 40,
                "points_expiring_from": NOW.isoformat(),
            },
            "orders": {"count": 2, "last_order": {"placed_at": NOW.isoformat(), "total": "25.00", "currency": "EUR"}},
            "account": {"segment": "loyal"},
            "referrals": {"code": "K7QX-M2PA"},
        },
    )
    found = views.brief_of("cus_1", {"city": "Košice"}, brief)
    assert found.name == "Jana Nováková"
    assert found.city == "Košice"
    assert found.facts == (("family", "Daughter Lili starts school"),)
    assert found.last_note == "Prefers calls after six"
    assert found.last_call == ("no_answer", "")
    assert found.last_feedback == "Lovely mug"
    assert (found.tier, found.balance, found.expiring) == ("silver", 620, ((40, NOW),))
    assert found.last_order_total == ("25.00", "EUR")
    assert found.segment == "loyal"
    assert found.referral_code == "K7QX-M2PA"
    assert found.missing == ()


def test_without_the_brief_the_task_still_says_who_to_call_and_what_is_missing() -> None:
    found = views.brief_of(
        "cus_1", {"first_name": "Jana", "phone": "+421900"}, Reading("followups", problem="unavailable")
    )
    assert (found.name, found.phone, found.missing) == ("Jana", "+421900", ("followups",))


def test_the_timeline_is_latest_first_across_services() -> None:
    profile = Reading(
        "orders",
        {
            "orders": [
                {"order_id": "o1", "placed_at": (NOW - timedelta(days=3)).isoformat(), "items": [], "refunds": []}
            ]
        },
    )
    member = Reading(
        "loyalty",
        {
            "recent_entries": [
                {"at": (NOW - timedelta(days=2)).isoformat(), "points": 25, "kind": "earn", "reason": "purchase"}
            ]
        },
    )
    followups = Reading(
        "followups",
        {
            "followups": [
                {
                    "kind": "call",
                    "status": "done",
                    "due_at": NOW.isoformat(),
                    "done_at": NOW.isoformat(),
                    "note": "Loves tea",
                }
            ]
        },
    )
    feedback = Reading("followups", problem="unavailable")
    entries = views.timeline_of(profile, member, followups, feedback)
    assert [entry.kind for entry in entries] == ["followup.call", "points", "order"]
    assert entries[0].detail == "Loves tea"


def test_a_bar_chart_is_inline_svg_with_its_labels_escaped() -> None:
    svg = charts.bars([("2026-10", 40.0), ("<b>", -20.0), ("2026-12", None)], "NPS & more", low=-100, high=100)
    assert svg.startswith("<svg")
    assert 'role="img"' in svg
    assert "<b>" not in svg
    assert "&lt;b&gt;" in svg
    assert svg.count("<rect") == 2
    assert "NPS &amp; more" in svg
    assert charts.heat(None) == "heat-none"
    assert charts.heat(0.0) == "heat-0"
    assert charts.heat(1.0) == "heat-5"


def test_grouped_bars_draw_each_series_per_month_with_a_legend() -> None:
    svg = charts.grouped_bars(["2026-10", "<i>"], [("Issued", [300, 20]), ("Redeemed & more", [100, 0])], "Points")
    assert svg.startswith("<svg")
    assert svg.count('class="bar s0"') == 3  # two months and the legend
    assert svg.count('class="bar s1"') == 3
    assert "<i>" not in svg
    assert "Redeemed &amp; more" in svg
    assert "2026-10 · Issued: 300" in svg
    # The tallest bar (300) fills the plot; 100 a third of it.
    heights = [float(part.split('"')[0]) for part in svg.split('height="')[1:]]
    assert heights[2] == 176.0
    assert heights[3] == round(176 / 3, 1)


def test_lying_bars_give_each_label_its_own_row_before_its_bar() -> None:
    segments = [(f"Segment <{n}> with a long name", float(n * 10)) for n in range(10)]
    svg = charts.lying_bars(segments, "Customers per segment")
    assert svg.count("<rect") == 10
    assert "<0>" not in svg
    rows = [float(part.split('"')[0]) for part in svg.split('<rect x="210" y="')[1:]]
    assert rows == [6 + 24 * n for n in range(10)], "one row each, none over another"
    assert f'viewBox="0 0 640 {24 * 10 + 6}"' in svg  # the chart grows with its rows
    widths = [float(part.split('"')[0]) for part in svg.split('width="')[1:]]
    assert widths[-1] == 640 - 210 - 64, "the largest value fills the room"
    assert widths[0] == 1.0, "a zero still shows as a line"
    assert svg.count('text-anchor="end"') == 10  # labels end at the bars in every writing direction
    persian = charts.lying_bars([("x", 1200.0)], "t", figure=lambda value: Formats("fa").number(int(value)))
    assert ">۱٬۲۰۰</text>" in persian, "the figures in the reader's digits"


def test_a_refusal_names_its_fields() -> None:
    assert _fields({"detail": [{"loc": ["body", "points_price"], "msg": "too small"}]}) == {"points_price": "too small"}
    assert _fields({"detail": "reward_id: no active reward 'mug'"}) == {"reward_id": "no active reward 'mug'"}
    assert _fields({"detail": "something broke"}) == {}


def test_the_search_box_reads_what_the_owner_types() -> None:
    assert search_terms("Jana@Example.com").emails == ("Jana@Example.com", "jana@example.com")
    phone = search_terms("+421 900 123 456")
    assert "+421900123456" in phone.phones
    number = search_terms("#1001")
    assert "#1001" in number.order_numbers
    assert "1001" in number.order_numbers
    assert number.first_names == ()
    name = search_terms("nová")
    assert "Nová" in name.last_names
    full = search_terms("jana  nov")
    assert full.full_name is not None
    assert "Jana" in full.full_name[0]
    assert "Nov" in full.full_name[1]


@pytest.mark.parametrize(
    ("typed", "points"),
    [("250", 250), ("-40", -40), (" +5 ", 5), ("1 000", 1000), ("1000000", 1_000_000), ("-1000000", -1_000_000)]
    + [(bad, None) for bad in ("", "0", "-0", "a lot", "1.5", "--3", "1000001", "-1000001", "\u0663")],
)
def test_an_adjustment_form_reads_whole_points_with_a_minus_to_take_them(typed: str, points: int | None) -> None:
    assert _adjusted_points(typed) == points
