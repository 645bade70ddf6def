"""Loyalty rules as plain functions: rates, floors, tiers, campaigns, refunds, expiry, replay."""

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.loyalty.domain import (
    DEFAULT_TIERS,
    Activity,
    Adjusted,
    Adjustment,
    AdjustmentRequest,
    Campaign,
    Cancellation,
    EntryKind,
    Facts,
    History,
    IdempotencyKeyReused,
    Line,
    Member,
    NoAdjustment,
    NotEnoughPoints,
    PointsMonth,
    Purchase,
    Redeemed,
    Redemption,
    RedemptionRequest,
    Refund,
    Reward,
    Rules,
    adjust,
    adjustment_again,
    adjustment_of,
    answer_again,
    continue_replay,
    decide,
    entries_to_append,
    feedback_activities,
    needs_history,
    new_facts,
    next_tier,
    points_by_month,
    purchase_points,
    redeem,
    redemption_of,
    referral_activities,
    refund_reversal,
    replay,
    review,
    standing,
    tier_for,
    timeline_position,
)
from shared.events import (
    FeedbackReceived,
    PointsAwarded,
    PointsExpired,
    PointsRedeemed,
    PointsReversed,
    Ratings,
    ReferralConverted,
    TierChanged,
)

T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
RULES = Rules()


def purchase(
    order_id: str,
    total: str,
    at: datetime,
    currency: str = "EUR",
    campaigns: tuple[Campaign, ...] = (),
    lines: tuple[Line, ...] = (),
) -> Purchase:
    return Purchase(
        order_id,
        at,
        currency,
        Decimal(total),
        lines or (Line("SKU", None, Decimal(total)),),
        RULES.rates.get(currency),
        RULES.tiers,
        campaigns,
        365,
        365,
    )


@pytest.mark.parametrize(
    ("points", "tier"),
    [
        (0, "bronze"),
        (499, "bronze"),
        (500, "silver"),
        (1499, "silver"),
        (1500, "gold"),
        (4999, "gold"),
        (5000, "vip"),
        (10**6, "vip"),
    ],
)
def test_tier_boundaries(points: int, tier: str) -> None:
    assert tier_for(points, DEFAULT_TIERS).name == tier


def test_progress_to_the_next_tier() -> None:
    upcoming = next_tier(420, DEFAULT_TIERS)
    assert upcoming is not None
    assert (upcoming[0].name, upcoming[1]) == ("silver", 80)
    assert next_tier(5000, DEFAULT_TIERS) is None


@pytest.mark.parametrize(
    ("total", "rate", "multiplier", "expected"),
    [
        ("49.90", "1", "1.0", 49),  # floors, never rounds up
        ("49.99", "1", "1.25", 62),  # 62.4875
        ("100.00", "1", "1.5", 150),
        ("100.00", "1", "2.0", 200),
        ("0.99", "1", "1.0", 0),
        ("1000", "0.004", "1.0", 4),  # a configured small-unit currency, e.g. HUF at 0.004
    ],
)
def test_purchase_points_per_rate_and_tier(total: str, rate: str, multiplier: str, expected: int) -> None:
    assert purchase_points(Decimal(total), Decimal(rate), Decimal(multiplier), [], []) == (expected, {})


def test_an_unconfigured_currency_earns_nothing() -> None:
    assert purchase_points(Decimal("100"), None, Decimal("1.0"), [], []) == (0, {})
    assert RULES.rates.get("JPY") is None


def campaign(cid: str, multiplier: str, **scope: frozenset[str]) -> Campaign:
    return Campaign(cid, cid, T0 - timedelta(days=1), T0 + timedelta(days=1), Decimal(multiplier), **scope)


def test_one_campaign_over_the_whole_order_is_the_design_formula() -> None:
    # floor(49.90 × 1 × 1.25 × 2) = floor(124.75) = 124; base floor(62.375) = 62
    base, bonus = purchase_points(Decimal("49.90"), Decimal(1), Decimal("1.25"), [campaign("x2", "2")], [])
    assert (base, bonus) == (62, {"x2": 62})


def test_overlapping_campaigns_add_their_bonuses() -> None:
    # ×2 and ×1.5 over the same order: bonus parts (1 + 0.5) add → floor(100 × 2.5) = 250
    base, bonus = purchase_points(
        Decimal("100"), Decimal(1), Decimal(1), [campaign("a", "2"), campaign("b", "1.5")], []
    )
    assert base == 100
    assert bonus == {"a": 100, "b": 50}


