"""Relationship rules of followups as plain functions: call outcomes, the brief's figures from events in any
order, key-account reviews, win-back calls once per slide, history that plans nothing, cancelled orders."""

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.followups.domain import (
    AccountRules,
    Award,
    CallPolicy,
    Order,
    Schedule,
    Standing,
    after_call,
    after_review,
    attend,
    hand_task,
    import_settled,
    is_key_account,
    is_slipping,
    is_taken_back,
    plans_for_order,
    points_expiring,
    with_award,
    with_balance,
    with_cancellation,
    with_friend_converted,
    with_fulfilment,
    with_placement,
    with_referral_code,
    with_segment,
    with_tier,
)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
RULES = AccountRules()
POLICY = CallPolicy(retry_after=timedelta(days=2), attempts=3)


# --- call outcomes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["reached", "wrong_number"])
def test_a_call_that_reached_someone_or_a_wrong_number_completes_the_task(outcome: str) -> None:
    after = after_call(outcome, 0, T0, POLICY)  # type: ignore[arg-type]
    assert (after.status, after.attempts, after.due_at, after.gave_up) == ("done", 1, None, False)


@pytest.mark.parametrize("outcome", ["no_answer", "voicemail"])
def test_an_unanswered_call_is_tried_again_later_until_the_last_attempt(outcome: str) -> None:
    first = after_call(outcome, 0, T0, POLICY)  # type: ignore[arg-type]
    assert (first.status, first.attempts, first.due_at) == ("pending", 1, T0 + timedelta(days=2))
    second = after_call(outcome, 1, T0, POLICY)  # type: ignore[arg-type]
    assert (second.status, second.attempts) == ("pending", 2)
    last = after_call(outcome, 2, T0, POLICY)  # type: ignore[arg-type]
    assert (last.status, last.attempts, last.due_at, last.gave_up) == ("done", 3, None, True)


def test_a_task_added_by_hand_is_for_a_person_due_when_the_owner_says() -> None:
    task = hand_task("task_1", "cus-1", "Send the catalogue", T0)
    assert (task.kind, task.channel, task.status, task.due_at, task.title) == (
        "task",
        "person",
        "pending",
        T0,
        "Send the catalogue",
    )


# --- the brief's figures from events in any order -------------------------------------------------------

CHANGES = [
    lambda s: with_tier(s, "silver", T0),
    lambda s: with_tier(s, "gold", T0 + timedelta(hours=1)),
    lambda s: with_balance(s, 600, T0),
    lambda s: with_balance(s, 1700, T0 + timedelta(hours=1)),
    lambda s: with_balance(s, 1700, T0 + timedelta(hours=1)),  # told twice
    lambda s: with_referral_code(s, "K7Q-XM4", T0),
    lambda s: with_friend_converted(s, "rf-1"),
    lambda s: with_friend_converted(s, "rf-1"),  # the same conversion again
    lambda s: with_friend_converted(s, "rf-2"),
    lambda s: with_segment(s, "loyal", T0),
    lambda s: with_segment(s, "champions", T0 + timedelta(days=1)),
    lambda s: with_award(s, Award("le-1", 100, T0 + timedelta(days=20)), T0),
    lambda s: with_award(s, Award("le-1", 100, T0 + timedelta(days=20)), T0),
    lambda s: with_award(s, Award("le-2", 50, T0 + timedelta(days=200)), T0),
]


def test_the_brief_figures_are_the_same_whatever_order_the_events_arrive_in_and_however_often() -> None:
    results = set()
    shuffler = random.Random(16)  # noqa: S311 - repeatable orders, not secrets
    for _ in range(300):
        order = list(range(len(CHANGES)))
        shuffler.shuffle(order)
        standing = Standing("cus-1")
        for index in order:
            standing = CHANGES[index](standing)
        results.add(replace(standing, referrals=tuple(sorted(standing.referrals))))
    assert len(results) == 1
    [standing] = results
    assert (standing.tier, standing.balance, standing.segment, standing.referral_code) == (
        "gold",
        1700,
        "champions",
        "K7Q-XM4",
    )
    assert standing.referrals == ("rf-1", "rf-2")  # each conversion once
    assert [a.entry_id for a in standing.awards] == ["le-1", "le-2"]


