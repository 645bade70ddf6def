"""Referral use cases: record orders, convert or refuse their codes, claw back commissions, invite promoters, erase.

Each use case loads what it needs from the store, asks domain.py for the
decision, saves what was decided and publishes the events the decision carries.

Attribution is order-tolerant (docs/referrals.md): every order tells its
customer's first order (the earliest placed, not the first to arrive) and the
identities they order under; an order that carries a code is decided once, keyed
by its order id, against the first order known then. A fact heard of later that
would have refused a conversion contests it instead of converting anyone twice.
"""

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

from services.referrals import domain, store
from services.referrals.domain import (
    Cancellation,
    Code,
    CodeLimits,
    ContestReason,
    Conversion,
    Customer,
    CustomerWasErased,
    Enrolled,
    NoSuchCode,
    Party,
    PlacedOrder,
    Refund,
    Refusal,
)
from services.referrals.settings import ReferralsUnit
from shared.erasure import erased_alias, forget_sent_events, mark_erased
from shared.events import (
    CustomerErasedEvent,
    Envelope,
    FeedbackReceivedEvent,
    OrderCancelledEvent,
    OrderPlacedEvent,
    OrderRefundedEvent,
)
from shared.mongo import as_stored

log = structlog.get_logger("rapport.referrals")

METRICS = CollectorRegistry()
CONVERSIONS = Counter("referrals_conversions", "Referrals converted, by program.", ["program"], registry=METRICS)
REFUSALS = Counter(
    "referrals_refusals", "Orders whose referral code was refused, by reason.", ["reason"], registry=METRICS
)
CONTESTED = Counter(
    "referrals_contested",
    "Conversions contested by a fact that disproves them (heard of later, or the order cancelled), by reason.",
    ["reason"],
    registry=METRICS,
)
INVITED = Counter("referrals_invitations", "Happy customers invited to refer friends.", registry=METRICS)


# --- reading a batch at once -----------------------------------------------------------------


async def prefetch_referrals(unit: ReferralsUnit, events: list[Envelope[Any]]) -> None:
    """Read what a batch touches in a few queries: the customers, codes and orders its events name."""
    customers: set[str] = set()
    codes: set[str] = set()
    orders: set[str] = set()
    for event in events:
        if isinstance(event, OrderPlacedEvent):
            customers.add(event.data.customer.customer_id)
            typed = domain.typed_code(event.data)
            if typed:
                codes.add(typed)
                orders.add(event.data.order_id)
        elif isinstance(event, OrderRefundedEvent | OrderCancelledEvent):
            orders.add(event.data.order_id)
        elif isinstance(event, FeedbackReceivedEvent | CustomerErasedEvent):
            customers.add(event.data.customer_id)
    await store.preload(unit, customers=customers, codes=codes, orders=orders)


# --- orders: first orders, attribution, contests ----------------------------------------------------


async def record_order(unit: ReferralsUnit, event: OrderPlacedEvent) -> None:
    """Remember the customer's first order and identities, decide the order's code, contest what the order disproves."""
    order = event.data
    customer = await _customer_unless_erased(unit, order.customer.customer_id)
    if customer is None:
        return  # erased: their orders are not used any more
    placed = PlacedOrder(as_stored(order.placed_at), order.order_id)
    remembered = domain.remember_order(customer, placed, order)
    updated = remembered.customer
    if domain.typed_code(order):
        conversion = await convert_referral(unit, event, placed, customer)
        if conversion is not None:
            updated = domain.referred_by(updated, conversion)
    await _contest_if_ordered_before(unit, updated, placed)
    if updated != customer:  # a regular customer's usual order changes nothing here
        store.save_customer(unit, updated)
    if updated.code is not None and (remembered.new_emails or remembered.new_addresses):
        await _contest_own_referrals(unit, updated, placed, remembered.new_emails, remembered.new_addresses)


async def convert_referral(
    unit: ReferralsUnit, event: OrderPlacedEvent, placed: PlacedOrder, referee: Customer
) -> Conversion | None:
    """Decide, once per order, whether it converts its code; publish ReferralConverted when it does.

    `referee` is the customer's record before this order. Returns the conversion, or None.
    """
    order = event.data
    if await store.is_decided(unit, order.order_id):
        return None  # decided when the order was first heard of (a duplicate, or the same order told again)
    code = await store.find_code(unit, domain.typed_code(order))
    affiliate = await store.find_affiliate(unit, code.affiliate_id) if code and code.affiliate_id else None
    referrer = await _referrer(unit, code, affiliate)
    refunds = await store.find_refunds(unit, order.order_id) if code and code.program == "affiliate" else ()
    rate = domain.commission_rate(affiliate, unit.settings.default_commission_rate)
    cancellation = await store.find_cancellation(unit, order.order_id)
    decision = domain.attribute(
        order, placed, referee, code, referrer, rate, refunds, unit.now(), cancellation=cancellation
    )
    if isinstance(decision, Refusal):
        store.save_referral(unit, decision)
        unit.on_commit(REFUSALS.labels(reason=decision.reason.value).inc)
        log.info("referral_refused", order_id=order.order_id, code=decision.code, reason=decision.reason.value)
        return None
    conversion = decision.conversion
    store.save_referral(unit, conversion)
    store.save_code(unit, decision.code)
    unit.publish(decision.event, subject=referee.customer_id, cause=event)
    unit.on_commit(CONVERSIONS.labels(program=decision.code.program).inc)
    log.info(
        "referral_converted", referral_id=conversion.referral_id, order_id=order.order_id, program=conversion.program
    )
    if conversion.contest is not None:  # the shop cancelled the order before we heard of it
        _note_contest(unit, conversion)
    return conversion