def test_a_scoped_campaign_applies_to_its_share_of_the_discounted_total() -> None:
    lines = [Line("MUG", "kitchen", Decimal("60")), Line("TEA", "food", Decimal("40"))]
    # paid 90 after a 10 % discount; kitchen is 60 % of it = 54; ×3 on that → bonus 108
    base, bonus = purchase_points(
        Decimal("90"), Decimal(1), Decimal(1), [campaign("k", "3", categories=frozenset({"kitchen"}))], lines
    )
    assert (base, bonus) == (90, {"k": 108})
    by_sku = campaign("s", "2", skus=frozenset({"TEA"}))
    assert purchase_points(Decimal("90"), Decimal(1), Decimal(1), [by_sku], lines) == (90, {"s": 36})


@pytest.mark.parametrize(
    ("points", "total", "refunded", "reversed_points"),
    [
        (49, "49.90", "12.50", 12),
        (49, "49.90", "49.90", 49),
        (49, "49.90", "80.00", 49),
        (100, "100", "33.33", 33),
        (0, "10", "10", 0),
    ],
)
def test_refund_reversal_is_floored_and_capped(points: int, total: str, refunded: str, reversed_points: int) -> None:
    assert refund_reversal(points, Decimal(total), Decimal(refunded)) == reversed_points


def test_partial_refunds_add_up_to_the_whole_award_and_never_past_it() -> None:
    facts = Facts(
        purchases=(purchase("o1", "100", T0),),
        refunds=tuple(Refund(f"r{n}", "o1", Decimal("33.33"), T0 + timedelta(days=n)) for n in range(1, 5)),
    )
    ledger = replay(facts, T0 + timedelta(days=10))
    # cumulative 33.33, 66.66, 99.99, 133.32 → 33, 66, 99, 100 reversed in total
    assert ledger.amounts["refund:o1"] == -100
    assert ledger.balance == 0


def test_a_refund_before_its_order_gives_the_same_ledger_as_after() -> None:
    in_order = Facts(
        purchases=(purchase("o1", "80", T0),), refunds=(Refund("r1", "o1", Decimal("20"), T0 + timedelta(hours=1)),)
    )
    early = Facts(
        purchases=(purchase("o1", "80", T0),), refunds=(Refund("r1", "o1", Decimal("20"), T0 - timedelta(hours=1)),)
    )
    now = T0 + timedelta(days=1)
    assert replay(in_order, now).amounts == {"purchase:o1": 80, "refund:o1": -20}
    assert replay(early, now).amounts == replay(in_order, now).amounts


@pytest.mark.parametrize(
    ("points", "total", "refunded", "reversed_points"),
    [(49, "49.90", "0", 49), (49, "49.90", "12.50", 49), (49, "49.90", "80.00", 49), (0, "10", "0", 0)],
)
def test_a_cancelled_order_gives_back_all_its_points(
    points: int, total: str, refunded: str, reversed_points: int
) -> None:
    assert refund_reversal(points, Decimal(total), Decimal(refunded), cancelled=True) == reversed_points


def test_a_cancellation_takes_back_only_what_refunds_left_and_a_later_refund_nothing() -> None:
    bought = decide(Member("c1"), [purchase("o1", "100", T0)], None, DEFAULT_TIERS, T0, ids())
    assert bought is not None
    part = decide(
        bought.member, [Refund("r1", "o1", Decimal(30), T0 + timedelta(hours=1))], None, DEFAULT_TIERS, T0, ids()
    )
    assert part is not None
    cancelled = decide(
        part.member, [Cancellation("o1", T0 + timedelta(hours=2))], None, DEFAULT_TIERS, T0 + timedelta(hours=2), ids()
    )
    assert cancelled is not None
    assert [(e.key, e.kind, e.reason, e.points) for e in cancelled.entries] == [("refund:o1", "reverse", "refund", -70)]
    assert cancelled.events == (
        PointsReversed(entry_id="le_1", customer_id="c1", points=70, reason="refund", order_id="o1", balance=0),
    )
    assert (cancelled.member.balance, cancelled.member.qualifying_points) == (0, 0)
    again = decide(cancelled.member, [Cancellation("o1", T0 + timedelta(hours=2))], None, DEFAULT_TIERS, T0, ids())
    assert again is None  # the same cancellation told again changes nothing
    refunded = decide(
        cancelled.member,
        [Refund("r2", "o1", Decimal(70), T0 + timedelta(hours=3))],  # the money for the cancelled order
        None,
        DEFAULT_TIERS,
        T0 + timedelta(hours=3),
        ids(),
    )
    assert refunded is not None
    assert (refunded.entries, refunded.events, refunded.member.balance) == ((), (), 0)  # taken back once


