"""Referral rules as plain values and functions, no I/O (DESIGN.md §7 "Referrals").

- Codes: short, unambiguous when read off a screen or a note, unguessable.
- Identities: the e-mail and address a fraud check compares, so that trivial
  variations (``eva+promo@…``, ``e.va@googlemail.com``, "Hlavna 1" for
  "Hlavná 1,") count as the same person or place.
- First orders: which of a customer's orders is the first, whatever the order
  in which the shop's events arrive.
- Customers: what their orders tell (first order, identities), what erasure keeps.
- Attribution: whether an order converts a referral, and if not, why; the whole
  decision (the conversion or refusal kept, the code's count, the event); and
  when a fact heard of later contests a conversion already made.
- Affiliate commission, its pro-rata clawback on refunds (in the order's
  currency only), and the totals an affiliate earned.
- The happy moment: how often a customer may be asked to refer friends.
- Program statistics and the K-factor, overall and by month.

The store (store.py) keeps these values; the use cases (service.py) load them,
ask these functions, save what they decide and publish the events they return.
"""

import hashlib
import math
import re
import secrets
import unicodedata
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import ClassVar, Literal, TypedDict

from shared.events import OrderPlaced, ReferralConverted, ReferralInvited

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


# --- customers as attribution knows them ----------------------------------------------------


@dataclass(frozen=True)
class Referred:
    """The conversion a customer was referred by, as their record keeps it."""

    order_id: str
    placed_at: datetime
    referral_id: str

    @property
    def order(self) -> PlacedOrder:
        return PlacedOrder(self.placed_at, self.order_id)


@dataclass(frozen=True)
class Customer:
    """A customer: their first order, the identities their orders were placed under, their own code."""

    customer_id: str
    first_order: PlacedOrder | None = None
    emails: tuple[str, ...] = ()  # email_identity() of every order's e-mail, in the order first seen
    addresses: tuple[str, ...] = ()  # address_identity() of every order's shipping address
    code: str | None = None  # their own referral code
    referred: Referred | None = None  # the conversion they were referred by, as a referee
    last_invited_at: datetime | None = None

    def as_referrer(self) -> "Party":
        return Party(self.customer_id, frozenset(self.emails), frozenset(self.addresses))


@dataclass(frozen=True)
class RememberedOrder:
    """A customer once an order of theirs is known, and the identities that order showed for the first time."""

    customer: Customer
    new_emails: tuple[str, ...]
    new_addresses: tuple[str, ...]


def typed_code(order: OrderPlaced) -> str:
    """The order's referral code in canonical form; empty when it carries none."""
    return normalize_code(order.referral_code) if order.referral_code else ""


def address_of(order: OrderPlaced) -> str | None:
    """The identity of the order's shipping address; None when it has none."""
    shipping = order.shipping_address
    if shipping is None:
        return None
    return address_identity(shipping.line1, shipping.postal_code, shipping.city, shipping.country, shipping.line2)


def remember_order(customer: Customer, placed: PlacedOrder, order: OrderPlaced) -> RememberedOrder:
    """The customer's first order and identities once `order` (placed as `placed`) is known too."""
    email, address = email_identity(order.customer.email), address_of(order)
    new_emails = () if email in customer.emails else (email,)
    new_addresses = () if address is None or address in customer.addresses else (address,)
    remembered = replace(
        customer,
        first_order=first_of(customer.first_order, placed),
        emails=customer.emails + new_emails,
        addresses=customer.addresses + new_addresses,
    )
    return RememberedOrder(remembered, new_emails, new_addresses)


def with_own_code(customer: Customer, code: str) -> Customer:
    """The customer once they hold their referral code (one per customer)."""
    return replace(customer, code=code)


def anonymised(customer: Customer, alias: str) -> Customer:
    """What an erased customer's record keeps for the program's counts: not who they are."""
    return replace(customer, customer_id=alias, emails=(), addresses=())


# --- attribution ----------------------------------------------------------------------

Program = Literal["customer", "affiliate"]


