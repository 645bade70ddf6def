"""Referral rules as plain functions: codes, identities, fraud checks, commission, invitations, K-factor."""

import re
import secrets
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from services.referrals.domain import (
    CODE_ALPHABET,
    CODE_ENTROPY_BITS,
    REFUSAL_REASONS,
    Affiliate,
    Cancellation,
    Clawbacks,
    Code,
    CommissionTotals,
    Contest,
    ContestReason,
    Conversion,
    Converted,
    Customer,
    Invitation,
    MonthStats,
    Party,
    PlacedOrder,
    Referee,
    Referred,
    Refund,
    Refusal,
    RefusalReason,
    address_identity,
    anonymised,
    attribute,
    claw_back,
    clawback,
    clawbacks,
    code_status,
    commission,
    commission_rate,
    commission_totals,
    contest,
    contested_as_cancelled,
    contested_as_own,
    contested_as_returning,
    email_identity,
    enrol,
    first_of,
    invite,
    is_code,
    is_promoter,
    may_invite,
    new_code,
    normalize_code,
    ordered_before,
    program_stats,
    referral_id,
    referred_by,
    referrer_of,
    referring_customer,
    refusal,
    remember_order,
    shares_code,
    with_own_code,
    with_refund,
)
from shared.events import Customer as EventCustomer
from shared.events import LineItem, OrderPlaced, ShippingAddress

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
HOME = address_identity("Hlavná 1", "040 01", "Košice", "SK", line2="Flat 4")
FRIEND_HOME = address_identity("Mlynská 7", "040 01", "Košice", "SK")

CODE = Code("K7Q-XM4-PA9", "cus_eva", None, "customer", expires_at=T0 + timedelta(days=30), max_conversions=5)
EVA = Party("cus_eva", frozenset({email_identity("eva@example.sk")}), frozenset({HOME}))
FRIEND = Referee("cus_jan", email_identity("jan@example.sk"), FRIEND_HOME, False, False)


# --- codes ------------------------------------------------------------------------------


def test_the_alphabet_has_no_look_alikes_and_codes_carry_at_least_40_bits() -> None:
    assert set(CODE_ALPHABET).isdisjoint("0O1IL5S2Z8BGU")
    assert len(CODE_ALPHABET) == len(set(CODE_ALPHABET)) == 23
    assert round(CODE_ENTROPY_BITS, 2) == 40.71


def test_a_new_code_is_three_groups_of_three_from_the_alphabet() -> None:
    code = new_code()

    assert re.fullmatch(rf"[{CODE_ALPHABET}]{{3}}-[{CODE_ALPHABET}]{{3}}-[{CODE_ALPHABET}]{{3}}", code)
    assert is_code(code)
    assert normalize_code(code) == code


def test_new_codes_are_unique_over_ten_thousand_draws_and_use_the_whole_alphabet() -> None:
    codes = [new_code() for _ in range(10_000)]

    # 23**9 ≈ 1.8e12 codes: a collision among 10,000 has a probability of about 3e-5.
    assert len(set(codes)) == 10_000
    assert set("".join(codes).replace("-", "")) == set(CODE_ALPHABET)


def test_a_new_code_is_drawn_from_the_random_source_given() -> None:
    class Scripted(secrets.SystemRandom):
        def __init__(self) -> None:
            super().__init__()
            self.draws = iter("K7QXM4PA9")

        def choice(self, seq: Sequence[str]) -> str:
            return next(self.draws)

    assert new_code(Scripted()) == "K7Q-XM4-PA9"


@pytest.mark.parametrize(
    "typed",
    [
        "K7Q-XM4-PA9",
        "k7q-xm4-pa9",
        "K7QXM4PA9",
        "k7q xm4 pa9",
        " k 7 q x m 4 p a 9 ",
        "--K7Q--XM4--PA9--",
        "K7QX-M4PA9",
        "K7Q–XM4—PA9",  # typographic dashes from a phone keyboard
        "Ｋ７Ｑ－ＸＭ４－ＰＡ９",  # full-width characters
        "K7Q\tXM4\nPA9",
    ],
)
def test_what_a_customer_types_normalizes_to_the_canonical_code(typed: str) -> None:
    assert normalize_code(typed) == "K7Q-XM4-PA9"


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("k7q-xm4-paG", "K7Q-XM4-PA6"),  # G read for 6
        ("uk7-qxm-4pa", "VK7-QXM-4PA"),  # U read for a handwritten V
    ],
)
def test_a_look_alike_becomes_the_character_it_stands_for(typed: str, canonical: str) -> None:
    assert normalize_code(typed) == canonical
    assert is_code(canonical)


@pytest.mark.parametrize(
    ("typed", "normalized"),
    [
        ("K7Q-XM0-PA9", "K7Q-XM0-PA9"),  # 0 could be D or Q: left to fail the lookup
        ("k7q-xmo-pa9", "K7Q-XMO-PA9"),
        ("K7Q-XM1-PA9", "K7Q-XM1-PA9"),
        ("K7Q-XM4", "K7QXM4"),  # too short: never grouped like a real code
        ("K7Q-XM4-PA9-3", "K7QXM4PA93"),
    ],
)
def test_what_cannot_be_a_code_stays_so_the_lookup_fails(typed: str, normalized: str) -> None:
    assert normalize_code(typed) == normalized
    assert not is_code(normalized)


def test_a_code_without_its_dashes_is_not_canonical() -> None:
    assert is_code("K7Q-XM4-PA9")
    assert not is_code("K7QXM4PA9")
    assert not is_code("K7QX-M4PA9")


