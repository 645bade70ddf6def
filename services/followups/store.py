"""MongoDB for followups: customers' contact, orders' milestones, follow-ups, feedback, escalations.

The only code that knows the collections and the shape of their documents;
use cases, routes and the scheduler get and give the values of domain.py (and
the `FollowUp` and `EscalationRecord` below).

Collections:
- customers: contact details from the customer's latest order, and their first order.
- orders: when each order was placed and fulfilled, its total and its refunds (what the schedule hangs on).
- followups: every planned follow-up, one document each, with a deterministic id
  (`thank_you:<order>`, `feedback_request:<order>`, `call:<customer>`,
  `referral_invite:<event>`) so planning twice plans once. `status` is pending,
  sent, failed, cancelled or done; email follow-ups are claimed with a lease.
- feedback: what customers said; a feedback link's follow-up id is unique here,
  so a token is used once.
- escalations: unhappy feedback with its deadline.
- erased: sha256 of erased customer ids, so late events do not bring them back.
- consents: per customer, the marketing answer of their latest order that gave one, and when they
  unsubscribed (erasure deletes it).
- unsubscribed_addresses: sha256 of each address a customer unsubscribed from, kept through an erasure
  as the suppression list, so the same address is not mailed again under another customer id.
- standing: per customer, what the other services published (tier, balance and expiring points, referral
  code and friends converted, segment) and where their key-account reviews and win-back calls stand.
- notes, facts, calls, reviews: the relationship log the owner keeps per customer (free-text notes; personal
  facts, editable; call outcomes; key-account reviews), each with its author and time.
"""

import hashlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from pymongo import ASCENDING, DESCENDING, DeleteMany, DeleteOne, IndexModel, UpdateMany, UpdateOne
from pymongo.errors import DuplicateKeyError

from services.followups.domain import (
    Award,
    CallOutcome,
    Channel,
    Consent,
    Contact,
    Customer,
    Escalation,
    FactKind,
    FailedSend,
    FeedbackLinkUsed,
    FeedbackPoint,
    Kind,
    NotSentBecause,
    Order,
    Plan,
    Standing,
    Status,
    normalised_address,
    renamed_for_alias,
    review_id,
)
from services.followups.settings import FollowupsUnit
from shared.erasure import ERASED, customer_erased, erased_id, forget_sent_events, mark_erased, preload_customers
from shared.events import FeedbackReceived
from shared.leases import claim
from shared.mongo import Database, as_stored
from shared.service import Runtime
from shared.settings import ServiceSettings

T = TypeVar("T")

CUSTOMERS = "customers"
ORDERS = "orders"
FOLLOWUPS = "followups"
FEEDBACK = "feedback"
ESCALATIONS = "escalations"
CONSENTS = "consents"
UNSUBSCRIBED_ADDRESSES = "unsubscribed_addresses"
STANDING = "standing"
NOTES = "notes"
FACTS = "facts"
CALLS = "calls"
REVIEWS = "reviews"


async def ensure_indexes(db: Database, settings: ServiceSettings) -> None:  # the settings shape no index here
    await db[CUSTOMERS].create_indexes([IndexModel([("first_order_at", ASCENDING)])])
    await db[FOLLOWUPS].create_indexes(
        [
            IndexModel([("status", ASCENDING), ("channel", ASCENDING), ("due_at", ASCENDING)]),
            IndexModel([("kind", ASCENDING), ("status", ASCENDING), ("due_at", ASCENDING)]),
            IndexModel([("order_id", ASCENDING)]),
            IndexModel([("customer_id", ASCENDING)]),
            # The e-mail report by day: only sent (and given-up) follow-ups have these, so pending ones cost nothing.
            IndexModel([("sent_at", ASCENDING)], sparse=True),
            IndexModel([("failed_at", ASCENDING)], sparse=True),
        ]
    )
    await db[FEEDBACK].create_indexes(
        [
            IndexModel(
                [("followup_id", ASCENDING)], unique=True, partialFilterExpression={"followup_id": {"$type": "string"}}
            ),
            IndexModel([("received_at", ASCENDING)]),
            IndexModel([("customer_id", ASCENDING), ("received_at", ASCENDING)]),
        ]
    )
    await db[ESCALATIONS].create_indexes(
        [
            IndexModel([("resolved_at", ASCENDING), ("due_by", ASCENDING)]),
            IndexModel([("customer_id", ASCENDING), ("resolved_at", ASCENDING)]),
        ]
    )
    await db[FEEDBACK].create_indexes([IndexModel([("customer_id", ASCENDING), ("received_at", DESCENDING)])])
    await db[ORDERS].create_indexes([IndexModel([("customer_id", ASCENDING), ("placed_at", DESCENDING)])])
    await db[STANDING].create_indexes([IndexModel([("check_at", ASCENDING)], sparse=True)])
    for log in (NOTES, CALLS, REVIEWS):  # newest first, page by page
        await db[log].create_indexes(
            [IndexModel([("customer_id", ASCENDING), ("at", DESCENDING), ("_id", DESCENDING)])]
        )
    await db[FACTS].create_indexes([IndexModel([("customer_id", ASCENDING), ("at", ASCENDING)])])


