"""Follow-up rules as plain values and functions, no I/O (DESIGN.md §7 "Follow-ups").

What an order's milestones call for (and under which id, so planning twice
plans once), who is unhappy enough to need a person, who is happy enough to be
asked for a referral, when each follow-up falls due, what a failed send does
next, and how loyal customers say they are (NPS and CSAT).
"""

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from shared.events import FeedbackReceived, is_no_email

Kind = Literal["thank_you", "call", "feedback_request", "referral_invite", "task", "review", "win_back"]
Channel = Literal["email", "person"]  # an e-mail the scheduler sends, or a task for a person
Status = Literal["pending", "sent", "failed", "cancelled", "done"]

# The customer's contact details from their latest order (e-mail, name, locale, town, region, phone).
Contact = Mapping[str, Any]

# --- who needs what --------------------------------------------------------------

DETRACTOR_MAX_OVERALL = 2  # an overall rating of 1 or 2 out of 5
DETRACTOR_MAX_NPS = 6  # NPS answers 0–6 are detractors
PROMOTER_MIN_NPS = 9  # NPS answers 9–10 are promoters
SATISFIED_MIN_OVERALL = 4  # CSAT counts 4 and 5 out of 5 as satisfied


def is_detractor_feedback(overall: int, nps: int | None) -> bool:
    """Feedback unhappy enough to open an escalation."""
    return overall <= DETRACTOR_MAX_OVERALL or (nps is not None and nps <= DETRACTOR_MAX_NPS)


def is_promoter(nps: int | None) -> bool:
    """A customer who would recommend the shop (NPS 9–10): happy enough to be invited to refer friends."""
    return nps is not None and nps >= PROMOTER_MIN_NPS


# --- when things fall due --------------------------------------------------------

THANK_YOU_DELAY = timedelta(0)
CALL_DELAY = timedelta(days=14)
FEEDBACK_REQUEST_DELAY = timedelta(days=14)
ESCALATION_SLA = timedelta(minutes=60)


def thank_you_due(placed_at: datetime, delay: timedelta = THANK_YOU_DELAY) -> datetime:
    return placed_at + delay


def call_due(fulfilled_at: datetime, delay: timedelta = CALL_DELAY) -> datetime:
    return fulfilled_at + delay


def feedback_request_due(fulfilled_at: datetime, delay: timedelta = FEEDBACK_REQUEST_DELAY) -> datetime:
    return fulfilled_at + delay


def escalation_due(received_at: datetime, sla: timedelta = ESCALATION_SLA) -> datetime:
    return received_at + sla


def sla_time_left(due_by: datetime, now: datetime) -> timedelta:
    """Time left to answer an escalation; negative once the SLA is breached."""
    return due_by - now


def is_breached(due_by: datetime, *, resolved_at: datetime | None, flagged: bool, now: datetime) -> bool:
    """Whether an escalation missed its deadline: flagged so, still open past it, or resolved after it."""
    return flagged or due_by < (resolved_at or now)


# --- what the shop knows of customers and orders ------------------------------------------


@dataclass(frozen=True)
class Customer:
    customer_id: str  # or the anonymous alias of an erased customer
    contact: Contact | None = None
    contact_at: datetime | None = None  # when the order the contact came from was placed
    first_order_at: datetime | None = None  # who counts as one of the shop's first customers


@dataclass(frozen=True)
class Order:
    """An order's milestones, as far as heard: what the follow-ups hang on."""

    order_id: str
    customer_id: str
    placed_at: datetime | None = None
    fulfilled_at: datetime | None = None
    total: Decimal | None = None  # what the customer paid, once the order is heard of
    currency: str | None = None
    refunds: tuple[tuple[str, Decimal, str], ...] = ()  # (refund id, amount, currency), each refund once
    # Recorded before partial refunds were told apart: that version kept only "refunded" (it cancelled on any).
    refunded_in_full: bool = False
    cancelled_at: datetime | None = None  # OrderCancelled: what it counted for is taken back, as by a full refund
    order_number: str | None = None  # the number the customer knows it by (#1001)
    # Heard of only from the shop's history (`imported: true`): it builds state, plans no message or call.
    placed_imported: bool = False
    fulfilled_imported: bool = False


