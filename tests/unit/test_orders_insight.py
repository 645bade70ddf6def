"""Rules of orders as plain functions: RFM scores and segments, the retention report, lifetime value, profiles."""

import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from services.orders.domain import (
    Customer,
    OrderLine,
    OrderRef,
    Refund,
    SegmentChange,
    Telling,
    erased,
    fulfilment_counts,
    records_owner,
    refund_is_new,
    refunded_of,
    rescored,
    segment_changes,
    stats_of,
    telling_stands,
    with_order,
)
from services.orders.insight import (
    SEGMENT_GRID,
    SEGMENTS,
    Cohort,
    History,
    LifetimeValue,
    RetentionReport,
    Rfm,
    days_since_last_order,
    lifetime_value_of,
    quintile_score,
    retention_report,
    score_rfm,
    segment_for,
    segment_named,
)

NOW = datetime(2026, 4, 15, 12, 0, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))


def at(day: str, time: str = "12:00", tz: timezone = UTC) -> datetime:
    return datetime.fromisoformat(f"{day}T{time}").replace(tzinfo=tz)


def history(customer_id: str, *order_times: datetime, **net_spent: str) -> History:
    return History(customer_id, order_times, {currency: Decimal(v) for currency, v in net_spent.items()})


# A tea shop reporting in EUR, seen on 15 April 2026 at noon UTC.
# Days since last order, orders and EUR net spent, worked out by hand:
#   ada 1d 4 400.00 · ben 5d 3 150.00 · cleo 97d 1 80.00 · dan 41d 2 120.00 (+ 30 USD)
#   eve 60d 1 0 (95 USD only) · finn 18d 1 0.00 (refunded) · gus 16d 3 210.00
#   hana 11d 1 60.00 (11 days 18 hours) · ivo 51d 2 45.50 (first order 1 Feb 00:30 +02:00 = 31 Jan UTC)
#   ghost: no order yet, only a refund heard of; left out of everything.
SHOP = (
    history("ada", at("2026-04-14"), at("2026-01-05"), at("2026-03-12"), at("2026-02-10"), EUR="400.00"),
    history("ben", at("2026-01-20"), at("2026-01-27"), at("2026-04-10"), EUR="150.00"),
    history("cleo", at("2026-01-08"), EUR="80.00"),
    history("dan", at("2026-02-03"), at("2026-03-05"), EUR="120.00", USD="30.00"),
    history("eve", at("2026-02-14"), USD="95.00"),
    history("finn", at("2026-03-28"), EUR="0.00"),
    history("gus", at("2026-03-02"), at("2026-03-09"), at("2026-03-30"), EUR="210.00"),
    history("hana", at("2026-04-03", "18:00"), EUR="60.00"),
    history("ivo", at("2026-02-01", "00:30", PLUS_TWO), at("2026-02-22", "22:30"), EUR="45.50"),
    history("ghost", EUR="-10.00"),
)

# With 9 customers: 0–1 worse → 1, 2–3 → 2, 4–5 → 3, 6–7 → 4, 8 → 5.
SHOP_RFM = {
    "ada": Rfm(5, 5, 5, "champions"),
    "ben": Rfm(4, 4, 4, "loyal"),
    "cleo": Rfm(1, 1, 3, "hibernating"),
    "dan": Rfm(2, 3, 3, "at_risk"),
    "eve": Rfm(1, 1, 1, "hibernating"),
    "finn": Rfm(3, 1, 1, "about_to_sleep"),
    "gus": Rfm(3, 4, 4, "loyal"),
    "hana": Rfm(4, 1, 2, "promising"),
    "ivo": Rfm(2, 3, 2, "at_risk"),
}