async def _referrer(unit: ReferralsUnit, code: Code | None, affiliate: domain.Affiliate | None) -> Party | None:
    """Whom the code pays, with every identity they are known under (for the own-order check)."""
    if code is None:
        return None
    customer_id = domain.referring_customer(code, affiliate)
    customer = await store.find_customer(unit, customer_id) if customer_id else None
    return domain.referrer_of(code, customer, affiliate)


async def _contest_if_ordered_before(unit: ReferralsUnit, customer: Customer, placed: PlacedOrder) -> None:
    """An order placed before the one the customer converted on shows they were not a new customer."""
    referred = customer.referred
    if referred is not None and domain.contested_as_returning(referred.order, placed):
        await contest_referral(unit, referred.order_id, ContestReason.RETURNING_CUSTOMER, evidence=placed.order_id)


async def _contest_own_referrals(
    unit: ReferralsUnit,
    customer: Customer,
    placed: PlacedOrder,
    new_emails: tuple[str, ...],
    new_addresses: tuple[str, ...],
) -> None:
    """A referrer seen under a new e-mail or address contests their conversions whose referee ordered under it."""
    referrer = customer.as_referrer()
    suspects = await store.open_conversions_referred_under(unit, customer.customer_id, new_emails, new_addresses)
    for suspect in suspects:
        if domain.contested_as_own(referrer, suspect.referee_email, suspect.referee_address):
            await contest_referral(unit, suspect.order_id, ContestReason.OWN_ORDER, evidence=placed.order_id)


async def contest_referral(unit: ReferralsUnit, order_id: str, reason: ContestReason, *, evidence: str) -> None:
    """Flag a conversion a later fact disproves; an affiliate earns nothing on it. It is never converted again."""
    referral = await store.find_referral(unit, order_id)
    earns = isinstance(referral, Conversion) and referral.commission is not None
    refunds = await store.find_refunds(unit, order_id) if earns else ()
    contested = domain.contest(referral, reason, evidence, unit.now(), refunds)
    if contested is not None:
        store.save_referral(unit, contested)
        _note_contest(unit, contested)


def _note_contest(unit: ReferralsUnit, conversion: Conversion) -> None:
    """Count and log a conversion just contested, once its transaction commits."""
    contest = conversion.contest
    assert contest is not None
    unit.on_commit(CONTESTED.labels(reason=contest.reason.value).inc)
    log.warning(
        "referral_contested", referral_id=conversion.referral_id, reason=contest.reason.value, evidence=contest.order_id
    )


async def contest_cancelled_order(unit: ReferralsUnit, event: OrderCancelledEvent) -> None:
    """Remember the cancellation; a conversion on the order is contested, now or when it converts, and an
    affiliate's commission on it goes back whole. The same cancellation told again changes nothing."""
    data = event.data
    if await store.find_cancellation(unit, data.order_id) is not None:
        return
    cancellation = Cancellation(data.order_id, as_stored(data.cancelled_at))
    store.save_cancellation(unit, cancellation)
    referral = await store.find_referral(unit, data.order_id)
    refunds = await store.find_refunds(unit, data.order_id) if isinstance(referral, Conversion) else ()
    contested = domain.contested_as_cancelled(referral, cancellation, refunds)
    if contested is not None:
        store.save_referral(unit, contested)
        _note_contest(unit, contested)


async def _customer_unless_erased(unit: ReferralsUnit, customer_id: str) -> Customer | None:
    """The customer's record (a fresh one if unknown), or None for an erased customer."""
    found = await store.find_customer(unit, customer_id)
    if found is not None:
        return found
    return None if await store.customer_was_erased(unit, customer_id) else Customer(customer_id)


# --- affiliate commissions -----------------------------------------------------------------------