def with_refund(order: Order, refund_id: str, amount: Decimal, currency: str) -> Order:
    """The order once this refund is known (a refund told twice counts once)."""
    if any(known == refund_id for known, _, _ in order.refunds):
        return order
    return replace(order, refunds=(*order.refunds, (refund_id, amount, currency)))


def is_fully_refunded(order: Order) -> bool:
    """Whether the refunds give back all the order took: only then is what is pending for it cancelled.

    A partial refund cancels nothing (DESIGN.md §7); neither does a refund before its order is known,
    until the order says how much it was. Refunds in another currency than the order's are not comparable.
    """
    if order.refunded_in_full:
        return True
    if order.total is None:
        return False
    refunded = sum((amount for _, amount, currency in order.refunds if currency == order.currency), Decimal(0))
    return refunded >= order.total


def with_cancellation(order: Order, cancelled_at: datetime) -> Order:
    """The order once cancelled: the earliest cancellation counts (told twice, it is one)."""
    if order.cancelled_at is None or cancelled_at < order.cancelled_at:
        return replace(order, cancelled_at=cancelled_at)
    return order


def is_taken_back(order: Order) -> bool:
    """Whether nothing more may be planned for the order: cancelled, or refunded in full (DESIGN.md §7)."""
    return order.cancelled_at is not None or is_fully_refunded(order)


def with_order_placed(customer: Customer, contact: Contact, placed_at: datetime) -> Customer:
    """The customer once an order placed at `placed_at` is known: the latest order gives the contact."""
    if customer.contact_at is None or placed_at >= customer.contact_at:
        customer = replace(customer, contact=contact, contact_at=placed_at)
    if customer.first_order_at is None or placed_at < customer.first_order_at:
        customer = replace(customer, first_order_at=placed_at)
    return customer


def with_fulfilment(order: Order, fulfilled_at: datetime, *, imported: bool = False) -> Order:
    """The order once fulfilled at `fulfilled_at`: the earliest fulfilment counts; it is history (imported) only
    while every telling of it was."""
    history = imported if order.fulfilled_at is None else order.fulfilled_imported and imported
    if order.fulfilled_at is None or fulfilled_at < order.fulfilled_at:
        return replace(order, fulfilled_at=fulfilled_at, fulfilled_imported=history)
    return replace(order, fulfilled_imported=history)


def with_placement(
    order: Order, placed_at: datetime, total: Decimal, currency: str, order_number: str | None, *, imported: bool
) -> Order:
    """The order once its OrderPlaced is heard of; it is history (imported) only while every telling of it was."""
    history = imported if order.placed_at is None else order.placed_imported and imported
    return replace(
        order,
        placed_at=placed_at,
        total=total,
        currency=currency,
        order_number=order_number,
        placed_imported=history,
    )


def erased(customer: Customer, alias: str) -> Customer:
    """What is kept of an erased customer: when they first ordered (who counts as early), not who they are."""
    return Customer(alias, first_order_at=customer.first_order_at)


def is_early_customer(customers_before: int, first: int) -> bool:
    """One of the shop's first `first` customers: fewer than that ordered for the first time before them."""
    return customers_before < first


# --- what gets planned --------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """How long after each milestone a follow-up falls due (the shop's settings)."""

    thank_you_delay: timedelta = THANK_YOU_DELAY
    feedback_request_delay: timedelta = FEEDBACK_REQUEST_DELAY
    call_delay: timedelta = CALL_DELAY


