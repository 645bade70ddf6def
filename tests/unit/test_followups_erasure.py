"""Which follow-ups are named after a customer, and what they are called once the customer is erased (no I/O)."""

from services.followups.domain import call_id, renamed_for_alias, review_id, win_back_id


def test_the_call_reviews_and_win_backs_named_after_the_customer_take_the_alias_in_its_place() -> None:
    alias = "erased-0123456789abcdef01234567"
    assert renamed_for_alias(call_id("cus-1"), "cus-1", alias) == call_id(alias)
    assert renamed_for_alias(review_id("cus-1", 2), "cus-1", alias) == review_id(alias, 2)
    assert renamed_for_alias(win_back_id("cus-1", 1), "cus-1", alias) == win_back_id(alias, 1)
    guest = "guest:eva@example.sk"  # a guest checkout's id holds colons (and an e-mail)
    assert renamed_for_alias(review_id(guest, 3), guest, alias) == review_id(alias, 3)


def test_follow_ups_named_after_orders_or_other_customers_keep_their_ids() -> None:
    alias = "erased-0123456789abcdef01234567"
    for followup_id in ("thank_you:o-1", "feedback_request:cus-1", call_id("cus-10"), review_id("cus-10", 1)):
        assert renamed_for_alias(followup_id, "cus-1", alias) is None
