"""How every service recognises an erased customer without keeping who they were.

Each service keeps an erasure mark under the SHA-256 of the customer id, so a
late event about the customer is recognised and not used to bring their
personal data back; records kept for the shop's totals move to an anonymous alias.
"""

import hashlib

ALIAS_PREFIX = "erased-"


def erased_id(customer_id: str) -> str:
    """The key of the customer's erasure mark."""
    return hashlib.sha256(customer_id.encode()).hexdigest()


def erased_alias(customer_id: str) -> str:
    """The anonymous name an erased customer's kept records live under."""
    return f"{ALIAS_PREFIX}{erased_id(customer_id)[:24]}"


def is_alias(customer_id: str) -> bool:
    return customer_id.startswith(ALIAS_PREFIX)