SHOP_REPORT = RetentionReport(
    customers=9,
    repeat_customers=5,
    repeat_purchase_rate=0.5556,
    # ada 36, ben 7, dan 30, gus 7, ivo 22 days: mean 102 / 5, median 22.
    days_to_second_order=20.4,
    median_days_to_second_order=22.0,
    cohorts=(
        Cohort("2026-01", 4, (1.0, 0.5, 0.25, 0.5)),  # ada, ben, cleo, ivo
        Cohort("2026-02", 2, (1.0, 0.5, 0.0)),  # dan, eve
        Cohort("2026-03", 2, (1.0, 0.0)),  # finn, gus
        Cohort("2026-04", 1, (1.0,)),  # hana
    ),
    lifetime_value={
        # 400 + 150 + 80 + 120 + 0 + 210 + 60 + 45.50 = 1065.50 over 8 customers (finn counts, at 0).
        "EUR": LifetimeValue(customers=8, average=Decimal("133.19"), total=Decimal("1065.50")),
        "USD": LifetimeValue(customers=2, average=Decimal("62.50"), total=Decimal("125.00")),
    },
)


# --- segments --------------------------------------------------------------------------------

# Rows are R 5 down to 1, columns F 1 to 5.
EXPECTED_GRID = {
    5: ("new", "potential_loyalists", "potential_loyalists", "champions", "champions"),
    4: ("promising", "potential_loyalists", "potential_loyalists", "loyal", "loyal"),
    3: ("about_to_sleep", "about_to_sleep", "need_attention", "loyal", "loyal"),
    2: ("hibernating", "hibernating", "at_risk", "at_risk", "cant_lose"),
    1: ("hibernating", "hibernating", "at_risk", "at_risk", "cant_lose"),
}


@pytest.mark.parametrize("recency", range(1, 6))
@pytest.mark.parametrize("frequency", range(1, 6))
def test_every_r_and_f_pair_falls_in_exactly_one_segment(recency: int, frequency: int) -> None:
    covering = [segment.name for segment in SEGMENT_GRID if segment.covers(recency, frequency)]
    assert covering == [EXPECTED_GRID[recency][frequency - 1]]
    assert segment_for(recency, frequency) == covering[0]


def test_segment_names_are_the_ten_of_the_grid_each_once() -> None:
    assert SEGMENTS == (
        "champions",
        "loyal",
        "potential_loyalists",
        "new",
        "promising",
        "need_attention",
        "about_to_sleep",
        "cant_lose",
        "at_risk",
        "hibernating",
    )
    assert {name for row in EXPECTED_GRID.values() for name in row} == set(SEGMENTS)


# --- scores ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("worse", "customers", "score"),
    [
        (0, 1, 1),
        (0, 2, 1),
        (1, 2, 3),
        (0, 3, 1),
        (1, 3, 2),
        (2, 3, 4),
        (0, 5, 1),
        (4, 5, 5),
        (1, 10, 1),
        (2, 10, 2),
        (7, 10, 4),
        (8, 10, 5),
        (9, 10, 5),
    ],
)
def test_quintile_score_is_one_plus_five_times_the_share_of_worse_customers(
    worse: int, customers: int, score: int
) -> None:
    assert quintile_score(worse, customers) == score


def test_shop_scores_and_segments() -> None:
    assert score_rfm(SHOP, NOW, "EUR") == SHOP_RFM


def test_days_since_last_order_counts_whole_days() -> None:
    assert days_since_last_order(SHOP[7], NOW) == 11  # hana: 11 days 18 hours
    assert days_since_last_order(SHOP[8], NOW) == 51  # ivo: 22 Feb 22:30 to 15 Apr 12:00


def test_an_order_stamped_after_now_counts_as_today() -> None:
    ahead = history("ahead", NOW + timedelta(hours=1))
    today = history("today", NOW - timedelta(hours=1))
    earlier = history("earlier", NOW - timedelta(days=3))

    assert days_since_last_order(ahead, NOW) == 0
    scores = score_rfm([ahead, today, earlier], NOW, "EUR")
    assert scores["ahead"].recency == scores["today"].recency == 2
    assert scores["earlier"].recency == 1


def test_customers_without_orders_are_left_out() -> None:
    assert "ghost" not in score_rfm(SHOP, NOW, "EUR")
    assert score_rfm([history("ghost", EUR="-10.00")], NOW, "EUR") == {}


def test_no_customers_no_scores() -> None:
    assert score_rfm([], NOW, "EUR") == {}