@dataclass(frozen=True)
class Plan:
    """A follow-up to plan, unless one under its id was planned before."""

    followup_id: str
    kind: Kind
    channel: Channel
    customer_id: str
    order_id: str | None
    due_at: datetime
    status: Literal["pending", "cancelled"]
    code: str | None = None  # the referral code an invitation carries
    title: str | None = None  # what a person's task says to do
    cancelled_because: str | None = None  # planned for an order already cancelled or refunded in full


def thank_you_id(order_id: str) -> str:
    return f"thank_you:{order_id}"


def feedback_request_id(order_id: str) -> str:
    return f"feedback_request:{order_id}"


def call_id(customer_id: str) -> str:
    return f"call:{customer_id}"  # one call per customer, whichever order brought it


def referral_invite_id(event_id: str) -> str:
    return f"referral_invite:{event_id}"


def planned_for(order_id: str, customer_id: str) -> tuple[str, ...]:
    """The ids of every follow-up that can be planned for an order (the call is the customer's, tied to an order)."""
    return (thank_you_id(order_id), feedback_request_id(order_id), call_id(customer_id))


def may_call_for(order: Order) -> bool:
    """Whether the order can bring a call: once fulfilled (then only for one of the shop's first customers)."""
    return order.fulfilled_at is not None


def plans_for_order(order: Order, schedule: Schedule, *, early_customer: bool) -> list[Plan]:
    """What the order's known milestones call for; what is planned for a cancelled or fully refunded order starts
    cancelled. A milestone heard of only from the shop's history (imported) plans nothing: no note for an order of
    last year, no request, no call."""
    status: Literal["pending", "cancelled"] = "cancelled" if is_taken_back(order) else "pending"
    because = None if status == "pending" else "cancelled" if order.cancelled_at is not None else "refunded"
    plans: list[Plan] = []
    if order.placed_at is not None and not order.placed_imported:
        due = thank_you_due(order.placed_at, schedule.thank_you_delay)
        plans.append(
            Plan(
                thank_you_id(order.order_id),
                "thank_you",
                "email",
                order.customer_id,
                order.order_id,
                due,
                status,
                cancelled_because=because,
            )
        )
    if order.fulfilled_at is not None and not order.fulfilled_imported:
        due = feedback_request_due(order.fulfilled_at, schedule.feedback_request_delay)
        plans.append(
            Plan(
                feedback_request_id(order.order_id),
                "feedback_request",
                "email",
                order.customer_id,
                order.order_id,
                due,
                status,
                cancelled_because=because,
            )
        )
        if early_customer:
            due = call_due(order.fulfilled_at, schedule.call_delay)
            plans.append(
                Plan(
                    call_id(order.customer_id),
                    "call",
                    "person",
                    order.customer_id,
                    order.order_id,
                    due,
                    status,
                    cancelled_because=because,
                )
            )
    return plans


def referral_invitation(event_id: str, customer_id: str, code: str, now: datetime) -> Plan:
    """An invitation to refer friends, sent at once."""
    return Plan(referral_invite_id(event_id), "referral_invite", "email", customer_id, None, now, "pending", code=code)


def refund_cancels(order_id: str, planned_order_id: str | None, status: Status) -> bool:
    """Whether a full refund or a cancellation of the order cancels this follow-up: one still pending for it."""
    return planned_order_id == order_id and status == "pending"


# --- feedback and escalations ---------------------------------------------------------------


class FeedbackLinkUsed(Exception):
    """The feedback link was used before: each link takes one answer."""


class FeedbackLinkUnknown(Exception):
    """The link names no feedback request this shop planned for that customer (or one erased since)."""


class CustomerWasErased(Exception):
    """The customer was erased: nothing new is kept about them."""


def link_fits(
    followup_customer_id: str | None,
    followup_order_id: str | None,
    claims_customer_id: str,
    claims_order_id: str | None,
) -> bool:
    """Whether a signed link's follow-up is the one it claims: planned, for that customer and that order."""
    return followup_customer_id == claims_customer_id and followup_order_id == claims_order_id