async def preload(
    unit: FollowupsUnit, customer_ids: Iterable[str], order_ids: Iterable[str], followup_ids: Iterable[str]
) -> None:
    """Read these customers (and erasure marks), orders and follow-ups in a few queries (a batch's, say)."""
    customers = set(customer_ids)
    await preload_customers(unit, CUSTOMERS, customers)
    await unit.preload(STANDING, customers)
    # A key account's latest review task: whether it is still open decides whether the next one is opened.
    reviews = []
    for customer_id in customers:
        standing = await unit.find_one(STANDING, {"_id": customer_id})  # preloaded: no round trip
        if standing is not None and standing.get("reviews_opened", 0) > 0:
            reviews.append(review_id(customer_id, standing["reviews_opened"]))
    await unit.preload(ORDERS, order_ids)
    await unit.preload(FOLLOWUPS, [*followup_ids, *reviews])


# --- customers and orders -------------------------------------------------------------------


async def customer_is_erased(unit: FollowupsUnit, customer_id: str) -> bool:
    return await customer_erased(unit, CUSTOMERS, customer_id)


async def get_customer(unit: FollowupsUnit, customer_id: str) -> Customer:
    """The customer as far as known; a new one before their first order is heard of."""
    found = await unit.find_one(CUSTOMERS, {"_id": customer_id})
    return Customer(customer_id) if found is None else _customer_of(found)


async def find_customer(unit: FollowupsUnit, customer_id: str) -> Customer | None:
    found = await unit.find_one(CUSTOMERS, {"_id": customer_id})
    return None if found is None else _customer_of(found)


def save_customer(unit: FollowupsUnit, customer: Customer) -> None:
    unit.replace(
        CUSTOMERS,
        {
            "_id": customer.customer_id,
            "contact": None if customer.contact is None else dict(customer.contact),
            "contact_at": customer.contact_at,
            "first_order_at": customer.first_order_at,
        },
    )


def _customer_of(doc: Mapping[str, Any]) -> Customer:
    return Customer(doc["_id"], doc.get("contact"), doc.get("contact_at"), doc.get("first_order_at"))


# Per database and number of early customers: a first-order time from which on no customer can be one of
# the shop's first N, because N customers are known to have ordered before it. It never has to move later:
# customers are only added (erasure keeps when they first ordered), and first orders only move earlier.
_NOT_EARLY_FROM: dict[tuple[str, int], datetime] = {}


async def customers_before(unit: FollowupsUnit, first_order_at: datetime, first: int) -> int:
    """How many customers first ordered before `first_order_at`; `first` or more may be answered as `first`."""
    known = (unit.db.name, first)
    if known in _NOT_EARLY_FROM and first_order_at >= _NOT_EARLY_FROM[known]:
        return first  # the count would say as many; an established shop skips it for nearly every customer
    await unit.flush()
    earlier = await unit.db[CUSTOMERS].count_documents(
        {"first_order_at": {"$lt": first_order_at}}, session=unit.session
    )
    if earlier >= first:

        def remember() -> None:  # once the customers the count saw (this batch's too) are committed
            _NOT_EARLY_FROM[known] = min(first_order_at, _NOT_EARLY_FROM.get(known, first_order_at))

        unit.on_commit(remember)
    return earlier


async def get_order(unit: FollowupsUnit, order_id: str, customer_id: str) -> Order:
    """The order's milestones as far as heard; a new order of this customer before any."""
    found = await unit.find_one(ORDERS, {"_id": order_id})
    return Order(order_id, customer_id) if found is None else _order_of(found)


def _order_of(found: Mapping[str, Any]) -> Order:
    return Order(
        order_id=found["_id"],
        customer_id=found["customer_id"],
        placed_at=found.get("placed_at"),
        fulfilled_at=found.get("fulfilled_at"),
        total=Decimal(found["total"]) if found.get("total") is not None else None,
        currency=found.get("currency"),
        refunds=tuple(
            (refund["id"], Decimal(refund["amount"]), refund["currency"]) for refund in found.get("refunds", [])
        ),
        refunded_in_full=found.get("refunded", False) and "refunds" not in found,  # written before partial refunds
        cancelled_at=found.get("cancelled_at"),
        order_number=found.get("order_number"),
        placed_imported=found.get("placed_imported", False),
        fulfilled_imported=found.get("fulfilled_imported", False),
    )


def save_order(unit: FollowupsUnit, order: Order) -> None:
    unit.replace(
        ORDERS,
        {
            "_id": order.order_id,
            "customer_id": order.customer_id,
            "placed_at": order.placed_at,
            "fulfilled_at": order.fulfilled_at,
            "total": str(order.total) if order.total is not None else None,
            "currency": order.currency,
            "refunds": [
                {"id": id_, "amount": str(amount), "currency": currency} for id_, amount, currency in order.refunds
            ],
            "refunded": order.refunded_in_full,
            "cancelled_at": order.cancelled_at,
            "order_number": order.order_number,
            "placed_imported": order.placed_imported,
            "fulfilled_imported": order.fulfilled_imported,
        },
    )


# --- follow-ups ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FollowUp:
    """A planned follow-up and what became of it."""

    followup_id: str
    kind: Kind
    channel: Channel
    customer_id: str
    order_id: str | None
    due_at: datetime
    status: Status
    created_at: datetime
    attempts: int = 0
    code: str | None = None  # a referral invitation's code
    lease_owner: str | None = None  # the scheduler holding it while it sends
    cancelled_because: str | None = None
    sent_at: datetime | None = None
    locale: str | None = None  # the language it was sent in
    done_at: datetime | None = None
    note: str | None = None  # what the customer said, for a person's task
    last_error: str | None = None
    title: str | None = None  # what a person's task says to do (a task added by hand, a review, a win-back)


