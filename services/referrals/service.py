"""Referral use cases: hear of orders, convert or refuse their codes, claw back commissions, invite promoters, erase.

Attribution is order-tolerant (docs/referrals.md): every order tells its
customer's first order (the earliest placed, not the first to arrive) and the
identities they order under; an order that carries a code is decided once, keyed
by its order id, against the first order known then. A fact heard of later that
would have refused a conversion contests it instead of converting anyone twice.
"""

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter
from pymongo import DeleteOne, UpdateMany

from services.referrals import domain
from services.referrals.domain import (
    OWN_ORDER,
    RETURNING_CUSTOMER,
    Code,
    Party,
    PlacedOrder,
    Referee,
    address_identity,
    email_identity,
    normalize_code,
)
from services.referrals.settings import ReferralsUnit, referrals_settings
from services.referrals.store import (
    AFFILIATES,
    CODES,
    CONVERTED,
    CUSTOMERS,
    INVITATIONS,
    REFERRALS,
    REFUNDS,
    REFUSED,
    code_from,
    fresh_code,
    new_code_doc,
    new_customer,
    order_mark,
    placed_order,
    refunds_from,
)
from shared.erasure import erased_alias, forget_sent_events, is_erased, mark_erased, preload_customers
from shared.events import (
    CustomerErasedEvent,
    Envelope,
    FeedbackReceivedEvent,
    OrderPlaced,
    OrderPlacedEvent,
    OrderRefundedEvent,
    ReferralConverted,
    ReferralInvited,
)
from shared.mongo import as_stored

SOURCE = "referrals"
log = structlog.get_logger("rapport.referrals")

METRICS = CollectorRegistry()
CONVERSIONS = Counter("referrals_conversions", "Referrals converted, by program.", ["program"], registry=METRICS)
REFUSALS = Counter(
    "referrals_refusals", "Orders whose referral code was refused, by reason.", ["reason"], registry=METRICS
)
CONTESTED = Counter(
    "referrals_contested", "Conversions contested by a fact heard of later, by reason.", ["reason"], registry=METRICS
)
INVITED = Counter("referrals_invitations", "Happy customers invited to refer friends.", registry=METRICS)


def now() -> datetime:
    return datetime.now(UTC)


class CustomerWasErased(Exception):
    """The customer was erased: nothing new is kept about them."""


# --- reading a batch at once -----------------------------------------------------------------


async def prefetch_referrals(unit: ReferralsUnit, events: list[Envelope[Any]]) -> None:
    """Read what a batch touches (codes, their owners, customers, earlier decisions, refunds) in a few queries."""
    customers: set[str] = set()
    codes: set[str] = set()
    orders: set[str] = set()
    for event in events:
        if isinstance(event, OrderPlacedEvent):
            customers.add(event.data.customer.customer_id)
            typed = typed_code(event.data)
            if typed:
                codes.add(typed)
                orders.add(event.data.order_id)
        elif isinstance(event, OrderRefundedEvent):
            orders.add(event.data.order_id)
        elif isinstance(event, FeedbackReceivedEvent | CustomerErasedEvent):
            customers.add(event.data.customer_id)
    await unit.preload(CODES, codes)
    known = [doc for doc in [await unit.find_one(CODES, {"_id": code}) for code in codes] if doc is not None]
    await unit.preload(AFFILIATES, {doc["affiliate_id"] for doc in known if doc["affiliate_id"] is not None})
    affiliates = [await unit.find_one(AFFILIATES, {"_id": doc["affiliate_id"]}) for doc in known if doc["affiliate_id"]]
    customers |= {doc["referrer_customer_id"] for doc in known if doc["referrer_customer_id"] is not None}
    customers |= {a["customer_id"] for a in affiliates if a is not None and a.get("customer_id") is not None}
    await preload_customers(unit, CUSTOMERS, customers)
    await unit.preload(REFERRALS, orders)
    await unit.preload(REFUNDS, orders)


def typed_code(order: OrderPlaced) -> str:
    """The order's referral code in canonical form; empty when it carries none."""
    return normalize_code(order.referral_code) if order.referral_code else ""


# --- orders: first orders, attribution, contests ----------------------------------------------------


