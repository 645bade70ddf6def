"""MongoDB for referrals: the only code that knows the collections and the shape of their documents.

Collections:
- customers: one per customer: their first order, the e-mail and address
  identities their orders were placed under (personal data, erased), their own
  code, the referral they converted on as a referee, when they were last invited.
- codes: one per code (`_id` the canonical code): whose it is, the program,
  the limits (expiry, cap) and the conversions counted so far.
- referrals: one per order that carried a code (`_id` the order id), converted
  or refused with the reason; a conversion keeps the referee's identities (for a
  later contest; erased), and an affiliate's commission with its clawbacks.
- refunds: the refunds heard of per order (`_id` the order id), so a refund
  heard of before the conversion still claws back.
- invitations: one per invitation to refer friends (`_id` the feedback id).
- affiliates: partners paid a commission, each with a code.
- erased: sha256 of erased customer ids, so late events do not bring them back (shared/erasure.py).

Every function takes the unit of work: use cases write through it, and routes
read through it too (`rt.transaction`), so there is one way to reach the data.
Documents are read into the values of domain.py and written from them.
"""

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from pymongo import ASCENDING, DESCENDING, DeleteOne, IndexModel, UpdateMany
from pymongo.errors import BulkWriteError

from services.referrals.domain import (
    Affiliate,
    Clawbacks,
    Code,
    Commission,
    Contest,
    ContestReason,
    Conversion,
    Customer,
    Invitation,
    PlacedOrder,
    Referral,
    Referred,
    Refund,
    Refusal,
    RefusalReason,
    new_code,
)
from services.referrals.settings import ReferralsUnit
from shared.erasure import customer_erased, preload_customers
from shared.mongo import Database
from shared.settings import ServiceSettings

T = TypeVar("T")
Document = dict[str, Any]

CUSTOMERS = "customers"
CODES = "codes"
REFERRALS = "referrals"
REFUNDS = "refunds"
INVITATIONS = "invitations"
AFFILIATES = "affiliates"

CONVERTED, REFUSED = Conversion.outcome, Refusal.outcome


async def ensure_indexes(db: Database, settings: ServiceSettings) -> None:  # the settings shape no index here
    await db[CODES].create_indexes(
        [
            # One code per referrer, however many requests or promoters' feedbacks race to issue it.
            IndexModel(
                [("referrer_customer_id", ASCENDING)],
                unique=True,
                partialFilterExpression={"referrer_customer_id": {"$type": "string"}},
            ),
            IndexModel([("program", ASCENDING)]),
        ]
    )
    await db[REFERRALS].create_indexes(
        [
            # Never two conversions for one referee, whatever races between replicas.
            IndexModel(
                [("referee_customer_id", ASCENDING)], unique=True, partialFilterExpression={"outcome": CONVERTED}
            ),
            IndexModel([("code", ASCENDING), ("placed_at", DESCENDING)]),
            IndexModel([("referrer_customer_id", ASCENDING), ("outcome", ASCENDING)]),
            IndexModel([("affiliate_id", ASCENDING), ("placed_at", DESCENDING)]),
            IndexModel([("outcome", ASCENDING), ("reason", ASCENDING), ("placed_at", DESCENDING)]),
            IndexModel([("outcome", ASCENDING), ("program", ASCENDING), ("placed_at", ASCENDING)]),
        ]
    )
    await db[INVITATIONS].create_indexes([IndexModel([("customer_id", ASCENDING)]), IndexModel([("at", ASCENDING)])])
    await db[AFFILIATES].create_indexes([IndexModel([("customer_id", ASCENDING)])])


async def once_more_if_raced(run: Callable[[], Awaitable[T]]) -> T:
    """Run `run`; if a concurrent transaction took a unique key first (one code per referrer), run it once more.

    The second run finds what the other one wrote.
    """
    try:
        return await run()
    except BulkWriteError as error:
        if not any(failed.get("code") == 11000 for failed in error.details.get("writeErrors", [])):
            raise
        return await run()


async def preload(unit: ReferralsUnit, *, customers: set[str], codes: set[str], orders: set[str]) -> None:
    """Read what a batch touches (codes, their owners, customers, earlier decisions, refunds) in a few queries."""
    await unit.preload(CODES, codes)
    known = [doc for doc in [await unit.find_one(CODES, {"_id": code}) for code in codes] if doc is not None]
    await unit.preload(AFFILIATES, {doc["affiliate_id"] for doc in known if doc["affiliate_id"] is not None})
    affiliates = [await unit.find_one(AFFILIATES, {"_id": doc["affiliate_id"]}) for doc in known if doc["affiliate_id"]]
    wanted = set(customers)
    wanted |= {doc["referrer_customer_id"] for doc in known if doc["referrer_customer_id"] is not None}
    wanted |= {a["customer_id"] for a in affiliates if a is not None and a.get("customer_id") is not None}
    await preload_customers(unit, CUSTOMERS, wanted)
    await unit.preload(REFERRALS, orders)
    await unit.preload(REFUNDS, orders)