async def claw_back_commission(unit: ReferralsUnit, event: OrderRefundedEvent) -> None:
    """Remember the refund; an affiliate's commission on the order loses its share, now or when it converts."""
    data = event.data
    refund = Refund(data.refund_id, data.amount, as_stored(data.refunded_at), data.currency)
    refunds = domain.with_refund(await store.find_refunds(unit, data.order_id), refund)
    if refunds is None:
        return  # the same refund told again
    store.save_refunds(unit, data.order_id, refunds)
    clawed = domain.claw_back(await store.find_referral(unit, data.order_id), refunds, refund)
    if clawed is None:
        return
    if clawed.in_another_currency:
        log.warning("refund_in_another_currency", order_id=data.order_id, refund_id=data.refund_id)
    store.save_referral(unit, clawed.conversion)
    log.info("commission_clawed_back", referral_id=clawed.conversion.referral_id, clawed_back=str(clawed.clawed_back))


async def enrol_affiliate(
    unit: ReferralsUnit,
    *,
    name: str,
    email: str,
    customer_id: str | None,
    commission_rate: Decimal | None,
    expires_at: datetime | None,
    max_conversions: int | None,
) -> Enrolled:
    """A new affiliate with their own code; the commission rate defaults to DEFAULT_COMMISSION_RATE."""
    at = as_stored(unit.now())  # as it is kept, so the answer shows what later reads show
    enrolled = domain.enrol(
        domain.new_affiliate_id(),
        await store.fresh_code(unit),
        name=name,
        email=email,
        customer_id=customer_id,
        commission_rate=commission_rate,
        default_rate=unit.settings.default_commission_rate,
        expires_at=as_stored(expires_at) if expires_at is not None else None,
        max_conversions=max_conversions,
        at=at,
    )
    store.save_code(unit, enrolled.code)
    store.save_affiliate(unit, enrolled.affiliate)
    log.info("affiliate_enrolled", affiliate_id=enrolled.affiliate.affiliate_id, code=enrolled.code.code)
    return enrolled


# --- codes -------------------------------------------------------------------------------------------


async def issue_code(unit: ReferralsUnit, customer_id: str) -> tuple[str, bool]:
    """The customer's referral code, issued now if they have none; True when it is new."""
    customer = await _customer_unless_erased(unit, customer_id)
    if customer is None:
        raise CustomerWasErased(customer_id)
    if customer.code is not None:
        return customer.code, False
    code = await _new_referrer_code(unit, customer_id)
    store.save_customer(unit, domain.with_own_code(customer, code))
    return code, True


async def _new_referrer_code(unit: ReferralsUnit, customer_id: str) -> str:
    code = domain.customer_code(await store.fresh_code(unit), customer_id, unit.now())
    store.save_code(unit, code)
    log.info("code_issued", customer_id=customer_id, code=code.code)
    return code.code


async def set_code_limits(unit: ReferralsUnit, code: str, limits: CodeLimits) -> Code:
    """Change a code's expiry and/or cap (None lifts one); NoSuchCode when there is no such code."""
    found = await store.find_code(unit, code)
    if found is None:
        raise NoSuchCode(code)
    expires_at = limits.get("expires_at")
    if expires_at is not None:
        limits = limits | {"expires_at": as_stored(expires_at)}
    changed = domain.with_limits(found, limits)
    store.save_code(unit, changed)
    log.info("code_limits_set", code=code, **{key: str(value) for key, value in limits.items()})
    return changed


# --- the happy moment ---------------------------------------------------------------------------------


async def invite_promoter(unit: ReferralsUnit, event: FeedbackReceivedEvent) -> None:
    """A promoter gets a code if they have none, and an invitation to refer friends unless asked recently."""
    data = event.data
    if event.imported or not domain.is_promoter(data.nps):
        return  # history (DESIGN.md §7) is no happy moment now: no code, no invitation
    customer = await _customer_unless_erased(unit, data.customer_id)
    if customer is None:
        return
    code = customer.code
    if code is None:
        code = await _new_referrer_code(unit, data.customer_id)
        customer = domain.with_own_code(customer, code)
    every = timedelta(days=unit.settings.invite_every_days)
    # The happy moment is when the feedback was given, so a late, older feedback invites no one.
    invited = domain.invite(customer, code, data.feedback_id, as_stored(data.received_at), every)
    if invited is not None:
        customer = invited.customer
        store.save_invitation(unit, invited.invitation)
        unit.publish(invited.event, subject=data.customer_id, cause=event)
        unit.on_commit(INVITED.inc)
        log.info("promoter_invited", customer_id=data.customer_id, feedback_id=data.feedback_id)
    else:
        log.info("promoter_invited_recently", customer_id=data.customer_id, feedback_id=data.feedback_id)
    store.save_customer(unit, customer)


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
    customer = await store.find_customer(unit, customer_id)
    if customer is not None:  # keep what the program's counts need, not who they are
        store.forget_customer(unit, customer_id)
        store.save_customer(unit, domain.anonymised(customer, alias))
    store.move_to_alias(unit, customer_id, alias, at)
    forget_sent_events(unit, customer_id, "referrer_customer_id")
    log.info("customer_erased", alias=alias)