async def record_order(unit: ReferralsUnit, event: OrderPlacedEvent) -> None:
    """Remember the customer's first order and identities, decide the order's code, contest what the order disproves."""
    data = event.data
    customer = await _customer_unless_erased(unit, data.customer.customer_id)
    if customer is None:
        return  # erased: their orders are not used any more
    before = dict(customer)
    order = PlacedOrder(as_stored(data.placed_at), data.order_id)
    known_first = placed_order(customer["first_order"])
    email = email_identity(data.customer.email)
    address = _address_of(data)
    new_emails = [] if email in customer["emails"] else [email]
    new_addresses = [] if address is None or address in customer["addresses"] else [address]
    customer |= {
        "first_order": order_mark(domain.first_of(known_first, order)),
        "emails": [*customer["emails"], *new_emails],
        "addresses": [*customer["addresses"], *new_addresses],
    }
    typed = typed_code(data)
    if typed:
        converted = await convert_referral(unit, event, typed, customer, known_first, address)
        if converted is not None:
            customer["referral"] = converted
    await _contest_if_ordered_before(unit, customer, order)
    if customer != before:  # a regular customer's usual order changes nothing here
        unit.replace(CUSTOMERS, customer)
    if customer["code"] is not None and (new_emails or new_addresses):
        await _contest_own_referrals(unit, customer, order, new_emails, new_addresses)


async def convert_referral(
    unit: ReferralsUnit,
    event: OrderPlacedEvent,
    typed: str,
    customer: dict[str, Any],
    known_first: PlacedOrder | None,
    address: str | None,
) -> dict[str, Any] | None:
    """Decide, once per order, whether it converts its code; publish ReferralConverted when it does.

    Returns what the referee's record keeps of the conversion, or None.
    """
    data = event.data
    if await unit.find_one(REFERRALS, {"_id": data.order_id}) is not None:
        return None  # decided when the order was first heard of (a duplicate, or the same order told again)
    code_doc = await unit.find_one(CODES, {"_id": typed})
    code = code_from(code_doc) if code_doc is not None and code_doc["revoked_at"] is None else None
    order = PlacedOrder(as_stored(data.placed_at), data.order_id)
    referee = Referee(
        customer_id=customer["_id"],
        email_identity=email_identity(data.customer.email),
        address_identity=address,
        has_ordered_before=domain.ordered_before(known_first, order),
        was_referred_before=customer["referral"] is not None,
    )
    reason = domain.refusal(code, await _referrer(unit, code), referee, order.placed_at)
    referral: dict[str, Any] = {
        "_id": data.order_id,
        "referral_id": domain.referral_id(data.order_id),
        "code": typed,
        "program": code.program if code else None,
        "referrer_customer_id": code.referrer_customer_id if code else None,
        "affiliate_id": code.affiliate_id if code else None,
        "referee_customer_id": customer["_id"],
        "placed_at": order.placed_at,
        "order_total": str(data.total),
        "currency": data.currency,
        "outcome": REFUSED if reason else CONVERTED,
        "reason": reason,
        "decided_at": now(),
        "contested": None,
    }
    if reason is not None:
        unit.replace(REFERRALS, referral)
        unit.on_commit(REFUSALS.labels(reason=reason).inc)
        log.info("referral_refused", order_id=data.order_id, code=typed, reason=reason)
        return None
    assert code is not None  # refusal() refuses an unknown code
    assert code_doc is not None
    # Kept so that a fact heard of later about the referrer can still contest this conversion.
    referral |= {"referee_email": referee.email_identity, "referee_address": address}
    commission = None
    if code.program == "affiliate":
        rate = await _commission_rate(unit, code)
        commission = domain.commission(data.total, rate)
        referral |= {"commission_rate": str(rate), "commission": str(commission)}
        referral = _with_clawbacks(referral, await unit.find_one(REFUNDS, {"_id": data.order_id}))
    unit.replace(REFERRALS, referral)
    unit.replace(CODES, code_doc | {"conversions": code.conversions + 1})
    converted = ReferralConverted(
        referral_id=referral["referral_id"],
        code=code.code,
        referrer_customer_id=_payee(code),
        referee_customer_id=customer["_id"],
        order_id=data.order_id,
        order_total=data.total,
        currency=data.currency,
        converted_at=data.placed_at,
        program=code.program,
        commission=commission,
    )
    unit.publish(converted, subject=customer["_id"], cause=event)
    unit.on_commit(CONVERSIONS.labels(program=code.program).inc)
    log.info("referral_converted", referral_id=referral["referral_id"], order_id=data.order_id, program=code.program)
    return {"order_id": data.order_id, "placed_at": order.placed_at, "referral_id": referral["referral_id"]}