def test_a_lone_customer_scores_one_everywhere() -> None:
    # Relative to nobody else, nobody is worse: every score is 1, whatever they did.
    assert score_rfm([history("only", NOW, EUR="999.00")], NOW, "EUR") == {"only": Rfm(1, 1, 1, "hibernating")}


@pytest.mark.parametrize(
    ("spends", "scores"),
    [
        (("10.00", "20.00"), (1, 3)),
        (("10.00", "20.00", "30.00"), (1, 2, 4)),
        (("10.00", "10.00", "30.00"), (1, 1, 4)),
        (("10.00", "30.00", "30.00"), (1, 2, 2)),
    ],
)
def test_tiny_bases_score_by_rank_and_ties_share_the_lower_score(
    spends: tuple[str, ...], scores: tuple[int, ...]
) -> None:
    histories = [history(f"c{i}", NOW, EUR=spent) for i, spent in enumerate(spends)]

    result = score_rfm(histories, NOW, "EUR")

    assert tuple(result[f"c{i}"].monetary for i in range(len(spends))) == scores
    # Same day, one order each: all tied on R and F.
    assert {(rfm.recency, rfm.frequency) for rfm in result.values()} == {(1, 1)}


def test_identical_customers_get_identical_scores() -> None:
    twin = (at("2026-03-01"), at("2026-04-01"))
    histories = [
        history("a", *twin, EUR="50.00"),
        history("b", *twin, EUR="50.00"),
        history("c", at("2026-01-01"), EUR="5.00"),
    ]

    result = score_rfm(histories, NOW, "EUR")

    assert result["a"] == result["b"] == Rfm(2, 2, 2, "hibernating")
    assert result["c"] == Rfm(1, 1, 1, "hibernating")


def test_spend_only_in_another_currency_counts_as_zero() -> None:
    histories = [
        history("usd_only", NOW, USD="500.00"),
        history("no_spend", NOW),
        history("eur", NOW, EUR="1.00"),
    ]

    eur = score_rfm(histories, NOW, "EUR")
    usd = score_rfm(histories, NOW, "USD")

    assert (eur["usd_only"].monetary, eur["no_spend"].monetary, eur["eur"].monetary) == (1, 1, 4)
    assert (usd["usd_only"].monetary, usd["no_spend"].monetary, usd["eur"].monetary) == (4, 1, 1)


def test_refunds_that_cancel_the_spend_score_like_no_spend() -> None:
    histories = [
        history("refunded", NOW, EUR="0.00"),
        history("never_paid", NOW),
        history("kept", NOW, EUR="25.00"),
    ]

    result = score_rfm(histories, NOW, "EUR")

    assert result["refunded"].monetary == result["never_paid"].monetary == 1
    assert result["kept"].monetary == 4


# --- retention report ------------------------------------------------------------------------


def test_shop_retention_report() -> None:
    assert retention_report(SHOP, NOW) == SHOP_REPORT


def test_empty_shop_report() -> None:
    assert retention_report([], NOW) == RetentionReport(
        customers=0,
        repeat_customers=0,
        repeat_purchase_rate=0.0,
        days_to_second_order=None,
        median_days_to_second_order=None,
        cohorts=(),
        lifetime_value={},
    )


def test_report_of_one_customer() -> None:
    one = history("one", at("2026-02-28", "23:00"), at("2026-03-02", "11:00"), EUR="19.99")

    assert retention_report([one], NOW) == RetentionReport(
        customers=1,
        repeat_customers=1,
        repeat_purchase_rate=1.0,
        days_to_second_order=1.5,
        median_days_to_second_order=1.5,
        cohorts=(Cohort("2026-02", 1, (1.0, 1.0, 0.0)),),
        lifetime_value={"EUR": LifetimeValue(1, Decimal("19.99"), Decimal("19.99"))},
    )


def test_cohort_months_are_utc_months() -> None:
    # 1 April 01:00 in +02:00 is still 31 March in UTC.
    early = history("early", at("2026-04-01", "01:00", PLUS_TWO))

    assert retention_report([early], NOW).cohorts == (Cohort("2026-03", 1, (1.0, 0.0)),)


