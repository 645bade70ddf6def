"""Loyalty rules as plain functions: rates, floors, tiers, campaigns, refunds, expiry, replay."""

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.loyalty.domain import (
    DEFAULT_TIERS,
    Activity,
    Campaign,
    Facts,
    Line,
    Purchase,
    Redemption,
    Refund,
    Rules,
    continue_replay,
    entries_to_append,
    feedback_activities,
    next_tier,
    place,
    purchase_points,
    referral_activities,
    refund_reversal,
    replay,
    tier_for,
)
from shared.events import FeedbackReceived, Ratings, ReferralConverted

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


def _random_facts(rng: random.Random, count: int) -> list[Purchase | Refund | Activity | Redemption]:
    """A member's history over two years: orders, partial refunds (some before their order), reviews, spending."""
    facts: list[Purchase | Refund | Activity | Redemption] = []
    for n in range(count):
        at = T0 + timedelta(days=rng.randint(0, 730), minutes=rng.randint(0, 1440))
        kind = rng.random()
        if kind < 0.5:
            facts.append(purchase(f"o{n}", str(rng.randint(1, 900)), at))
        elif kind < 0.7:
            facts.append(Refund(f"r{n}", f"o{rng.randrange(count)}", Decimal(rng.randint(1, 300)), at))
        elif kind < 0.85:
            facts.append(Activity(f"review:{n}", "review", 50, at, rng.choice([30, 365])))
        else:
            facts.append(Redemption(f"rd{n}", "mug", rng.randint(10, 200), at))
    return facts


@pytest.mark.parametrize("seed", range(40))
def test_continuing_from_the_checkpoint_equals_replaying_everything(seed: int) -> None:
    """Settle the facts one at a time, in the order they happened, each from the last checkpoint."""
    rng = random.Random(seed)  # noqa: S311 - repeatable cases, not secrets
    facts = sorted(_random_facts(rng, 30), key=place)
    now = T0 + timedelta(days=1000)
    recorded: dict[str, int] = {}
    checkpoint = replay(Facts(), T0).checkpoint
    for fact in facts:
        ledger = continue_replay(checkpoint, recorded, [fact], now)
        assert ledger is not None
        for entry in entries_to_append(ledger, recorded):
            recorded[entry.key] = recorded.get(entry.key, 0) + entry.points
        checkpoint = ledger.checkpoint
    everything = replay(Facts().adding(*facts) or Facts(), now)
    assert {k: v for k, v in recorded.items() if v} == everything.amounts
    assert ledger.tier == everything.tier
    assert ledger.next_review_at == everything.next_review_at


def test_a_fact_before_the_latest_known_one_needs_the_full_replay() -> None:
    known = replay(Facts(purchases=(purchase("o2", "100", T0 + timedelta(days=1)),)), T0 + timedelta(days=2))
    recorded = known.amounts
    assert continue_replay(known.checkpoint, recorded, [purchase("o1", "500", T0)], T0 + timedelta(days=2)) is None
    later = continue_replay(
        known.checkpoint, recorded, [purchase("o3", "10", T0 + timedelta(days=2))], T0 + timedelta(days=2)
    )
    assert later is not None
    assert later.amounts == {"purchase:o2": 100, "purchase:o3": 10}
    assert known.checkpoint.unheard([purchase("o2", "100", T0 + timedelta(days=1))]) == []