def _payee(code: Code) -> str:
    """Who a conversion rewards: the referring customer, or the affiliate (by id) for an affiliate code."""
    payee = code.referrer_customer_id if code.program == "customer" else code.affiliate_id
    assert payee is not None  # every code is issued to one or the other
    return payee


async def _contest_if_ordered_before(unit: ReferralsUnit, customer: dict[str, Any], order: PlacedOrder) -> None:
    """An order placed before the one the customer converted on shows they were not a new customer."""
    converted = placed_order(customer["referral"])
    if converted is not None and domain.contested_as_returning(converted, order):
        await contest_referral(unit, converted.order_id, RETURNING_CUSTOMER, evidence=order.order_id)


async def _contest_own_referrals(
    unit: ReferralsUnit, customer: dict[str, Any], order: PlacedOrder, new_emails: list[str], new_addresses: list[str]
) -> None:
    """A referrer seen under a new e-mail or address contests their conversions whose referee ordered under it."""
    referrer = Party(customer["_id"], frozenset(customer["emails"]), frozenset(customer["addresses"]))
    suspects = await unit.find(
        REFERRALS,
        {
            "referrer_customer_id": customer["_id"],
            "outcome": CONVERTED,
            "contested": None,
            "$or": [{"referee_email": {"$in": new_emails}}, {"referee_address": {"$in": new_addresses}}],
        },
        projection={"_id": 1, "referee_email": 1, "referee_address": 1},
    )
    for suspect in suspects:
        if domain.contested_as_own(referrer, suspect.get("referee_email"), suspect.get("referee_address")):
            await contest_referral(unit, suspect["_id"], OWN_ORDER, evidence=order.order_id)


async def contest_referral(unit: ReferralsUnit, order_id: str, reason: str, *, evidence: str) -> None:
    """Flag a conversion a later fact disproves; an affiliate earns nothing on it. It is never converted again."""
    found = await unit.find_one(REFERRALS, {"_id": order_id})
    if found is None or found["outcome"] != CONVERTED or found["contested"] is not None:
        return
    referral = found | {"contested": {"reason": reason, "order_id": evidence, "at": now()}}
    if referral["program"] == "affiliate":
        referral = _with_clawbacks(referral, await unit.find_one(REFUNDS, {"_id": order_id}))
    unit.replace(REFERRALS, referral)
    unit.on_commit(CONTESTED.labels(reason=reason).inc)
    log.warning("referral_contested", referral_id=referral["referral_id"], reason=reason, evidence=evidence)


async def _customer_unless_erased(unit: ReferralsUnit, customer_id: str) -> dict[str, Any] | None:
    """The customer's record (a fresh one if unknown), or None for an erased customer."""
    found = await unit.find_one(CUSTOMERS, {"_id": customer_id})
    if found is not None:
        return dict(found)
    return None if await is_erased(unit, customer_id) else new_customer(customer_id)


async def _referrer(unit: ReferralsUnit, code: Code | None) -> Party | None:
    """Whom the code pays, with every identity they are known under (for the own-order check)."""
    if code is None:
        return None
    if code.program == "customer":
        return _party(code.referrer_customer_id, await unit.find_one(CUSTOMERS, {"_id": code.referrer_customer_id}))
    affiliate = await unit.find_one(AFFILIATES, {"_id": code.affiliate_id}) or {}
    customer_id = affiliate.get("customer_id")
    party = _party(customer_id, await unit.find_one(CUSTOMERS, {"_id": customer_id}) if customer_id else None)
    return replace(party, emails=party.emails | {affiliate["email_identity"]}) if affiliate else party


def _party(customer_id: str | None, customer: dict[str, Any] | None) -> Party:
    if customer is None:
        return Party(customer_id)
    return Party(customer_id, frozenset(customer["emails"]), frozenset(customer["addresses"]))


def _address_of(order: OrderPlaced) -> str | None:
    shipping = order.shipping_address
    if shipping is None:
        return None
    return address_identity(shipping.line1, shipping.postal_code, shipping.city, shipping.country, shipping.line2)