# --- identities -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("email", "identity"),
    [
        ("Eva@Example.SK", "eva@example.sk"),
        ("eva+friends@example.sk", "eva@example.sk"),
        ("eva+a+b@example.sk", "eva@example.sk"),
        ("e.va@example.sk", "e.va@example.sk"),  # only Gmail ignores dots
        ("E.Va@gmail.com", "eva@gmail.com"),
        ("e.v.a+promo@gmail.com", "eva@gmail.com"),
        ("eva@googlemail.com", "eva@gmail.com"),
        ("E.va+x@GoogleMail.com", "eva@gmail.com"),
        ("  eva@example.sk ", "eva@example.sk"),
    ],
)
def test_email_identity(email: str, identity: str) -> None:
    assert email_identity(email) == identity


def test_an_email_identity_is_its_own_identity() -> None:
    identity = email_identity("E.Va+x@GoogleMail.com")

    assert email_identity(identity) == identity


def test_the_same_address_typed_differently_has_one_identity() -> None:
    retyped = address_identity("hlavna 1,", "04001", "KOSICE", "sk", line2="flat 4.")
    on_one_line = address_identity("Hlavná 1, Flat 4", " 040  01 ", "Košice", "SK")
    squeezed = address_identity("Hlavná1 Flat4", "040-01", "Košice ", "SK")

    assert retyped == on_one_line == squeezed == HOME


def test_different_addresses_have_different_identities() -> None:
    assert address_identity("Hlavná 1", "040 01", "Košice", "SK") != address_identity(
        "Hlavná 11", "040 01", "Košice", "SK"
    )
    assert address_identity("Hlavná 1", "040 01", "Košice", "SK") != address_identity(
        "Hlavná 1", "040 02", "Košice", "SK"
    )
    assert address_identity("Main St 1", "12345", "Springfield", "US") != address_identity(
        "Main St 1", "12345", "Springfield", "CA"
    )


# --- first orders ---------------------------------------------------------------------------


def test_the_first_order_is_the_earliest_placed_whatever_the_arrival_order() -> None:
    orders = [
        PlacedOrder(T0 + timedelta(days=2), "o-3"),
        PlacedOrder(T0, "o-1"),
        PlacedOrder(T0 + timedelta(days=1), "o-2"),
    ]
    for arrival in (orders, orders[::-1], [orders[1], orders[0], orders[2]]):
        first = None
        for order in arrival:
            first = first_of(first, order)
        assert first == PlacedOrder(T0, "o-1")


def test_orders_placed_at_the_same_instant_are_told_apart_by_id() -> None:
    a, b = PlacedOrder(T0, "o-a"), PlacedOrder(T0, "o-b")

    assert first_of(a, b) == first_of(b, a) == a
    assert ordered_before(a, b)
    assert not ordered_before(b, a)


def test_a_customer_had_ordered_before_only_if_an_earlier_order_is_known() -> None:
    order = PlacedOrder(T0, "o-1")

    assert not ordered_before(None, order)
    assert not ordered_before(order, order)  # the same order told again
    assert not ordered_before(PlacedOrder(T0 + timedelta(hours=1), "o-0"), order)  # a later one heard of first
    assert ordered_before(PlacedOrder(T0 - timedelta(seconds=1), "o-9"), order)


def test_a_referral_id_is_fixed_by_the_order_and_fits_an_event_id() -> None:
    assert referral_id("ord_6001") == referral_id("ord_6001")
    assert referral_id("ord_6001") != referral_id("ord_6002")
    assert re.fullmatch(r"rf_[0-9a-f]{24}", referral_id("x" * 128))


# --- contests: facts heard of after a conversion -------------------------------------------------


def test_an_order_placed_before_the_converted_one_contests_it_as_a_returning_customer() -> None:
    converted = PlacedOrder(T0, "o-5")

    assert contested_as_returning(converted, PlacedOrder(T0 - timedelta(days=3), "o-1"))
    assert not contested_as_returning(converted, PlacedOrder(T0 + timedelta(days=3), "o-9"))
    assert not contested_as_returning(converted, converted)


def test_a_referrer_known_later_under_the_referees_email_or_address_contests_it_as_their_own() -> None:
    assert contested_as_own(EVA, email_identity("EVA+friend@example.sk"), None)
    assert contested_as_own(EVA, "jan@example.sk", HOME)
    assert not contested_as_own(EVA, "jan@example.sk", FRIEND_HOME)
    assert not contested_as_own(EVA, None, None)  # the referee's identities were erased


# --- attribution: each fraud rule -----------------------------------------------------------


def test_a_first_order_by_someone_else_converts() -> None:
    assert refusal(CODE, EVA, FRIEND, T0) is None


def test_an_unknown_code_is_refused() -> None:
    assert refusal(None, None, FRIEND, T0) == RefusalReason.UNKNOWN_CODE


def test_the_referrers_own_customer_id_is_an_own_order() -> None:
    eva_herself = replace(FRIEND, customer_id="cus_eva")

    assert refusal(CODE, EVA, eva_herself, T0) == RefusalReason.OWN_ORDER
    assert (
        refusal(CODE, None, eva_herself, T0) == RefusalReason.OWN_ORDER
    )  # the code names her even when her details are gone


def test_an_affiliate_ordering_under_their_own_customer_id_is_an_own_order() -> None:
    code = Code("AFF-333-444", None, "aff_1", "affiliate")
    affiliate = Party("cus_anna", frozenset({email_identity("anna@shop.example")}))

    assert refusal(code, affiliate, replace(FRIEND, customer_id="cus_anna"), T0) == RefusalReason.OWN_ORDER
    assert refusal(code, affiliate, FRIEND, T0) is None
    assert refusal(code, None, FRIEND, T0) is None


def test_the_referrers_email_with_a_plus_tag_is_an_own_order() -> None:
    second_account = replace(FRIEND, email_identity=email_identity("Eva+deal@example.sk"))

    assert refusal(CODE, EVA, second_account, T0) == RefusalReason.OWN_ORDER