@dataclass(frozen=True)
class Escalation:
    """Unhappy feedback a person must answer by `due_by`."""

    escalation_id: str
    feedback_id: str
    customer_id: str
    order_id: str | None
    due_by: datetime
    opened_at: datetime


def escalation_for(feedback: FeedbackReceived, escalation_id: str, sla: timedelta) -> Escalation | None:
    """The escalation unhappy feedback opens as it arrives, due within the SLA; None for feedback that is not."""
    if not is_detractor_feedback(feedback.ratings.overall, feedback.nps):
        return None
    return Escalation(
        escalation_id=escalation_id,
        feedback_id=feedback.feedback_id,
        customer_id=feedback.customer_id,
        order_id=feedback.order_id,
        due_by=escalation_due(feedback.received_at, sla),
        opened_at=feedback.received_at,
    )


# --- what mail a customer agreed to (DESIGN.md §7 "Mail kinds") ---------------------------

# The thank-you note is about the order (transactional); feedback requests and referral invitations are
# relationship mail: they carry a one-click unsubscribe and are not sent to a customer who unsubscribed.
RELATIONSHIP_MAIL: frozenset[str] = frozenset({"feedback_request", "referral_invite"})
# Referral invitations are marketing: they also need the customer's consent.
MARKETING_MAIL: frozenset[str] = frozenset({"referral_invite"})

NotSentBecause = Literal["unsubscribed", "no marketing consent", "no e-mail address"]


@dataclass(frozen=True)
class Consent:
    """What a customer said about mail: their latest order's marketing answer, and whether they unsubscribed."""

    customer_id: str
    accepts_marketing: bool | None = None  # from the latest order that said (None: no order said)
    said_at: datetime | None = None  # when that order was placed
    unsubscribed_at: datetime | None = None  # one-click or the page; it stands whatever orders say later


def carries_unsubscribe(kind: str) -> bool:
    """Whether mail of this kind carries a one-click unsubscribe (RFC 8058) and a visible link to it."""
    return kind in RELATIONSHIP_MAIL


def with_marketing_answer(consent: Consent, accepts: bool | None, said_at: datetime) -> Consent:
    """The consent once an order placed at `said_at` is known: the latest order that says anything counts.

    An order that says nothing (a platform without the field, say) leaves the last answer standing, so a
    customer who said no is not asked again because a later order was silent.
    """
    if accepts is None or (consent.said_at is not None and said_at < consent.said_at):
        return consent
    return replace(consent, accepts_marketing=accepts, said_at=said_at)


def unsubscribed(consent: Consent, at: datetime) -> Consent:
    """The consent once the customer unsubscribed at `at`; unsubscribing twice keeps the first time."""
    return consent if consent.unsubscribed_at is not None else replace(consent, unsubscribed_at=at)


def may_market_to(consent: Consent, consent_default: bool) -> bool:
    """Whether the customer agreed to marketing: their answer, else the shop's `MARKETING_CONSENT_DEFAULT`."""
    return consent_default if consent.accepts_marketing is None else consent.accepts_marketing


def reachable_by_mail(email: str | None) -> bool:
    """Whether the shop has an address for the customer: an order taken without one (an admin order, a
    POS sale) carries the stand-in `shared.events.no_email_for`, and nothing is mailed there."""
    return email is not None and not is_no_email(email)


def why_not_sent(
    kind: str, consent: Consent, *, address_unsubscribed: bool, consent_default: bool
) -> NotSentBecause | None:
    """Why mail of `kind` must not go to this customer, or None when it may.

    Transactional mail always goes; relationship mail not after an unsubscribe (theirs, or one from their
    address kept after an erasure); marketing mail only with consent.
    """
    if kind not in RELATIONSHIP_MAIL:
        return None
    if consent.unsubscribed_at is not None or address_unsubscribed:
        return "unsubscribed"
    if kind in MARKETING_MAIL and not may_market_to(consent, consent_default):
        return "no marketing consent"
    return None


