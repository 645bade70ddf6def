"""Signed tokens for the customer's links: the feedback link (expiring) and the unsubscribe link.

The feedback token carries which follow-up, customer and order the answer belongs
to, so ``POST /feedback`` and the feedback page can trust them without an admin
key. A token can be read any number of times here; that each one is used once is
the store's job (by ``followup_id``).

The unsubscribe token names the customer only, and does not expire: a link in a
mail from last year must still unsubscribe. Both are signed with the same secret
under different salts, so neither can stand in for the other.
"""

import time
from dataclasses import dataclass
from typing import Any, Literal

from itsdangerous import BadData, BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

SALT = "rapport-feedback"
UNSUBSCRIBE_SALT = "rapport-unsubscribe"

Reason = Literal["expired", "issued in the future", "invalid signature", "malformed"]


@dataclass(frozen=True)
class TokenClaims:
    followup_id: str
    customer_id: str
    order_id: str | None


class InvalidToken(ValueError):
    """A feedback token that must not be honoured; `reason` says why."""

    def __init__(self, reason: Reason, claims: "TokenClaims | None" = None) -> None:
        super().__init__(f"token rejected: {reason}")
        self.reason: Reason = reason
        self.claims = claims  # what an expired token said, signed by us: whose link it was (its language)


class _ClockSigner(TimestampSigner):
    """A timestamp signer whose clock can be set, so that expiry is tested without waiting."""

    def __init__(self, *args: Any, now: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._now = now

    def get_timestamp(self) -> int:
        return int(time.time() if self._now is None else self._now)


def _serializer(secret: str, now: float | None, salt: str = SALT) -> URLSafeTimedSerializer:
    if not secret:
        raise ValueError("a feedback token secret must not be empty")
    return URLSafeTimedSerializer(secret, salt=salt, signer=_ClockSigner, signer_kwargs={"now": now})


def issue_token(
    secret: str, *, followup_id: str, customer_id: str, order_id: str | None, now: float | None = None
) -> str:
    """A URL-safe token for one feedback request; `now` (Unix seconds) defaults to the clock."""
    claims = {"followup_id": followup_id, "customer_id": customer_id, "order_id": order_id}
    return _serializer(secret, now).dumps(claims)


def read_token(secret: str, token: str, *, max_age_seconds: int, now: float | None = None) -> TokenClaims:
    """The claims of a token signed with `secret` at most `max_age_seconds` before `now`.

    Raises InvalidToken: "expired", "issued in the future", "invalid signature"
    (readable but not signed with this secret: forged or tampered with) or
    "malformed" (not a feedback token at all).
    """
    serializer = _serializer(secret, now)
    try:
        payload = serializer.loads(token, max_age=max_age_seconds)
    except SignatureExpired as error:
        signed_at = error.date_signed.timestamp() if error.date_signed else None
        issued_later = signed_at is not None and signed_at > (time.time() if now is None else now)
        if issued_later:
            raise InvalidToken("issued in the future") from error
        said = serializer.load_payload(error.payload) if isinstance(error.payload, bytes) else None
        raise InvalidToken("expired", _claims(said)) from error
    except BadSignature as error:
        _, readable = serializer.loads_unsafe(token)
        raise InvalidToken("invalid signature" if _claims(readable) else "malformed") from error
    except BadData as error:  # signed by us, yet the payload does not decode
        raise InvalidToken("malformed") from error
    claims = _claims(payload)
    if claims is None:
        raise InvalidToken("malformed")
    return claims


def _claims(payload: object) -> TokenClaims | None:
    if not isinstance(payload, dict):
        return None
    followup_id, customer_id, order_id = (payload.get(key) for key in ("followup_id", "customer_id", "order_id"))
    if not isinstance(followup_id, str) or not isinstance(customer_id, str):
        return None
    if order_id is not None and not isinstance(order_id, str):
        return None
    return TokenClaims(followup_id=followup_id, customer_id=customer_id, order_id=order_id)


def issue_unsubscribe_token(secret: str, *, customer_id: str) -> str:
    """A URL-safe token for the customer's unsubscribe link."""
    return _serializer(secret, None, UNSUBSCRIBE_SALT).dumps({"customer_id": customer_id})


def read_unsubscribe_token(secret: str, token: str) -> str:
    """The customer an unsubscribe token names; raises InvalidToken ("invalid signature" or "malformed")."""
    serializer = _serializer(secret, None, UNSUBSCRIBE_SALT)
    try:
        payload = serializer.loads(token)
    except BadSignature as error:
        _, readable = serializer.loads_unsafe(token)
        signed_like_ours = isinstance(readable, dict) and isinstance(readable.get("customer_id"), str)
        raise InvalidToken("invalid signature" if signed_like_ours else "malformed") from error
    except BadData as error:
        raise InvalidToken("malformed") from error
    customer_id = payload.get("customer_id") if isinstance(payload, dict) else None
    if not isinstance(customer_id, str) or not customer_id:
        raise InvalidToken("malformed")
    return customer_id