async def find_followup(unit: FollowupsUnit, followup_id: str) -> FollowUp | None:
    found = await unit.find_one(FOLLOWUPS, {"_id": followup_id})
    return None if found is None else _followup_of(found)


async def plan(unit: FollowupsUnit, planned: Plan) -> bool:
    """Plan the follow-up unless one under its id was planned before; whether it was planned now."""
    if await unit.find_one(FOLLOWUPS, {"_id": planned.followup_id}) is not None:
        return False
    document: dict[str, Any] = {
        "_id": planned.followup_id,
        "kind": planned.kind,
        "channel": planned.channel,
        "customer_id": planned.customer_id,
        "order_id": planned.order_id,
        "due_at": planned.due_at,
        "status": planned.status,
        "created_at": unit.now(),
        "attempts": 0,
        "lease_until": None,
    }
    if planned.code is not None:
        document["code"] = planned.code
    if planned.title is not None:
        document["title"] = planned.title
    if planned.cancelled_because is not None:
        document["cancelled_because"] = planned.cancelled_because
    unit.replace(FOLLOWUPS, document)
    return True


async def cancel_pending(unit: FollowupsUnit, followup_id: str, because: str) -> None:
    """Cancel the follow-up if it is still pending when the unit commits."""
    found = await unit.find_one(FOLLOWUPS, {"_id": followup_id})
    if found is None:
        return
    change = {"status": "cancelled", "cancelled_because": because}
    unit.update(FOLLOWUPS, found | change, UpdateOne({"_id": followup_id, "status": "pending"}, {"$set": change}))


async def claim_due_email(rt: Runtime, due_by: datetime, owner: str, lease: timedelta) -> FollowUp | None:
    """Hold the e-mail follow-up due soonest (by `due_by`) for `lease`; None when none is due and free."""
    found = await claim(
        rt.db[FOLLOWUPS],
        {"status": "pending", "channel": "email", "due_at": {"$lte": due_by}},
        lease=lease,
        owner=owner,
        sort=[("due_at", 1)],
    )
    return None if found is None else _followup_of(found)


def mark_sent(unit: FollowupsUnit, followup: FollowUp, sent_at: datetime, locale: str) -> None:
    """The follow-up went out; applied only while this scheduler's claim still holds it."""
    held = {"_id": followup.followup_id, "lease_owner": followup.lease_owner}
    unit.write(FOLLOWUPS, UpdateOne(held, {"$set": {"status": "sent", "sent_at": sent_at, "locale": locale}}))


async def record_failed_send(rt: Runtime, followup: FollowUp, failure: FailedSend, error: str) -> None:
    """Note the failed attempt: held back till its retry (the lease doubles as the back-off), or marked failed."""
    change: dict[str, Any] = {"attempts": failure.attempts, "last_error": error}
    if failure.gave_up:
        change |= {"status": "failed", "failed_at": rt.now()}
    else:
        change["lease_until"] = failure.retry_at
    held = {"_id": followup.followup_id, "lease_owner": followup.lease_owner}
    await rt.db[FOLLOWUPS].update_one(held, {"$set": change})


async def mark_done(unit: FollowupsUnit, followup_id: str, at: datetime, note: str) -> bool:
    """A person did the task; False when there is no pending task for a person under this id."""
    found = await unit.find_one(FOLLOWUPS, {"_id": followup_id})
    if found is None or found["channel"] != "person" or found["status"] != "pending":
        return False
    finish_task(unit, _followup_of(found), at, note)
    return True


async def mail_counted(rt: Runtime, since: datetime) -> dict[tuple[date, Status], int]:
    """E-mails sent, and given up on, from `since` on, counted per day (UTC) and status."""
    moment = {"$ifNull": ["$sent_at", "$failed_at"]}
    found = await rt.db[FOLLOWUPS].aggregate(
        [
            {"$match": {"channel": "email", "$or": [{"sent_at": {"$gte": since}}, {"failed_at": {"$gte": since}}]}},
            {
                "$group": {
                    "_id": {"day": {"$dateToString": {"format": "%Y-%m-%d", "date": moment}}, "status": "$status"},
                    "count": {"$sum": 1},
                }
            },
        ]
    )
    return {(date.fromisoformat(doc["_id"]["day"]), doc["_id"]["status"]): doc["count"] async for doc in found}


async def followups(
    rt: Runtime,
    *,
    status: Status | None,
    kind: Kind | None,
    due_by: datetime | None,
    limit: int,
    customer_id: str | None = None,
    latest_first: bool = False,
) -> list[FollowUp]:
    """Follow-ups soonest (or latest) first: of a status, of a kind, pending and due by `due_by`, of one customer."""
    query: dict[str, Any] = {} if customer_id is None else {"customer_id": customer_id}
    if due_by is not None:
        query |= {"status": "pending", "due_at": {"$lte": due_by}}
    elif status is not None:
        query["status"] = status
    if kind is not None:
        query["kind"] = kind
    found = await rt.db[FOLLOWUPS].find(query, sort=[("due_at", -1 if latest_first else 1)], limit=limit).to_list()
    return [_followup_of(doc) for doc in found]


async def feedback_received(
    rt: Runtime, *, since: datetime | None, customer_id: str | None, limit: int
) -> list[tuple[FeedbackReceived, str | None]]:
    """Feedback latest first, since a moment and of one customer when asked; each with the request it answered."""
    query: dict[str, Any] = {} if customer_id is None else {"customer_id": customer_id}
    if since is not None:
        query["received_at"] = {"$gte": since}
    found = await rt.db[FEEDBACK].find(query, sort=[("received_at", -1)], limit=limit).to_list()
    fields = set(FeedbackReceived.model_fields)
    return [
        (FeedbackReceived.model_validate({k: v for k, v in doc.items() if k in fields}), doc.get("followup_id"))
        for doc in found
    ]