def normalised_address(email: str) -> str:
    """An e-mail address as the unsubscribe list compares it (case and surrounding spaces do not count)."""
    return email.strip().lower()


# --- sending ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailedSend:
    """What a failed send leads to: another attempt after a back-off, or giving up (marked failed)."""

    attempts: int
    gave_up: bool
    retry_at: datetime | None  # None once given up


@dataclass(frozen=True)
class MailDay:
    """One day's e-mail: how many went out, and how many were given up on after their last attempt."""

    day: date
    sent: int
    failed: int


def mail_by_day(counted: Mapping[tuple[date, Status], int], first: date, days: int) -> list[MailDay]:
    """Each of `days` days from `first` on, with its e-mails sent and failed (0 on a day with none)."""
    return [
        MailDay(day, counted.get((day, "sent"), 0), counted.get((day, "failed"), 0))
        for day in (first + timedelta(days=n) for n in range(days))
    ]


def after_failed_send(attempts_before: int, max_attempts: int, first_backoff: timedelta, now: datetime) -> FailedSend:
    """Retry with a back-off that doubles each time; after the last attempt, give up."""
    attempts = attempts_before + 1
    if attempts >= max_attempts:
        return FailedSend(attempts, gave_up=True, retry_at=None)
    return FailedSend(attempts, gave_up=False, retry_at=now + first_backoff * 2 ** (attempts - 1))


# --- NPS and CSAT ------------------------------------------------------------------


@dataclass(frozen=True)
class FeedbackPoint:
    """One piece of feedback, as much of it as the report needs."""

    received_at: datetime
    overall: int
    nps: int | None
    answered_request: bool  # given through a feedback request's link, so it counts towards the response rate


@dataclass(frozen=True)
class NpsFigures:
    responses: int
    nps_answers: int
    promoters: int
    passives: int
    detractors: int
    nps: float | None  # −100…100, None without NPS answers
    csat: float | None  # percent of responses rated 4 or 5 overall, None without responses


@dataclass(frozen=True)
class MonthlyNps(NpsFigures):
    month: str  # "YYYY-MM", UTC


@dataclass(frozen=True)
class NpsReport(NpsFigures):
    response_rate: float | None  # answered requests ÷ requests sent, None when none were sent
    # No response rate per month: a request sent in one month is often answered in the next.
    months: tuple[MonthlyNps, ...]


def nps_report(feedback: Sequence[FeedbackPoint], requests_sent: int, *, by_month: bool = True) -> NpsReport:
    """NPS, CSAT and response rate over `feedback`, and per calendar month (UTC), oldest first."""
    answered = sum(1 for point in feedback if point.answered_request)
    months: tuple[MonthlyNps, ...] = ()
    if by_month:
        grouped: defaultdict[str, list[FeedbackPoint]] = defaultdict(list)
        for point in feedback:
            grouped[_month(point.received_at)].append(point)
        months = tuple(MonthlyNps(month=month, **asdict(_figures(grouped[month]))) for month in sorted(grouped))
    return NpsReport(
        **asdict(_figures(feedback)),
        response_rate=_ratio(answered, requests_sent, places=4) if requests_sent else None,
        months=months,
    )


def _figures(feedback: Sequence[FeedbackPoint]) -> NpsFigures:
    answers = [point.nps for point in feedback if point.nps is not None]
    promoters = sum(1 for nps in answers if is_promoter(nps))
    detractors = sum(1 for nps in answers if nps <= DETRACTOR_MAX_NPS)
    satisfied = sum(1 for point in feedback if point.overall >= SATISFIED_MIN_OVERALL)
    return NpsFigures(
        responses=len(feedback),
        nps_answers=len(answers),
        promoters=promoters,
        passives=len(answers) - promoters - detractors,
        detractors=detractors,
        nps=_ratio(100 * (promoters - detractors), len(answers), places=1) if answers else None,
        csat=_ratio(100 * satisfied, len(feedback), places=1) if feedback else None,
    )


