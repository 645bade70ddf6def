"""Facts are stored as plain documents and read back exactly (services/loyalty/store.py)."""

from datetime import UTC, datetime
from decimal import Decimal

from services.loyalty.domain import DEFAULT_TIERS, Activity, Campaign, Line, Purchase, Redemption, Refund
from services.loyalty.store import _activity, _purchase, _redemption, _refund, fact_doc

AT = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def test_a_purchase_with_its_rules_in_force_comes_back_exactly() -> None:
    campaign = Campaign(
        "cmp_1", "Slow January", AT, AT.replace(day=27), Decimal("1.5"), frozenset({"tea", "garden"}), frozenset(), 45
    )
    purchase = Purchase(
        order_id="ord-1",
        placed_at=AT,
        currency="EUR",
        total=Decimal("120.10"),
        lines=(Line("TEA-1", "tea", Decimal("100.10")), Line("CUP", None, Decimal("20.00"))),
        rate=Decimal("1.5"),
        tiers=DEFAULT_TIERS,
        campaigns=(campaign,),
        lifetime_days=365,
        tier_window_days=365,
    )
    stored = fact_doc(purchase)
    assert stored["total"] == "120.10"
    assert stored["campaigns"][0]["categories"] == ["garden", "tea"]
    assert stored["tiers"][1] == {"name": "silver", "threshold": 500, "multiplier": "1.25"}
    assert _purchase(stored) == purchase


def test_a_purchase_in_an_unrated_currency_keeps_its_missing_rate() -> None:
    purchase = Purchase("ord-2", AT, "HUF", Decimal("9900"), (), None, DEFAULT_TIERS, (), 365, 365)
    assert fact_doc(purchase)["rate"] is None
    assert _purchase(fact_doc(purchase)) == purchase


def test_refunds_activities_and_redemptions_come_back_exactly() -> None:
    refund = Refund("rf-1", "ord-1", Decimal("30.05"), AT)
    activity = Activity("review:ord-1", "review", 50, AT, 365, "ord-1")
    redemption = Redemption("red-1", "rw-tote", 300, AT)
    assert _refund(fact_doc(refund)) == refund
    assert _activity(fact_doc(activity)) == activity
    assert _redemption(fact_doc(redemption)) == redemption