# --- customers ------------------------------------------------------------------------------


def _customer_document(customer: Customer) -> Document:
    referred = customer.referred
    return {
        "_id": customer.customer_id,
        "first_order": _order_mark(customer.first_order),
        "emails": list(customer.emails),
        "addresses": list(customer.addresses),
        "code": customer.code,
        "referral": None
        if referred is None
        else {"order_id": referred.order_id, "placed_at": referred.placed_at, "referral_id": referred.referral_id},
        "last_invited_at": customer.last_invited_at,
    }


def _customer(doc: Document) -> Customer:
    referred = doc["referral"]
    return Customer(
        customer_id=doc["_id"],
        first_order=_placed_order(doc["first_order"]),
        emails=tuple(doc["emails"]),
        addresses=tuple(doc["addresses"]),
        code=doc["code"],
        referred=None
        if referred is None
        else Referred(referred["order_id"], referred["placed_at"], referred["referral_id"]),
        last_invited_at=doc["last_invited_at"],
    )


def _order_mark(order: PlacedOrder | None) -> Document | None:
    return None if order is None else {"placed_at": order.placed_at, "order_id": order.order_id}


def _placed_order(mark: Document | None) -> PlacedOrder | None:
    return None if mark is None else PlacedOrder(mark["placed_at"], mark["order_id"])


async def find_customer(unit: ReferralsUnit, customer_id: str) -> Customer | None:
    found = await unit.find_one(CUSTOMERS, {"_id": customer_id})
    return None if found is None else _customer(found)


async def customer_was_erased(unit: ReferralsUnit, customer_id: str) -> bool:
    return await customer_erased(unit, CUSTOMERS, customer_id)


def save_customer(unit: ReferralsUnit, customer: Customer) -> None:
    unit.replace(CUSTOMERS, _customer_document(customer))


def forget_customer(unit: ReferralsUnit, customer_id: str) -> None:
    """Delete the customer's record under their own id (erasure keeps an anonymous copy, saved apart)."""
    unit.write(CUSTOMERS, DeleteOne({"_id": customer_id}))


def move_to_alias(unit: ReferralsUnit, customer_id: str, alias: str, at: datetime) -> None:
    """Erasure: what names the customer names the alias; their code is revoked, their identities on conversions go."""
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


async def customers_who_ordered(unit: ReferralsUnit) -> int:
    return await _count(unit, CUSTOMERS, {"first_order": {"$ne": None}})


# --- codes ----------------------------------------------------------------------------------


def _code_document(code: Code) -> Document:
    return {
        "_id": code.code,
        "program": code.program,
        "referrer_customer_id": code.referrer_customer_id,
        "affiliate_id": code.affiliate_id,
        "created_at": code.created_at,
        "expires_at": code.expires_at,
        "max_conversions": code.max_conversions,
        "conversions": code.conversions,
        "revoked_at": code.revoked_at,
    }


def _code(doc: Document) -> Code:
    return Code(
        code=doc["_id"],
        referrer_customer_id=doc.get("referrer_customer_id"),
        affiliate_id=doc.get("affiliate_id"),
        program=doc["program"],
        expires_at=doc.get("expires_at"),
        max_conversions=doc.get("max_conversions"),
        conversions=doc.get("conversions", 0),
        created_at=doc.get("created_at"),
        revoked_at=doc.get("revoked_at"),
    )


async def find_code(unit: ReferralsUnit, code: str) -> Code | None:
    found = await unit.find_one(CODES, {"_id": code})
    return None if found is None else _code(found)


def save_code(unit: ReferralsUnit, code: Code) -> None:
    unit.replace(CODES, _code_document(code))


async def fresh_code(unit: ReferralsUnit) -> str:
    """A new code no one holds (a clash among ~1.8e12 codes is rare, but it costs one read to rule out)."""
    while True:
        code = new_code()
        if await unit.find_one(CODES, {"_id": code}) is None:
            return code


async def customer_codes_issued(unit: ReferralsUnit) -> int:
    return await _count(unit, CODES, {"program": "customer"})


# --- referrals: conversions and refusals -----------------------------------------------------------