# --- affiliate commissions -----------------------------------------------------------------------


async def claw_back_commission(unit: ReferralsUnit, event: OrderRefundedEvent) -> None:
    """Remember the refund; an affiliate's commission on the order loses its share, now or when it converts."""
    data = event.data
    found = await unit.find_one(REFUNDS, {"_id": data.order_id})
    refunds: dict[str, Any] = dict(found) if found is not None else {"_id": data.order_id, "refunds": []}
    if any(refund["refund_id"] == data.refund_id for refund in refunds["refunds"]):
        return  # the same refund told again
    heard: dict[str, Any] = {
        "refund_id": data.refund_id,
        "amount": str(data.amount),
        "currency": data.currency,
        "refunded_at": as_stored(data.refunded_at),
    }
    refunds["refunds"] = [*refunds["refunds"], heard]
    unit.replace(REFUNDS, refunds)
    referral = await unit.find_one(REFERRALS, {"_id": data.order_id})
    if referral is None or referral["outcome"] != CONVERTED or referral["program"] != "affiliate":
        return
    if data.currency != referral["currency"]:  # cannot be set against the commission; the owner should look
        log.warning("refund_in_another_currency", order_id=data.order_id, refund_id=data.refund_id)
    settled = _with_clawbacks(referral, refunds)
    unit.replace(REFERRALS, settled)
    log.info("commission_clawed_back", referral_id=settled["referral_id"], clawed_back=settled["clawed_back"])


def _with_clawbacks(referral: dict[str, Any], refunds: dict[str, Any] | None) -> dict[str, Any]:
    """The conversion with its clawbacks worked out again from every refund known (so arrival order does not matter)."""
    commission = Decimal(referral["commission"])
    known = refunds_from(refunds, referral["currency"])
    taken = domain.clawbacks(
        commission, Decimal(referral["order_total"]), known, contested=referral["contested"] is not None
    )
    amounts = dict(taken.by_refund)
    return referral | {
        "clawbacks": [
            {
                "refund_id": refund.refund_id,
                "refunded": str(refund.amount),
                "refunded_at": refund.refunded_at,
                "clawback": str(amounts[refund.refund_id]),
            }
            for refund in sorted(known, key=lambda r: (r.refunded_at, r.refund_id))
        ],
        "contest_clawback": str(taken.contested),
        "clawed_back": str(taken.total),
        "commission_due": str(taken.net(commission)),
    }


async def _commission_rate(unit: ReferralsUnit, code: Code) -> Decimal:
    affiliate = await unit.find_one(AFFILIATES, {"_id": code.affiliate_id})
    if affiliate is None or affiliate.get("commission_rate") is None:
        return referrals_settings(unit.settings).default_commission_rate
    return Decimal(affiliate["commission_rate"])


async def enrol_affiliate(
    unit: ReferralsUnit,
    *,
    name: str,
    email: str,
    customer_id: str | None,
    commission_rate: Decimal | None,
    expires_at: datetime | None,
    max_conversions: int | None,
) -> dict[str, Any]:
    """A new affiliate with their own code; the commission rate defaults to DEFAULT_COMMISSION_RATE."""
    at = now()
    affiliate_id = f"aff_{uuid.uuid4().hex[:12]}"
    code = await fresh_code(unit)
    unit.replace(
        CODES, new_code_doc(code, at, affiliate_id=affiliate_id, expires_at=expires_at, max_conversions=max_conversions)
    )
    rate = commission_rate if commission_rate is not None else referrals_settings(unit.settings).default_commission_rate
    affiliate = {
        "_id": affiliate_id,
        "name": name,
        "email": email,
        "email_identity": email_identity(email),
        "customer_id": customer_id,
        "commission_rate": str(rate),
        "code": code,
        "created_at": at,
    }
    unit.replace(AFFILIATES, affiliate)
    log.info("affiliate_enrolled", affiliate_id=affiliate_id, code=code)
    return affiliate


# --- codes -------------------------------------------------------------------------------------------


