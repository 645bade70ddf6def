"""Referral rules as plain values and functions, no I/O (DESIGN.md §7 "Referrals").

- Codes: short, unambiguous when read off a screen or a note, unguessable.
- Identities: the e-mail and address a fraud check compares, so that trivial
  variations (``eva+promo@…``, ``e.va@googlemail.com``, "Hlavna 1" for
  "Hlavná 1,") count as the same person or place.
- First orders: which of a customer's orders is the first, whatever the order
  in which the shop's events arrive.
- Attribution: whether an order converts a referral, and if not, why; and when
  a fact heard of later contests a conversion already made.
- Affiliate commission and its pro-rata clawback on refunds.
- The happy moment: how often a customer may be asked to refer friends.
- Program statistics and the K-factor, overall and by month.
"""

import hashlib
import math
import re
import secrets
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

# --- codes ------------------------------------------------------------------------

# Look-alike groups (0/O, 1/I/L, 5/S, 2/Z, 8/B) are left out whole, since neither member
# is the obvious reading of the other; so are G (reads as 6) and U (handwritten, reads as V).
CODE_ALPHABET = "34679ACDEFHJKMNPQRTVWXY"
# An excluded character typed for the one kept character it resembles. The other
# excluded ones resemble no kept character (or several), so they stay and the lookup fails.
LOOK_ALIKES = {"G": "6", "U": "V"}
# 8 characters of 23 would carry only 36.2 bits; 9 carry 40.7, so codes are 9 long.
CODE_LENGTH = 9
CODE_GROUP = 3
CODE_ENTROPY_BITS = CODE_LENGTH * math.log2(len(CODE_ALPHABET))

_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212\ufe58\ufe63\uff0d]+")


def new_code(rng: secrets.SystemRandom | None = None) -> str:
    """A fresh referral code such as ``K7Q-XM4-PA9``: 9 characters from CODE_ALPHABET, ~40.7 bits."""
    rng = rng or secrets.SystemRandom()
    return _grouped("".join(rng.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH)))


def normalize_code(text: str) -> str:
    """What a customer typed, in the canonical form codes are stored and looked up in.

    Case, spaces and dashes (missing, extra, or typographic) do not matter, and an
    excluded look-alike becomes what it stands for (G→6, U→V). Anything else is kept
    as typed, so a wrong character or length fails the lookup instead of matching
    another code. Store codes through this function too, so both sides agree.
    """
    compact = _SEPARATORS.sub("", unicodedata.normalize("NFKC", text)).upper()
    compact = "".join(LOOK_ALIKES.get(character, character) for character in compact)
    return _grouped(compact) if len(compact) == CODE_LENGTH else compact


def is_code(text: str) -> bool:
    """Whether `text` is a code in canonical form that new_code could have issued."""
    compact = text.replace("-", "")
    return (
        len(compact) == CODE_LENGTH
        and all(character in CODE_ALPHABET for character in compact)
        and _grouped(compact) == text
    )


def _grouped(compact: str) -> str:
    return "-".join(compact[start : start + CODE_GROUP] for start in range(0, len(compact), CODE_GROUP))


# --- identities for fraud checks -------------------------------------------------------

_GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})


def email_identity(email: str) -> str:
    """The mailbox an address reaches: case-insensitive, without ``+tag``; Gmail ignores dots.

    ``E.Va+promo@GoogleMail.com`` and ``eva@gmail.com`` are the same identity.
    """
    local, at, domain = email.strip().lower().rpartition("@")
    if not at:
        return domain
    local = local.split("+", 1)[0]
    domain = domain.rstrip(".")
    if domain in _GMAIL_DOMAINS:
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}"


