"""Orders' rules about what an erased customer's records keep (services/orders/domain.py), without I/O."""

from services.orders.domain import reason_kept, records_owner
from shared.aliases import erased_alias


def test_a_refund_keeps_its_reason_for_the_customer_and_none_once_they_are_erased() -> None:
    reason = "call Zuzana at +421 905 123 456"
    assert reason_kept(reason, records_owner("cus-z", erased=False), "cus-z") == reason
    assert reason_kept(reason, records_owner("cus-z", erased=True), "cus-z") is None
    assert records_owner("cus-z", erased=True) == erased_alias("cus-z")
    assert reason_kept(None, "cus-z", "cus-z") is None
