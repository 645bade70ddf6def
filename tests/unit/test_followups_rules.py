"""Follow-up rules as plain functions: what gets planned, who needs a person, due times, retries, NPS, tokens."""

import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from itsdangerous import URLSafeTimedSerializer

from services.followups.domain import (
    Customer,
    FeedbackPoint,
    MonthlyNps,
    Order,
    Plan,
    Schedule,
    after_failed_send,
    call_due,
    erased,
    escalation_due,
    escalation_for,
    feedback_request_due,
    is_breached,
    is_detractor_feedback,
    is_early_customer,
    is_fully_refunded,
    is_promoter,
    may_call_for,
    nps_report,
    planned_for,
    plans_for_order,
    referral_invitation,
    refund_cancels,
    sla_time_left,
    thank_you_due,
    with_fulfilment,
    with_order_placed,
    with_refund,
)
from services.followups.tokens import InvalidToken, TokenClaims, issue_token, read_token
from shared.events import FeedbackReceived, Ratings

T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
SECRET = "a-long-random-feedback-secret"
ISSUED = 1_790_000_000.0  # a fixed Unix time, so that no test depends on the clock
DAY = 24 * 3600

# --- who needs what ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("overall", "nps", "escalate"),
    [
        (1, None, True),
        (2, None, True),
        (2, 10, True),  # a bad rating is enough, whatever the NPS
        (3, None, False),
        (3, 6, True),
        (3, 7, False),
        (5, 0, True),
        (5, 6, True),
        (5, 7, False),
        (4, 8, False),
        (3, 10, False),
    ],
)
def test_escalation_opens_for_overall_2_or_less_or_nps_6_or_less(overall: int, nps: int | None, escalate: bool) -> None:
    assert is_detractor_feedback(overall, nps) is escalate


@pytest.mark.parametrize(
    ("nps", "promoter"), [(None, False), (0, False), (7, False), (8, False), (9, True), (10, True)]
)
def test_promoters_answer_nps_9_or_10(nps: int | None, promoter: bool) -> None:
    assert is_promoter(nps) is promoter


# --- when things fall due ----------------------------------------------------------


def test_due_times_follow_the_default_delays() -> None:
    assert thank_you_due(T0) == T0
    assert thank_you_due(T0, timedelta(hours=2)) == T0 + timedelta(hours=2)
    assert call_due(T0) == datetime(2026, 1, 24, 12, 0, tzinfo=UTC)
    assert call_due(T0, timedelta(days=7)) == datetime(2026, 1, 17, 12, 0, tzinfo=UTC)
    assert feedback_request_due(T0) == datetime(2026, 1, 24, 12, 0, tzinfo=UTC)
    assert feedback_request_due(T0, timedelta(days=21)) == datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
    assert escalation_due(T0) == datetime(2026, 1, 10, 13, 0, tzinfo=UTC)
    assert escalation_due(T0, timedelta(minutes=30)) == datetime(2026, 1, 10, 12, 30, tzinfo=UTC)


def test_sla_time_left_goes_negative_once_breached() -> None:
    due_by = escalation_due(T0)
    assert sla_time_left(due_by, T0 + timedelta(minutes=15)) == timedelta(minutes=45)
    assert sla_time_left(due_by, due_by) == timedelta(0)
    assert sla_time_left(due_by, T0 + timedelta(minutes=75)) == timedelta(minutes=-15)


def test_an_escalation_is_breached_once_open_past_its_deadline_or_resolved_after_it() -> None:
    due_by = escalation_due(T0)
    after = due_by + timedelta(minutes=1)
    assert not is_breached(due_by, resolved_at=None, flagged=False, now=due_by)
    assert is_breached(due_by, resolved_at=None, flagged=False, now=after)
    assert not is_breached(due_by, resolved_at=T0, flagged=False, now=after)  # answered in time
    assert is_breached(due_by, resolved_at=after, flagged=False, now=after)
    assert is_breached(due_by, resolved_at=None, flagged=True, now=T0)