def test_the_referrers_gmail_with_dots_is_an_own_order() -> None:
    eva = replace(EVA, emails=frozenset({email_identity("eva.novak@gmail.com")}))
    second_account = replace(FRIEND, email_identity=email_identity("e.v.a.n.o.v.a.k@gmail.com"))

    assert refusal(CODE, eva, second_account, T0) == RefusalReason.OWN_ORDER


def test_the_referrers_gmail_as_googlemail_is_an_own_order() -> None:
    eva = replace(EVA, emails=frozenset({email_identity("evanovak@gmail.com")}))
    second_account = replace(FRIEND, email_identity=email_identity("EvaNovak@googlemail.com"))

    assert refusal(CODE, eva, second_account, T0) == RefusalReason.OWN_ORDER


def test_any_of_the_referrers_known_emails_is_an_own_order() -> None:
    eva = replace(EVA, emails=frozenset({email_identity("eva@example.sk"), email_identity("eva@work.example")}))

    assert (
        refusal(CODE, eva, replace(FRIEND, email_identity=email_identity("eva@work.example")), T0)
        == RefusalReason.OWN_ORDER
    )


def test_dots_in_a_non_gmail_address_make_a_different_person() -> None:
    someone_else = replace(FRIEND, email_identity=email_identity("e.va@example.sk"))

    assert refusal(CODE, EVA, someone_else, T0) is None


def test_the_referrers_address_typed_differently_is_an_own_order() -> None:
    retyped = address_identity("HLAVNA 1 / flat 4", "04001", "kosice", "sk")

    assert refusal(CODE, EVA, replace(FRIEND, address_identity=retyped), T0) == RefusalReason.OWN_ORDER


def test_the_same_address_known_on_one_side_only_is_not_an_own_order() -> None:
    address_unknown = replace(FRIEND, address_identity=None)
    referrer_address_unknown = replace(EVA, addresses=frozenset())

    assert refusal(CODE, EVA, address_unknown, T0) is None
    assert refusal(CODE, referrer_address_unknown, replace(FRIEND, address_identity=HOME), T0) is None


def test_a_returning_customer_is_refused() -> None:
    assert refusal(CODE, EVA, replace(FRIEND, has_ordered_before=True), T0) == RefusalReason.RETURNING_CUSTOMER


def test_a_customer_referred_before_is_refused() -> None:
    assert refusal(CODE, EVA, replace(FRIEND, was_referred_before=True), T0) == RefusalReason.ALREADY_REFERRED


def test_an_order_placed_after_the_code_expired_is_refused() -> None:
    expires_at = T0 + timedelta(days=30)

    assert refusal(CODE, EVA, FRIEND, expires_at + timedelta(seconds=1)) == RefusalReason.EXPIRED_CODE
    assert refusal(CODE, EVA, FRIEND, expires_at) is None
    assert refusal(replace(CODE, expires_at=None), EVA, FRIEND, T0 + timedelta(days=3650)) is None


def test_an_order_placed_at_the_expiry_in_another_offset_is_compared_as_the_same_moment() -> None:
    expires_at = T0 + timedelta(days=30)
    later_in_bratislava = (expires_at + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=1)))

    assert refusal(CODE, EVA, FRIEND, later_in_bratislava) == RefusalReason.EXPIRED_CODE


def test_a_code_at_its_cap_is_refused() -> None:
    assert refusal(replace(CODE, conversions=5), EVA, FRIEND, T0) == RefusalReason.CAPPED_CODE
    assert refusal(replace(CODE, conversions=6), EVA, FRIEND, T0) == RefusalReason.CAPPED_CODE
    assert refusal(replace(CODE, conversions=4), EVA, FRIEND, T0) is None
    assert refusal(replace(CODE, max_conversions=None, conversions=10_000), EVA, FRIEND, T0) is None


# --- attribution: precedence ---------------------------------------------------------------


def test_refusal_reasons_are_listed_in_the_order_refusal_checks_them() -> None:
    # Everything is wrong at once: lifting whichever reason refusal() gives, one at a time, walks the list in order.
    late = T0 + timedelta(days=31)
    code: Code | None = None
    referee = Referee("cus_eva", email_identity("eva@example.sk"), HOME, True, True)
    lift = {
        RefusalReason.UNKNOWN_CODE: lambda: (replace(CODE, conversions=5), referee, late),
        RefusalReason.OWN_ORDER: lambda: (
            code,
            replace(FRIEND, has_ordered_before=True, was_referred_before=True),
            late,
        ),
        RefusalReason.RETURNING_CUSTOMER: lambda: (code, replace(referee, has_ordered_before=False), late),
        RefusalReason.ALREADY_REFERRED: lambda: (code, replace(referee, was_referred_before=False), late),
        RefusalReason.EXPIRED_CODE: lambda: (code, referee, T0),
        RefusalReason.CAPPED_CODE: lambda: (replace(CODE, conversions=0), referee, T0),
    }
    given = []
    placed_at = late
    while (reason := refusal(code, EVA, referee, placed_at)) is not None:
        given.append(reason)
        code, referee, placed_at = lift[reason]()

    assert given == list(REFUSAL_REASONS)