async def contacts(rt: Runtime, customer_ids: Iterable[str]) -> dict[str, Contact | None]:
    """The contact details of these customers, by customer id (those known)."""
    found = rt.db[CUSTOMERS].find({"_id": {"$in": list(set(customer_ids))}}, {"contact": 1})
    return {doc["_id"]: doc.get("contact") async for doc in found}


async def contact_of(rt: Runtime, customer_id: str) -> Contact | None:
    found = await rt.db[CUSTOMERS].find_one({"_id": customer_id}, {"contact": 1})
    return None if found is None else found.get("contact")


async def feedback_requests_sent(rt: Runtime) -> int:
    return await rt.db[FOLLOWUPS].count_documents({"kind": "feedback_request", "status": "sent"})


def _followup_of(doc: Mapping[str, Any]) -> FollowUp:
    return FollowUp(
        followup_id=doc["_id"],
        kind=doc["kind"],
        channel=doc["channel"],
        customer_id=doc["customer_id"],
        order_id=doc.get("order_id"),
        due_at=doc["due_at"],
        status=doc["status"],
        created_at=doc["created_at"],
        attempts=doc.get("attempts", 0),
        code=doc.get("code"),
        lease_owner=doc.get("lease_owner"),
        cancelled_because=doc.get("cancelled_because"),
        sent_at=doc.get("sent_at"),
        locale=doc.get("locale"),
        done_at=doc.get("done_at"),
        note=doc.get("note"),
        last_error=doc.get("last_error"),
        title=doc.get("title"),
    )


# --- feedback and escalations -----------------------------------------------------------------


async def link_used(unit: FollowupsUnit, followup_id: str) -> bool:
    """Whether feedback was given through this follow-up's link already."""
    return await unit.find_one(FEEDBACK, {"followup_id": followup_id}) is not None


def save_feedback(unit: FollowupsUnit, feedback: FeedbackReceived, followup_id: str | None) -> None:
    unit.replace(
        FEEDBACK,
        feedback.model_dump(mode="python")
        | {"_id": feedback.feedback_id, "followup_id": followup_id, "received_at": as_stored(feedback.received_at)},
    )


async def once_per_link(rt: Runtime, work: Callable[[FollowupsUnit], Awaitable[T]]) -> T:
    """Run `work` in one transaction; feedback through a link that another request used meanwhile is refused."""
    try:
        return await rt.transaction(work)
    except DuplicateKeyError as error:  # the same link submitted twice at once: the unique index took one
        raise FeedbackLinkUsed from error


def open_escalation(unit: FollowupsUnit, escalation: Escalation) -> None:
    unit.replace(
        ESCALATIONS,
        {
            "_id": escalation.escalation_id,
            "feedback_id": escalation.feedback_id,
            "customer_id": escalation.customer_id,
            "order_id": escalation.order_id,
            "due_by": escalation.due_by,
            "opened_at": escalation.opened_at,
            "resolved_at": None,
            "breached_at": None,
        },
    )


@dataclass(frozen=True)
class EscalationRecord:
    """An escalation and what became of it."""

    escalation_id: str
    feedback_id: str
    customer_id: str
    order_id: str | None
    due_by: datetime
    resolved_at: datetime | None
    breached_at: datetime | None  # when it was flagged as past its deadline
    note: str | None  # what was done for the customer


async def escalations(rt: Runtime, *, resolved: bool, limit: int = 500) -> list[EscalationRecord]:
    """Open (or resolved) escalations, soonest due first."""
    query = {"resolved_at": {"$ne": None}} if resolved else {"resolved_at": None}
    found = await rt.db[ESCALATIONS].find(query, sort=[("due_by", 1)], limit=limit).to_list()
    return [_escalation_of(doc) for doc in found]


async def resolve_escalation(
    unit: FollowupsUnit, escalation_id: str, at: datetime, note: str
) -> EscalationRecord | None:
    """Resolve the open escalation; returns it as it was, or None when there is no open one under this id."""
    await unit.flush()
    found = await unit.db[ESCALATIONS].find_one_and_update(
        {"_id": escalation_id, "resolved_at": None}, {"$set": {"resolved_at": at, "note": note}}, session=unit.session
    )
    return None if found is None else _escalation_of(found)


async def overdue_escalations(rt: Runtime, now: datetime) -> list[str]:
    """Ids of open escalations past their deadline and not flagged yet."""
    found = rt.db[ESCALATIONS].find({"resolved_at": None, "breached_at": None, "due_by": {"$lt": now}}, {"_id": 1})
    return [doc["_id"] async for doc in found]


async def flag_breached(rt: Runtime, escalation_id: str, at: datetime) -> bool:
    """Flag the escalation as breached at `at`; False when it was flagged before (by another replica, say)."""
    result = await rt.db[ESCALATIONS].update_one(
        {"_id": escalation_id, "breached_at": None}, {"$set": {"breached_at": at}}
    )
    return result.modified_count > 0


async def feedback_points(rt: Runtime) -> list[FeedbackPoint]:
    """Every piece of feedback, as much of it as the NPS report needs."""
    found = rt.db[FEEDBACK].find({}, {"received_at": 1, "ratings": 1, "nps": 1, "followup_id": 1})
    return [
        FeedbackPoint(
            received_at=doc["received_at"],
            overall=doc["ratings"]["overall"],
            nps=doc.get("nps"),
            answered_request=doc.get("followup_id") is not None,
        )
        async for doc in found
    ]