def test_points_expiring_soon_are_those_due_within_the_window_and_never_more_than_the_balance() -> None:
    standing = Standing("cus-1", balance=120)
    standing = with_award(standing, Award("le-1", 100, T0 + timedelta(days=10)), T0)
    standing = with_award(standing, Award("le-2", 50, T0 + timedelta(days=25)), T0)
    standing = with_award(standing, Award("le-3", 70, T0 + timedelta(days=90)), T0)
    soon = points_expiring(standing, T0, timedelta(days=30))
    assert (soon.points, soon.first_at) == (120, T0 + timedelta(days=10))  # 150 due, but only 120 left
    assert points_expiring(replace(standing, balance=-5), T0, timedelta(days=30)).points == 0
    # Points already expired are let go when the next award comes.
    later = with_award(standing, Award("le-4", 10, T0 + timedelta(days=400)), T0 + timedelta(days=11))
    assert [a.entry_id for a in later.awards] == ["le-2", "le-3", "le-4"]


# --- key accounts and reviews ----------------------------------------------------------------------------


def test_a_key_account_is_the_top_segment_or_the_top_tier() -> None:
    assert is_key_account(Standing("c", segment="champions"), RULES)
    assert is_key_account(Standing("c", tier="vip", segment="hibernating"), RULES)
    assert not is_key_account(Standing("c", tier="gold", segment="loyal"), RULES)


def test_a_key_account_gets_a_review_at_once_then_every_ninety_days_one_open_at_a_time() -> None:
    first = attend(Standing("c", segment="champions"), RULES, T0, may_plan=True, review_pending=False)
    [review] = first.plans
    assert (review.followup_id, review.kind, review.channel, review.due_at) == ("review:c:1", "review", "person", T0)
    assert first.standing.review_due_at == T0 + timedelta(days=90)
    assert first.standing.check_at == T0 + timedelta(days=90)
    # Looked at again before it falls due: nothing; after 90 days: the next one.
    assert attend(first.standing, RULES, T0 + timedelta(days=89), may_plan=True, review_pending=False).plans == ()
    due = T0 + timedelta(days=90)
    second = attend(first.standing, RULES, due, may_plan=True, review_pending=False)
    assert [p.followup_id for p in second.plans] == ["review:c:2"]
    # The last one still open when the next falls due: no second open review, the next one moves on.
    waiting = attend(first.standing, RULES, due, may_plan=True, review_pending=True)
    assert waiting.plans == ()
    assert waiting.standing.review_due_at == due + timedelta(days=90)


def test_a_recorded_review_sets_the_next_one_a_period_after_it_and_other_customers_get_none() -> None:
    opened = attend(Standing("c", tier="vip"), RULES, T0, may_plan=True, review_pending=False).standing
    reviewed = after_review(opened, RULES, T0 + timedelta(days=5))
    assert reviewed.review_due_at == T0 + timedelta(days=95)
    nobody = attend(Standing("d", segment="loyal", tier="gold"), RULES, T0, may_plan=True, review_pending=False)
    assert nobody.plans == ()
    assert (nobody.standing.review_due_at, nobody.standing.check_at) == (None, None)
    # No longer a key account: no more reviews.
    dropped = attend(replace(opened, segment="loyal", tier="gold"), RULES, T0, may_plan=True, review_pending=False)
    assert dropped.standing.review_due_at is None


# --- win-back ----------------------------------------------------------------------------------------------


def _slides(*segments: str, tier: str = "gold") -> list[str]:
    """The win-back calls opened as the customer moves through these segments, a day apart."""
    standing = Standing("c", tier=tier, tier_at=T0)
    opened = []
    for day, segment in enumerate(segments):
        standing = with_segment(standing, segment, T0 + timedelta(days=day))
        attention = attend(standing, RULES, T0 + timedelta(days=day), may_plan=True, review_pending=False)
        standing = attention.standing
        opened += [p.followup_id for p in attention.plans if p.kind == "win_back"]
    return opened