def test_the_first_reason_that_applies_wins_and_fraud_comes_before_the_codes_limits() -> None:
    # Everything is wrong; lift one problem at a time, in precedence order.
    expired_and_capped = replace(CODE, conversions=5)
    late = T0 + timedelta(days=31)
    eva_again = Referee("cus_eva", email_identity("eva@example.sk"), HOME, True, True)

    assert refusal(None, EVA, eva_again, late) == RefusalReason.UNKNOWN_CODE
    assert refusal(expired_and_capped, EVA, eva_again, late) == RefusalReason.OWN_ORDER
    not_eva = replace(eva_again, customer_id="cus_jan", email_identity="jan@example.sk", address_identity=None)
    assert refusal(expired_and_capped, EVA, not_eva, late) == RefusalReason.RETURNING_CUSTOMER
    first_order = replace(not_eva, has_ordered_before=False)
    assert refusal(expired_and_capped, EVA, first_order, late) == RefusalReason.ALREADY_REFERRED
    never_referred = replace(first_order, was_referred_before=False)
    assert refusal(expired_and_capped, EVA, never_referred, late) == RefusalReason.EXPIRED_CODE
    assert refusal(expired_and_capped, EVA, never_referred, T0) == RefusalReason.CAPPED_CODE
    assert refusal(CODE, EVA, never_referred, T0) is None


def test_a_codes_status_is_what_an_order_at_that_moment_would_meet() -> None:
    assert code_status(CODE, T0) == "active"
    assert code_status(CODE, T0 + timedelta(days=31)) == "expired"
    assert code_status(replace(CODE, conversions=5), T0) == "capped"
    assert code_status(replace(CODE, conversions=5), T0 + timedelta(days=31)) == "expired"  # as refusal() ranks them
    assert code_status(replace(CODE, expires_at=None, max_conversions=None, conversions=99), T0) == "active"


# --- commission and clawback -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "rate", "expected"),
    [
        ("80.00", "0.10", "8.00"),
        ("40.05", "0.10", "4.01"),  # 4.005 rounds half up, not to even
        ("49.99", "0.10", "5.00"),  # 4.999
        ("12.34", "0.15", "1.85"),  # 1.851
        ("0.00", "0.10", "0.00"),
        ("80.00", "0", "0.00"),
    ],
)
def test_commission_is_total_times_rate_to_the_cent_half_up(total: str, rate: str, expected: str) -> None:
    result = commission(Decimal(total), Decimal(rate))

    assert result == Decimal(expected)
    assert result.as_tuple().exponent == -2


@pytest.mark.parametrize("rate", ["-0.01", "1.01", "10"])
def test_a_commission_rate_outside_zero_to_one_is_refused(rate: str) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        commission(Decimal("80.00"), Decimal(rate))


def test_three_equal_partial_refunds_claw_back_the_whole_commission_exactly() -> None:
    # 10.00 on 30.00: shares after each refund 3.333→3.33, 6.667→6.67, 10.00.
    earned = Decimal("10.00")
    total = Decimal("30.00")

    first = clawback(earned, total, Decimal("0.00"), Decimal("10.00"))
    second = clawback(earned, total, Decimal("10.00"), Decimal("10.00"))
    third = clawback(earned, total, Decimal("20.00"), Decimal("10.00"))

    assert (first, second, third) == (Decimal("3.33"), Decimal("3.34"), Decimal("3.33"))
    assert first + second + third == earned


def test_uneven_refunds_add_up_to_the_commission_and_an_over_refund_takes_no_more() -> None:
    # shares: 7.00→2.333→2.33; 20.00→6.67; 35.00 is capped at 30.00→10.00
    earned = Decimal("10.00")
    total = Decimal("30.00")

    clawbacks = [
        clawback(earned, total, Decimal("0.00"), Decimal("7.00")),
        clawback(earned, total, Decimal("7.00"), Decimal("13.00")),
        clawback(earned, total, Decimal("20.00"), Decimal("15.00")),
        clawback(earned, total, Decimal("35.00"), Decimal("5.00")),
    ]

    assert clawbacks == [Decimal("2.33"), Decimal("4.34"), Decimal("3.33"), Decimal("0.00")]
    assert sum(clawbacks) == earned


def test_a_partial_refund_claws_back_only_its_share() -> None:
    assert clawback(Decimal("10.00"), Decimal("30.00"), Decimal("0.00"), Decimal("5.00")) == Decimal("1.67")
    assert clawback(Decimal("10.00"), Decimal("30.00"), Decimal("0.00"), Decimal("0.00")) == Decimal("0.00")


def test_refunds_in_any_order_and_any_size_add_up_to_the_commission_exactly() -> None:
    earned = commission(Decimal("87.53"), Decimal("0.10"))  # 8.753 → 8.75
    total = Decimal("87.53")
    assert earned == Decimal("8.75")

    for step in ("0.01", "0.07", "1.00", "2.99", "7.77", "29.99", "87.53", "100.00"):
        refunded = taken = Decimal("0.00")
        while refunded < total:
            amount = clawback(earned, total, refunded, Decimal(step))
            assert amount >= 0, step
            taken += amount
            refunded += Decimal(step)
            assert taken <= earned, step
        assert taken == earned, step


def test_the_same_refunds_in_another_order_claw_back_the_same_in_total() -> None:
    earned = Decimal("10.00")
    total = Decimal("30.00")

    def clawed(refunds: list[str]) -> Decimal:
        refunded = Decimal("0.00")
        taken = Decimal("0.00")
        for refund in map(Decimal, refunds):
            taken += clawback(earned, total, refunded, refund)
            refunded += refund
        return taken

    assert clawed(["7.00", "13.00", "4.00"]) == clawed(["4.00", "13.00", "7.00"]) == Decimal("8.00")


def test_nothing_is_clawed_back_on_a_zero_total_and_a_negative_refund_is_refused() -> None:
    assert clawback(Decimal("0.00"), Decimal("0.00"), Decimal("0.00"), Decimal("5.00")) == Decimal("0.00")
    with pytest.raises(ValueError, match="not negative"):
        clawback(Decimal("10.00"), Decimal("30.00"), Decimal("0.00"), Decimal("-1.00"))


