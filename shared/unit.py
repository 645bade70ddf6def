"""A unit of work: one MongoDB transaction, with the events it will publish.

Handlers and HTTP routes change state through a Unit; events they publish are
written to the outbox in the same transaction (DESIGN.md §5). `Transactions`
is the one way a unit is run: the group commit runs a batch of handlers
through it, an HTTP route or a scheduled job one piece of work.
"""

import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from pymongo import AsyncMongoClient, DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession

from shared.aliases import ERASED, erased_alias, erased_id
from shared.audit import AUDIT, Call, audit_record, current_call
from shared.events import Envelope, envelope_for
from shared.mongo import OUTBOX, Database
from shared.settings import ServiceSettings

T = TypeVar("T")
S = TypeVar("S", bound=ServiceSettings)

WriteOperation = InsertOne[Any] | UpdateOne | UpdateMany | ReplaceOne[Any] | DeleteOne | DeleteMany
OutboxEntry = dict[str, Any]
Clock = Callable[[], datetime]

# An outbox entry flagged so is deleted once the broker has it, not kept for inspection (shared/erasure.py).
FORGET_ONCE_SENT = "forget_once_sent"
# How long the process that committed an outbox entry has to publish it before any relay may take it over.
OUTBOX_LEASE = timedelta(seconds=30)


def system_clock() -> datetime:
    """The time now, in UTC: the clock of a running service (tests may give a unit another)."""
    return datetime.now(UTC)


@dataclass
class Unit(Generic[S]):
    """What a handler gets: its writes, reads and published events join one transaction.

    Writes are buffered and sent as one bulk write per collection when the unit
    commits or before the next read, so a batch of handlers costs a few round
    trips, not one per write, and every read still sees the writes before it.
    Read through `find_one` / `find` (or pass `session=unit.session` after
    `await unit.flush()`), never around the unit. `preload` reads many documents
    by _id in one query and `replace` writes a whole document, so a batch's
    handlers can read and write the same documents without a round trip each.
    """

    db: Database
    session: AsyncClientSession
    settings: S  # the service's own settings, typed: `unit.settings.invite_every_days`
    source: str  # the service publishing this unit's events (the CloudEvents `source`)
    clock: Clock = system_clock
    # The relay that publishes this unit's events right after the commit; their outbox entries are leased to it.
    outbox_owner: str | None = None
    pending_events: list[Envelope[Any]] = field(default_factory=list)
    pending_writes: list[tuple[str, WriteOperation]] = field(default_factory=list)
    # Documents by collection and _id as this unit last saw or wrote them (None: no such document).
    known: dict[str, dict[Any, dict[str, Any] | None]] = field(default_factory=dict)
    outbox_entries: list[OutboxEntry] = field(default_factory=list)  # written by commit_writes
    # Events whose outbox entries are deleted once sent, not kept for inspection (they name an erased customer).
    forget_once_sent: set[str] = field(default_factory=set)
    after_commit: list[Callable[[], None]] = field(default_factory=list)

    def write(self, collection: str, *operations: WriteOperation) -> None:
        """Apply these writes (in order) when the unit commits."""
        self.pending_writes.extend((collection, operation) for operation in operations)
        self.known.pop(collection, None)  # what they change is no longer known here

    def append(self, collection: str, document_id: Any, items: Mapping[str, list[Any]]) -> None:
        """Append `items` to the lists of one document (created when missing); if it is known here, it stays known.

        One `$push` whatever the document's size: for a document that only grows, such as a history.
        """
        pushes = {name: {"$each": values} for name, values in items.items() if values}
        if not pushes:
            return
        self.pending_writes.append((collection, UpdateOne({"_id": document_id}, {"$push": pushes}, upsert=True)))
        known = self.known.get(collection, {})
        if document_id in known:
            grown = dict(known[document_id] or {"_id": document_id})
            for name, values in items.items():
                grown[name] = [*grown.get(name, []), *values]
            known[document_id] = grown

    def replace(self, collection: str, document: dict[str, Any]) -> None:
        """Store `document` whole under its _id (insert or replace) when the unit commits."""
        self.update(collection, document, ReplaceOne({"_id": document["_id"]}, document, upsert=True))

    def update(self, collection: str, document: dict[str, Any], operation: WriteOperation) -> None:
        """Apply `operation`, which turns the stored document into `document`; later reads here get `document`.

        For a large document that changes a little (a `$push`, a few `$set`s) this
        sends the change, not the document.
        """
        self.pending_writes.append((collection, operation))
        self.known.setdefault(collection, {})[document["_id"]] = document

    async def preload(self, collection: str, ids: Iterable[Any]) -> None:
        """Read these documents in one query, so `find_one({"_id": …})` for them needs no round trip."""
        known = self.known.setdefault(collection, {})
        missing = list({i for i in ids if i not in known})
        if not missing:
            return
        await self.flush()
        known.update(dict.fromkeys(missing))
        async for doc in self.db[collection].find({"_id": {"$in": missing}}, session=self.session):
            known[doc["_id"]] = doc

    def now(self) -> datetime:
        """The unit's clock: every use case asks it, so a test can set the time."""
        return self.clock()

    def publish(
        self,
        data: BaseModel,
        *,
        subject: str | None,
        cause: Envelope[Any] | None = None,
        event_id: str | None = None,
        forget_once_sent: bool = False,
    ) -> Envelope[Any]:
        """Publish the event carrying `data` once this unit commits (through the outbox); `cause` continues its chain.

        `event_id` gives it a deterministic id (from a platform's own ids, say), so telling one fact twice is one event.
        `forget_once_sent` deletes its outbox entry once the broker has it (CustomerErased names whom it erases).
        """
        event = envelope_for(data).new(
            data, source=self.source, subject=subject, cause=cause, event_id=event_id, time=self.now()
        )
        self.pending_events.append(event)
        if forget_once_sent:
            self.forget_once_sent.add(event.id)
        return event

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the transaction has committed (say, to count something in a metric once)."""
        self.after_commit.append(callback)

    def committed(self) -> None:
        """The transaction committed: run what waited for it."""
        for callback in self.after_commit:
            callback()

    async def find_one(self, collection: str, query: Mapping[str, Any], **options: Any) -> dict[str, Any] | None:
        wanted = query.get("_id")
        if not options and query.keys() == {"_id"} and isinstance(wanted, str | int):
            known = self.known.get(collection, {})
            if wanted in known:
                return known[wanted]
        await self.flush()
        return await self.db[collection].find_one(query, session=self.session, **options)

    async def find(self, collection: str, query: Mapping[str, Any], **options: Any) -> list[dict[str, Any]]:
        await self.flush()
        return await self.db[collection].find(query, session=self.session, **options).to_list()

    async def flush(self) -> None:
        """Send the buffered writes: one ordered bulk write per collection.

        Writes to one collection keep their order; writes to different collections
        do not depend on each other, so each collection's go out together.
        """
        writes, self.pending_writes = self.pending_writes, []
        by_collection: dict[str, list[WriteOperation]] = {}
        for collection, operation in writes:
            by_collection.setdefault(collection, []).append(operation)
        for collection, operations in by_collection.items():
            await self.db[collection].bulk_write(operations, ordered=True, session=self.session)

    async def commit_writes(self) -> None:
        """Flush the buffered writes and the outbox entries of the published events (kept in `outbox_entries`)."""
        if self.pending_events:
            now = self.now()
            self.outbox_entries = [
                outbox_entry(event, now, self.outbox_owner, forget_once_sent=event.id in self.forget_once_sent)
                for event in self.pending_events
            ]
            self.write(OUTBOX, *(InsertOne(entry) for entry in self.outbox_entries))
        await self.flush()


def outbox_entry(
    event: Envelope[Any], now: datetime, owner: str | None = None, *, forget_once_sent: bool = False
) -> OutboxEntry:
    """An outbox entry; leased to `owner` when that relay publishes it straight after the commit.

    One to be forgotten once sent is deleted by the relay when the broker confirms it (shared/erasure.py).
    """
    entry = {
        "_id": event.id,
        "type": event.type,
        "routing_key": event.routing_key,
        "body": event.model_dump(mode="json"),
        "status": "pending",
        "created_at": now,
        "attempts": 0,
        "next_attempt_at": now,
        "lease_until": now,
    }
    if owner is not None:
        entry |= {"lease_until": now + OUTBOX_LEASE, "lease_owner": owner}
    if forget_once_sent:
        entry[FORGET_ONCE_SENT] = True
    return entry


async def _record(unit: Unit[Any], call: Call) -> None:
    """The call's audit record; a target that is an erased customer (now or before) is named by their alias."""
    marks = {erased_id(value): value for value in call.target.values()}
    erased = {
        marks[doc["_id"]] for doc in await unit.find(ERASED, {"_id": {"$in": list(marks)}}, projection={"_id": 1})
    }
    target = {name: erased_alias(value) if value in erased else value for name, value in call.target.items()}
    unit.write(AUDIT, InsertOne(audit_record(replace(call, target=target), str(uuid.uuid4()), unit.now())))