def test_unhappy_feedback_opens_an_escalation_due_within_the_sla() -> None:
    unhappy = FeedbackReceived(
        feedback_id="fb-1",
        customer_id="cus-1",
        order_id="o-1",
        ratings=Ratings(overall=2),
        channel="web",
        received_at=T0,
    )
    escalation = escalation_for(unhappy, "esc-1", timedelta(minutes=30))
    assert escalation is not None
    assert (escalation.escalation_id, escalation.feedback_id, escalation.customer_id) == ("esc-1", "fb-1", "cus-1")
    assert (escalation.order_id, escalation.opened_at, escalation.due_by) == ("o-1", T0, T0 + timedelta(minutes=30))
    happy = unhappy.model_copy(update={"ratings": Ratings(overall=5), "nps": 9})
    assert escalation_for(happy, "esc-2", timedelta(minutes=30)) is None


def test_a_failed_send_is_retried_with_a_doubling_back_off_then_given_up() -> None:
    backoff = timedelta(seconds=30)
    first = after_failed_send(0, 3, backoff, T0)
    second = after_failed_send(1, 3, backoff, T0)
    last = after_failed_send(2, 3, backoff, T0)
    assert (first.attempts, first.gave_up, first.retry_at) == (1, False, T0 + timedelta(seconds=30))
    assert (second.attempts, second.gave_up, second.retry_at) == (2, False, T0 + timedelta(seconds=60))
    assert (last.attempts, last.gave_up, last.retry_at) == (3, True, None)
    assert after_failed_send(0, 1, backoff, T0).gave_up  # one attempt allowed: no retry


# --- what gets planned -------------------------------------------------------------


SCHEDULE = Schedule(
    thank_you_delay=timedelta(hours=1), feedback_request_delay=timedelta(days=14), call_delay=timedelta(days=7)
)


def test_a_placed_order_brings_a_thank_you_note_and_a_fulfilled_one_a_feedback_request() -> None:
    placed = Order("o-1", "cus-1", placed_at=T0)
    assert plans_for_order(placed, SCHEDULE, early_customer=True) == [
        Plan("thank_you:o-1", "thank_you", "email", "cus-1", "o-1", T0 + timedelta(hours=1), "pending")
    ]
    shipped = with_fulfilment(placed, T0 + timedelta(days=2))
    assert [(p.followup_id, p.due_at) for p in plans_for_order(shipped, SCHEDULE, early_customer=False)] == [
        ("thank_you:o-1", T0 + timedelta(hours=1)),
        ("feedback_request:o-1", T0 + timedelta(days=16)),
    ]


def test_an_early_customer_gets_a_call_for_a_person_once_the_order_is_fulfilled() -> None:
    placed = Order("o-1", "cus-1", placed_at=T0)
    assert not may_call_for(placed)
    shipped = with_fulfilment(placed, T0 + timedelta(days=2))
    assert may_call_for(shipped)
    [*_, call] = plans_for_order(shipped, SCHEDULE, early_customer=True)
    assert call == Plan("call:cus-1", "call", "person", "cus-1", "o-1", T0 + timedelta(days=9), "pending")
    assert is_early_customer(customers_before=99, first=100)
    assert not is_early_customer(customers_before=100, first=100)
    assert not is_early_customer(customers_before=0, first=0)  # calls switched off


def test_a_fulfilment_heard_of_before_its_order_plans_without_the_thank_you_and_the_earliest_counts() -> None:
    shipped = with_fulfilment(Order("o-1", "cus-1"), T0 + timedelta(days=3))
    assert with_fulfilment(shipped, T0 + timedelta(days=5)) == shipped
    earlier = with_fulfilment(shipped, T0 + timedelta(days=1))
    assert earlier.fulfilled_at == T0 + timedelta(days=1)
    assert [p.kind for p in plans_for_order(earlier, SCHEDULE, early_customer=False)] == ["feedback_request"]