def _referral_document(referral: Referral) -> Document:
    doc: Document = {
        "_id": referral.order_id,
        "referral_id": referral.referral_id,
        "code": referral.code,
        "program": referral.program,
        "referrer_customer_id": referral.referrer_customer_id,
        "affiliate_id": referral.affiliate_id,
        "referee_customer_id": referral.referee_customer_id,
        "placed_at": referral.placed_at,
        "order_total": str(referral.order_total),
        "currency": referral.currency,
        "outcome": referral.outcome,
        "reason": referral.reason.value if isinstance(referral, Refusal) else None,
        "decided_at": referral.decided_at,
        "contested": None,
    }
    if isinstance(referral, Conversion):
        contest = referral.contest
        if contest is not None:
            doc["contested"] = {"reason": contest.reason.value, "order_id": contest.order_id, "at": contest.at}
        doc |= {"referee_email": referral.referee_email, "referee_address": referral.referee_address}
        if referral.commission is not None:
            doc |= _commission_fields(referral.commission)
    return doc


def _commission_fields(commission: Commission) -> Document:
    amounts = dict(commission.taken.by_refund)
    return {
        "commission_rate": str(commission.rate),
        "commission": str(commission.earned),
        "clawbacks": [
            {
                "refund_id": refund.refund_id,
                "refunded": str(refund.amount),
                "refunded_at": refund.refunded_at,
                "clawback": str(amounts[refund.refund_id]),
            }
            for refund in commission.refunds
        ],
        "contest_clawback": str(commission.taken.contested),
        "clawed_back": str(commission.taken.total),
        "commission_due": str(commission.due),
    }


def _referral(doc: Document) -> Referral:
    kept: dict[str, Any] = {
        "order_id": doc["_id"],
        "code": doc["code"],
        "program": doc["program"],
        "referrer_customer_id": doc["referrer_customer_id"],
        "affiliate_id": doc["affiliate_id"],
        "referee_customer_id": doc["referee_customer_id"],
        "placed_at": doc["placed_at"],
        "order_total": Decimal(doc["order_total"]),
        "currency": doc["currency"],
        "decided_at": doc["decided_at"],
    }
    if doc["outcome"] == REFUSED:
        return Refusal(**kept, reason=RefusalReason(doc["reason"]))
    contested = doc["contested"]
    return Conversion(
        **kept,
        referee_email=doc.get("referee_email"),
        referee_address=doc.get("referee_address"),
        commission=_commission(doc) if doc.get("commission") is not None else None,
        contest=None
        if contested is None
        else Contest(_contest_reason(contested["reason"]), contested["order_id"], contested["at"]),
    )


def _contest_reason(stored: str) -> ContestReason:
    reason = RefusalReason(stored)
    if reason is RefusalReason.RETURNING_CUSTOMER or reason is RefusalReason.OWN_ORDER:
        return reason
    raise ValueError(f"a conversion is not contested as {stored!r}")


def _commission(doc: Document) -> Commission:
    clawbacks = doc.get("clawbacks", [])
    return Commission(
        rate=Decimal(doc["commission_rate"]),
        earned=Decimal(doc["commission"]),
        refunds=tuple(
            Refund(c["refund_id"], Decimal(c["refunded"]), c["refunded_at"], doc["currency"]) for c in clawbacks
        ),
        taken=Clawbacks(
            tuple((c["refund_id"], Decimal(c["clawback"])) for c in clawbacks),
            Decimal(doc.get("contest_clawback", "0.00")),
            Decimal(doc.get("clawed_back", "0.00")),
        ),
    )


async def is_decided(unit: ReferralsUnit, order_id: str) -> bool:
    """Whether the order's code was decided already (a duplicate, or the same order told again)."""
    return await unit.find_one(REFERRALS, {"_id": order_id}) is not None


async def find_referral(unit: ReferralsUnit, order_id: str) -> Referral | None:
    found = await unit.find_one(REFERRALS, {"_id": order_id})
    return None if found is None else _referral(found)


def save_referral(unit: ReferralsUnit, referral: Referral) -> None:
    unit.replace(REFERRALS, _referral_document(referral))


async def open_conversions_referred_under(
    unit: ReferralsUnit, referrer_customer_id: str, emails: Sequence[str], addresses: Sequence[str]
) -> list[Conversion]:
    """The referrer's conversions not yet contested whose referee ordered under one of these identities."""
    found = await unit.find(
        REFERRALS,
        {
            "referrer_customer_id": referrer_customer_id,
            "outcome": CONVERTED,
            "contested": None,
            "$or": [{"referee_email": {"$in": list(emails)}}, {"referee_address": {"$in": list(addresses)}}],
        },
    )
    return [conversion for conversion in map(_referral, found) if isinstance(conversion, Conversion)]