def _escalation_of(doc: Mapping[str, Any]) -> EscalationRecord:
    return EscalationRecord(
        escalation_id=doc["_id"],
        feedback_id=doc["feedback_id"],
        customer_id=doc["customer_id"],
        order_id=doc["order_id"],
        due_by=doc["due_by"],
        resolved_at=doc["resolved_at"],
        breached_at=doc["breached_at"],
        note=doc.get("note"),
    )


# --- a customer's data (their export) ------------------------------------------------------------


@dataclass(frozen=True)
class StoredFeedback:
    feedback: FeedbackReceived
    followup_id: str | None  # the feedback request whose link it came through


@dataclass(frozen=True)
class CustomerRecords:
    """Everything followups holds on one customer: contact, orders' milestones, follow-ups, feedback, escalations."""

    customer: Customer | None
    orders: list[Order]
    followups: list[FollowUp]
    feedback: list[StoredFeedback]
    escalations: list[EscalationRecord]
    consent: Consent | None  # what they said about mail
    address_unsubscribed: bool  # their e-mail address is on the suppression list

    @property
    def empty(self) -> bool:
        held = self.orders or self.followups or self.feedback or self.escalations
        return self.customer is None and self.consent is None and not held


async def customer_records(unit: FollowupsUnit, customer_id: str) -> CustomerRecords:
    theirs = {"customer_id": customer_id}
    orders = await unit.find(ORDERS, theirs, projection={"_id": 1}, sort=[("placed_at", 1), ("_id", 1)])
    feedback = await unit.find(FEEDBACK, theirs, sort=[("received_at", 1)])
    customer = await find_customer(unit, customer_id)
    consent = await unit.find_one(CONSENTS, {"_id": customer_id})
    email = None if customer is None or customer.contact is None else customer.contact.get("email")
    listed = email is not None and await unit.find_one(UNSUBSCRIBED_ADDRESSES, {"_id": _address_id(email)}) is not None
    return CustomerRecords(
        customer=customer,
        consent=None if consent is None else _consent_of(consent),
        address_unsubscribed=listed,
        orders=[await get_order(unit, doc["_id"], customer_id) for doc in orders],
        followups=[_followup_of(doc) for doc in await unit.find(FOLLOWUPS, theirs, sort=[("created_at", 1)])],
        feedback=[StoredFeedback(FeedbackReceived.model_validate(doc), doc.get("followup_id")) for doc in feedback],
        escalations=[_escalation_of(doc) for doc in await unit.find(ESCALATIONS, theirs, sort=[("opened_at", 1)])],
    )


# --- what mail customers agreed to, and the feedback page ----------------------------------------


async def preload_consents(unit: FollowupsUnit, customer_ids: Iterable[str]) -> None:
    await unit.preload(CONSENTS, customer_ids)


async def get_consent(unit: FollowupsUnit, customer_id: str) -> Consent:
    """What the customer said about mail, as far as known (nothing yet: a fresh Consent)."""
    found = await unit.find_one(CONSENTS, {"_id": customer_id})
    return Consent(customer_id) if found is None else _consent_of(found)


def save_consent(unit: FollowupsUnit, consent: Consent) -> None:
    unit.replace(
        CONSENTS,
        {
            "_id": consent.customer_id,
            "accepts_marketing": consent.accepts_marketing,
            "said_at": consent.said_at,
            "unsubscribed_at": consent.unsubscribed_at,
        },
    )


def _address_id(email: str) -> str:
    return hashlib.sha256(normalised_address(email).encode()).hexdigest()


def unsubscribe_address(unit: FollowupsUnit, email: str, at: datetime) -> None:
    """Keep the address (as its SHA-256) on the suppression list; the first unsubscribe's time stays."""
    unit.write(
        UNSUBSCRIBED_ADDRESSES,
        UpdateOne({"_id": _address_id(email)}, {"$setOnInsert": {"unsubscribed_at": at}}, upsert=True),
    )


async def mail_consent(rt: Runtime, customer_id: str, email: str | None) -> tuple[Consent, bool]:
    """The customer's consent, and whether their address is on the suppression list (for the scheduler)."""
    found = await rt.db[CONSENTS].find_one({"_id": customer_id})
    listed = email is not None and await rt.db[UNSUBSCRIBED_ADDRESSES].find_one({"_id": _address_id(email)}) is not None
    return (Consent(customer_id) if found is None else _consent_of(found)), listed


def _consent_of(doc: Mapping[str, Any]) -> Consent:
    return Consent(doc["_id"], doc.get("accepts_marketing"), doc.get("said_at"), doc.get("unsubscribed_at"))


async def skip_email(rt: Runtime, followup: FollowUp, because: NotSentBecause) -> None:
    """The e-mail is not to be sent (the customer unsubscribed, say): cancelled with the reason, while held."""
    held = {"_id": followup.followup_id, "lease_owner": followup.lease_owner}
    await rt.db[FOLLOWUPS].update_one(held, {"$set": {"status": "cancelled", "cancelled_because": because}})


async def followup_named(rt: Runtime, followup_id: str) -> FollowUp | None:
    """The follow-up a customer's link names (read outside a unit: the pages only look)."""
    found = await rt.db[FOLLOWUPS].find_one({"_id": followup_id})
    return None if found is None else _followup_of(found)