def test_a_gold_customer_slipping_away_gets_one_call_per_slide() -> None:
    assert _slides("loyal", "at_risk", "hibernating", "at_risk") == ["win_back:c:1"]  # one slide, however deep
    assert _slides("loyal", "at_risk", "loyal", "cant_lose") == ["win_back:c:1", "win_back:c:2"]  # recovered, slid
    assert _slides("at_risk") == ["win_back:c:1"]  # scored at risk the first time
    assert _slides("loyal", "at_risk", tier="silver") == []  # below gold: no call
    assert _slides("champions", "need_attention") == []


def test_the_win_back_call_is_due_at_once_and_says_why() -> None:
    standing = Standing("c", tier="vip", segment="at_risk", segment_at=T0)
    [call] = [p for p in attend(standing, RULES, T0, may_plan=True, review_pending=False).plans if p.kind == "win_back"]
    assert (call.due_at, call.channel, call.status) == (T0, "person", "pending")
    assert call.title is not None
    assert "lipping" in call.title


def test_tier_before_or_after_the_segment_gives_the_same_win_back() -> None:
    tier = lambda s: with_tier(s, "gold", T0)  # noqa: E731
    segment = lambda s: with_segment(s, "at_risk", T0)  # noqa: E731
    outcomes = []
    for first, second in ((tier, segment), (segment, tier)):
        standing = Standing("c")
        plans = []
        for change in (first, second):
            attention = attend(change(standing), RULES, T0, may_plan=True, review_pending=False)
            standing, plans = attention.standing, plans + [p.followup_id for p in attention.plans]
        outcomes.append((standing, plans))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][1] == ["win_back:c:1"]
    assert is_slipping(outcomes[0][0], RULES)


def test_history_keeps_the_standing_and_the_job_plans_once_the_import_has_settled() -> None:
    imported = Standing("c", tier="gold", segment="at_risk", segment_at=T0, last_imported_at=T0)
    kept = attend(imported, RULES, T0, may_plan=False, review_pending=False)
    assert kept.plans == ()
    assert kept.standing.check_at == T0 + RULES.import_settles  # the review job looks once the import settles
    assert not import_settled(kept.standing, RULES, T0 + timedelta(minutes=9))
    assert import_settled(kept.standing, RULES, T0 + timedelta(minutes=10))
    later = attend(kept.standing, RULES, T0 + timedelta(minutes=10), may_plan=True, review_pending=False)
    assert [p.followup_id for p in later.plans] == ["win_back:c:1"]
    assert later.standing.check_at is None
    key = attend(
        Standing("k", segment="champions", last_imported_at=T0), RULES, T0, may_plan=False, review_pending=False
    )
    assert key.plans == ()
    assert key.standing.check_at == T0  # due at once, once the job may plan


# --- cancelled orders and history ----------------------------------------------------------------------------


def test_a_cancelled_order_is_taken_back_like_a_full_refund_and_plans_start_cancelled() -> None:
    order = with_placement(Order("o-1", "c"), T0, Decimal("20.00"), "EUR", "#1001", imported=False)
    assert not is_taken_back(order)
    cancelled = with_cancellation(order, T0 + timedelta(hours=2))
    assert is_taken_back(cancelled)
    assert with_cancellation(cancelled, T0 + timedelta(hours=5)).cancelled_at == T0 + timedelta(hours=2)
    assert {p.status for p in plans_for_order(cancelled, Schedule(), early_customer=True)} == {"cancelled"}


def test_an_order_from_the_shops_history_plans_no_note_request_or_call_unless_told_live_too() -> None:
    history = with_placement(Order("o-1", "c"), T0, Decimal("20.00"), "EUR", None, imported=True)
    history = with_fulfilment(history, T0 + timedelta(days=1), imported=True)
    assert plans_for_order(history, Schedule(), early_customer=True) == []
    live_too = with_fulfilment(history, T0 + timedelta(days=1), imported=False)
    assert [p.kind for p in plans_for_order(live_too, Schedule(), early_customer=True)] == ["feedback_request", "call"]
    # Told live first and then from history: still live (the order of arrival does not matter).
    live_first = with_placement(Order("o-2", "c"), T0, Decimal("5.00"), "EUR", None, imported=False)
    again = with_placement(live_first, T0, Decimal("5.00"), "EUR", None, imported=True)
    assert [p.kind for p in plans_for_order(again, Schedule(), early_customer=False)] == ["thank_you"]
