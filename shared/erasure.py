"""How every service recognises an erased customer without keeping who they were.

Each service keeps an erasure mark in its `erased` collection under the SHA-256
of the customer id, so a late event about the customer is recognised and not
used to bring their personal data back; records kept for the shop's totals move
to an anonymous alias.

Erasure deletes the customer's document under their own id in every service, so
a customer whose document is there was not erased: the mark is only looked for
when the document is missing (`customer_erased`).
"""

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pymongo import DeleteMany, UpdateMany

from shared.aliases import ALIAS_PREFIX, ERASED, erased_alias, erased_id, is_alias
from shared.audit import AUDIT
from shared.mongo import OUTBOX
from shared.unit import FORGET_ONCE_SENT, Unit

__all__ = [
    "ALIAS_PREFIX",
    "ERASED",
    "customer_erased",
    "erased_alias",
    "erased_id",
    "forget_once_sent_if_erased",
    "forget_sent_events",
    "is_alias",
    "mark_erased",
    "preload_customers",
    "rename_audit_targets",
]


def mark_erased(unit: Unit[Any], customer_id: str, at: datetime) -> None:
    """Remember the erasure, and let the audit trail name the customer by their alias from now on."""
    alias = erased_alias(customer_id)
    unit.replace(ERASED, {"_id": erased_id(customer_id), "alias": alias, "erased_at": at})
    unit.write(
        AUDIT,
        UpdateMany(
            {"target.id": customer_id},
            {"$set": {"target.$[named].id": alias}},
            array_filters=[{"named.id": customer_id}],
        ),
    )


def rename_audit_targets(unit: Unit[Any], old: str, new: str) -> None:
    """Name a record the audit trail targets by its new id (one whose id named an erased customer, re-keyed)."""
    unit.write(
        AUDIT,
        UpdateMany({"target.id": old}, {"$set": {"target.$[named].id": new}}, array_filters=[{"named.id": old}]),
    )


def forget_sent_events(unit: Unit[Any], customer_id: str, *also_naming: str) -> None:
    """Delete the outbox's sent events about the customer (they stay a week for inspection otherwise), and
    have those still waiting for the broker deleted once it has them.

    Events about a customer carry their id as the subject; `also_naming` lists the
    body fields of events that name the customer otherwise (a referrer, say).
    """
    fields = ["body.subject", *(f"body.data.{field}" for field in also_naming)]
    unit.write(OUTBOX, *(DeleteMany({field: customer_id, "status": "sent"}) for field in fields))
    unit.write(
        OUTBOX,
        *(
            UpdateMany({field: customer_id, "status": "pending"}, {"$set": {FORGET_ONCE_SENT: True}})
            for field in fields
        ),
    )


async def forget_once_sent_if_erased(unit: Unit[Any]) -> None:
    """Have this unit's events about an erased customer (a shop's late webhook, say) forgotten once sent.

    The other services must hear of them (to keep them anonymous, or nothing); this outbox must not keep them.
    """
    subjects = {event.subject for event in unit.pending_events if event.subject is not None}
    if not subjects:
        return
    marks = {erased_id(subject): subject for subject in subjects}
    found = await unit.find(ERASED, {"_id": {"$in": list(marks)}}, projection={"_id": 1})
    erased = {marks[doc["_id"]] for doc in found}
    unit.forget_once_sent.update(event.id for event in unit.pending_events if event.subject in erased)


async def _marked_erased(unit: Unit[Any], customer_id: str) -> bool:
    return await unit.find_one(ERASED, {"_id": erased_id(customer_id)}) is not None


async def customer_erased(unit: Unit[Any], collection: str, customer_id: str) -> bool:
    """Whether the customer was erased, given the collection holding one document per customer."""
    return await unit.find_one(collection, {"_id": customer_id}) is None and await _marked_erased(unit, customer_id)


async def preload_customers(unit: Unit[Any], collection: str, customer_ids: Iterable[str]) -> None:
    """Read a batch's customer documents, and the erasure marks of those without one, so handlers ask for free.

    The marks take a second query only when the batch has customers without a document.
    """
    wanted = set(customer_ids)
    await unit.preload(collection, wanted)
    unknown = [c for c in wanted if await unit.find_one(collection, {"_id": c}) is None]  # preloaded: no round trip
    await unit.preload(ERASED, (erased_id(c) for c in unknown))