async def feedback_through(rt: Runtime, followup_id: str) -> FeedbackPoint | None:
    """The feedback given through this follow-up's link, if any (its scores: what the thank-you page needs)."""
    found = await rt.db[FEEDBACK].find_one({"followup_id": followup_id}, {"received_at": 1, "ratings": 1, "nps": 1})
    if found is None:
        return None
    return FeedbackPoint(found["received_at"], found["ratings"]["overall"], found.get("nps"), answered_request=True)


async def referral_code_of(rt: Runtime, customer_id: str) -> str | None:
    """The code of the customer's latest referral invitation, as ReferralInvited brought it (None: none yet)."""
    found = await rt.db[FOLLOWUPS].find_one(
        {"customer_id": customer_id, "kind": "referral_invite", "code": {"$type": "string"}},
        sort=[("created_at", -1)],
    )
    return None if found is None else str(found["code"])


# --- erasure ------------------------------------------------------------------------------------


def forget_customer(unit: FollowupsUnit, customer_id: str, alias: str, kept: Customer | None, at: datetime) -> None:
    """Erase the customer: cancel what is pending, re-key everything to the alias, blank their words, a mark."""
    mark_erased(unit, customer_id, at)
    unit.write(CONSENTS, DeleteOne({"_id": customer_id}))  # their unsubscribed address stays listed (as a hash)
    if kept is not None:
        unit.write(CUSTOMERS, DeleteOne({"_id": customer_id}))
        save_customer(unit, kept)
    unit.write(ORDERS, UpdateMany({"customer_id": customer_id}, {"$set": {"customer_id": alias}}))
    unit.write(
        FOLLOWUPS,
        UpdateMany(
            {"customer_id": customer_id, "status": "pending"},
            {"$set": {"status": "cancelled", "cancelled_because": "customer erased"}},
        ),
        # What a person noted after a call, and why a send failed, may name the customer.
        UpdateMany({"customer_id": customer_id}, {"$set": {"customer_id": alias, "note": None, "last_error": None}}),
    )
    # A person's task keeps what it was (a call, a review) under the alias, not what was said or planned in it.
    unit.write(FOLLOWUPS, UpdateMany({"customer_id": alias}, {"$set": {"note": None, "title": None}}))
    unit.write(FEEDBACK, UpdateMany({"customer_id": customer_id}, {"$set": {"customer_id": alias, "comment": None}}))
    unit.write(STANDING, DeleteOne({"_id": customer_id}))
    for log in (NOTES, FACTS, CALLS, REVIEWS):  # what the owner learned of them goes whole
        unit.write(log, DeleteMany({"customer_id": customer_id}))
    unit.write(ESCALATIONS, UpdateMany({"customer_id": customer_id}, {"$set": {"customer_id": alias, "note": None}}))
    forget_sent_events(unit, customer_id)  # FeedbackReceived carries the customer's own words


async def rename_named_tasks(unit: FollowupsUnit, customer_id: str, alias: str) -> list[tuple[str, str]]:
    """Erasure, after `forget_customer`: the follow-ups whose ids named the customer (their call, reviews,
    win-back calls) are kept under ids naming the alias. Returns the (old, new) ids, for the audit trail."""
    renamed = []
    for found in await unit.find(FOLLOWUPS, {"customer_id": alias}):
        new = renamed_for_alias(found["_id"], customer_id, alias)
        if new is not None:
            unit.write(FOLLOWUPS, DeleteOne({"_id": found["_id"]}))
            unit.replace(FOLLOWUPS, found | {"_id": new})
            renamed.append((found["_id"], new))
    return renamed


# --- what the other services published, and reviews and win-backs ----------------------------------------------


async def get_standing(unit: FollowupsUnit, customer_id: str) -> Standing:
    found = await unit.find_one(STANDING, {"_id": customer_id})
    return Standing(customer_id) if found is None else _standing_of(found)


async def standing_of(rt: Runtime, customer_id: str) -> Standing | None:
    found = await rt.db[STANDING].find_one({"_id": customer_id})
    return None if found is None else _standing_of(found)


def save_standing(unit: FollowupsUnit, standing: Standing) -> None:
    unit.replace(
        STANDING,
        {
            "_id": standing.customer_id,
            "tier": standing.tier,
            "tier_at": standing.tier_at,
            "balance": standing.balance,
            "balance_at": standing.balance_at,
            "awards": [
                {"entry_id": a.entry_id, "points": a.points, "expires_at": a.expires_at} for a in standing.awards
            ],
            "referral_code": standing.referral_code,
            "code_at": standing.code_at,
            "referrals": list(standing.referrals),
            "segment": standing.segment,
            "segment_at": standing.segment_at,
            "reviews_opened": standing.reviews_opened,
            "review_due_at": standing.review_due_at,
            "win_backs_opened": standing.win_backs_opened,
            "slide_noted": standing.slide_noted,
            "last_imported_at": standing.last_imported_at,
            "check_at": standing.check_at,
        },
    )


def _standing_of(doc: Mapping[str, Any]) -> Standing:
    return Standing(
        customer_id=doc["_id"],
        tier=doc.get("tier"),
        tier_at=doc.get("tier_at"),
        balance=doc.get("balance"),
        balance_at=doc.get("balance_at"),
        awards=tuple(Award(a["entry_id"], a["points"], a["expires_at"]) for a in doc.get("awards", [])),
        referral_code=doc.get("referral_code"),
        code_at=doc.get("code_at"),
        referrals=tuple(doc.get("referrals", [])),
        segment=doc.get("segment"),
        segment_at=doc.get("segment_at"),
        reviews_opened=doc.get("reviews_opened", 0),
        review_due_at=doc.get("review_due_at"),
        win_backs_opened=doc.get("win_backs_opened", 0),
        slide_noted=doc.get("slide_noted", False),
        last_imported_at=doc.get("last_imported_at"),
        check_at=doc.get("check_at"),
    )