class RefusalReason(StrEnum):
    """Why an order's code did not convert, in the order refusal() checks them: the first that applies is the reason."""

    UNKNOWN_CODE = "unknown_code"
    OWN_ORDER = "own_order"
    RETURNING_CUSTOMER = "returning_customer"
    ALREADY_REFERRED = "already_referred"
    EXPIRED_CODE = "expired_code"
    CAPPED_CODE = "capped_code"


REFUSAL_REASONS = tuple(RefusalReason)

# What a code meets at a given moment (code_status); "revoked" once its referrer was erased.
CodeStatus = Literal["active", "expired", "capped", "revoked"]


class CustomerWasErased(Exception):
    """The customer was erased: nothing new is kept about them."""


class NoSuchCode(LookupError):
    """No referral code is known under this spelling."""


@dataclass(frozen=True)
class Code:
    """A referral code: whose it is, its limits and the conversions counted so far."""

    code: str
    referrer_customer_id: str | None  # the customer who refers, for the customer program
    affiliate_id: str | None  # the affiliate who is paid, for the affiliate program
    program: Program
    expires_at: datetime | None = None
    max_conversions: int | None = None
    conversions: int = 0  # conversions counted so far
    created_at: datetime | None = None
    revoked_at: datetime | None = None  # set when the referrer is erased: the code converts no more


class CodeLimits(TypedDict, total=False):
    """A change of a code's limits: a key left out stays as it is, None lifts the limit."""

    expires_at: datetime | None
    max_conversions: int | None


def customer_code(code: str, customer_id: str, at: datetime) -> Code:
    """A customer's own code, issued at `at`, without limits."""
    return Code(code, customer_id, None, "customer", created_at=at)


def with_limits(code: Code, limits: CodeLimits) -> Code:
    """The code with its expiry and/or cap changed as asked."""
    return replace(code, **limits)


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


def referee_of(customer: Customer, placed: PlacedOrder, order: OrderPlaced) -> Referee:
    """The customer placing `order` as attribution checks them, from their record before this order."""
    return Referee(
        customer_id=customer.customer_id,
        email_identity=email_identity(order.customer.email),
        address_identity=address_of(order),
        has_ordered_before=ordered_before(customer.first_order, placed),
        was_referred_before=customer.referred is not None,
    )


def referring_customer(code: Code, affiliate: "Affiliate | None") -> str | None:
    """The customer account behind a code: the referrer's, or the affiliate's own account if they gave one."""
    if code.program == "customer":
        return code.referrer_customer_id
    return affiliate.customer_id if affiliate is not None else None


def referrer_of(code: Code, customer: Customer | None, affiliate: "Affiliate | None") -> Party:
    """Whom the code pays, with every identity they are known under (for the own-order check).

    A referrer is known under the identities of their own orders; an affiliate
    under those of their customer account, if any, and their contact e-mail.
    """
    party = customer.as_referrer() if customer is not None else Party(referring_customer(code, affiliate))
    if code.program == "affiliate" and affiliate is not None:
        return replace(party, emails=party.emails | {affiliate.email_identity})
    return party