async def referrals_of_code(unit: ReferralsUnit, code: str, limit: int) -> list[Referral]:
    """The orders that carried the code, newest first."""
    return [_referral(doc) for doc in await unit.find(REFERRALS, {"code": code}, sort=[("placed_at", -1)], limit=limit)]


async def refusals_of_code(unit: ReferralsUnit, code: str) -> dict[str, int]:
    """How many orders carrying the code were refused, by reason."""
    rows = await _aggregate(
        unit,
        REFERRALS,
        [{"$match": {"code": code, "outcome": REFUSED}}, {"$group": {"_id": "$reason", "count": {"$sum": 1}}}],
    )
    return {row["_id"]: row["count"] for row in rows}


async def contested_of_code(unit: ReferralsUnit, code: str) -> int:
    return await _count(unit, REFERRALS, {"code": code, "contested": {"$ne": None}})


async def refusals(unit: ReferralsUnit, reason: RefusalReason | None, limit: int) -> list[Refusal]:
    """Orders whose code was refused (for this reason only, if given), newest first."""
    query: Document = {"outcome": REFUSED} | ({} if reason is None else {"reason": reason.value})
    found = await unit.find(REFERRALS, query, sort=[("placed_at", -1)], limit=limit)
    return [refusal for refusal in map(_referral, found) if isinstance(refusal, Refusal)]


async def affiliate_conversions(unit: ReferralsUnit, affiliate_id: str) -> list[Conversion]:
    """An affiliate's conversions, newest first."""
    found = await unit.find(REFERRALS, {"affiliate_id": affiliate_id, "outcome": CONVERTED}, sort=[("placed_at", -1)])
    return [conversion for conversion in map(_referral, found) if isinstance(conversion, Conversion)]


async def customer_conversion_times(unit: ReferralsUnit) -> list[datetime]:
    """When refer-a-friend conversions happened: their orders' `placed_at` (affiliate sales are not invited)."""
    found = await unit.find(REFERRALS, {"outcome": CONVERTED, "program": "customer"}, projection={"placed_at": 1})
    return [doc["placed_at"] for doc in found]


async def affiliate_conversions_count(unit: ReferralsUnit) -> int:
    return await _count(unit, REFERRALS, {"outcome": CONVERTED, "program": "affiliate"})


async def refusals_by_reason(unit: ReferralsUnit) -> dict[str, int]:
    rows = await _aggregate(
        unit, REFERRALS, [{"$match": {"outcome": REFUSED}}, {"$group": {"_id": "$reason", "count": {"$sum": 1}}}]
    )
    return {row["_id"]: row["count"] for row in rows}


async def contested_by_reason(unit: ReferralsUnit) -> dict[str, int]:
    rows = await _aggregate(
        unit,
        REFERRALS,
        [{"$match": {"contested": {"$ne": None}}}, {"$group": {"_id": "$contested.reason", "count": {"$sum": 1}}}],
    )
    return {row["_id"]: row["count"] for row in rows}


async def codes_shared(unit: ReferralsUnit) -> int:
    """Customers' codes shared: used on an order by someone other than their referrer (domain.shares_code).

    The query is that rule: a customer-program referral not refused as the referrer's own order.
    """
    rows = await _aggregate(
        unit,
        REFERRALS,
        [
            {"$match": {"program": "customer", "reason": {"$ne": RefusalReason.OWN_ORDER.value}}},
            {"$group": {"_id": "$code"}},
            {"$count": "codes"},
        ],
    )
    return int(rows[0]["codes"]) if rows else 0


# --- refunds --------------------------------------------------------------------------------


async def find_refunds(unit: ReferralsUnit, order_id: str) -> tuple[Refund, ...]:
    """The refunds heard of for an order, in the order they were heard of."""
    found = await unit.find_one(REFUNDS, {"_id": order_id})
    return tuple(
        Refund(r["refund_id"], Decimal(r["amount"]), r["refunded_at"], r["currency"])
        for r in (found or {}).get("refunds", [])
    )


def save_refunds(unit: ReferralsUnit, order_id: str, refunds: Iterable[Refund]) -> None:
    heard = [
        {"refund_id": r.refund_id, "amount": str(r.amount), "currency": r.currency, "refunded_at": r.refunded_at}
        for r in refunds
    ]
    unit.replace(REFUNDS, {"_id": order_id, "refunds": heard})