def test_clawbacks_follow_the_refunds_in_the_order_they_were_made_not_heard_of() -> None:
    first = Refund("r-1", Decimal("7.00"), T0, "EUR")
    second = Refund("r-2", Decimal("13.00"), T0 + timedelta(hours=1), "EUR")
    third = Refund("r-3", Decimal("10.00"), T0 + timedelta(hours=2), "EUR")
    expected = Clawbacks(
        (("r-1", Decimal("2.33")), ("r-2", Decimal("4.34")), ("r-3", Decimal("3.33"))),
        Decimal("0.00"),
        Decimal("10.00"),
    )

    for heard in ([first, second, third], [third, first, second], [second, third, first]):
        assert clawbacks(Decimal("10.00"), Decimal("30.00"), heard, contested=False) == expected


def test_a_contested_conversion_earns_nothing_whatever_refunds_took_already() -> None:
    refunds = [Refund("r-1", Decimal("7.00"), T0, "EUR")]

    taken = clawbacks(Decimal("10.00"), Decimal("30.00"), refunds, contested=True)

    assert taken == Clawbacks((("r-1", Decimal("2.33")),), Decimal("7.67"), Decimal("10.00"))
    assert taken.net(Decimal("10.00")) == Decimal("0.00")
    nothing_refunded = clawbacks(Decimal("10.00"), Decimal("30.00"), [], contested=True)
    assert (nothing_refunded.contested, nothing_refunded.net(Decimal("10.00"))) == (Decimal("10.00"), Decimal("0.00"))


def test_a_fully_refunded_and_contested_conversion_takes_back_the_commission_once() -> None:
    refunds = [
        Refund("r-1", Decimal("30.00"), T0, "EUR"),
        Refund("r-2", Decimal("5.00"), T0 + timedelta(days=1), "EUR"),
    ]

    taken = clawbacks(Decimal("10.00"), Decimal("30.00"), refunds, contested=True)

    assert taken.by_refund == (("r-1", Decimal("10.00")), ("r-2", Decimal("0.00")))
    assert (taken.contested, taken.total) == (Decimal("0.00"), Decimal("10.00"))


def test_no_refunds_take_nothing_back() -> None:
    taken = clawbacks(Decimal("10.00"), Decimal("30.00"), [], contested=False)

    assert taken == Clawbacks((), Decimal("0.00"), Decimal("0.00"))
    assert taken.net(Decimal("10.00")) == Decimal("10.00")


# --- the happy moment -----------------------------------------------------------------------


@pytest.mark.parametrize(("nps", "promoter"), [(None, False), (0, False), (8, False), (9, True), (10, True)])
def test_a_promoter_answers_nine_or_ten(nps: int | None, promoter: bool) -> None:
    assert is_promoter(nps) is promoter


def test_a_customer_never_invited_may_be_invited() -> None:
    assert may_invite(None, T0)


def test_a_customer_may_be_invited_again_after_ninety_days_only() -> None:
    assert not may_invite(T0, T0)
    assert not may_invite(T0, T0 + timedelta(days=90) - timedelta(seconds=1))
    assert may_invite(T0, T0 + timedelta(days=90))


def test_a_happy_moment_older_than_the_last_invitation_invites_no_one() -> None:
    assert not may_invite(T0, T0 - timedelta(days=200))


def test_the_wait_between_invitations_is_a_setting() -> None:
    assert may_invite(T0, T0 + timedelta(days=7), every=timedelta(days=7))
    assert not may_invite(T0, T0 + timedelta(days=6), every=timedelta(days=7))


# --- program statistics and K-factor ----------------------------------------------------------


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_k_factor_overall_and_by_month_on_a_hand_computed_example() -> None:
    invitations = [
        *[at(f"2026-01-{day:02d}T10:00:00+00:00") for day in (3, 5, 9, 14, 20)],
        at("2026-02-01T00:30:00+01:00"),  # still 31 January in UTC
        *[at(f"2026-02-{day:02d}T10:00:00+00:00") for day in (2, 10, 11, 25)],
    ]
    conversions = [
        at("2026-01-28T10:00:00+00:00"),
        at("2026-02-12T10:00:00+00:00"),
        at("2026-03-01T00:30:00+02:00"),  # still 28 February in UTC
        at("2026-03-04T10:00:00+00:00"),
    ]

    stats = program_stats(
        invitations,
        conversions,
        {RefusalReason.OWN_ORDER: 2, RefusalReason.EXPIRED_CODE: 1},
        customers=30,
        codes_shared=12,
    )

    # 10 invitations, 4 conversions, 30 customers:
    # rate 4/10 = 0.4000, invitations per customer 10/30 = 0.3333, K = 0.3333… × 0.4 = 4/30 = 0.1333
    assert (stats.invitations, stats.codes_shared, stats.conversions) == (10, 12, 4)
    assert stats.conversion_rate == Decimal("0.4000")
    assert stats.invitations_per_customer == Decimal("0.3333")
    assert stats.k_factor == Decimal("0.1333")
    # January 6 invited, 1 converted: rate 1/6 = 0.1667, K = 6/30 × 1/6 = 0.0333
    # February 4 invited, 2 converted: rate 0.5000, K = 4/30 × 2/4 = 0.0667
    # March: no invitations, so neither a rate nor a K-factor
    assert stats.months == (
        MonthStats("2026-01", 6, 1, Decimal("0.1667"), Decimal("0.0333")),
        MonthStats("2026-02", 4, 2, Decimal("0.5000"), Decimal("0.0667")),
        MonthStats("2026-03", 0, 1, None, None),
    )
    assert dict(stats.refusals) == {
        RefusalReason.UNKNOWN_CODE: 0,
        RefusalReason.OWN_ORDER: 2,
        RefusalReason.RETURNING_CUSTOMER: 0,
        RefusalReason.ALREADY_REFERRED: 0,
        RefusalReason.EXPIRED_CODE: 1,
        RefusalReason.CAPPED_CODE: 0,
    }