async def standings_to_check(rt: Runtime, now: datetime, limit: int) -> list[str]:
    """Customers whose review (or a win-back call an import left waiting) is due by `now`, soonest first."""
    found = rt.db[STANDING].find({"check_at": {"$lte": now}}, {"_id": 1}, sort=[("check_at", 1)], limit=limit)
    return [doc["_id"] async for doc in found]


async def task_is_pending(unit: FollowupsUnit, followup_id: str) -> bool:
    found = await unit.find_one(FOLLOWUPS, {"_id": followup_id})
    return found is not None and found["status"] == "pending"


# --- the relationship log -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Note:
    note_id: str
    customer_id: str
    text: str
    author: str
    at: datetime


@dataclass(frozen=True)
class Fact:
    fact_id: str
    customer_id: str
    kind: FactKind
    value: str
    author: str
    at: datetime  # when it was noted
    changed_at: datetime | None = None  # when it was last edited
    changed_by: str | None = None


@dataclass(frozen=True)
class CallRecord:
    call_id: str
    customer_id: str
    followup_id: str | None  # the call task it answers, if any
    outcome: CallOutcome
    summary: str
    author: str
    at: datetime


@dataclass(frozen=True)
class Review:
    review_id: str
    customer_id: str
    followup_id: str | None  # the review task it closes, if one was open
    needs: str
    went_well: str
    went_badly: str
    next_step: str
    author: str
    at: datetime


def add_note(unit: FollowupsUnit, note: Note) -> None:
    unit.replace(NOTES, {"_id": note.note_id, **_without_id(vars(note), "note_id")})


def add_call(unit: FollowupsUnit, call: CallRecord) -> None:
    unit.replace(CALLS, {"_id": call.call_id, **_without_id(vars(call), "call_id")})


def add_review(unit: FollowupsUnit, review: Review) -> None:
    unit.replace(REVIEWS, {"_id": review.review_id, **_without_id(vars(review), "review_id")})


def save_fact(unit: FollowupsUnit, fact: Fact) -> None:
    unit.replace(FACTS, {"_id": fact.fact_id, **_without_id(vars(fact), "fact_id")})


async def find_fact(unit: FollowupsUnit, customer_id: str, fact_id: str) -> Fact | None:
    found = await unit.find_one(FACTS, {"_id": fact_id})
    if found is None or found["customer_id"] != customer_id:
        return None
    return _fact_of(found)


def remove_fact(unit: FollowupsUnit, fact_id: str) -> None:
    unit.write(FACTS, DeleteOne({"_id": fact_id}))


def _without_id(fields: Mapping[str, Any], id_field: str) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if name != id_field}


def _fact_of(doc: Mapping[str, Any]) -> Fact:
    return Fact(
        fact_id=doc["_id"],
        customer_id=doc["customer_id"],
        kind=doc["kind"],
        value=doc["value"],
        author=doc["author"],
        at=doc["at"],
        changed_at=doc.get("changed_at"),
        changed_by=doc.get("changed_by"),
    )


async def facts(rt: Runtime, customer_id: str) -> list[Fact]:
    """The customer's personal facts, oldest noted first."""
    found = rt.db[FACTS].find({"customer_id": customer_id}, sort=[("at", 1), ("_id", 1)])
    return [_fact_of(doc) async for doc in found]


async def _latest(rt: Runtime, log: str, customer_id: str, limit: int, offset: int) -> list[dict[str, Any]]:
    found = rt.db[log].find({"customer_id": customer_id}, sort=[("at", -1), ("_id", -1)], skip=offset, limit=limit)
    return await found.to_list()


async def notes(rt: Runtime, customer_id: str, *, limit: int, offset: int = 0) -> list[Note]:
    """The customer's notes, newest first."""
    return [_note_of(d) for d in await _latest(rt, NOTES, customer_id, limit, offset)]


def _note_of(d: Mapping[str, Any]) -> Note:
    return Note(d["_id"], d["customer_id"], d["text"], d["author"], d["at"])


async def calls(rt: Runtime, customer_id: str, *, limit: int, offset: int = 0) -> list[CallRecord]:
    """The outcomes of the customer's calls, newest first."""
    return [_call_of(d) for d in await _latest(rt, CALLS, customer_id, limit, offset)]


def _call_of(d: Mapping[str, Any]) -> CallRecord:
    return CallRecord(
        d["_id"], d["customer_id"], d.get("followup_id"), d["outcome"], d["summary"], d["author"], d["at"]
    )


async def reviews(rt: Runtime, customer_id: str, *, limit: int, offset: int = 0) -> list[Review]:
    """The customer's key-account reviews, newest first."""
    return [_review_of(d) for d in await _latest(rt, REVIEWS, customer_id, limit, offset)]


def _review_of(d: Mapping[str, Any]) -> Review:
    return Review(
        d["_id"],
        d["customer_id"],
        d.get("followup_id"),
        d["needs"],
        d["went_well"],
        d["went_badly"],
        d["next_step"],
        d["author"],
        d["at"],
    )