def test_a_cancelled_order_stops_counting_towards_the_tier() -> None:
    gold_order = purchase("o1", "600", T0)
    facts = Facts(purchases=(gold_order,), cancellations=(Cancellation("o1", T0 + timedelta(days=1)),))
    after = Facts(purchases=(*facts.purchases, purchase("o2", "100", T0 + timedelta(days=2))))
    assert replay(after, T0 + timedelta(days=3)).amounts["purchase:o2"] == 125  # silver while o1 counts
    cancelled = replay(Facts(purchases=after.purchases, cancellations=facts.cancellations), T0 + timedelta(days=3))
    assert cancelled.amounts == {"purchase:o1": 600, "refund:o1": -600, "purchase:o2": 100}  # o2 at bronze
    assert (cancelled.tier.name, cancelled.qualifying_points) == ("bronze", 100)
    silver = decide(Member("c1"), [gold_order], None, DEFAULT_TIERS, T0, ids())
    assert silver is not None
    down = decide(silver.member, [Cancellation("o1", T0 + timedelta(days=1))], None, DEFAULT_TIERS, T0, ids())
    assert down is not None
    assert TierChanged(customer_id="c1", from_tier="silver", to_tier="bronze") in down.events


@pytest.mark.parametrize(
    "arrival",
    [
        ("order", "refund", "cancel"),
        ("cancel", "order", "refund"),
        ("refund", "cancel", "order"),
        ("cancel", "refund", "order"),
        ("order", "cancel", "refund", "cancel"),
    ],
)
def test_a_cancellation_before_its_order_or_its_refunds_ends_in_the_same_ledger(arrival: tuple[str, ...]) -> None:
    """Handled as the service does, from the checkpoint or the history, in any arrival order, twice told."""
    told = {
        "order": purchase("o1", "200", T0),
        "refund": Refund("r1", "o1", Decimal(50), T0 + timedelta(hours=1)),
        "cancel": Cancellation("o1", T0 + timedelta(hours=2)),
    }
    now = T0 + timedelta(days=1)
    member, known, recorded = Member("c1"), Facts(), dict[str, int]()
    for name in arrival:
        fact = told[name]
        history = History(known, recorded) if needs_history(member, [fact]) else None
        decision = decide(member, [fact], history, DEFAULT_TIERS, now, ids())
        if decision is None:
            continue
        for entry in decision.entries:
            recorded[entry.key] = recorded.get(entry.key, 0) + entry.points
        member, known = decision.member, known.adding(*decision.facts) or known
    assert {k: v for k, v in recorded.items() if v} == {"purchase:o1": 200, "refund:o1": -200}
    assert (member.balance, member.tier, member.qualifying_points) == (0, "bronze", 0)


def test_the_tier_multiplier_is_the_tier_held_before_the_order() -> None:
    facts = Facts(
        purchases=(
            purchase("o1", "499", T0),
            purchase("o2", "1", T0 + timedelta(days=1)),
            purchase("o3", "100", T0 + timedelta(days=2)),
        )
    )
    ledger = replay(facts, T0 + timedelta(days=3))
    assert ledger.amounts["purchase:o2"] == 1  # bronze before o2 (499), silver after it (500)
    assert ledger.amounts["purchase:o3"] == 125  # silver ×1.25
    assert ledger.tier.name == "silver"


def test_tiers_count_only_purchase_points_of_the_last_365_days() -> None:
    facts = Facts(
        purchases=(purchase("o1", "600", T0),), activities=(Activity("referral:x:referrer", "referral", 500, T0, 365),)
    )
    assert replay(facts, T0 + timedelta(days=364)).tier.name == "silver"
    assert replay(facts, T0 + timedelta(days=366)).tier.name == "bronze"


def test_points_expire_oldest_first_after_their_lifetime() -> None:
    facts = Facts(
        purchases=(purchase("o1", "100", T0), purchase("o2", "50", T0 + timedelta(days=100))),
        redemptions=(Redemption("rd1", "rw", 120, T0 + timedelta(days=200)),),
    )
    # the redemption spends o1's 100 first, then 20 of o2's 50
    at_o1_expiry = replay(facts, T0 + timedelta(days=365))
    assert "expire:purchase:o1" not in at_o1_expiry.amounts
    after_o2 = replay(facts, T0 + timedelta(days=466))
    assert after_o2.amounts["expire:purchase:o2"] == -30
    assert after_o2.balance == 0


def test_campaign_bonus_expires_on_its_own_clock() -> None:
    double = Campaign(
        "x2", "double", T0 - timedelta(days=1), T0 + timedelta(days=1), Decimal(2), bonus_lifetime_days=30
    )
    facts = Facts(purchases=(purchase("o1", "100", T0, campaigns=(double,)),))
    assert replay(facts, T0 + timedelta(days=29)).balance == 200
    day_31 = replay(facts, T0 + timedelta(days=31))
    assert day_31.amounts["expire:bonus:o1:x2"] == -100
    assert day_31.balance == 100
    assert day_31.next_review_at == T0 + timedelta(days=365)