def address_identity(line1: str, postal_code: str, city: str, country: str, line2: str | None = None) -> str:
    """One shipping address as a comparable key, equal for trivially re-typed copies.

    Lower case, accents dropped, punctuation and whitespace removed altogether (a
    stronger form of collapsing: "Hlavná1" and "Hlavná 1," also match), and the two
    street lines read as one, so "Hlavná 1, Flat 4" equals "Hlavná 1" + "Flat 4".
    """
    street = _squashed(f"{line1} {line2 or ''}")
    return "|".join((street, _squashed(postal_code), _squashed(city), _squashed(country)))


def _squashed(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(character for character in decomposed if character.isalnum())


# --- first orders ------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class PlacedOrder:
    """One order of a customer, ordered by when it was placed (ties by order id)."""

    placed_at: datetime
    order_id: str


def first_of(known_first: PlacedOrder | None, order: PlacedOrder) -> PlacedOrder:
    """The customer's first order once `order` is known too.

    The earliest placed wins, not the first to arrive; two orders placed at the
    same instant are told apart by their ids, so every arrival order agrees.
    """
    return order if known_first is None or order < known_first else known_first


def ordered_before(known_first: PlacedOrder | None, order: PlacedOrder) -> bool:
    """Whether the customer had ordered before `order`: their earliest known order was placed before it."""
    return known_first is not None and known_first < order


def referral_id(order_id: str) -> str:
    """The id of the referral an order converts: the same for every delivery of that order, and fixed length."""
    return f"rf_{hashlib.sha256(order_id.encode()).hexdigest()[:24]}"


# --- attribution ----------------------------------------------------------------------

Program = Literal["customer", "affiliate"]

UNKNOWN_CODE = "unknown_code"
OWN_ORDER = "own_order"
RETURNING_CUSTOMER = "returning_customer"
ALREADY_REFERRED = "already_referred"
EXPIRED_CODE = "expired_code"
CAPPED_CODE = "capped_code"
# In the order refusal() checks them: the first that applies is the reason.
REFUSAL_REASONS = (UNKNOWN_CODE, OWN_ORDER, RETURNING_CUSTOMER, ALREADY_REFERRED, EXPIRED_CODE, CAPPED_CODE)


@dataclass(frozen=True)
class Code:
    """A referral code as the service knows it when an order carrying it arrives."""

    code: str
    referrer_customer_id: str | None  # the customer who refers, for the customer program
    affiliate_id: str | None  # the affiliate who is paid, for the affiliate program
    program: Program
    expires_at: datetime | None = None
    max_conversions: int | None = None
    conversions: int = 0  # conversions counted so far


@dataclass(frozen=True)
class Party:
    """The referrer: every e-mail and address identity they are known under."""

    customer_id: str | None
    emails: frozenset[str] = frozenset()  # email_identity() values
    addresses: frozenset[str] = frozenset()  # address_identity() values


@dataclass(frozen=True)
class Referee:
    """The customer who placed the order carrying the code."""

    customer_id: str
    email_identity: str
    address_identity: str | None
    has_ordered_before: bool
    was_referred_before: bool


def refusal(code: Code | None, referrer: Party | None, referee: Referee, order_placed_at: datetime) -> str | None:
    """None when the order converts the referral, else the first reason (REFUSAL_REASONS order) it does not.

    Fraud comes first so that a self-referral is recorded as fraud even on an
    expired or capped code. Then what makes the referee ineligible whatever the
    code (not their first order, a referral already converted for them). The
    code's own limits come last; expiry before the cap because it depends only on
    this order's time, not on how many conversions happened to be counted first.
    """
    if code is None:
        return UNKNOWN_CODE
    checks = (
        (OWN_ORDER, is_own_order(code, referrer, referee)),
        (RETURNING_CUSTOMER, referee.has_ordered_before),
        (ALREADY_REFERRED, referee.was_referred_before),
        (EXPIRED_CODE, code.expires_at is not None and order_placed_at > code.expires_at),
        (CAPPED_CODE, code.max_conversions is not None and code.conversions >= code.max_conversions),
    )
    return next((reason for reason, applies in checks if applies), None)


def is_own_order(code: Code, referrer: Party | None, referee: Referee) -> bool:
    """The referee is the referrer: same customer id, same e-mail identity, or same address when both are known."""
    referrer_ids = {code.referrer_customer_id, referrer.customer_id if referrer else None} - {None}
    if referee.customer_id in referrer_ids:
        return True
    if referrer is None:
        return False
    return referee.email_identity in referrer.emails or (
        referee.address_identity is not None and referee.address_identity in referrer.addresses
    )


def code_status(code: Code, at: datetime) -> str:
    """What an order carrying the code at `at` would meet: active, expired or capped (as refusal() checks them)."""
    if code.expires_at is not None and at > code.expires_at:
        return "expired"
    if code.max_conversions is not None and code.conversions >= code.max_conversions:
        return "capped"
    return "active"


# A conversion, once published, stands: the contract has no event that takes it back and
# loyalty has already rewarded it. A fact heard of later that would have refused it
# contests it instead, for the owner to see and so that no affiliate commission is paid.
CONTEST_REASONS = (RETURNING_CUSTOMER, OWN_ORDER)


def contested_as_returning(converted: PlacedOrder, order: PlacedOrder) -> bool:
    """Whether `order`, heard of after the referee converted on `converted`, shows they had ordered before."""
    return order < converted


def contested_as_own(referrer: Party, referee_email: str | None, referee_address: str | None) -> bool:
    """Whether the referrer, as known now, shares the e-mail or address the referee converted under."""
    return (referee_email is not None and referee_email in referrer.emails) or (
        referee_address is not None and referee_address in referrer.addresses
    )


# --- affiliate commission ----------------------------------------------------------------

CENT = Decimal("0.01")


def commission(order_total: Decimal, rate: Decimal) -> Decimal:
    """An affiliate's commission on an order: total × rate, to the cent, half up."""
    if not 0 <= rate <= 1:
        raise ValueError(f"commission rate must be between 0 and 1, got {rate}")
    return (order_total * rate).quantize(CENT, rounding=ROUND_HALF_UP)


def clawback(commission: Decimal, order_total: Decimal, refunded_so_far: Decimal, refund: Decimal) -> Decimal:
    """The part of `commission` this refund takes back, pro rata to the money refunded.

    Computed as the commission share of everything refunded after this refund minus
    the share before it, each rounded to the cent: the clawbacks of partial refunds
    add up exactly to the share of the total refunded, never more than the commission
    and all of it once the whole order is refunded, in whatever order refunds arrive.
    """
    if refund < 0 or refunded_so_far < 0:
        raise ValueError("refunds are not negative")
    if order_total <= 0:
        return Decimal("0.00")

    def share(refunded: Decimal) -> Decimal:
        return (commission * min(order_total, refunded) / order_total).quantize(CENT, rounding=ROUND_HALF_UP)

    return share(refunded_so_far + refund) - share(refunded_so_far)


@dataclass(frozen=True)
class Refund:
    refund_id: str
    amount: Decimal
    refunded_at: datetime


@dataclass(frozen=True)
class Clawbacks:
    """What refunds (and a contest) take back from one affiliate commission."""

    by_refund: tuple[tuple[str, Decimal], ...]  # (refund id, amount taken back), in the order refunds were made
    contested: Decimal  # what is left, taken back because the conversion was contested
    total: Decimal

    def net(self, commission: Decimal) -> Decimal:
        return commission - self.total


def clawbacks(commission: Decimal, order_total: Decimal, refunds: Iterable[Refund], *, contested: bool) -> Clawbacks:
    """The clawbacks of a commission, from the order's refunds in the order they were made.

    Worked out again from every refund known, sorted by when it was made (ties by
    id), so the amounts do not depend on the order in which refunds were heard of.
    A contested conversion earns nothing: what refunds have not taken back, the
    contest does.
    """
    by_refund = []
    refunded = Decimal("0.00")
    for refund in sorted(refunds, key=lambda r: (r.refunded_at, r.refund_id)):
        by_refund.append((refund.refund_id, clawback(commission, order_total, refunded, refund.amount)))
        refunded += refund.amount
    taken = sum((amount for _, amount in by_refund), Decimal("0.00"))
    rest = commission - taken if contested else Decimal("0.00")
    return Clawbacks(tuple(by_refund), rest, taken + rest)


# --- the happy moment ---------------------------------------------------------------------

PROMOTER_NPS = 9  # NPS: promoters answer 9 or 10


def is_promoter(nps: int | None) -> bool:
    """Whether an NPS answer makes this the happy moment to ask for a referral."""
    return nps is not None and nps >= PROMOTER_NPS


def may_invite(last_invited_at: datetime | None, now: datetime, every: timedelta = timedelta(days=90)) -> bool:
    """Whether a happy customer may be asked to refer friends again: never asked, or not within `every`."""
    return last_invited_at is None or now - last_invited_at >= every


# --- program statistics -----------------------------------------------------------------------

RATIO = Decimal("0.0001")


@dataclass(frozen=True)
class MonthStats:
    month: str  # "YYYY-MM", UTC
    invitations: int
    conversions: int
    conversion_rate: Decimal | None
    k_factor: Decimal | None


@dataclass(frozen=True)
class ProgramStats:
    invitations: int
    codes_shared: int
    conversions: int
    conversion_rate: Decimal | None  # conversions per invitation
    invitations_per_customer: Decimal | None
    k_factor: Decimal | None  # invitations per customer × conversion rate
    refusals: Mapping[str, int]  # every reason of REFUSAL_REASONS, then any other reported
    months: tuple[MonthStats, ...]  # oldest first


def program_stats(
    invitations: Sequence[datetime],
    conversions: Sequence[datetime],
    refusals: Mapping[str, int],
    customers: int,
    codes_shared: int,
) -> ProgramStats:
    """The refer-a-friend funnel and its K-factor, overall and per calendar month (UTC).

    `invitations` are when invitations were sent, `conversions` when customer-program
    referrals converted (affiliate sales were not invited, so they are left out by
    the caller). Ratios have 4 places, half up; the K-factor is rounded once from the
    exact ratios, not from their rounded values. A month's K-factor uses the same
    customer count as the whole program: the customers the shop has now, since a
    count per month is not known to this service. A conversion counts in the month it
    happened, which may be later than its invitation, so a month's rate can exceed 1.
    """
    by_month_invited = Counter(_month(moment) for moment in invitations)
    by_month_converted = Counter(_month(moment) for moment in conversions)
    months = tuple(
        MonthStats(
            month,
            by_month_invited[month],
            by_month_converted[month],
            _ratio(by_month_converted[month], by_month_invited[month]),
            _k_factor(by_month_invited[month], by_month_converted[month], customers),
        )
        for month in sorted(by_month_invited.keys() | by_month_converted.keys())
    )
    return ProgramStats(
        invitations=len(invitations),
        codes_shared=codes_shared,
        conversions=len(conversions),
        conversion_rate=_ratio(len(conversions), len(invitations)),
        invitations_per_customer=_ratio(len(invitations), customers),
        k_factor=_k_factor(len(invitations), len(conversions), customers),
        refusals={reason: refusals.get(reason, 0) for reason in REFUSAL_REASONS} | dict(refusals),
        months=months,
    )


def _ratio(numerator: int, denominator: int) -> Decimal | None:
    if denominator <= 0:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(RATIO, rounding=ROUND_HALF_UP)


def _k_factor(invitations: int, conversions: int, customers: int) -> Decimal | None:
    if invitations <= 0 or customers <= 0:
        return None
    # (invitations / customers) × (conversions / invitations), divided once so nothing is rounded twice.
    return (Decimal(conversions) / Decimal(customers)).quantize(RATIO, rounding=ROUND_HALF_UP)


def _month(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"timestamps carry an offset, got {moment.isoformat()}")
    return moment.astimezone(UTC).strftime("%Y-%m")
