"""The console's rules, no I/O: who may do what, passwords, sign-in throttling, sessions, what Today shows."""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

Role = Literal["owner", "staff"]
ROLES: tuple[Role, ...] = ("owner", "staff")

# What only an owner may do; staff see and do everything else (DESIGN.md §1, docs/console.md).
# "rules": loyalty's points rules, tiers and bonus campaigns (Programs).
OWNER_ONLY = frozenset({"settings", "people", "erasure", "export", "keys", "replay", "rules"})

MIN_PASSWORD_LENGTH = 10
# Sign-in throttling: failed attempts within the window, per e-mail address and per address the request came from.
THROTTLE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_EMAIL = 5
MAX_FAILURES_PER_IP = 20

_hasher = PasswordHasher()  # argon2id with the library's current parameters (RFC 9106 low-memory profile)


def may(role: Role, action: str) -> bool:
    return role == "owner" or action not in OWNER_ONLY


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(stored_hash: str | None, password: str) -> bool:
    """Whether the password is the one hashed; a missing hash costs the same time, so timing names no address."""
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def password_problem(password: str) -> str | None:
    """The message id of what is wrong with a new password, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return "people.error.password_short"
    return None


def email_problem(email: str) -> str | None:
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or " " in email or len(email) > 254:
        return "people.error.email"
    return None


def normal_email(email: str) -> str:
    return email.strip().lower()


@dataclass(frozen=True)
class Throttle:
    """Failed sign-ins within THROTTLE_WINDOW."""

    for_email: int
    for_ip: int

    @property
    def refuses(self) -> bool:
        return self.for_email >= MAX_FAILURES_PER_EMAIL or self.for_ip >= MAX_FAILURES_PER_IP


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """Sessions are stored under their token's SHA-256: a copy of the database signs nobody in."""
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


def session_expiry(now: datetime, hours: float) -> datetime:
    return now + timedelta(hours=hours)


Urgency = Literal["breached", "soon", "open"]
SOON = timedelta(minutes=15)


def urgency(seconds_left: float, breached: bool) -> Urgency:
    """How an escalation shows on Today: red once its SLA is breached, amber in its last 15 minutes."""
    if breached or seconds_left < 0:
        return "breached"
    return "soon" if seconds_left <= SOON.total_seconds() else "open"


def days_overdue(due_at: datetime, now: datetime) -> int:
    return max(0, (now - due_at).days)


def is_today(moment: datetime, now: datetime) -> bool:
    return now - moment < timedelta(days=1)