def test_a_campaign_outside_its_window_gives_nothing() -> None:
    later = Campaign("x2", "double", T0 + timedelta(days=5), T0 + timedelta(days=6), Decimal(2))
    facts = Facts(purchases=(purchase("o1", "100", T0, campaigns=(later,)),))
    assert replay(facts, T0 + timedelta(days=1)).balance == 100


def test_feedback_earns_a_review_and_a_survey_once_per_order() -> None:
    both = feedback_activities(feedback("f1", "Lovely mug, quick delivery", 9), RULES)
    assert [(a.key, a.points) for a in both] == [("review:o1", 50), ("survey:o1", 20)]
    short = feedback_activities(feedback("f2", "ok", None), RULES)
    assert short == []
    again = feedback_activities(feedback("f3", "x" * 30, 3), RULES)
    facts = Facts().adding(*both)
    assert facts is not None
    assert facts.adding(*again) is None  # same keys: one of each per order
    assert replay(facts, T0).balance == 70


def feedback(feedback_id: str, comment: str | None, nps: int | None) -> FeedbackReceived:
    return FeedbackReceived(
        feedback_id=feedback_id,
        customer_id="c1",
        order_id="o1",
        ratings=Ratings(overall=5),
        nps=nps,
        comment=comment,
        channel="email",
        received_at=T0,
    )


def test_referrals_are_two_sided_by_default_and_one_sided_by_setting() -> None:
    converted = ReferralConverted(
        referral_id="rf1",
        code="K7QX-M2PA",
        referrer_customer_id="a",
        referee_customer_id="b",
        order_id="o9",
        order_total=Decimal("10"),
        currency="EUR",
        converted_at=T0,
        program="customer",
    )
    referee = dict(referral_activities(converted, RULES)).get("b")
    assert referee is not None
    assert referee.points == 250
    one_sided = dict(referral_activities(converted, Rules(two_sided_referrals=False)))
    assert one_sided.get("b") is None
    referrer = one_sided.get("a")
    assert referrer is not None
    assert referrer.points == 500
    affiliate = converted.model_copy(update={"program": "affiliate"})
    assert [customer for customer, _ in referral_activities(affiliate, RULES)] == ["b"]


def test_entries_are_the_difference_and_corrections_are_adjustments() -> None:
    first = replay(Facts(purchases=(purchase("o2", "100", T0 + timedelta(days=1)),)), T0 + timedelta(days=2))
    entries = entries_to_append(first, {})
    assert [(e.kind, e.reason, e.points) for e in entries] == [("earn", "purchase", 100)]
    recorded = {e.key: e.points for e in entries}
    # o1 (500) arrives late: o2 should have been at silver ×1.25 → +25 adjustment
    late = replay(
        Facts(purchases=(purchase("o1", "500", T0), purchase("o2", "100", T0 + timedelta(days=1)))),
        T0 + timedelta(days=2),
    )
    fixes = entries_to_append(late, recorded)
    assert sorted((e.key, e.kind, e.points) for e in fixes) == [
        ("purchase:o1", "earn", 500),
        ("purchase:o2", "adjust", 25),
    ]
    assert entries_to_append(late, {**recorded, **{e.key: recorded.get(e.key, 0) + e.points for e in fixes}}) == []


def test_a_late_refund_undoes_the_expiry_of_the_points_it_takes_back() -> None:
    bought = Facts(purchases=(purchase("o1", "100", T0),))
    day_400 = T0 + timedelta(days=400)
    recorded = {e.key: e.points for e in entries_to_append(replay(bought, day_400), {})}
    assert recorded == {"purchase:o1": 100, "expire:purchase:o1": -100}
    # the whole order was refunded on day 300, before the points expired: nothing was left to expire
    refunded = Facts(purchases=bought.purchases, refunds=(Refund("r1", "o1", Decimal(100), T0 + timedelta(days=300)),))
    fixes = entries_to_append(replay(refunded, day_400), recorded)
    assert sorted((e.key, e.kind, e.points) for e in fixes) == [
        ("expire:purchase:o1", "adjust", 100),
        ("refund:o1", "reverse", -100),
    ]
    assert sum(recorded.values()) + sum(e.points for e in fixes) == 0