@dataclass(frozen=True)
class Transactions(Generic[S]):
    """The one transaction runner of a service: what its units share, and how one is run and handed over.

    After the commit, the unit's `on_commit` callbacks run and its outbox entries go to `hand_over`
    (the relay, which publishes them at once; entries it misses are found by its poll).
    """

    client: AsyncMongoClient[dict[str, Any]]
    db: Database
    settings: S
    source: str
    clock: Clock = system_clock
    outbox_owner: str | None = None
    hand_over: Callable[[list[OutboxEntry]], None] = lambda entries: None

    async def run(self, work: Callable[[Unit[S]], Awaitable[T]]) -> T:
        """Run `work` in one transaction with its outbox writes and return its result.

        PyMongo retries the whole callback on transient errors, so `work` must not
        have side effects outside MongoDB (put those in `unit.on_commit`).
        """

        call = current_call.get()  # an API call that may change state: its audit record joins the transaction

        async def attempt(session: AsyncClientSession) -> tuple[T, Unit[S]]:
            unit = Unit(self.db, session, self.settings, self.source, self.clock, self.outbox_owner)
            result = await work(unit)
            if call is not None and not call.recorded:
                await _record(unit, call)
            await unit.commit_writes()
            return result, unit

        async with self.client.start_session() as session:
            result, unit = await session.with_transaction(attempt)
        if call is not None:
            call.recorded = True  # once per call, however many transactions it runs
        unit.committed()
        if unit.outbox_entries:
            self.hand_over(unit.outbox_entries)
        return result