def test_what_is_planned_for_a_refunded_order_starts_cancelled_and_a_refund_cancels_what_is_pending() -> None:
    order = Order("o-1", "cus-1", placed_at=T0, fulfilled_at=T0, total=Decimal("30.00"), currency="EUR")
    refunded = with_refund(with_refund(order, "r-1", Decimal("10.00"), "EUR"), "r-2", Decimal("20.00"), "EUR")
    assert {p.status for p in plans_for_order(refunded, SCHEDULE, early_customer=True)} == {"cancelled"}
    assert planned_for("o-1", "cus-1") == ("thank_you:o-1", "feedback_request:o-1", "call:cus-1")
    assert refund_cancels("o-1", "o-1", "pending")
    assert not refund_cancels("o-1", "o-1", "sent")  # gone out already
    assert not refund_cancels("o-1", "o-2", "pending")  # the call came with another order


def test_only_refunds_that_add_up_to_the_order_make_it_fully_refunded() -> None:
    order = Order("o-1", "cus-1", placed_at=T0, total=Decimal("30.00"), currency="EUR")
    part = with_refund(order, "r-1", Decimal("10.00"), "EUR")
    assert not is_fully_refunded(part)
    assert with_refund(part, "r-1", Decimal("10.00"), "EUR") == part  # the same refund told twice counts once
    assert not is_fully_refunded(with_refund(part, "r-2", Decimal("20.00"), "USD"))  # not comparable
    assert is_fully_refunded(with_refund(part, "r-2", Decimal("20.00"), "EUR"))
    assert not is_fully_refunded(with_refund(Order("o-2", "cus-1"), "r-3", Decimal("99.00"), "EUR"))  # total unknown
    assert {p.status for p in plans_for_order(part, SCHEDULE, early_customer=False)} == {"pending"}
    assert is_fully_refunded(Order("o-3", "cus-1", refunded_in_full=True))  # recorded by the version before


def test_a_referral_invitation_goes_out_at_once_with_its_code() -> None:
    invite = referral_invitation("ev-1", "cus-1", "K7Q-XM4-PA9", T0)
    assert invite == Plan(
        "referral_invite:ev-1", "referral_invite", "email", "cus-1", None, T0, "pending", "K7Q-XM4-PA9"
    )


def test_the_latest_order_gives_the_contact_and_the_earliest_the_first_order() -> None:
    later = with_order_placed(Customer("cus-1"), {"city": "Košice"}, T0 + timedelta(days=1))
    both = with_order_placed(later, {"city": "Trnava"}, T0)  # an older order, heard of last
    assert (both.contact, both.contact_at, both.first_order_at) == ({"city": "Košice"}, T0 + timedelta(days=1), T0)
    kept = erased(both, "erased-1")
    assert kept == Customer("erased-1", contact=None, contact_at=None, first_order_at=T0)


# --- NPS and CSAT -------------------------------------------------------------------


def point(at: datetime, overall: int, nps: int | None, answered_request: bool = True) -> FeedbackPoint:
    return FeedbackPoint(received_at=at, overall=overall, nps=nps, answered_request=answered_request)


JAN = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
FEB = datetime(2026, 2, 3, 9, 0, tzinfo=UTC)
# 23:30 on 31 January in Buenos Aires is already February in UTC.
LATE_JANUARY_ELSEWHERE = datetime(2026, 1, 31, 23, 30, tzinfo=timezone(timedelta(hours=-3)))

# Listed out of order on purpose: the report sorts months itself.
FEEDBACK = [
    point(FEB, overall=5, nps=10),
    point(JAN, overall=5, nps=10),
    point(JAN, overall=4, nps=9),
    point(JAN, overall=4, nps=8),
    point(JAN, overall=3, nps=7),
    point(JAN, overall=2, nps=3),
    point(JAN, overall=1, nps=0, answered_request=False),  # came in by phone
    point(LATE_JANUARY_ELSEWHERE, overall=4, nps=None),
    point(FEB, overall=5, nps=9),
    point(FEB, overall=1, nps=6, answered_request=False),
]