@dataclass(frozen=True)
class RelationshipRecords:
    notes: list[Note]
    facts: list[Fact]
    calls: list[CallRecord]
    reviews: list[Review]
    standing: Standing | None  # what the other services' events told of them

    @property
    def empty(self) -> bool:
        return self.standing is None and not (self.notes or self.facts or self.calls or self.reviews)


async def relationship_records(unit: FollowupsUnit, customer_id: str) -> RelationshipRecords:
    """The whole relationship log of the customer (their export), oldest first, and their standing."""
    theirs, by_time = {"customer_id": customer_id}, [("at", 1), ("_id", 1)]
    standing = await unit.find_one(STANDING, {"_id": customer_id})
    return RelationshipRecords(
        notes=[_note_of(d) for d in await unit.find(NOTES, theirs, sort=by_time)],
        facts=[_fact_of(d) for d in await unit.find(FACTS, theirs, sort=by_time)],
        calls=[_call_of(d) for d in await unit.find(CALLS, theirs, sort=by_time)],
        reviews=[_review_of(d) for d in await unit.find(REVIEWS, theirs, sort=by_time)],
        standing=None if standing is None else _standing_of(standing),
    )


def finish_task(unit: FollowupsUnit, followup: FollowUp, at: datetime, note: str) -> None:
    """Close the person's task as done, if it is still pending when the unit commits."""
    change = {"status": "done", "done_at": at, "note": note}
    unit.update(
        FOLLOWUPS,
        _followup_document(followup) | change,
        UpdateOne({"_id": followup.followup_id, "status": "pending"}, {"$set": change}),
    )


def reschedule_task(unit: FollowupsUnit, followup: FollowUp, due_at: datetime, attempts: int, note: str) -> None:
    """Try the call again at `due_at`: still pending, one more attempt counted."""
    change = {"due_at": due_at, "attempts": attempts, "note": note}
    unit.update(
        FOLLOWUPS,
        _followup_document(followup) | change,
        UpdateOne({"_id": followup.followup_id, "status": "pending"}, {"$set": change}),
    )


def _followup_document(followup: FollowUp) -> dict[str, Any]:
    return {"_id": followup.followup_id, **_without_id(vars(followup), "followup_id")}


async def pending_task(
    unit: FollowupsUnit, customer_id: str, followup_id: str, kinds: Iterable[Kind]
) -> FollowUp | None:
    """The customer's pending task for a person of one of these kinds under this id, if there is one."""
    found = await unit.find_one(FOLLOWUPS, {"_id": followup_id})
    if found is None:
        return None
    followup = _followup_of(found)
    if followup.customer_id != customer_id or followup.channel != "person" or followup.status != "pending":
        return None
    return followup if followup.kind in set(kinds) else None


async def open_review_task(unit: FollowupsUnit, customer_id: str, number: int) -> FollowUp | None:
    found = await unit.find_one(FOLLOWUPS, {"_id": review_id(customer_id, number)})
    return None if found is None or found["status"] != "pending" else _followup_of(found)


async def tasks_of(
    rt: Runtime, customer_id: str, *, status: Status | None, limit: int, offset: int = 0
) -> list[FollowUp]:
    """The customer's tasks for a person (calls, notes, reviews, win-backs, tasks added by hand), soonest first."""
    query: dict[str, Any] = {"customer_id": customer_id, "channel": "person"}
    if status is not None:
        query["status"] = status
    found = rt.db[FOLLOWUPS].find(query, sort=[("due_at", 1), ("_id", 1)], skip=offset, limit=limit)
    return [_followup_of(doc) async for doc in found]


# --- what the brief shows besides the log ------------------------------------------------------------------


@dataclass(frozen=True)
class OrdersSeen:
    count: int
    last: Order | None


async def orders_seen(rt: Runtime, customer_id: str) -> OrdersSeen:
    """How many of the customer's orders were heard of (each order once), and the latest placed."""
    placed = {"customer_id": customer_id, "placed_at": {"$ne": None}}
    count = await rt.db[ORDERS].count_documents(placed)
    latest = await rt.db[ORDERS].find_one(placed, sort=[("placed_at", -1)])
    return OrdersSeen(count, None if latest is None else _order_of(latest))


async def latest_feedback(rt: Runtime, customer_id: str) -> FeedbackReceived | None:
    found = await rt.db[FEEDBACK].find_one({"customer_id": customer_id}, sort=[("received_at", -1)])
    return None if found is None else FeedbackReceived.model_validate(found)


async def open_escalations_of(rt: Runtime, customer_id: str) -> list[EscalationRecord]:
    found = rt.db[ESCALATIONS].find({"customer_id": customer_id, "resolved_at": None}, sort=[("due_by", 1)])
    return [_escalation_of(doc) async for doc in found]


async def is_known(rt: Runtime, customer_id: str) -> bool:
    """Whether anything is known of the customer here: an order, a published fact, or the owner's log."""
    for collection in (CUSTOMERS, STANDING):
        if await rt.db[collection].find_one({"_id": customer_id}, {"_id": 1}) is not None:
            return True
    for log in (NOTES, FACTS, CALLS, REVIEWS, FOLLOWUPS):
        if await rt.db[log].find_one({"customer_id": customer_id}, {"_id": 1}) is not None:
            return True
    return False


async def was_erased(rt: Runtime, customer_id: str) -> bool:
    """Whether the customer was erased (a route asks, outside a unit)."""
    if await rt.db[CUSTOMERS].find_one({"_id": customer_id}, {"_id": 1}) is not None:
        return False
    return await rt.db[ERASED].find_one({"_id": erased_id(customer_id)}, {"_id": 1}) is not None