def _random_facts(
    rng: random.Random, count: int
) -> list[Purchase | Refund | Cancellation | Activity | Redemption | Adjustment]:
    """A member's history over two years: orders, partial refunds (some before their order), cancellations (some
    before their order or its refunds), reviews, spending, the owner's adjustments either way."""
    facts: list[Purchase | Refund | Cancellation | Activity | Redemption | Adjustment] = []
    cancelled: set[str] = set()
    for n in range(count):
        at = T0 + timedelta(days=rng.randint(0, 730), minutes=rng.randint(0, 1440))
        kind = rng.random()
        if kind < 0.5:
            facts.append(purchase(f"o{n}", str(rng.randint(1, 900)), at))
        elif kind < 0.65:
            facts.append(Refund(f"r{n}", f"o{rng.randrange(count)}", Decimal(rng.randint(1, 300)), at))
        elif kind < 0.7 and (order_id := f"o{rng.randrange(count)}") not in cancelled:
            cancelled.add(order_id)  # an order is cancelled once
            facts.append(Cancellation(order_id, at))
        elif kind < 0.8:
            facts.append(Activity(f"review:{n}", "review", 50, at, rng.choice([30, 365])))
        elif kind < 0.88:
            facts.append(Adjustment(f"adj{n}", rng.choice([-1, 1]) * rng.randint(1, 300), "goodwill", at, 365))
        else:
            facts.append(Redemption(f"rd{n}", "mug", rng.randint(10, 200), at))
    return facts


@pytest.mark.parametrize("seed", range(40))
def test_continuing_from_the_checkpoint_equals_replaying_everything(seed: int) -> None:
    """Settle the facts one at a time, in the order they happened, each from the last checkpoint (or, for a
    fact about a purchase folded out of it, from the history), and end exactly where the full replay does."""
    rng = random.Random(seed)  # noqa: S311 - repeatable cases, not secrets
    facts = sorted(_random_facts(rng, 30), key=timeline_position)
    now = T0 + timedelta(days=1000)
    member, known, recorded = Member("c1"), Facts(), dict[str, int]()  # recorded: what the ledger entries add up to
    for fact in facts:
        history = History(known, recorded) if needs_history(member, [fact]) else None
        assert history is None or member.checkpoint.folded_window_days is not None  # in order: only for a fold
        decision = decide(member, [fact], history, DEFAULT_TIERS, now, ids())
        assert decision is not None
        for entry in decision.entries:
            recorded[entry.key] = recorded.get(entry.key, 0) + entry.points
        member, known = decision.member, known.adding(fact) or known
    everything = replay(Facts().adding(*facts) or Facts(), now)
    assert {k: v for k, v in recorded.items() if v} == everything.amounts
    assert member.balance == everything.balance
    assert member.tier == everything.tier.name
    assert member.next_review_at == everything.next_review_at


@pytest.mark.parametrize("seed", range(20))
def test_any_arrival_order_ends_where_the_in_order_replay_does(seed: int) -> None:
    """Facts arriving shuffled, some twice, handled as the service does: from the checkpoint or the history."""
    rng = random.Random(1000 + seed)  # noqa: S311 - repeatable cases, not secrets
    facts = _random_facts(rng, 40)
    arrivals = facts + rng.sample(facts, 8)
    rng.shuffle(arrivals)
    now = T0 + timedelta(days=1000)
    member, known, recorded = Member("c1"), Facts(), dict[str, int]()
    for fact in arrivals:
        history = History(known, recorded) if needs_history(member, [fact]) else None
        decision = decide(member, [fact], history, DEFAULT_TIERS, now, ids())
        if decision is None:
            continue
        for entry in decision.entries:
            recorded[entry.key] = recorded.get(entry.key, 0) + entry.points
        member, known = decision.member, known.adding(*decision.facts) or known
    everything = replay(Facts().adding(*facts) or Facts(), now)
    assert {k: v for k, v in recorded.items() if v} == everything.amounts
    assert (member.balance, member.tier) == (everything.balance, everything.tier.name)


def test_the_checkpoint_stays_bounded_and_a_late_refund_of_an_old_order_is_still_exact() -> None:
    """Four years of weekly orders: the member keeps only the last tier window's purchases and the keys that
    can still change; a refund for an order from the first year still takes back DESIGN.md's share."""
    member, known, recorded = Member("c1"), Facts(), dict[str, int]()
    weeks = 4 * 52
    sizes = []
    for week in range(weeks):
        bought = purchase(f"o{week}", "10", T0 + timedelta(weeks=week))
        decision = decide(member, [bought], None, DEFAULT_TIERS, bought.placed_at, ids())
        assert decision is not None
        for entry in decision.entries:
            recorded[entry.key] = recorded.get(entry.key, 0) + entry.points
        member, known = decision.member, known.adding(bought) or known
        sizes.append(len(member.checkpoint.purchases) + len(member.checkpoint.seen) + len(member.recorded))
    assert max(sizes[-100:]) == min(sizes[-100:]) < 4 * 53  # flat once the first year is behind
    assert len(member.checkpoint.purchases) == 53  # the orders of the last 365 days (52 weeks and a day)
    assert member.balance == sum(recorded.values())
    old_refund = Refund(
        "r0", "o3", Decimal(5), T0 + timedelta(weeks=weeks - 1, hours=1)
    )  # half of a 3.9-year-old order
    assert needs_history(member, [old_refund])  # it concerns a purchase folded out of the checkpoint
    decision = decide(member, [old_refund], History(known, recorded), DEFAULT_TIERS, old_refund.refunded_at, ids())
    assert decision is not None
    assert [(e.key, e.kind, e.points) for e in decision.entries] == [("refund:o3", "reverse", -5)]
    assert decision.member.balance == member.balance - 5
    for entry in decision.entries:
        recorded[entry.key] = recorded.get(entry.key, 0) + entry.points
    again = decide(
        decision.member,
        [old_refund],
        History(known.adding(old_refund) or known, recorded),
        DEFAULT_TIERS,
        old_refund.refunded_at,
        ids(),
    )
    assert again is None  # the same refund again: known to the history, it changes nothing