def test_months_come_oldest_first_across_a_year_whatever_the_input_order() -> None:
    stats = program_stats(
        [at("2026-01-05T10:00:00+00:00"), at("2025-12-05T10:00:00+00:00"), at("2025-11-05T10:00:00+00:00")],
        [],
        {},
        customers=3,
        codes_shared=0,
    )

    assert [month.month for month in stats.months] == ["2025-11", "2025-12", "2026-01"]
    assert all(month.conversion_rate == Decimal("0.0000") for month in stats.months)
    assert stats.k_factor == Decimal("0.0000")


def test_refusals_of_a_reason_not_in_the_catalogue_are_still_reported() -> None:
    stats = program_stats([], [], {"blocked_by_hand": 3}, customers=1, codes_shared=0)

    assert list(stats.refusals) == [*REFUSAL_REASONS, "blocked_by_hand"]
    assert stats.refusals["blocked_by_hand"] == 3


def test_an_empty_program_has_no_ratios() -> None:
    stats = program_stats([], [], {}, customers=0, codes_shared=0)

    assert (stats.invitations, stats.codes_shared, stats.conversions) == (0, 0, 0)
    assert stats.conversion_rate is None
    assert stats.invitations_per_customer is None
    assert stats.k_factor is None
    assert stats.months == ()
    assert dict(stats.refusals) == dict.fromkeys(REFUSAL_REASONS, 0)


def test_customers_without_invitations_have_no_conversion_rate_nor_k_factor() -> None:
    stats = program_stats([], [at("2026-02-12T10:00:00+00:00")], {}, customers=50, codes_shared=4)

    assert stats.invitations_per_customer == Decimal("0.0000")
    assert stats.conversion_rate is None
    assert stats.k_factor is None
    assert stats.months == (MonthStats("2026-02", 0, 1, None, None),)


def test_invitations_without_customers_have_a_rate_but_no_k_factor() -> None:
    stats = program_stats([at("2026-02-10T10:00:00+00:00")] * 4, [at("2026-02-12T10:00:00+00:00")], {}, 0, 2)

    assert stats.conversion_rate == Decimal("0.2500")
    assert stats.invitations_per_customer is None
    assert stats.k_factor is None
    assert stats.months == (MonthStats("2026-02", 4, 1, Decimal("0.2500"), None),)


def test_a_timestamp_without_an_offset_is_refused() -> None:
    with pytest.raises(ValueError, match="offset"):
        program_stats([datetime(2026, 2, 10, 10, 0)], [], {}, customers=1, codes_shared=0)


# --- the whole decision on an order, and what later facts change ----------------------------------


def order_placed(
    customer_id: str = "cus_jan",
    order_id: str = "o-jan1",
    *,
    code: str | None = "k7q xm4 pa9",
    email: str = "jan@example.sk",
    total: str = "80.00",
    at: datetime = T0,
) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id,
        customer=EventCustomer(customer_id=customer_id, email=email),
        placed_at=at,
        currency="EUR",
        total=Decimal(total),
        line_items=[LineItem(sku="TEA", name="Tea", quantity=1, unit_price=Decimal(total))],
        referral_code=code,
        shipping_address=ShippingAddress(line1="Mlynská 7", postal_code="040 01", city="Košice", country="SK"),
    )


AFFILIATE = Affiliate(
    "aff_1", "Anna's blog", "anna@blog.example", "anna@blog.example", "cus_anna", None, "AFF-333-444", T0
)
AFFILIATE_CODE = Code("AFF-333-444", None, "aff_1", "affiliate")


def test_an_order_remembers_the_first_order_and_only_new_identities() -> None:
    later, earlier = PlacedOrder(T0, "o-2"), PlacedOrder(T0 - timedelta(days=1), "o-1")
    once = remember_order(Customer("cus_jan"), later, order_placed(order_id="o-2", email="Jan+x@example.sk"))
    twice = remember_order(once.customer, earlier, order_placed(order_id="o-1"))

    assert (once.new_emails, once.new_addresses) == (("jan@example.sk",), (FRIEND_HOME,))
    assert (twice.new_emails, twice.new_addresses) == ((), ())
    assert twice.customer == replace(once.customer, first_order=earlier)


def test_a_converting_order_is_kept_counted_on_its_code_and_published_naming_the_referrer() -> None:
    order = order_placed()

    decision = attribute(
        order, PlacedOrder(T0, order.order_id), Customer("cus_jan"), CODE, EVA, Decimal("0.10"), [], T0
    )

    assert isinstance(decision, Converted)
    conversion = decision.conversion
    assert (conversion.code, conversion.program, conversion.referee_customer_id) == (
        "K7Q-XM4-PA9",
        "customer",
        "cus_jan",
    )
    assert (conversion.referee_email, conversion.referee_address, conversion.commission) == (
        "jan@example.sk",
        FRIEND_HOME,
        None,
    )
    assert decision.code == replace(CODE, conversions=1)
    assert decision.event.model_dump() == {
        "referral_id": referral_id("o-jan1"),
        "code": "K7Q-XM4-PA9",
        "referrer_customer_id": "cus_eva",
        "referee_customer_id": "cus_jan",
        "order_id": "o-jan1",
        "order_total": "80.00",  # money travels as a decimal string
        "currency": "EUR",
        "converted_at": T0,
        "program": "customer",
        "commission": None,
    }
    assert referred_by(Customer("cus_jan"), conversion).referred == Referred("o-jan1", T0, referral_id("o-jan1"))