# --- invitations ----------------------------------------------------------------------------


def save_invitation(unit: ReferralsUnit, invitation: Invitation) -> None:
    unit.replace(
        INVITATIONS,
        {
            "_id": invitation.feedback_id,
            "customer_id": invitation.customer_id,
            "code": invitation.code,
            "at": invitation.at,
        },
    )


async def invitation_times(unit: ReferralsUnit) -> list[datetime]:
    return [doc["at"] for doc in await unit.find(INVITATIONS, {}, projection={"at": 1})]


# --- affiliates -----------------------------------------------------------------------------


def _affiliate_document(affiliate: Affiliate) -> Document:
    rate = affiliate.commission_rate
    return {
        "_id": affiliate.affiliate_id,
        "name": affiliate.name,
        "email": affiliate.email,
        "email_identity": affiliate.email_identity,
        "customer_id": affiliate.customer_id,
        "commission_rate": None if rate is None else str(rate),
        "code": affiliate.code,
        "created_at": affiliate.created_at,
    }


def _affiliate(doc: Document) -> Affiliate:
    rate = doc.get("commission_rate")
    return Affiliate(
        affiliate_id=doc["_id"],
        name=doc["name"],
        email=doc["email"],
        email_identity=doc["email_identity"],
        customer_id=doc.get("customer_id"),
        commission_rate=None if rate is None else Decimal(rate),
        code=doc["code"],
        created_at=doc["created_at"],
    )


async def find_affiliate(unit: ReferralsUnit, affiliate_id: str) -> Affiliate | None:
    found = await unit.find_one(AFFILIATES, {"_id": affiliate_id})
    return None if found is None else _affiliate(found)


def save_affiliate(unit: ReferralsUnit, affiliate: Affiliate) -> None:
    unit.replace(AFFILIATES, _affiliate_document(affiliate))


async def affiliates(unit: ReferralsUnit, limit: int) -> list[Affiliate]:
    """Affiliates, the first enrolled first."""
    return [_affiliate(doc) for doc in await unit.find(AFFILIATES, {}, sort=[("created_at", 1)], limit=limit)]


# --- a customer's data (their export) ------------------------------------------------------------


@dataclass(frozen=True)
class CustomerRecords:
    """Everything referrals holds on one customer: their record, codes, referrals both ways, invitations, and
    the affiliate accounts enrolled under their customer id with those accounts' conversions."""

    customer: Customer | None
    codes: list[Code]
    as_referrer: list[Referral]
    as_referee: list[Referral]
    invitations: list[Invitation]
    affiliates: list[Affiliate]
    commissions: list[Conversion]  # the conversions of those affiliate accounts

    @property
    def empty(self) -> bool:
        return self.customer is None and not (self.codes or self.as_referrer or self.as_referee or self.affiliates)


async def customer_records(unit: ReferralsUnit, customer_id: str) -> CustomerRecords:
    by_time = [("placed_at", 1), ("_id", 1)]
    affiliates = [_affiliate(doc) for doc in await unit.find(AFFILIATES, {"customer_id": customer_id})]
    commissions = await unit.find(
        REFERRALS,
        {"affiliate_id": {"$in": [a.affiliate_id for a in affiliates]}, "outcome": CONVERTED},
        sort=by_time,
    )
    return CustomerRecords(
        customer=await find_customer(unit, customer_id),
        codes=[_code(doc) for doc in await unit.find(CODES, {"referrer_customer_id": customer_id})],
        as_referrer=[
            _referral(doc) for doc in await unit.find(REFERRALS, {"referrer_customer_id": customer_id}, sort=by_time)
        ],
        as_referee=[
            _referral(doc) for doc in await unit.find(REFERRALS, {"referee_customer_id": customer_id}, sort=by_time)
        ],
        invitations=[
            Invitation(doc["_id"], doc["customer_id"], doc["code"], doc["at"])
            for doc in await unit.find(INVITATIONS, {"customer_id": customer_id}, sort=[("at", 1)])
        ],
        affiliates=affiliates,
        commissions=[c for c in map(_referral, commissions) if isinstance(c, Conversion)],
    )


# --- reading what no single document holds --------------------------------------------------


async def _count(unit: ReferralsUnit, collection: str, query: Document) -> int:
    await unit.flush()
    return await unit.db[collection].count_documents(query, session=unit.session)


async def _aggregate(unit: ReferralsUnit, collection: str, pipeline: list[Document]) -> list[Document]:
    await unit.flush()
    return await (await unit.db[collection].aggregate(pipeline, session=unit.session)).to_list()