def test_a_fact_before_the_latest_known_one_needs_the_full_replay() -> None:
    known = replay(Facts(purchases=(purchase("o2", "100", T0 + timedelta(days=1)),)), T0 + timedelta(days=2))
    recorded = known.amounts
    assert continue_replay(known.checkpoint, recorded, [purchase("o1", "500", T0)], T0 + timedelta(days=2)) is None
    later = continue_replay(
        known.checkpoint, recorded, [purchase("o3", "10", T0 + timedelta(days=2))], T0 + timedelta(days=2)
    )
    assert later is not None
    assert later.amounts == {"purchase:o2": 100, "purchase:o3": 10}
    assert new_facts(Member("c1", checkpoint=known.checkpoint), [purchase("o2", "100", T0 + timedelta(days=1))]) == []


# --- the whole decision: entries, events, the member's new state ---------------------------------


def ids() -> Callable[[], str]:
    numbers = iter(range(1, 10_000))
    return lambda: f"le_{next(numbers)}"


def test_a_first_order_decides_its_entry_its_event_and_the_new_member() -> None:
    member = Member("c1")
    decision = decide(member, [purchase("o1", "520", T0)], None, DEFAULT_TIERS, T0 + timedelta(hours=1), ids())
    assert decision is not None
    assert [(e.entry_id, e.kind, e.reason, e.points, e.balance_after) for e in decision.entries] == [
        ("le_1", "earn", "purchase", 520, 520)
    ]
    assert decision.entries[0].expires_at == T0 + timedelta(days=365)
    assert decision.events == (
        PointsAwarded(
            entry_id="le_1",
            customer_id="c1",
            points=520,
            reason="purchase",
            order_id="o1",
            balance=520,
            tier="silver",
            expires_at=T0 + timedelta(days=365),
        ),
        TierChanged(customer_id="c1", from_tier="bronze", to_tier="silver"),
    )
    assert (decision.member.balance, decision.member.tier, decision.member.qualifying_points) == (520, "silver", 520)
    assert decision.facts == (purchase("o1", "520", T0),)
    again = decide(decision.member, [purchase("o1", "520", T0)], None, DEFAULT_TIERS, T0 + timedelta(hours=2), ids())
    assert again is None  # a repeat changes nothing


def test_a_refund_publishes_a_reversal_and_a_correction_an_adjustment() -> None:
    first = decide(Member("c1"), [purchase("o2", "100", T0 + timedelta(days=1))], None, DEFAULT_TIERS, T0, ids())
    assert first is not None
    refunded = decide(
        first.member,
        [Refund("r1", "o2", Decimal(40), T0 + timedelta(days=2))],
        None,
        DEFAULT_TIERS,
        T0 + timedelta(days=3),
        ids(),
    )
    assert refunded is not None
    assert refunded.events == (
        PointsReversed(entry_id="le_1", customer_id="c1", points=40, reason="refund", order_id="o2", balance=60),
    )
    late = [purchase("o1", "500", T0)]  # before o2: o2 should have earned at silver
    assert needs_history(refunded.member, late)
    assert not needs_history(refunded.member, [purchase("o3", "5", T0 + timedelta(days=4))])
    history = History(
        Facts(
            purchases=(purchase("o2", "100", T0 + timedelta(days=1)),),
            refunds=(Refund("r1", "o2", Decimal(40), T0 + timedelta(days=2)),),
        )
    )
    fixed = decide(refunded.member, late, history, DEFAULT_TIERS, T0 + timedelta(days=3), ids())
    assert fixed is not None
    by_key = {e.key: (e.kind, e.reason, e.points) for e in fixed.entries}
    # o2 at silver: 125, refunded 40 % → 50 taken back, 10 more than before
    assert by_key == {
        "purchase:o1": ("earn", "purchase", 500),
        "purchase:o2": ("adjust", "adjustment", 25),
        "refund:o2": ("reverse", "refund", -10),
    }
    reasons = sorted((type(e).__name__, getattr(e, "reason", None)) for e in fixed.events)
    assert reasons == [
        ("PointsAwarded", "adjustment"),
        ("PointsAwarded", "purchase"),
        ("PointsReversed", "refund"),
        ("TierChanged", None),
    ]
    assert fixed.member.balance == 500 + 125 - 50