def test_a_first_order_after_the_current_month_still_has_month_zero() -> None:
    ahead = history("ahead", at("2026-05-01"))

    assert retention_report([ahead], NOW).cohorts == (Cohort("2026-05", 1, (1.0,)),)


def test_lifetime_value_of_one_customer_is_net_spent_to_the_cent() -> None:
    assert lifetime_value_of(SHOP[3]) == {"EUR": Decimal("120.00"), "USD": Decimal("30.00")}
    assert lifetime_value_of(SHOP[5]) == {"EUR": Decimal("0.00")}
    assert lifetime_value_of(history("half", NOW, EUR="10.005")) == {"EUR": Decimal("10.01")}
    assert lifetime_value_of(history("nothing", NOW)) == {}


def test_report_total_is_the_sum_of_the_profiles() -> None:
    customers = [h for h in SHOP if h.order_times]
    report = retention_report(SHOP, NOW)

    for currency, value in report.lifetime_value.items():
        profiles = [lifetime_value_of(h)[currency] for h in customers if currency in h.net_spent]
        assert value.total == sum(profiles)
        assert value.customers == len(profiles)


# --- whatever the input order ----------------------------------------------------------------


def reordered(histories: tuple[History, ...], seed: int) -> list[History]:
    """The same customers in another order, each with their orders in another order."""
    rng = random.Random(seed)  # noqa: S311 - a repeatable shuffle, not a secret
    out = [History(h.customer_id, tuple(rng.sample(h.order_times, len(h.order_times))), h.net_spent) for h in histories]
    rng.shuffle(out)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_results_do_not_depend_on_input_order(seed: int) -> None:
    shuffled = reordered(SHOP, seed)
    assert [h.customer_id for h in shuffled] != [h.customer_id for h in SHOP]

    assert score_rfm(shuffled, NOW, "EUR") == SHOP_RFM
    assert list(score_rfm(shuffled, NOW, "EUR")) == sorted(SHOP_RFM)
    assert retention_report(shuffled, NOW) == SHOP_REPORT
    assert score_rfm(list(reversed(SHOP)), NOW, "EUR") == SHOP_RFM


# --- times -----------------------------------------------------------------------------------