def test_an_affiliate_conversion_pays_the_affiliate_by_id_less_the_refunds_heard_of_before() -> None:
    order = order_placed(code="AFF-333-444", total="50.00")
    refunds = [Refund("r-1", Decimal("10.00"), T0, "EUR"), Refund("r-2", Decimal("5.00"), T0, "USD")]
    rate = commission_rate(AFFILIATE, Decimal("0.10"))
    referrer = referrer_of(AFFILIATE_CODE, None, AFFILIATE)

    decision = attribute(
        order, PlacedOrder(T0, order.order_id), Customer("cus_jan"), AFFILIATE_CODE, referrer, rate, refunds, T0
    )

    assert isinstance(decision, Converted)
    earned = decision.conversion.commission
    assert earned is not None
    assert (earned.rate, earned.earned, earned.taken.total, earned.due) == (
        Decimal("0.10"),
        Decimal("5.00"),
        Decimal("1.00"),
        Decimal("4.00"),
    )
    assert [r.refund_id for r in earned.refunds] == ["r-1"]  # a refund in dollars is not set against euros
    assert (decision.event.referrer_customer_id, decision.event.commission) == ("aff_1", Decimal("5.00"))


def test_a_refused_order_keeps_the_reason_and_an_unknown_or_revoked_code_names_no_one() -> None:
    order = order_placed()
    placed = PlacedOrder(T0, order.order_id)
    revoked = replace(CODE, revoked_at=T0 - timedelta(days=1))

    own = attribute(order, placed, Customer("cus_eva"), CODE, EVA, Decimal("0.10"), [], T0)
    gone = attribute(order, placed, Customer("cus_jan"), revoked, EVA, Decimal("0.10"), [], T0)

    assert isinstance(own, Refusal)
    assert (own.reason, own.program, own.referrer_customer_id) == (RefusalReason.OWN_ORDER, "customer", "cus_eva")
    assert isinstance(gone, Refusal)
    assert (gone.reason, gone.program, gone.referrer_customer_id) == (RefusalReason.UNKNOWN_CODE, None, None)
    assert code_status(revoked, T0) == "revoked"


def test_a_customer_who_ordered_or_was_referred_before_is_refused_from_their_record() -> None:
    order = order_placed()
    placed = PlacedOrder(T0, order.order_id)
    returning = Customer("cus_jan", first_order=PlacedOrder(T0 - timedelta(days=1), "o-0"))
    referred = Customer("cus_jan", referred=Referred("o-9", T0 - timedelta(days=1), referral_id("o-9")))

    for customer, reason in ((returning, RefusalReason.RETURNING_CUSTOMER), (referred, RefusalReason.ALREADY_REFERRED)):
        decision = attribute(order, placed, customer, CODE, EVA, Decimal("0.10"), [], T0)
        assert isinstance(decision, Refusal)
        assert decision.reason == reason


def converted_affiliate_sale() -> Conversion:
    order = order_placed(code="AFF-333-444", total="30.00")
    decision = attribute(
        order, PlacedOrder(T0, order.order_id), Customer("cus_jan"), AFFILIATE_CODE, None, Decimal("0.10"), [], T0
    )
    assert isinstance(decision, Converted)
    return decision.conversion


def test_a_contest_is_kept_once_and_takes_the_whole_commission_back() -> None:
    refunds = [Refund("r-1", Decimal("7.00"), T0, "EUR")]

    contested = contest(converted_affiliate_sale(), ContestReason.RETURNING_CUSTOMER, "o-0", T0, refunds)

    assert contested is not None
    assert contested.contest == Contest(ContestReason.RETURNING_CUSTOMER, "o-0", T0)
    assert contested.commission is not None
    # 3.00 earned, 0.70 of it taken back by the refund: the contest takes the other 2.30
    assert (contested.commission.taken.contested, contested.commission.due) == (Decimal("2.30"), Decimal("0.00"))
    assert contest(contested, ContestReason.OWN_ORDER, "o-x", T0, refunds) is None  # the first fact stands
    refused = attribute(
        order_placed(code="ZZZ"), PlacedOrder(T0, "o-jan1"), Customer("cus_jan"), None, None, Decimal("0.10"), [], T0
    )
    assert contest(refused, ContestReason.OWN_ORDER, "o-x", T0, []) is None
    assert contest(None, ContestReason.OWN_ORDER, "o-x", T0, []) is None


def test_a_cancelled_order_contests_its_conversion_and_takes_back_the_rest_of_the_commission() -> None:
    sale = converted_affiliate_sale()
    refunds = [Refund("r-1", Decimal("7.00"), T0, "EUR")]
    cancelled = Cancellation(sale.order_id, T0 + timedelta(hours=3))

    contested = contested_as_cancelled(sale, cancelled, refunds)

    assert contested is not None
    assert contested.contest == Contest(ContestReason.ORDER_CANCELLED, sale.order_id, T0 + timedelta(hours=3))
    assert contested.commission is not None
    # 3.00 earned: the refund of 7.00 of 30.00 took 0.70, the cancellation takes the other 2.30, nothing is due
    assert [amount for _, amount in contested.commission.taken.by_refund] == [Decimal("0.70")]
    assert (contested.commission.taken.contested, contested.commission.due) == (Decimal("2.30"), Decimal("0.00"))
    assert contested_as_cancelled(contested, cancelled, refunds) is None  # told again: nothing more
    later_refund = claw_back(contested, [*refunds, Refund("r-2", Decimal("23.00"), T0, "EUR")], refunds[0])
    assert later_refund is not None  # the rest of the money comes back too: the commission is taken back once
    assert later_refund.clawed_back == Decimal("3.00")
    assert later_refund.conversion.commission is not None
    assert later_refund.conversion.commission.due == Decimal("0.00")
    refused = attribute(
        order_placed(code="ZZZ"), PlacedOrder(T0, "o-jan1"), Customer("cus_jan"), None, None, Decimal("0.10"), [], T0
    )
    assert contested_as_cancelled(refused, Cancellation("o-jan1", T0), []) is None