def test_nps_csat_and_response_rate_of_a_hand_computed_example() -> None:
    report = nps_report(FEEDBACK, requests_sent=20)
    # NPS answers: 10, 10, 9, 8, 7, 3, 0, 9, 6 → promoters 4, passives 2, detractors 3.
    assert report.responses == 10
    assert report.nps_answers == 9
    assert (report.promoters, report.passives, report.detractors) == (4, 2, 3)
    assert report.nps == 11.1  # 100 × (4 − 3) / 9 = 11.11…
    # Overall 4 or 5: 5, 5, 4, 4, 4, 5 → 6 of 10.
    assert report.csat == 60.0
    # 8 of the 10 answered a request; 20 requests went out.
    assert report.response_rate == 0.4


def test_months_are_utc_calendar_months_oldest_first() -> None:
    report = nps_report(FEEDBACK, requests_sent=20)
    assert report.months == (
        # January: NPS 10, 9, 8, 7, 3, 0 → 2 promoters, 2 passives, 2 detractors; overall ≥ 4: 3 of 6.
        MonthlyNps(
            month="2026-01",
            responses=6,
            nps_answers=6,
            promoters=2,
            passives=2,
            detractors=2,
            nps=0.0,
            csat=50.0,
        ),
        # February (with the late-January Buenos Aires answer): NPS 10, 9, 6 → 2 − 1 of 3; overall ≥ 4: 3 of 4.
        MonthlyNps(
            month="2026-02",
            responses=4,
            nps_answers=3,
            promoters=2,
            passives=0,
            detractors=1,
            nps=33.3,
            csat=75.0,
        ),
    )


def test_months_can_be_left_out() -> None:
    report = nps_report(FEEDBACK, requests_sent=20, by_month=False)
    assert report.months == ()
    assert report.nps == 11.1


def test_no_feedback_gives_zero_counts_and_no_figures() -> None:
    report = nps_report([], requests_sent=0)
    counts = (report.responses, report.nps_answers, report.promoters, report.passives, report.detractors)
    assert counts == (0, 0, 0, 0, 0)
    assert (report.nps, report.csat, report.response_rate) == (None, None, None)
    assert report.months == ()


def test_feedback_without_nps_answers_has_csat_but_no_nps() -> None:
    report = nps_report([point(JAN, overall=5, nps=None), point(JAN, overall=3, nps=None)], requests_sent=3)
    assert report.nps is None
    assert report.csat == 50.0
    assert report.response_rate == 0.6667  # 2 / 3, four places
    assert report.months[0].nps is None


def test_requests_sent_but_nothing_answered_is_a_zero_response_rate() -> None:
    assert nps_report([], requests_sent=5).response_rate == 0.0


def test_rounding_is_half_up() -> None:
    # 1 promoter and 79 passives: 100 × 1 / 80 = 1.25 → 1.3 (float round() would say 1.2).
    feedback = [point(JAN, overall=5, nps=10)] + [point(JAN, overall=4, nps=7)] * 79
    assert nps_report(feedback, requests_sent=80).nps == 1.3


def test_all_detractors_is_minus_100() -> None:
    assert nps_report([point(JAN, overall=1, nps=0), point(JAN, overall=2, nps=6)], requests_sent=2).nps == -100.0


def test_a_time_without_offset_is_refused() -> None:
    with pytest.raises(ValueError, match="offset"):
        nps_report([point(datetime(2026, 1, 1, 12, 0), overall=5, nps=10)], requests_sent=1)


# --- feedback tokens ----------------------------------------------------------------


def test_a_token_reads_back_its_claims() -> None:
    token = issue_token(SECRET, followup_id="fu_9", customer_id="cus_1001", order_id="ord_5001")
    assert read_token(SECRET, token, max_age_seconds=30 * DAY) == TokenClaims("fu_9", "cus_1001", "ord_5001")