def test_naive_times_are_refused() -> None:
    naive = history("naive", datetime(2026, 4, 1, 12, 0))  # naive on purpose

    with pytest.raises(ValueError, match="timezone-aware"):
        score_rfm([naive], NOW, "EUR")
    with pytest.raises(ValueError, match="timezone-aware"):
        retention_report([naive], NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        retention_report([history("fine", NOW)], datetime(2026, 4, 15))


# --- what each order counts for (domain.py) -----------------------------------------------------


def line(order_id: str, day: str, total: str, refunded: str = "0", currency: str = "EUR") -> OrderLine:
    return OrderLine(order_id, at(day), currency, Decimal(total), Decimal(refunded))


def test_the_latest_telling_of_an_order_stands_whenever_it_arrives() -> None:
    first, later = Telling(at("2026-04-01"), "ev-b"), Telling(at("2026-04-02"), "ev-a")
    assert telling_stands(None, first)
    assert telling_stands(first, later)
    assert not telling_stands(later, first)  # the earlier telling, heard of last
    assert not telling_stands(first, first)  # the same event again
    assert telling_stands(first, Telling(first.at, "ev-c"))  # same time: the event id decides


def test_the_earliest_fulfilment_counts() -> None:
    assert fulfilment_counts(None, at("2026-04-02"))
    assert fulfilment_counts(at("2026-04-02"), at("2026-04-01"))
    assert not fulfilment_counts(at("2026-04-01"), at("2026-04-02"))
    assert not fulfilment_counts(at("2026-04-01"), at("2026-04-01"))


def test_each_refund_counts_once_in_the_orders_currency_and_never_past_its_total() -> None:
    refunds = [
        Refund("r1", Decimal("30.00"), "EUR", at("2026-04-03")),
        Refund("r2", Decimal("90.00"), "EUR", at("2026-04-04")),
        Refund("r3", Decimal("5.00"), "USD", at("2026-04-05")),  # no exchange rate: kept, not subtracted
    ]
    assert not refund_is_new(refunds, "r2")
    assert refund_is_new(refunds, "r4")
    assert refunded_of(Decimal("100.00"), "EUR", refunds) == Decimal("100.00")
    assert refunded_of(Decimal("100.00"), "EUR", refunds[:1]) == Decimal("30.00")


def test_a_profile_takes_one_line_per_order_and_the_contact_of_the_latest() -> None:
    eva = Customer("cus-1")
    later = with_order(eva, line("o2", "2026-04-02", "50.00"), {"city": "Košice"})
    both = with_order(later, line("o1", "2026-04-01", "100.00"), {"city": "Bratislava"})  # older, heard of last
    assert [each.order_id for each in both.lines] == ["o1", "o2"]
    assert both.contact == {"city": "Košice"}
    assert both.contact_from == OrderRef(at("2026-04-02"), "o2")

    refunded = with_order(both, line("o1", "2026-04-01", "100.00", refunded="20.00"), {"city": "Bratislava"})
    assert [(each.order_id, each.refunded) for each in refunded.lines] == [("o1", Decimal("20.00")), ("o2", 0)]
    assert stats_of(refunded.lines).total_spent == {"EUR": Decimal("130.00")}
    corrected = with_order(refunded, line("o2", "2026-04-02", "50.00"), {"city": "Prešov"})  # the latest, told again
    assert corrected.contact == {"city": "Prešov"}


def test_an_anonymous_order_counts_but_gives_no_contact() -> None:
    kept = with_order(Customer("erased-1", contact=None), line("o9", "2026-04-09", "40.00"), None)
    assert (len(kept.lines), kept.contact, kept.contact_from) == (1, None, None)


def test_an_erased_customer_keeps_orders_and_scores_under_the_alias_not_who_they_are() -> None:
    scores = Rfm(3, 2, 4, "about_to_sleep")
    eva = Customer("cus-1", (line("o1", "2026-04-01", "10.00"),), {"email": "eva@example.com"}, None, scores, NOW)
    alias = records_owner("cus-1", erased=True)
    assert alias.startswith("erased-")
    assert "cus-1" not in alias
    assert records_owner("cus-1", erased=False) == "cus-1"
    kept = erased(eva, alias)
    assert (kept.customer_id, kept.contact, kept.contact_from) == (alias, None, None)
    assert (kept.lines, kept.rfm, kept.scored_at) == (eva.lines, scores, NOW)


def test_a_scoring_round_writes_only_the_scores_that_changed() -> None:
    same, moved = Rfm(5, 1, 1, "new"), Rfm(4, 1, 1, "promising")
    before = {"held": same, "moved": same, "first_time": None}
    scores = {"held": same, "moved": moved, "first_time": same}
    assert rescored(before, scores) == {"moved": moved, "first_time": same}


def test_a_segment_change_is_told_once_per_move_and_the_first_time_without_from() -> None:
    at_risk, also_at_risk, champions = Rfm(2, 3, 4, "at_risk"), Rfm(1, 4, 4, "at_risk"), Rfm(5, 5, 5, "champions")
    before = {"slipped": champions, "rescored": at_risk, "first_time": None}
    scores = {"slipped": at_risk, "rescored": also_at_risk, "first_time": champions, "erased-0123abcd": at_risk}
    assert segment_changes(before, scores) == [
        SegmentChange("slipped", "champions", "at_risk"),
        SegmentChange("first_time", None, "champions"),
    ]  # new scores in the same segment are no move; an erased customer's alias has nobody to win back


def test_a_segment_stored_under_its_old_name_reads_as_the_contract_names_it() -> None:
    assert segment_named("cannot_lose") == "cant_lose"
    assert segment_named("at_risk") == "at_risk"
    assert "cant_lose" in SEGMENTS
    assert "cannot_lose" not in SEGMENTS