def test_a_cancellation_heard_of_before_the_order_ends_as_when_it_comes_after() -> None:
    order = order_placed(code="AFF-333-444", total="30.00")
    placed = PlacedOrder(T0, order.order_id)
    refunds = [Refund("r-1", Decimal("7.00"), T0, "EUR")]
    cancelled = Cancellation(order.order_id, T0 + timedelta(hours=3))
    args = (order, placed, Customer("cus_jan"), AFFILIATE_CODE, None, Decimal("0.10"), refunds, T0)

    first = attribute(*args, cancellation=cancelled)
    then = attribute(*args)

    assert isinstance(first, Converted)
    assert isinstance(then, Converted)
    assert first.conversion == contested_as_cancelled(then.conversion, cancelled, refunds)
    assert (first.event, first.code) == (then.event, then.code)  # converted, counted and published all the same


def test_a_refund_claws_back_from_an_affiliates_commission_only_in_the_orders_currency() -> None:
    sale = converted_affiliate_sale()
    euros = Refund("r-1", Decimal("15.00"), T0, "EUR")
    dollars = Refund("r-2", Decimal("15.00"), T0 + timedelta(hours=1), "USD")

    refunds = with_refund([], euros)
    assert refunds is not None
    first = claw_back(sale, refunds, euros)
    both = with_refund(refunds, dollars)
    assert both is not None
    second = claw_back(sale, both, dollars)

    assert first is not None
    assert second is not None
    assert (first.in_another_currency, second.in_another_currency) == (False, True)
    assert first.conversion.commission == second.conversion.commission
    assert first.conversion.commission is not None
    assert first.conversion.commission.due == Decimal("1.50")
    assert with_refund(both, euros) is None  # the same refund told again
    customer_sale = attribute(
        order_placed(), PlacedOrder(T0, "o-jan1"), Customer("cus_jan"), CODE, EVA, Decimal("0.10"), [], T0
    )
    assert isinstance(customer_sale, Converted)
    assert claw_back(customer_sale.conversion, refunds, euros) is None  # no commission to claw back


def test_commission_totals_add_up_per_currency() -> None:
    sale = converted_affiliate_sale()  # 3.00 on 30.00
    refunded = claw_back(sale, [Refund("r-1", Decimal("10.00"), T0, "EUR")], Refund("r-1", Decimal("10.00"), T0, "EUR"))
    assert refunded is not None

    totals = commission_totals([sale, refunded.conversion])

    assert totals == {"EUR": CommissionTotals(Decimal("6.00"), Decimal("1.00"), Decimal("5.00"))}


def test_an_affiliate_is_known_under_their_contact_email_and_their_customer_account() -> None:
    anna = Customer("cus_anna", emails=(email_identity("anna@home.example"),), addresses=(HOME,))

    party = referrer_of(AFFILIATE_CODE, anna, AFFILIATE)

    assert party == Party("cus_anna", frozenset({"anna@home.example", "anna@blog.example"}), frozenset({HOME}))
    assert referring_customer(AFFILIATE_CODE, AFFILIATE) == "cus_anna"
    assert referrer_of(AFFILIATE_CODE, None, None) == Party(None)
    assert referrer_of(CODE, None, None) == Party("cus_eva")


def test_the_commission_rate_is_the_affiliates_own_or_the_shops_default() -> None:
    assert commission_rate(replace(AFFILIATE, commission_rate=Decimal("0.15")), Decimal("0.10")) == Decimal("0.15")
    assert commission_rate(AFFILIATE, Decimal("0.10")) == Decimal("0.10")
    assert commission_rate(None, Decimal("0.12")) == Decimal("0.12")


def test_an_affiliate_enrols_with_their_own_code_and_limits() -> None:
    enrolled = enrol(
        "aff_2",
        "K7Q-XM4-PA9",
        name="Bo",
        email="Bo+x@Shop.example",
        customer_id=None,
        commission_rate=None,
        default_rate=Decimal("0.10"),
        expires_at=T0 + timedelta(days=30),
        max_conversions=3,
        at=T0,
    )

    assert (enrolled.affiliate.email_identity, enrolled.affiliate.commission_rate) == (
        "bo@shop.example",
        Decimal("0.10"),
    )
    assert enrolled.code == Code("K7Q-XM4-PA9", None, "aff_2", "affiliate", T0 + timedelta(days=30), 3, created_at=T0)


def test_a_code_is_shared_by_any_order_but_the_referrers_own() -> None:
    assert shares_code("customer", None)
    assert shares_code("customer", RefusalReason.CAPPED_CODE)
    assert not shares_code("customer", RefusalReason.OWN_ORDER)
    assert not shares_code("affiliate", None)
    assert not shares_code(None, RefusalReason.UNKNOWN_CODE)


def test_a_promoter_is_invited_with_their_code_at_the_moment_of_the_feedback() -> None:
    customer = with_own_code(Customer("cus_p"), "K7Q-XM4-PA9")

    invited = invite(customer, "K7Q-XM4-PA9", "fb-1", T0, timedelta(days=90))

    assert invited is not None
    assert invited.invitation == Invitation("fb-1", "cus_p", "K7Q-XM4-PA9", T0)
    assert invited.customer == replace(customer, last_invited_at=T0)
    assert invited.event.model_dump() == {"customer_id": "cus_p", "code": "K7Q-XM4-PA9", "feedback_id": "fb-1"}
    assert invite(invited.customer, "K7Q-XM4-PA9", "fb-2", T0 + timedelta(days=89), timedelta(days=90)) is None


def test_an_erased_customer_keeps_their_counts_under_the_alias_and_no_identity() -> None:
    customer = Customer("cus_eva", PlacedOrder(T0, "o-1"), ("eva@example.sk",), (HOME,), "K7Q-XM4-PA9")

    assert anonymised(customer, "erased-abc") == replace(customer, customer_id="erased-abc", emails=(), addresses=())