def test_expiries_due_together_publish_one_points_expired() -> None:
    double = Campaign(
        "x2", "double", T0 - timedelta(days=1), T0 + timedelta(days=1), Decimal(2), bonus_lifetime_days=30
    )
    bought = decide(Member("c1"), [purchase("o1", "100", T0, campaigns=(double,))], None, DEFAULT_TIERS, T0, ids())
    assert bought is not None
    later = review(bought.member, DEFAULT_TIERS, T0 + timedelta(days=400), ids())
    assert sorted((e.key, e.kind, e.points) for e in later.entries) == [
        ("expire:bonus:o1:x2", "expire", -100),
        ("expire:purchase:o1", "expire", -100),
    ]
    assert later.events == (PointsExpired(customer_id="c1", points=200, balance=0),)
    assert review(later.member, DEFAULT_TIERS, T0 + timedelta(days=401), ids()).entries == ()


def test_a_redemption_never_takes_the_balance_below_zero() -> None:
    bought = decide(Member("c1"), [purchase("o1", "120", T0)], None, DEFAULT_TIERS, T0, ids())
    assert bought is not None
    mug = Reward("rw_mug", "Mug", 100)
    made = redeem(bought.member, redemption_of(mug, "rd1", T0 + timedelta(days=1)), mug, None, DEFAULT_TIERS, ids())
    assert not isinstance(made, NotEnoughPoints)
    decision, redeemed = made
    assert redeemed == Redeemed("rd1", "c1", "rw_mug", 100, 20)
    assert decision.events == (
        PointsRedeemed(redemption_id="rd1", customer_id="c1", reward_id="rw_mug", points=100, balance=20),
    )
    refused = redeem(
        decision.member, redemption_of(mug, "rd2", T0 + timedelta(days=2)), mug, None, DEFAULT_TIERS, ids()
    )
    assert refused == NotEnoughPoints(balance=20, points_price=100, reward_name="Mug")


def test_the_same_idempotency_key_gets_the_first_answer_and_only_for_its_reward() -> None:
    first = RedemptionRequest("rw_mug", NotEnoughPoints(0, 100, "Mug"))
    assert answer_again(first, "rw_mug") == NotEnoughPoints(0, 100, "Mug")
    with pytest.raises(IdempotencyKeyReused):
        answer_again(first, "rw_tote")


def test_the_member_page_shows_what_expires_in_the_next_30_days() -> None:
    short = Campaign("x2", "double", T0 - timedelta(days=1), T0 + timedelta(days=1), Decimal(2), bonus_lifetime_days=10)
    bought = decide(Member("c1"), [purchase("o1", "480", T0, campaigns=(short,))], None, DEFAULT_TIERS, T0, ids())
    assert bought is not None
    now = standing(bought.member, DEFAULT_TIERS, T0 + timedelta(days=1))
    assert (now.balance, now.tier.name, now.tier_points) == (960, "silver", 960)
    assert now.next_tier is not None
    assert (now.next_tier[0].name, now.next_tier[1]) == ("gold", 540)
    assert [(lot.key, lot.remaining) for lot in now.expiring_soon] == [("bonus:o1:x2", 480)]
    assert now.points_expiring_soon == 480
    assert standing(bought.member, DEFAULT_TIERS, T0 + timedelta(days=340)).points_expiring_soon == 480  # o1's base


def test_an_adjustment_gives_points_that_expire_like_earned_ones_and_count_towards_no_tier() -> None:
    bought = decide(Member("c1"), [purchase("o1", "100", T0)], None, DEFAULT_TIERS, T0, ids())
    assert bought is not None
    given = adjustment_of("adj1", 900, "Parcel lost in the post", T0 + timedelta(days=1), RULES)
    decision, adjusted = adjust(bought.member, given, None, DEFAULT_TIERS, ids())
    assert adjusted == Adjusted("adj1", "c1", 900, "Parcel lost in the post", 1000)
    assert decision.facts == (given,)
    (entry,) = decision.entries
    assert (entry.key, entry.kind, entry.reason, entry.points) == ("adjust:adj1", "earn", "adjustment", 900)
    assert entry.expires_at == given.at + timedelta(days=365)
    (event,) = decision.events  # 1000 points, but only the 100 bought count: still bronze, no TierChanged
    assert isinstance(event, PointsAwarded)
    assert (event.reason, event.points, event.balance, event.tier) == ("adjustment", 900, 1000, "bronze")
    assert decision.member.qualifying_points == 100
    later = review(decision.member, DEFAULT_TIERS, given.at + timedelta(days=366), ids())
    assert later.member.balance == 0  # the purchase's points and the given ones both expired


