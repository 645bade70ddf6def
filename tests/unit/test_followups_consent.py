"""What mail a customer agreed to (DESIGN.md §7 "Mail kinds"), their links' tokens, and the pages' words."""

from datetime import UTC, datetime, timedelta

import pytest

from services.followups import domain
from services.followups.domain import Consent
from services.followups.pages import CATALOGUES, FOLDER
from services.followups.tokens import (
    InvalidToken,
    issue_token,
    issue_unsubscribe_token,
    read_token,
    read_unsubscribe_token,
)
from shared.i18n import FALLBACK, LANGUAGES, unknown_ids

MONDAY = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
TUESDAY = MONDAY + timedelta(days=1)


def test_the_latest_order_that_says_gives_the_marketing_answer() -> None:
    fresh = Consent("c")
    said_yes = domain.with_marketing_answer(fresh, True, MONDAY)
    assert (said_yes.accepts_marketing, said_yes.said_at) == (True, MONDAY)
    said_no = domain.with_marketing_answer(said_yes, False, TUESDAY)
    assert (said_no.accepts_marketing, said_no.said_at) == (False, TUESDAY)
    assert domain.with_marketing_answer(said_no, True, MONDAY) == said_no  # an older order heard late
    assert domain.with_marketing_answer(said_no, None, TUESDAY + timedelta(days=1)) == said_no  # a silent order
    assert domain.with_marketing_answer(said_no, False, TUESDAY) == said_no  # told twice


def test_an_unsubscribe_keeps_its_first_time() -> None:
    once = domain.unsubscribed(Consent("c"), MONDAY)
    assert once.unsubscribed_at == MONDAY
    assert domain.unsubscribed(once, TUESDAY).unsubscribed_at == MONDAY


@pytest.mark.parametrize(
    ("accepts", "default", "expected"),
    [(True, False, True), (False, True, False), (None, True, True), (None, False, False)],
)
def test_marketing_consent_is_the_customers_answer_else_the_shops_default(
    accepts: bool | None, default: bool, expected: bool
) -> None:
    assert domain.may_market_to(Consent("c", accepts_marketing=accepts), default) is expected


def test_the_thank_you_note_always_goes_relationship_mail_not_after_an_unsubscribe_invitations_only_with_consent() -> (
    None
):
    agreed = Consent("c", accepts_marketing=True, said_at=MONDAY)
    declined = Consent("c", accepts_marketing=False, said_at=MONDAY)
    gone = domain.unsubscribed(agreed, TUESDAY)

    def why(kind: str, consent: Consent, *, address: bool = False, default: bool = True) -> str | None:
        return domain.why_not_sent(kind, consent, address_unsubscribed=address, consent_default=default)

    assert [why("thank_you", c) for c in (agreed, declined, gone)] == [None, None, None]
    assert why("thank_you", agreed, address=True) is None
    assert why("feedback_request", declined) is None  # not marketing: consent is not needed
    assert why("feedback_request", gone) == "unsubscribed"
    assert why("feedback_request", agreed, address=True) == "unsubscribed"  # the address, kept after an erasure
    assert why("referral_invite", agreed) is None
    assert why("referral_invite", declined) == "no marketing consent"
    assert why("referral_invite", gone) == "unsubscribed"
    assert why("referral_invite", Consent("c")) is None
    assert why("referral_invite", Consent("c"), default=False) == "no marketing consent"


def test_only_relationship_mail_carries_an_unsubscribe() -> None:
    assert [domain.carries_unsubscribe(k) for k in ("thank_you", "feedback_request", "referral_invite", "call")] == [
        False,
        True,
        True,
        False,
    ]
    assert domain.normalised_address("  Eva.Novak@Example.SK ") == "eva.novak@example.sk"


def test_an_unsubscribe_token_names_its_customer_and_nothing_else_passes_for_one() -> None:
    token = issue_unsubscribe_token("s3cret", customer_id="cus-1")
    assert read_unsubscribe_token("s3cret", token) == "cus-1"
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    feedback = issue_token("s3cret", followup_id="f", customer_id="cus-1", order_id=None)
    for bad, reason in (
        (issue_unsubscribe_token("other", customer_id="cus-1"), "invalid signature"),
        (tampered, "invalid signature"),
        (feedback, "invalid signature"),  # another salt: a feedback link cannot unsubscribe anyone
        ("garbled", "malformed"),
    ):
        with pytest.raises(InvalidToken) as refused:
            read_unsubscribe_token("s3cret", bad)
        assert refused.value.reason == reason
    with pytest.raises(InvalidToken):
        read_token("s3cret", token, max_age_seconds=60)  # nor the other way round


def test_an_unsubscribe_link_does_not_expire_and_an_expired_feedback_link_still_says_whose_it_was() -> None:
    old = issue_unsubscribe_token("s3cret", customer_id="cus-1")
    assert read_unsubscribe_token("s3cret", old) == "cus-1"
    expired = issue_token("s3cret", followup_id="feedback_request:o-1", customer_id="cus-1", order_id="o-1", now=0.0)
    with pytest.raises(InvalidToken) as refused:
        read_token("s3cret", expired, max_age_seconds=3600)
    assert refused.value.reason == "expired"
    assert refused.value.claims is not None
    assert refused.value.claims.followup_id == "feedback_request:o-1"


def test_every_id_the_pages_use_is_in_every_language_and_none_is_an_english_copy() -> None:
    assert unknown_ids(FOLDER / "templates", CATALOGUES) == {}
    english = CATALOGUES.by_language[FALLBACK]
    for language in LANGUAGES:
        if language == FALLBACK:
            continue
        same = [key for key, text in CATALOGUES.by_language[language].items() if text == english[key]]
        assert same == [], language
