"""The names an erased customer leaves behind: the key of their erasure mark and their anonymous alias.

Pure, so that the erasure (shared/erasure.py) and the audit trail (shared/unit.py) both use it.
"""

import hashlib

ERASED = "erased"  # each service's collection of erasure marks
ALIAS_PREFIX = "erased-"


def erased_id(customer_id: str) -> str:
    """The key of the customer's erasure mark."""
    return hashlib.sha256(customer_id.encode()).hexdigest()


def erased_alias(customer_id: str) -> str:
    """The anonymous name an erased customer's kept records live under."""
    return f"{ALIAS_PREFIX}{erased_id(customer_id)[:24]}"


def is_alias(customer_id: str) -> bool:
    return customer_id.startswith(ALIAS_PREFIX)