def test_an_adjustment_takes_points_soonest_expiring_first_and_may_go_below_zero() -> None:
    bought = decide(Member("c1"), [purchase("o1", "100", T0)], None, DEFAULT_TIERS, T0, ids())
    assert bought is not None
    taken = adjustment_of("adj1", -30, "Counted twice by mistake", T0 + timedelta(days=1), RULES)
    decision, adjusted = adjust(bought.member, taken, None, DEFAULT_TIERS, ids())
    assert adjusted.balance == 70
    (entry,) = decision.entries
    assert (entry.kind, entry.reason, entry.points, entry.expires_at) == ("adjust", "adjustment", -30, None)
    (event,) = decision.events
    assert isinstance(event, PointsReversed)
    assert (event.reason, event.points, event.balance, event.order_id) == ("adjustment", 30, 70, None)
    assert standing(decision.member, DEFAULT_TIERS, taken.at).expiring_soon == ()
    more = adjustment_of("adj2", -500, "Staff discount misuse", T0 + timedelta(days=2), RULES)
    below, _ = adjust(decision.member, more, None, DEFAULT_TIERS, ids())
    assert below.member.balance == -430
    expired = review(below.member, DEFAULT_TIERS, T0 + timedelta(days=400), ids())
    assert expired.member.balance == -430  # nothing was left to expire: the 100 were all taken


def test_an_adjustment_is_a_fact_so_an_order_before_it_arriving_late_ends_in_the_in_order_ledger() -> None:
    given = adjustment_of("adj1", 40, "Birthday", T0 + timedelta(days=2), RULES)
    late_order = purchase("o1", "100", T0)
    member = decide(Member("c1"), [purchase("o0", "10", T0 - timedelta(days=1))], None, DEFAULT_TIERS, T0, ids())
    assert member is not None
    adjusted, _ = adjust(member.member, given, None, DEFAULT_TIERS, ids())
    assert needs_history(adjusted.member, [late_order])
    known = Facts().adding(purchase("o0", "10", T0 - timedelta(days=1)), given)
    assert known is not None
    late = decide(adjusted.member, [late_order], History(known), DEFAULT_TIERS, T0 + timedelta(days=3), ids())
    assert late is not None
    in_order = replay(known.adding(late_order) or known, T0 + timedelta(days=3))
    assert late.member.balance == in_order.balance == 150
    assert decide(late.member, [given], None, DEFAULT_TIERS, T0 + timedelta(days=3), ids()) is None  # known


@pytest.mark.parametrize(
    ("points", "note", "field"),
    [(0, "why", "points"), (1_000_001, "why", "points"), (-1_000_001, "why", "points"), (5, "  ", "reason")],
)
def test_an_adjustment_needs_points_within_bounds_and_the_owners_reason(points: int, note: str, field: str) -> None:
    with pytest.raises(NoAdjustment) as refused:
        adjustment_of("adj1", points, note, T0, RULES)
    assert refused.value.field == field


def test_the_same_idempotency_key_gets_the_first_adjustment_and_only_for_the_same_request() -> None:
    first = AdjustmentRequest(50, "Sorry", Adjusted("adj1", "c1", 50, "Sorry", 50))
    assert adjustment_again(first, 50, "Sorry") == first.outcome
    with pytest.raises(IdempotencyKeyReused):
        adjustment_again(first, 60, "Sorry")
    with pytest.raises(IdempotencyKeyReused):
        answer_again(first, "rw_mug")  # a key used for an adjustment is no redemption's
    with pytest.raises(IdempotencyKeyReused):
        adjustment_again(RedemptionRequest("rw_mug", NotEnoughPoints(0, 100, "Mug")), 50, "Sorry")


def test_points_by_month_turns_signed_sums_into_figures_and_runs_the_outstanding_over_gaps() -> None:
    sums = {
        ("2026-01", EntryKind.EARN): 300,
        ("2026-01", EntryKind.REDEEM): -100,
        ("2026-03", EntryKind.REVERSE): -40,
        ("2026-03", EntryKind.ADJUST): -10,
        ("2026-03", EntryKind.EXPIRE): -60,
        ("2026-03", EntryKind.EARN): 20,
    }
    assert points_by_month(sums) == [
        PointsMonth("2026-01", issued=300, taken_back=0, corrected=0, redeemed=100, expired=0, outstanding=200),
        PointsMonth("2026-03", issued=20, taken_back=40, corrected=-10, redeemed=0, expired=60, outstanding=110),
    ]