def refusal(
    code: Code | None, referrer: Party | None, referee: Referee, order_placed_at: datetime
) -> RefusalReason | None:
    """None when the order converts the referral, else the first reason (RefusalReason order) it does not.

    Fraud comes first so that a self-referral is recorded as fraud even on an
    expired or capped code. Then what makes the referee ineligible whatever the
    code (not their first order, a referral already converted for them). The
    code's own limits come last; expiry before the cap because it depends only on
    this order's time, not on how many conversions happened to be counted first.
    A revoked code is no code at all.
    """
    if code is None or code.revoked_at is not None:
        return RefusalReason.UNKNOWN_CODE
    checks = (
        (RefusalReason.OWN_ORDER, is_own_order(code, referrer, referee)),
        (RefusalReason.RETURNING_CUSTOMER, referee.has_ordered_before),
        (RefusalReason.ALREADY_REFERRED, referee.was_referred_before),
        (RefusalReason.EXPIRED_CODE, code.expires_at is not None and order_placed_at > code.expires_at),
        (RefusalReason.CAPPED_CODE, code.max_conversions is not None and code.conversions >= code.max_conversions),
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


def code_status(code: Code, at: datetime) -> CodeStatus:
    """What an order carrying the code at `at` would meet: revoked, expired, capped or active (as refusal() checks)."""
    if code.revoked_at is not None:
        return "revoked"
    if code.expires_at is not None and at > code.expires_at:
        return "expired"
    if code.max_conversions is not None and code.conversions >= code.max_conversions:
        return "capped"
    return "active"


def shares_code(program: Program | None, reason: RefusalReason | None) -> bool:
    """Whether an order with a customer's code shares it: anyone's order but the referrer's own counts."""
    return program == "customer" and reason is not RefusalReason.OWN_ORDER


# --- what is decided on an order that carries a code ------------------------------------------

Outcome = Literal["converted", "refused"]


class ContestReason(StrEnum):
    """Why a conversion was contested. A conversion, once published, stands: the contract has no event that
    takes it back and loyalty has already rewarded it. A fact that disproves it contests it instead, for the
    owner to see and so that no affiliate commission is paid: one heard of later that would have refused it
    (the first two, named as the refusal), or the shop cancelling the order."""

    RETURNING_CUSTOMER = RefusalReason.RETURNING_CUSTOMER.value
    OWN_ORDER = RefusalReason.OWN_ORDER.value
    ORDER_CANCELLED = "order_cancelled"


@dataclass(frozen=True)
class Cancellation:
    """The shop cancelled an order (an OrderCancelled): a conversion on it is contested, whenever it is heard of."""

    order_id: str
    cancelled_at: datetime


@dataclass(frozen=True)
class Contest:
    """A later fact that disproves a conversion: why, and the order that showed it."""

    reason: ContestReason
    order_id: str
    at: datetime


@dataclass(frozen=True, kw_only=True)
class Referral:
    """An order that carried a code and what was decided on it: one per order, decided once."""

    outcome: ClassVar[Outcome]
    order_id: str
    code: str  # the code the order carried, canonical
    program: Program | None  # None when the code was unknown
    referrer_customer_id: str | None
    affiliate_id: str | None
    referee_customer_id: str
    placed_at: datetime
    order_total: Decimal
    currency: str
    decided_at: datetime

    @property
    def referral_id(self) -> str:
        return referral_id(self.order_id)


@dataclass(frozen=True, kw_only=True)
class Refusal(Referral):
    """An order whose code did not convert, and the first reason why."""

    outcome: ClassVar[Outcome] = "refused"
    reason: RefusalReason


@dataclass(frozen=True, kw_only=True)
class Conversion(Referral):
    """An order that converted its code: a new customer referred, and an affiliate's commission on it."""

    outcome: ClassVar[Outcome] = "converted"
    # The referee's identities on the converting order, kept so a later fact about the referrer can contest it.
    referee_email: str | None
    referee_address: str | None
    commission: "Commission | None" = None  # affiliate codes only
    contest: Contest | None = None

    @property
    def payee(self) -> str:
        """Who the conversion rewards: the referring customer, or the affiliate (by id) for an affiliate code."""
        payee = self.referrer_customer_id if self.program == "customer" else self.affiliate_id
        assert payee is not None  # every code is issued to one or the other
        return payee

    @property
    def referred(self) -> Referred:
        """What the referee's record keeps of it."""
        return Referred(self.order_id, self.placed_at, self.referral_id)


@dataclass(frozen=True)
class Converted:
    """The whole decision on an order that converts: the conversion to keep, the code counting it, the event."""

    conversion: Conversion
    code: Code
    event: ReferralConverted


def attribute(
    order: OrderPlaced,
    placed: PlacedOrder,
    referee: Customer,
    code: Code | None,
    referrer: Party | None,
    commission_rate: Decimal,
    refunds: Iterable["Refund"],
    at: datetime,
    *,
    cancellation: Cancellation | None = None,
) -> Converted | Refusal:
    """Decide whether `order` converts the code it carries; `referee` is their record before this order.

    `placed` is the order as kept (its `placed_at` as stored, so later comparisons
    agree); `commission_rate` and `refunds` count only for an affiliate code.
    A `cancellation` heard of before the order converts it all the same and contests
    it at once, so the conversion ends as it does when the cancellation comes after
    it (the same event published, the same contest, nothing due).
    """
    refunds = tuple(refunds)
    checked = referee_of(referee, placed, order)
    reason = refusal(code, referrer, checked, placed.placed_at)
    if reason is not None:
        known = code if reason is not RefusalReason.UNKNOWN_CODE else None  # a revoked code names no one any more
        return Refusal(
            order_id=order.order_id,
            code=typed_code(order),
            program=known.program if known else None,
            referrer_customer_id=known.referrer_customer_id if known else None,
            affiliate_id=known.affiliate_id if known else None,
            referee_customer_id=referee.customer_id,
            placed_at=placed.placed_at,
            order_total=order.total,
            currency=order.currency,
            decided_at=at,
            reason=reason,
        )
    assert code is not None  # refusal() refuses an unknown code
    earned = None
    if code.program == "affiliate":
        earned = Commission(commission_rate, commission(order.total, commission_rate))
        earned = settled_commission(earned, order.total, order.currency, refunds)
    conversion = Conversion(
        order_id=order.order_id,
        code=typed_code(order),
        program=code.program,
        referrer_customer_id=code.referrer_customer_id,
        affiliate_id=code.affiliate_id,
        referee_customer_id=referee.customer_id,
        placed_at=placed.placed_at,
        order_total=order.total,
        currency=order.currency,
        decided_at=at,
        referee_email=checked.email_identity,
        referee_address=checked.address_identity,
        commission=earned,
    )
    event = ReferralConverted(
        referral_id=conversion.referral_id,
        code=code.code,
        referrer_customer_id=conversion.payee,
        referee_customer_id=referee.customer_id,
        order_id=order.order_id,
        order_total=order.total,
        currency=order.currency,
        converted_at=order.placed_at,
        program=code.program,
        commission=earned.earned if earned else None,
    )
    if cancellation is not None:
        conversion = contested_as_cancelled(conversion, cancellation, refunds) or conversion
    return Converted(conversion, replace(code, conversions=code.conversions + 1), event)


def referred_by(customer: Customer, conversion: Conversion) -> Customer:
    """The referee's record once their conversion is kept: one conversion per referee."""
    return replace(customer, referred=conversion.referred)


def contested_as_returning(converted: PlacedOrder, order: PlacedOrder) -> bool:
    """Whether `order`, heard of after the referee converted on `converted`, shows they had ordered before."""
    return order < converted


def contested_as_own(referrer: Party, referee_email: str | None, referee_address: str | None) -> bool:
    """Whether the referrer, as known now, shares the e-mail or address the referee converted under."""
    return (referee_email is not None and referee_email in referrer.emails) or (
        referee_address is not None and referee_address in referrer.addresses
    )


def contested_as_cancelled(
    referral: Referral | None, cancellation: Cancellation, refunds: Iterable["Refund"]
) -> Conversion | None:
    """The conversion on a cancelled order, contested as of the cancellation: the order is its own evidence, and
    an affiliate's commission goes back whole (what refunds took already, and the rest). None: nothing to contest."""
    return contest(referral, ContestReason.ORDER_CANCELLED, cancellation.order_id, cancellation.cancelled_at, refunds)


def contest(
    referral: Referral | None, reason: ContestReason, evidence: str, at: datetime, refunds: Iterable["Refund"]
) -> Conversion | None:
    """The conversion flagged by a later fact, its commission all taken back; None when there is nothing to contest.

    Only a conversion is contested, and only once: the first fact that disproves it is the one kept.
    """
    if not isinstance(referral, Conversion) or referral.contest is not None:
        return None
    contested = replace(referral, contest=Contest(reason, evidence, at))
    return _with_clawbacks(contested, refunds)


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
    currency: str


def in_the_order_made(refunds: Iterable[Refund]) -> list[Refund]:
    """Refunds sorted by when they were made (ties by id), whatever the order they were heard of in."""
    return sorted(refunds, key=lambda r: (r.refunded_at, r.refund_id))


@dataclass(frozen=True)
class Clawbacks:
    """What refunds (and a contest) take back from one affiliate commission."""

    by_refund: tuple[tuple[str, Decimal], ...]  # (refund id, amount taken back), in the order refunds were made
    contested: Decimal  # what is left, taken back because the conversion was contested
    total: Decimal

    def net(self, commission: Decimal) -> Decimal:
        return commission - self.total


NOTHING_TAKEN = Clawbacks((), Decimal("0.00"), Decimal("0.00"))


def clawbacks(commission: Decimal, order_total: Decimal, refunds: Iterable[Refund], *, contested: bool) -> Clawbacks:
    """The clawbacks of a commission, from the order's refunds in the order they were made.

    Worked out again from every refund known, sorted by when it was made (ties by
    id), so the amounts do not depend on the order in which refunds were heard of.
    A contested conversion earns nothing: what refunds have not taken back, the
    contest does.
    """
    by_refund = []
    refunded = Decimal("0.00")
    for refund in in_the_order_made(refunds):
        by_refund.append((refund.refund_id, clawback(commission, order_total, refunded, refund.amount)))
        refunded += refund.amount
    taken = sum((amount for _, amount in by_refund), Decimal("0.00"))
    rest = commission - taken if contested else Decimal("0.00")
    return Clawbacks(tuple(by_refund), rest, taken + rest)


@dataclass(frozen=True)
class Commission:
    """An affiliate's commission on one conversion, and what refunds (or a contest) took back."""

    rate: Decimal
    earned: Decimal
    refunds: tuple[Refund, ...] = ()  # those set against it, in the order they were made
    taken: Clawbacks = NOTHING_TAKEN

    @property
    def due(self) -> Decimal:
        return self.taken.net(self.earned)


def commission_rate(affiliate: "Affiliate | None", default: Decimal) -> Decimal:
    """The affiliate's own rate, or the shop's default when none was set."""
    if affiliate is None or affiliate.commission_rate is None:
        return default
    return affiliate.commission_rate


def counts_against(refund: Refund, currency: str) -> bool:
    """Whether a refund can be set against a commission on an order in `currency`: only in the same currency."""
    return refund.currency == currency


def settled_commission(
    earned: Commission, order_total: Decimal, currency: str, refunds: Iterable[Refund], *, contested: bool = False
) -> Commission:
    """The commission with its clawbacks worked out again from every refund known (so arrival order does not matter).

    A refund in another currency than the order's cannot be set against it and is left out.
    """
    counted = tuple(in_the_order_made(r for r in refunds if counts_against(r, currency)))
    return replace(earned, refunds=counted, taken=clawbacks(earned.earned, order_total, counted, contested=contested))


def _with_clawbacks(conversion: Conversion, refunds: Iterable[Refund]) -> Conversion:
    if conversion.commission is None:
        return conversion
    contested = conversion.contest is not None
    settled = settled_commission(
        conversion.commission, conversion.order_total, conversion.currency, refunds, contested=contested
    )
    return replace(conversion, commission=settled)


def with_refund(known: Sequence[Refund], refund: Refund) -> tuple[Refund, ...] | None:
    """The order's refunds once `refund` is heard of; None when it is the same refund told again."""
    if any(r.refund_id == refund.refund_id for r in known):
        return None
    return (*known, refund)


@dataclass(frozen=True)
class ClawedBack:
    """A refund set against an affiliate's commission."""

    conversion: Conversion  # with its clawbacks worked out again
    in_another_currency: bool  # the refund cannot be set against the commission: the owner should look

    @property
    def clawed_back(self) -> Decimal:
        """All that refunds (and a contest) took back from the commission so far."""
        earned = self.conversion.commission
        return earned.taken.total if earned is not None else Decimal("0.00")


def claw_back(referral: Referral | None, refunds: Iterable[Refund], refund: Refund) -> ClawedBack | None:
    """What a refund takes back from the commission on its order; None when the order earned no commission."""
    if not isinstance(referral, Conversion) or referral.commission is None:
        return None
    return ClawedBack(_with_clawbacks(referral, refunds), not counts_against(refund, referral.currency))


@dataclass(frozen=True)
class CommissionTotals:
    earned: Decimal
    clawed_back: Decimal
    due: Decimal


def commission_totals(conversions: Iterable[Conversion]) -> dict[str, CommissionTotals]:
    """Commission earned, clawed back and due, per currency."""
    totals: dict[str, CommissionTotals] = {}
    for conversion in conversions:
        if conversion.commission is None:
            continue
        zero = CommissionTotals(Decimal("0.00"), Decimal("0.00"), Decimal("0.00"))
        sums = totals.get(conversion.currency, zero)
        totals[conversion.currency] = CommissionTotals(
            sums.earned + conversion.commission.earned,
            sums.clawed_back + conversion.commission.taken.total,
            sums.due + conversion.commission.due,
        )
    return totals


# --- affiliates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Affiliate:
    """A partner paid a commission on the orders their code brings."""

    affiliate_id: str
    name: str
    email: str
    email_identity: str
    customer_id: str | None  # their own customer account, if any: its orders earn nothing
    commission_rate: Decimal | None
    code: str
    created_at: datetime


@dataclass(frozen=True)
class Enrolled:
    affiliate: Affiliate
    code: Code


def new_affiliate_id() -> str:
    return f"aff_{uuid.uuid4().hex[:12]}"


def enrol(
    affiliate_id: str,
    code: str,
    *,
    name: str,
    email: str,
    customer_id: str | None,
    commission_rate: Decimal | None,
    default_rate: Decimal,
    expires_at: datetime | None,
    max_conversions: int | None,
    at: datetime,
) -> Enrolled:
    """A new affiliate with their own code; the commission rate defaults to the shop's."""
    affiliate = Affiliate(
        affiliate_id=affiliate_id,
        name=name,
        email=email,
        email_identity=email_identity(email),
        customer_id=customer_id,
        commission_rate=commission_rate if commission_rate is not None else default_rate,
        code=code,
        created_at=at,
    )
    limited = Code(code, None, affiliate_id, "affiliate", expires_at, max_conversions, created_at=at)
    return Enrolled(affiliate, limited)


# --- the happy moment ---------------------------------------------------------------------

PROMOTER_NPS = 9  # NPS: promoters answer 9 or 10


def is_promoter(nps: int | None) -> bool:
    """Whether an NPS answer makes this the happy moment to ask for a referral."""
    return nps is not None and nps >= PROMOTER_NPS


def may_invite(last_invited_at: datetime | None, now: datetime, every: timedelta = timedelta(days=90)) -> bool:
    """Whether a happy customer may be asked to refer friends again: never asked, or not within `every`."""
    return last_invited_at is None or now - last_invited_at >= every


@dataclass(frozen=True)
class Invitation:
    """A happy customer asked to refer friends, at the moment of their feedback."""

    feedback_id: str
    customer_id: str
    code: str
    at: datetime


@dataclass(frozen=True)
class Invited:
    invitation: Invitation
    customer: Customer  # with the invitation's moment as their last
    event: ReferralInvited


def invite(customer: Customer, code: str, feedback_id: str, at: datetime, every: timedelta) -> Invited | None:
    """Invite a promoter with their code at `at` (when they gave the feedback), unless asked within `every`.

    The moment is the feedback's, so a late, older feedback invites no one.
    """
    if not may_invite(customer.last_invited_at, at, every):
        return None
    invitation = Invitation(feedback_id, customer.customer_id, code, at)
    event = ReferralInvited(customer_id=customer.customer_id, code=code, feedback_id=feedback_id)
    return Invited(invitation, replace(customer, code=code, last_invited_at=at), event)


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
        refusals={reason.value: refusals.get(reason, 0) for reason in REFUSAL_REASONS} | dict(refusals),
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
