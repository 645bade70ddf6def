"""MongoDB for referrals: customers as attribution sees them, codes, referrals, refunds, invitations, affiliates.

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
- erased: sha256 of erased customer ids, so late events do not bring them back.
"""

from datetime import datetime
from decimal import Decimal
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel

from services.referrals.domain import Code, PlacedOrder, Refund, new_code
from services.referrals.settings import ReferralsUnit
from shared.mongo import Database
from shared.settings import ServiceSettings

CUSTOMERS = "customers"
CODES = "codes"
REFERRALS = "referrals"
REFUNDS = "refunds"
INVITATIONS = "invitations"
AFFILIATES = "affiliates"

CONVERTED, REFUSED = "converted", "refused"


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


# --- customers ------------------------------------------------------------------------------


def new_customer(customer_id: str) -> dict[str, Any]:
    return {
        "_id": customer_id,
        "first_order": None,  # {"placed_at", "order_id"}
        "emails": [],  # email_identity() of every order's e-mail
        "addresses": [],  # address_identity() of every order's shipping address
        "code": None,  # their own referral code
        "referral": None,  # the conversion they were referred by: {"order_id", "placed_at", "referral_id"}
        "last_invited_at": None,
    }


def placed_order(mark: dict[str, Any] | None) -> PlacedOrder | None:
    return None if mark is None else PlacedOrder(mark["placed_at"], mark["order_id"])


def order_mark(order: PlacedOrder) -> dict[str, Any]:
    return {"placed_at": order.placed_at, "order_id": order.order_id}


# --- codes ----------------------------------------------------------------------------------


def code_from(doc: dict[str, Any]) -> Code:
    return Code(
        code=doc["_id"],
        referrer_customer_id=doc.get("referrer_customer_id"),
        affiliate_id=doc.get("affiliate_id"),
        program=doc["program"],
        expires_at=doc.get("expires_at"),
        max_conversions=doc.get("max_conversions"),
        conversions=doc.get("conversions", 0),
    )


def new_code_doc(
    code: str,
    at: datetime,
    *,
    referrer_customer_id: str | None = None,
    affiliate_id: str | None = None,
    expires_at: datetime | None = None,
    max_conversions: int | None = None,
) -> dict[str, Any]:
    return {
        "_id": code,
        "program": "affiliate" if affiliate_id is not None else "customer",
        "referrer_customer_id": referrer_customer_id,
        "affiliate_id": affiliate_id,
        "created_at": at,
        "expires_at": expires_at,
        "max_conversions": max_conversions,
        "conversions": 0,
        "revoked_at": None,  # set when the referrer is erased: the code converts no more
    }


async def fresh_code(unit: ReferralsUnit) -> str:
    """A new code no one holds (a clash among ~1.8e12 codes is rare, but it costs one read to rule out)."""
    while True:
        code = new_code()
        if await unit.find_one(CODES, {"_id": code}) is None:
            return code


# --- refunds --------------------------------------------------------------------------------


def refunds_from(doc: dict[str, Any] | None, currency: str) -> list[Refund]:
    """The refunds of an order in its currency (one in another currency cannot be set against it)."""
    return [
        Refund(r["refund_id"], Decimal(r["amount"]), r["refunded_at"])
        for r in (doc or {}).get("refunds", [])
        if r["currency"] == currency
    ]