def test_a_token_without_an_order_reads_back_none() -> None:
    token = issue_token(SECRET, followup_id="fu_10", customer_id="cus_1001", order_id=None, now=ISSUED)
    claims = read_token(SECRET, token, max_age_seconds=DAY, now=ISSUED + 60)
    assert claims == TokenClaims("fu_10", "cus_1001", None)


def test_a_token_is_url_safe() -> None:
    token = issue_token(SECRET, followup_id="fu/9 ?&", customer_id="cus é", order_id="ord#1")
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def test_a_token_lives_exactly_max_age_seconds_by_the_injected_clock() -> None:
    token = issue_token(SECRET, followup_id="fu_9", customer_id="cus_1001", order_id="ord_5001", now=ISSUED)
    assert read_token(SECRET, token, max_age_seconds=DAY, now=ISSUED + DAY).followup_id == "fu_9"
    with pytest.raises(InvalidToken) as expired:
        read_token(SECRET, token, max_age_seconds=DAY, now=ISSUED + DAY + 1)
    assert expired.value.reason == "expired"


def test_an_old_token_from_the_real_clock_is_expired() -> None:
    token = issue_token(SECRET, followup_id="fu_9", customer_id="cus_1001", order_id=None)
    with pytest.raises(InvalidToken) as expired:
        read_token(SECRET, token, max_age_seconds=14 * DAY, now=time.time() + 15 * DAY)
    assert expired.value.reason == "expired"
    assert isinstance(expired.value, ValueError)


def test_a_token_from_the_future_is_refused() -> None:
    token = issue_token(SECRET, followup_id="fu_9", customer_id="cus_1001", order_id=None, now=ISSUED)
    with pytest.raises(InvalidToken) as early:
        read_token(SECRET, token, max_age_seconds=DAY, now=ISSUED - 60)
    assert early.value.reason == "issued in the future"


def test_a_token_signed_with_another_secret_is_forged() -> None:
    token = issue_token("someone-elses-secret", followup_id="fu_9", customer_id="cus_1001", order_id=None)
    with pytest.raises(InvalidToken) as forged:
        read_token(SECRET, token, max_age_seconds=DAY)
    assert forged.value.reason == "invalid signature"


def test_a_token_with_a_changed_signature_is_forged() -> None:
    token = issue_token(SECRET, followup_id="fu_9", customer_id="cus_1001", order_id=None)
    payload, stamp, signature = token.rsplit(".", 2)
    tampered = f"{payload}.{stamp}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    with pytest.raises(InvalidToken) as forged:
        read_token(SECRET, tampered, max_age_seconds=DAY)
    assert forged.value.reason == "invalid signature"


def test_an_expired_forged_token_is_reported_as_forged() -> None:
    token = issue_token("someone-elses-secret", followup_id="fu_9", customer_id="cus_1001", order_id=None, now=ISSUED)
    with pytest.raises(InvalidToken) as forged:
        read_token(SECRET, token, max_age_seconds=DAY, now=ISSUED + 30 * DAY)
    assert forged.value.reason == "invalid signature"


@pytest.mark.parametrize("garbled", ["", "not-a-token", "abc.def", "abc.def.ghi", "%%%.***.!!!", "....", "é.é.é"])
def test_a_garbled_token_is_malformed(garbled: str) -> None:
    with pytest.raises(InvalidToken) as bad:
        read_token(SECRET, garbled, max_age_seconds=DAY)
    assert bad.value.reason == "malformed"


def test_a_token_of_another_purpose_signed_with_the_same_secret_is_not_a_feedback_token() -> None:
    other = URLSafeTimedSerializer(SECRET, salt="rapport-unsubscribe").dumps({"customer_id": "cus_1001"})
    with pytest.raises(InvalidToken) as wrong:
        read_token(SECRET, other, max_age_seconds=DAY)
    assert wrong.value.reason == "malformed"  # readable, but not feedback claims


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        issue_token("", followup_id="fu_9", customer_id="cus_1001", order_id=None)