def _ratio(part: int, whole: int, *, places: int) -> float:
    # Exact and half up, as a person checking the report by hand would round (float round() gives 1.2 for 1.25).
    return float((Decimal(part) / Decimal(whole)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def _month(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"feedback time {moment.isoformat()} has no offset; its month would be a guess")
    return moment.astimezone(UTC).strftime("%Y-%m")


# --- the relationship log: what the owner learns of each customer ---------------------------------------------

FactKind = Literal["birthday", "family", "interest", "preference", "occasion", "other"]
CallOutcome = Literal["reached", "no_answer", "voicemail", "wrong_number"]
CALL_TASKS: tuple[Kind, ...] = ("call", "win_back")  # the tasks a call outcome completes or reschedules


class NoSuchTask(Exception):
    """No pending task of that kind for this customer under that id."""


class NoSuchEscalation(Exception):
    """No open escalation under that id."""


class NoSuchFact(Exception):
    """The customer has no personal fact under that id."""


class CustomerErased(Exception):
    """The customer was erased: nothing more is kept about them."""


@dataclass(frozen=True)
class CallPolicy:
    """How often an unanswered call is tried again (the shop's settings)."""

    retry_after: timedelta = timedelta(days=2)
    attempts: int = 3  # tries in all; after the last one the task is closed


@dataclass(frozen=True)
class AfterCall:
    """What a call outcome makes of its task: done, or pending again at `due_at`."""

    status: Literal["pending", "done"]
    attempts: int
    due_at: datetime | None  # when to try again; None once done
    gave_up: bool = False  # closed because the last try went unanswered


def after_call(outcome: CallOutcome, attempts_before: int, now: datetime, policy: CallPolicy) -> AfterCall:
    """Reached (or a wrong number: no point in trying again) completes the call; no answer or voicemail tries
    again `retry_after` later, until `attempts` tries were made."""
    attempts = attempts_before + 1
    if outcome in ("reached", "wrong_number"):
        return AfterCall("done", attempts, None)
    if attempts >= policy.attempts:
        return AfterCall("done", attempts, None, gave_up=True)
    return AfterCall("pending", attempts, now + policy.retry_after)


def hand_task(task_id: str, customer_id: str, title: str, due_at: datetime) -> Plan:
    """A task the owner adds by hand: for a person, due when they say."""
    return Plan(task_id, "task", "person", customer_id, None, due_at, "pending", title=title)


# --- what the other services published about the customer (for the brief) ----------------------------------


@dataclass(frozen=True)
class Award:
    """Points loyalty awarded that expire (PointsAwarded with `expires_at`)."""

    entry_id: str
    points: int
    expires_at: datetime


@dataclass(frozen=True)
class Standing:
    """A customer as the other services' events tell them, and where their reviews and win-back calls stand.

    Each part keeps the latest telling by its own clock (the event's time, the scoring time), so events arriving
    late or twice leave it as the latest one left it; counts are sets of ids, so a duplicate does not count twice.
    """

    customer_id: str
    tier: str | None = None
    tier_at: datetime | None = None
    balance: int | None = None
    balance_at: datetime | None = None
    awards: tuple[Award, ...] = ()  # only those that had not expired when last saved
    referral_code: str | None = None
    code_at: datetime | None = None
    referrals: tuple[str, ...] = ()  # ids of the conversions of friends they referred
    segment: str | None = None
    segment_at: datetime | None = None  # when the scoring that named it ran
    reviews_opened: int = 0
    review_due_at: datetime | None = None  # a key account's next review; None for any other customer
    win_backs_opened: int = 0
    slide_noted: bool = False  # a win-back call was opened for the slide they are in now
    last_imported_at: datetime | None = None  # when an event of the shop's history about them last arrived
    check_at: datetime | None = None  # when the review job should look at them next


def _later(known_at: datetime | None, told_at: datetime) -> bool:
    return known_at is None or told_at >= known_at


def with_tier(standing: Standing, tier: str, told_at: datetime) -> Standing:
    """The tier of the latest telling (TierChanged, or the tier a PointsAwarded reports)."""
    return replace(standing, tier=tier, tier_at=told_at) if _later(standing.tier_at, told_at) else standing


def with_balance(standing: Standing, balance: int, told_at: datetime) -> Standing:
    """The balance after the latest points event (awarded, reversed, redeemed, expired).

    Events of one change share its time; among them the one heard last stands.
    """
    return replace(standing, balance=balance, balance_at=told_at) if _later(standing.balance_at, told_at) else standing


def with_award(standing: Standing, award: Award, now: datetime) -> Standing:
    """Remember points that will expire (each entry once); those already expired are let go."""
    awards = [a for a in standing.awards if a.expires_at > now and a.entry_id != award.entry_id]
    if award.expires_at > now:
        awards.append(award)
    return replace(standing, awards=tuple(sorted(awards, key=lambda a: (a.expires_at, a.entry_id))))


def with_referral_code(standing: Standing, code: str, told_at: datetime) -> Standing:
    return replace(standing, referral_code=code, code_at=told_at) if _later(standing.code_at, told_at) else standing


def with_friend_converted(standing: Standing, referral_id: str) -> Standing:
    if referral_id in standing.referrals:
        return standing
    return replace(standing, referrals=(*standing.referrals, referral_id))


def with_segment(standing: Standing, segment: str, scored_at: datetime) -> Standing:
    """The segment of the latest scoring round; an older round heard late changes nothing."""
    if not _later(standing.segment_at, scored_at):
        return standing
    return replace(standing, segment=segment, segment_at=scored_at)


@dataclass(frozen=True)
class Expiring:
    points: int
    first_at: datetime | None  # when the first of them expire


def points_expiring(standing: Standing, now: datetime, within: timedelta) -> Expiring:
    """Points awarded that expire within `within`, never more than the balance (spent points do not expire)."""
    soon = [a for a in standing.awards if now < a.expires_at <= now + within]
    points = sum(a.points for a in soon)
    if standing.balance is not None:
        points = min(points, max(standing.balance, 0))
    return Expiring(points, soon[0].expires_at if soon and points > 0 else None)


# --- key accounts and win-back ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountRules:
    """Who is a key account, how often they are reviewed, who is slipping away (the shop's settings)."""

    key_account_segments: frozenset[str] = frozenset({"champions"})
    key_account_tiers: frozenset[str] = frozenset({"vip"})
    review_every: timedelta = timedelta(days=90)
    win_back_tiers: frozenset[str] = frozenset({"gold", "vip"})
    slipping_segments: frozenset[str] = frozenset({"at_risk", "cant_lose", "hibernating"})
    import_settles: timedelta = timedelta(minutes=10)  # no history event for this long: the import is done


def is_key_account(standing: Standing, rules: AccountRules) -> bool:
    return standing.segment in rules.key_account_segments or standing.tier in rules.key_account_tiers


def is_slipping(standing: Standing, rules: AccountRules) -> bool:
    """A customer of a win-back tier whose segment says they are drifting away."""
    return standing.tier in rules.win_back_tiers and standing.segment in rules.slipping_segments


def review_id(customer_id: str, number: int) -> str:
    return f"review:{customer_id}:{number}"


def win_back_id(customer_id: str, number: int) -> str:
    return f"win_back:{customer_id}:{number}"


# The follow-ups whose ids are made from the customer id (one call; numbered reviews and win-back calls).
_NAMED_AFTER_THE_CUSTOMER = ("call:", "review:", "win_back:")


def renamed_for_alias(followup_id: str, customer_id: str, alias: str) -> str | None:
    """The id a follow-up named after an erased customer is kept under (their alias in its place); None for one
    whose id does not name them."""
    for prefix in _NAMED_AFTER_THE_CUSTOMER:
        named = prefix + customer_id
        if followup_id == named:
            return prefix + alias
        if followup_id.startswith(named + ":"):
            return prefix + alias + followup_id.removeprefix(named)
    return None


def import_settled(standing: Standing, rules: AccountRules, now: datetime) -> bool:
    """Whether the shop's history about the customer has stopped arriving (or never came)."""
    return standing.last_imported_at is None or now - standing.last_imported_at >= rules.import_settles


@dataclass(frozen=True)
class Attention:
    """What a customer's standing calls for now: the standing to keep, and the tasks to open."""

    standing: Standing
    plans: tuple[Plan, ...]


REVIEW_TITLE = "Account review"
WIN_BACK_TITLE = "Slipping away: call them"


def attend(
    standing: Standing, rules: AccountRules, now: datetime, *, may_plan: bool, review_pending: bool
) -> Attention:
    """Key-account reviews and win-back calls from the customer's standing now.

    - A key account (segment or tier) gets a review at once the first time, then every `review_every`; one open
      at a time (a review still open when the next falls due pushes the next one on). Others get none.
    - A win-back tier in a slipping segment gets one "slipping away" call, due at once, per slide: not again
      until their segment recovers and slips again. Decided from the standing, so TierChanged before or after
      CustomerSegmentChanged gives the same.
    - `may_plan` False (an event of the shop's history, or history still arriving): the standing is kept, the
      tasks wait for a live event or for the review job once the import has settled (`check_at`).
    """
    if standing.segment not in rules.slipping_segments:
        standing = replace(standing, slide_noted=False)  # recovered: a later slide gets its own call
    if not is_key_account(standing, rules):
        standing = replace(standing, review_due_at=None)
    elif standing.review_due_at is None:
        standing = replace(standing, review_due_at=now)
    plans: list[Plan] = []
    customer_id = standing.customer_id
    if may_plan and is_slipping(standing, rules) and not standing.slide_noted:
        number = standing.win_backs_opened + 1
        plans.append(
            Plan(
                win_back_id(customer_id, number),
                "win_back",
                "person",
                customer_id,
                None,
                now,
                "pending",
                title=WIN_BACK_TITLE,
            )
        )
        standing = replace(standing, win_backs_opened=number, slide_noted=True)
    if may_plan and standing.review_due_at is not None and standing.review_due_at <= now:
        if review_pending:
            standing = replace(standing, review_due_at=now + rules.review_every)
        else:
            number = standing.reviews_opened + 1
            plans.append(
                Plan(
                    review_id(customer_id, number),
                    "review",
                    "person",
                    customer_id,
                    None,
                    now,
                    "pending",
                    title=REVIEW_TITLE,
                )
            )
            standing = replace(standing, reviews_opened=number, review_due_at=now + rules.review_every)
    return Attention(replace(standing, check_at=next_check(standing, rules)), tuple(plans))


def next_check(standing: Standing, rules: AccountRules) -> datetime | None:
    """When the review job should look at the customer: their next review, or the end of an import that left a
    win-back call waiting."""
    moments = [standing.review_due_at] if standing.review_due_at is not None else []
    if is_slipping(standing, rules) and not standing.slide_noted:
        settled = standing.last_imported_at + rules.import_settles if standing.last_imported_at else None
        moments.append(settled or standing.segment_at or datetime.min.replace(tzinfo=UTC))
    return min(moments, default=None)


def after_review(standing: Standing, rules: AccountRules, reviewed_at: datetime) -> Standing:
    """A review recorded: the next falls due `review_every` after it (for a key account)."""
    if not is_key_account(standing, rules):
        return standing
    due = reviewed_at + rules.review_every
    return replace(standing, review_due_at=due, check_at=next_check(replace(standing, review_due_at=due), rules))