async def issue_code(unit: ReferralsUnit, customer_id: str) -> tuple[str, bool]:
    """The customer's referral code, issued now if they have none; True when it is new."""
    customer = await _customer_unless_erased(unit, customer_id)
    if customer is None:
        raise CustomerWasErased(customer_id)
    if customer["code"] is not None:
        return customer["code"], False
    code = await _new_referrer_code(unit, customer_id)
    unit.replace(CUSTOMERS, customer | {"code": code})
    return code, True


async def _new_referrer_code(unit: ReferralsUnit, customer_id: str) -> str:
    code = await fresh_code(unit)
    unit.replace(CODES, new_code_doc(code, now(), referrer_customer_id=customer_id))
    log.info("code_issued", customer_id=customer_id, code=code)
    return code


async def set_code_limits(unit: ReferralsUnit, code: str, limits: dict[str, Any]) -> dict[str, Any] | None:
    """Change a code's expiry and/or cap (None lifts one); None when there is no such code."""
    found = await unit.find_one(CODES, {"_id": code})
    if found is None:
        return None
    changed = found | {key: limits[key] for key in ("expires_at", "max_conversions") if key in limits}
    unit.replace(CODES, changed)
    log.info("code_limits_set", code=code, **{k: str(v) for k, v in limits.items()})
    return changed


# --- the happy moment ---------------------------------------------------------------------------------


async def invite_promoter(unit: ReferralsUnit, event: FeedbackReceivedEvent) -> None:
    """A promoter gets a code if they have none, and an invitation to refer friends unless asked recently."""
    data = event.data
    if not domain.is_promoter(data.nps):
        return
    customer = await _customer_unless_erased(unit, data.customer_id)
    if customer is None:
        return
    if customer["code"] is None:
        customer["code"] = await _new_referrer_code(unit, data.customer_id)
    # The happy moment is when the feedback was given, so a late, older feedback invites no one.
    at = as_stored(data.received_at)
    every = timedelta(days=referrals_settings(unit.settings).invite_every_days)
    if domain.may_invite(customer["last_invited_at"], at, every):
        customer["last_invited_at"] = at
        invitation = {"_id": data.feedback_id, "customer_id": data.customer_id, "code": customer["code"], "at": at}
        unit.replace(INVITATIONS, invitation)
        invited = ReferralInvited(customer_id=data.customer_id, code=customer["code"], feedback_id=data.feedback_id)
        unit.publish(invited, subject=data.customer_id, cause=event)
        unit.on_commit(INVITED.inc)
        log.info("promoter_invited", customer_id=data.customer_id, feedback_id=data.feedback_id)
    else:
        log.info("promoter_invited_recently", customer_id=data.customer_id, feedback_id=data.feedback_id)
    unit.replace(CUSTOMERS, customer)


# --- erasure ------------------------------------------------------------------------------------------


async def erase_customer(unit: ReferralsUnit, event: CustomerErasedEvent) -> None:
    """Forget who the customer is; their referrals and invitations still count, under an anonymous alias.

    Their code converts no more (it names someone who is gone), and a late event
    about them is not used.
    """
    customer_id = event.data.customer_id
    alias = erased_alias(customer_id)
    at = as_stored(event.data.requested_at)
    mark_erased(unit, customer_id, at)
    customer = await unit.find_one(CUSTOMERS, {"_id": customer_id})
    if customer is not None:  # keep what the program's counts need, not who they are
        unit.write(CUSTOMERS, DeleteOne({"_id": customer_id}))
        unit.replace(CUSTOMERS, customer | {"_id": alias, "emails": [], "addresses": []})
    unit.write(
        CODES,
        UpdateMany({"referrer_customer_id": customer_id}, {"$set": {"referrer_customer_id": alias, "revoked_at": at}}),
    )
    unit.write(
        REFERRALS,
        UpdateMany(
            {"referee_customer_id": customer_id},
            {"$set": {"referee_customer_id": alias, "referee_email": None, "referee_address": None}},
        ),
        UpdateMany({"referrer_customer_id": customer_id}, {"$set": {"referrer_customer_id": alias}}),
    )
    unit.write(INVITATIONS, UpdateMany({"customer_id": customer_id}, {"$set": {"customer_id": alias}}))
    unit.write(AFFILIATES, UpdateMany({"customer_id": customer_id}, {"$set": {"customer_id": None}}))
    forget_sent_events(unit, customer_id, "referrer_customer_id")
    log.info("customer_erased", alias=alias)
