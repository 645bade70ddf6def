"""Facts, checkpoints and answers are stored as named documents and read back exactly (services/loyalty/store.py),
including the shapes stored before."""

from datetime import UTC, datetime
from decimal import Decimal

from services.loyalty.domain import (
    DEFAULT_TIERS,
    Activity,
    Campaign,
    Cancellation,
    Checkpoint,
    Facts,
    Line,
    Lot,
    NotEnoughPoints,
    Purchase,
    PurchaseAward,
    Reason,
    Redeemed,
    Redemption,
    Refund,
    replay,
)
from services.loyalty.store import (
    _activity,
    _answer_stored_as_http,
    _checkpoint,
    _checkpoint_doc,
    _fact_document,
    _facts,
    _history_facts,
    _purchase,
    _redemption,
    _refund,
    fact_doc,
)

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
    activity = Activity("review:ord-1", Reason.REVIEW, 50, AT, 365, "ord-1")
    redemption = Redemption("red-1", "rw-tote", 300, AT)
    assert _refund(fact_doc(refund)) == refund
    assert _activity(fact_doc(activity)) == activity
    assert _redemption(fact_doc(redemption)) == redemption


def test_the_checkpoint_is_stored_with_named_fields_and_comes_back_exactly() -> None:
    facts = Facts(
        purchases=(Purchase("ord-1", AT, "EUR", Decimal("80.50"), (), Decimal(1), DEFAULT_TIERS, (), 365, 365),),
        refunds=(
            Refund("rf-1", "ord-1", Decimal("20.25"), AT.replace(hour=11)),
            Refund("rf-9", "ord-9", Decimal(5), AT),
        ),
    )
    checkpoint = replay(facts, AT.replace(hour=12)).checkpoint
    stored = _checkpoint_doc(checkpoint)
    assert stored["purchases"][0] | {"placed_at": None} == {
        "order_id": "ord-1",
        "placed_at": None,
        "total": "80.50",
        "points": 80,
        "window_days": 365,
        "refunded": "20.25",
        "reversed": 20,
        "refund_ids": ["rf-1"],
        "cancelled": False,
    }
    assert stored["lots"][0]["key"] == "purchase:ord-1"
    assert stored["pending_refunds"] == [{"refund_id": "rf-9", "order_id": "ord-9", "amount": "5", "refunded_at": AT}]
    assert _checkpoint(stored) == checkpoint


def test_a_cancelled_order_and_a_waiting_cancellation_are_kept_in_the_checkpoint() -> None:
    facts = Facts(
        purchases=(Purchase("ord-1", AT, "EUR", Decimal("80.50"), (), Decimal(1), DEFAULT_TIERS, (), 365, 365),),
        cancellations=(Cancellation("ord-1", AT.replace(hour=11)), Cancellation("ord-9", AT.replace(hour=10))),
    )
    checkpoint = replay(facts, AT.replace(hour=12)).checkpoint
    stored = _checkpoint_doc(checkpoint)
    assert (stored["purchases"][0]["cancelled"], stored["purchases"][0]["reversed"]) == (True, 80)
    assert stored["pending_cancellations"] == [{"order_id": "ord-9", "cancelled_at": AT.replace(hour=10)}]
    assert _checkpoint(stored) == checkpoint


def test_a_history_is_one_document_per_fact_and_reads_back_exactly() -> None:
    facts = Facts(
        purchases=(Purchase("ord/1", AT, "EUR", Decimal("80.50"), (), Decimal(1), DEFAULT_TIERS, (), 365, 365),),
        refunds=(Refund("rf-1", "ord/1", Decimal("20.25"), AT),),
        cancellations=(Cancellation("ord/1", AT),),
        activities=(Activity("review:ord/1", Reason.REVIEW, 50, AT, 365, "ord/1"),),
        redemptions=(Redemption("red-1", "rw-tote", 300, AT),),
    )
    docs = [_fact_document("cus/1", fact) for fact in facts.every()]
    assert [doc["_id"] for doc in docs] == [
        {"member": "cus/1", "fact": "purchases:ord/1"},
        {"member": "cus/1", "fact": "refunds:rf-1"},
        {"member": "cus/1", "fact": "cancellations:ord/1"},
        {"member": "cus/1", "fact": "activities:review:ord/1"},
        {"member": "cus/1", "fact": "redemptions:red-1"},
    ]
    assert [doc["kind"] for doc in docs] == ["purchases", "refunds", "cancellations", "activities", "redemptions"]
    assert _history_facts(reversed(docs)) == Facts(
        purchases=facts.purchases,
        refunds=facts.refunds,
        activities=facts.activities,
        redemptions=facts.redemptions,
        cancellations=facts.cancellations,
    )
    old_shape = {"_id": "cus/1", "purchases": [fact_doc(facts.purchases[0])], "refunds": [fact_doc(facts.refunds[0])]}
    assert _facts(old_shape) == Facts(purchases=facts.purchases, refunds=facts.refunds)  # what the split reads


def test_a_checkpoint_stored_as_positional_lists_is_still_read() -> None:
    """How checkpoints were stored before they had named fields."""
    old = {
        "last": {"at": AT, "kind": 2, "id": "rf-1"},
        "seen": ["purchases:ord-1", "refunds:rf-1"],
        "lots": [["purchase:ord-1", AT, AT.replace(year=2027), 60, "ord-1"]],
        "orders": [["ord-1", AT, "80.50", 80, 365, "20.25", 20]],
        "pending_refunds": [["rf-9", "ord-9", "5", AT]],
    }
    assert _checkpoint(old) == Checkpoint(
        last=(AT, 2, "rf-1"),
        seen={"purchases:ord-1", "refunds:rf-1"},
        lots=[Lot("purchase:ord-1", AT, AT.replace(year=2027), 60, "ord-1")],
        purchases={"ord-1": PurchaseAward(AT, Decimal("80.50"), 80, 365, Decimal("20.25"), 20)},
        pending_refunds={"ord-9": [Refund("rf-9", "ord-9", Decimal(5), AT)]},
    )


def test_a_redemption_answer_stored_as_http_is_still_read() -> None:
    """How the first answer to an Idempotency-Key was stored before: its HTTP status and body."""
    refused = {"detail": 'balance 40 does not cover 100 points for "Mo\'s mug"', "balance": 40, "points_price": 100}
    assert _answer_stored_as_http(409, refused) == NotEnoughPoints(40, 100, "Mo's mug")
    body = {"redemption_id": "rd-1", "customer_id": "c1", "reward_id": "rw-1", "points": 100, "balance": 20}
    assert _answer_stored_as_http(201, body) == Redeemed("rd-1", "c1", "rw-1", 100, 20)
