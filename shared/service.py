"""How a service is put together and run: one recipe for all four.

A service describes itself with a `ServiceSpec` (its handler table, the events
it publishes, its HTTP routes, its indexes and background jobs); `build_app`
turns that into a FastAPI app whose lifespan opens MongoDB, starts the group
commit, the outbox relay and the consumer, and on SIGTERM stops consuming,
lets in-flight messages finish, and closes everything in order.
"""

import asyncio
import gc
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, TypeVar

import structlog
import uvicorn
from aio_pika.exceptions import AMQPError
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from faststream.rabbit import RabbitBroker
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field
from pymongo import AsyncMongoClient
from yarl import URL

from shared import deadletters
from shared.audit import AUDIT
from shared.consumer import Consumer, Handlers, QueueConsumer, declare_topology, describe_subscriber
from shared.events import Envelope
from shared.groupcommit import GroupCommit, Prefetch
from shared.http import (
    ADMIN_ONLY,
    GUARDED_ANSWERS,
    PUBLIC_ANSWERS,
    ApiGuard,
    BodyLimit,
    answer_405_with_every_method,
    error,
    health_routes,
)
from shared.logs import configure_logging
from shared.metrics import ServiceMetrics
from shared.mongo import Database, database, end_orphaned_transactions, ensure_plumbing_indexes, open_client, ping
from shared.outbox import EventPublisher, OutboxRelay
from shared.settings import ServiceSettings
from shared.types import Id
from shared.unit import Clock, Transactions, Unit, system_clock

T = TypeVar("T")
log = structlog.get_logger("rapport.service")


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # its queue, database and connection names (tests run copies under other names)
    handlers: Handlers
    source: str = ""  # the CloudEvents `source` of what it publishes; the name when unset
    publishes: Sequence[type[Envelope[Any]]] = ()
    api: APIRouter | None = None  # behind the admin key
    public_api: APIRouter | None = None  # routes that check who calls them themselves (signed webhooks, tokens)
    ensure_indexes: Callable[[Database, ServiceSettings], Awaitable[None]] | None = None
    background: Sequence[Callable[["Runtime"], Coroutine[Any, Any, None]]] = field(default=())
    metrics: CollectorRegistry | None = None  # the service's own metrics, served with the shared ones
    prefetch: Prefetch | None = None  # reads a whole batch's documents in one go (see Unit.preload)


@dataclass
class Runtime:
    """Everything a running service holds; routes reach it with `Depends(runtime)`."""

    spec: ServiceSpec
    settings: ServiceSettings
    broker: RabbitBroker
    client: AsyncMongoClient[dict[str, Any]]
    db: Database
    metrics: ServiceMetrics
    group: GroupCommit
    publisher: EventPublisher
    relay: OutboxRelay
    consumer: Consumer
    queue_consumer: QueueConsumer
    transactions: Transactions[Any]

    async def transaction(self, work: Callable[[Unit[Any]], Awaitable[T]]) -> T:
        """Run `work` in one transaction; events it publishes go out through the outbox."""
        return await self.transactions.run(work)

    def now(self) -> datetime:
        """The service's clock, the one its units read."""
        return self.transactions.clock()

    async def readiness(self) -> dict[str, str]:
        broker_up, database_up = await asyncio.gather(self.broker.ping(timeout=2.0), ping(self.client))
        return {
            "broker": "ok" if broker_up else "unreachable",
            "database": "ok" if database_up else "unreachable",
            "consumer": self.queue_consumer.state(),
        }

    async def render_metrics(self) -> bytes:
        try:
            self.metrics.outbox_backlog.set(await self.relay.backlog())
        except Exception as error:  # noqa: BLE001 - metrics must render while MongoDB is away
            log.warning("outbox_backlog_unavailable", error=repr(error))
        try:
            self.metrics.unrouted.set(await self.queue_consumer.waiting(self.settings.topology.unrouted_queue.name))
        except Exception as error:  # noqa: BLE001 - metrics must render while the broker is away
            log.warning("unrouted_count_unavailable", error=repr(error))
        return self.metrics.render()


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def build_runtime(
    spec: ServiceSpec, settings: ServiceSettings, *, documenting: bool = False, clock: Clock = system_clock
) -> Runtime:
    """Wire everything without any I/O; `documenting` adds the subscriber for the AsyncAPI generator."""
    topology = settings.topology
    metrics = ServiceMetrics(spec.name, extra=spec.metrics)
    broker = RabbitBroker(
        str(URL(settings.rabbitmq_url).update_query(name=f"rapport-{spec.name}")),
        logger=logging.getLogger(f"rapport.{spec.name}.broker"),
        log_level=logging.DEBUG,
        graceful_timeout=settings.shutdown_grace_seconds,
        reconnect_interval=1.0,
        description=f"Rapport {spec.name}",
    )
    client = open_client(settings.mongodb_url, app_name=f"rapport-{spec.name}")
    db = database(client, topology.database(spec.name))
    publisher = EventPublisher(settings.rabbitmq_url, topology.events.name, name=f"rapport-{spec.name}-outbox")
    relay = OutboxRelay(
        db,
        publisher.publish,
        batch_size=settings.batch_size,
        on_published=metrics.published.inc,
        on_failed=metrics.publish_failures.inc,
    )
    transactions = Transactions(
        client,
        db,
        settings,
        source=spec.source or spec.name,
        clock=clock,
        outbox_owner=relay.owner,
        hand_over=relay.send,
    )
    group = GroupCommit(transactions, on_batch=metrics.batch_size.observe, prefetch=spec.prefetch)
    consumer = Consumer(spec.name, topology, spec.handlers, metrics, settings.retry_backoff_seconds)
    queue_consumer = QueueConsumer(
        consumer,
        group,
        broker,
        rabbitmq_url=settings.rabbitmq_url,
        max_batch=settings.batch_size,
        max_wait_seconds=settings.batch_wait_ms / 1000,
        prefetch=2 * settings.batch_size,  # the next batch arrives while one commits
        grace_seconds=settings.shutdown_grace_seconds,
        max_message_bytes=settings.max_message_bytes,
        stall_seconds=settings.consumer_stall_seconds,
    )
    if documenting:
        describe_subscriber(broker, consumer)
    for event in spec.publishes:
        broker.publisher(
            exchange=topology.events,
            routing_key=event.routing_key,
            schema=event,
            title=f"{topology.events.name}:{event.routing_key}",
            description=event.__doc__,
            persist=True,
        )
    return Runtime(
        spec, settings, broker, client, db, metrics, group, publisher, relay, consumer, queue_consumer, transactions
    )


def build_app(spec: ServiceSpec, settings: ServiceSettings, *, clock: Clock = system_clock) -> FastAPI:
    rt = build_runtime(spec, settings, clock=clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if ended := await end_orphaned_transactions(rt.client):  # a killed replica's: they hold its messages' documents
            log.info("orphaned_transactions_ended", count=ended)
        await ensure_plumbing_indexes(rt.db)
        if spec.ensure_indexes is not None:
            await spec.ensure_indexes(rt.db, settings)
        await rt.broker.start()
        await declare_topology(settings.rabbitmq_url, rt.consumer)
        await rt.publisher.start()
        rt.relay.start()
        await rt.queue_consumer.start()
        jobs = [asyncio.create_task(job(rt), name=job.__name__) for job in spec.background]
        # What exists now (modules, models, clients) lives as long as the process: keep it out of every
        # garbage collection, whose full passes over it otherwise cost tens of milliseconds each.
        gc.collect()
        gc.freeze()
        log.info("service_started", service=spec.name, port=settings.http_port, prefix=settings.crm_prefix)
        try:
            yield
        finally:
            log.info("service_stopping", service=spec.name)
            await rt.queue_consumer.stop()  # stops consuming, commits and acks what has arrived
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            await rt.relay.stop()
            await rt.publisher.stop()
            await rt.broker.stop()
            await rt.client.close()
            log.info("service_stopped", service=spec.name)

    app = FastAPI(title=f"Rapport {spec.name}", lifespan=lifespan)
    app.state.runtime = rt
    for router in (spec.api, spec.public_api):
        if router is not None:
            answer_405_with_every_method(router)
    public = list(app.router.routes)  # the OpenAPI document and its pages
    protected = [audit_routes(), dead_letter_routes(), *([spec.api] if spec.api is not None else [])]
    app.include_router(health := health_routes(rt.readiness, rt.render_metrics))
    public += health.routes
    if spec.public_api is not None:
        app.include_router(spec.public_api, responses=PUBLIC_ANSWERS)
        public += spec.public_api.routes
    for router in protected:
        app.include_router(router, responses=GUARDED_ANSWERS)
    # The guard is outermost: a request is authenticated before its body is counted, read or validated.
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(
        ApiGuard, keys=settings.key_ring, protected=[r for p in protected for r in p.routes], public=public
    )
    return app


class AuditRecord(BaseModel):
    record_id: str
    actor: str = Field(description="The key's name, and the person the console acted for: console/eva@shop.example")
    action: str = Field(description="Method and route, e.g. POST /customers/{customer_id}/erase")
    target: dict[str, str] = Field(description="The route's path parameters (an erased customer's by alias)")
    at: datetime


def audit_routes() -> APIRouter:
    """`GET /audit`: who changed what, newest first (admin keys only)."""
    router = APIRouter(tags=["audit"])

    @router.get("/audit", openapi_extra=ADMIN_ONLY)
    async def audit(
        rt: Annotated[Runtime, Depends(runtime)],
        target: str | None = None,
        actor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[AuditRecord]:
        query: dict[str, Any] = {}
        if target is not None:
            query["target.id"] = target
        if actor is not None:
            query["actor"] = actor
        found = rt.db[AUDIT].find(query).sort("at", -1).limit(limit)
        return [
            AuditRecord(
                record_id=doc["_id"],
                actor=doc["actor"],
                action=doc["action"],
                target={named["name"]: named["id"] for named in doc["target"]},
                at=doc["at"],
            )
            async for doc in found
        ]

    return router


class DeadLetterOut(BaseModel):
    """One dead letter: its ids, type and why it was dead-lettered; never its body (it carries personal data)."""

    message_id: str | None
    event_type: str | None
    correlation_id: str | None
    reason: str = Field(description="x-rapport-error, or the broker's own reason (`broker: expired in …`)")
    field: str | None = Field(description="The field the reason names, when it names one.")
    deliveries: int | None = Field(description="Deliveries tried before it was dead-lettered.")
    replays: int = Field(description="How often it was replayed already.")


class DeadLettersOut(BaseModel):
    queue: str
    waiting: int = Field(description="Dead letters in the queue now, listed or not.")
    dead_letters: list[DeadLetterOut] = Field(description="The next ones; a listing moves them to the back.")


class ReplayIn(BaseModel):
    """Which dead letters to move back: those with these message ids, else the first `limit`, else all."""

    model_config = ConfigDict(extra="forbid")
    message_ids: list[Id] = Field(default_factory=list, max_length=1000)
    limit: int | None = Field(None, ge=1, le=100_000)


class ReplayOut(BaseModel):
    queue: str = Field(description="Where they went: the service's queue, or the events exchange (unrouted).")
    replayed: list[str] = Field(description="Message ids moved back.")
    left: int = Field(description="Dead letters still waiting.")


DeadLetterQueue = Annotated[
    str,
    Query(
        pattern="^(own|unrouted)$",
        description="`own`: this service's dead letters; `unrouted`: events no service binds (crm.unrouted).",
    ),
]


def dead_letter_routes() -> APIRouter:
    """`GET /dead-letters` and `POST /dead-letters/replay` (admin keys): shared/deadletters.py over HTTP."""
    router = APIRouter(tags=["dead letters"])
    broker_away: dict[int | str, dict[str, Any]] = {503: error("The broker did not answer or refused; nothing moved.")}

    def which(rt: Runtime, queue: str) -> str:
        return deadletters.UNROUTED if queue == "unrouted" else rt.spec.name

    @router.get("/dead-letters", openapi_extra=ADMIN_ONLY, responses=broker_away)
    async def list_dead_letters(
        rt: Annotated[Runtime, Depends(runtime)],
        queue: DeadLetterQueue = "own",
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> DeadLettersOut:
        """The next `limit` dead letters, with their reasons (what `make dead-letters` lists)."""
        topology, service = rt.settings.topology, which(rt, queue)
        queue_name = deadletters.dead_letter_queue_name(topology, service)
        try:
            found = await deadletters.list_dead_letters(rt.settings.rabbitmq_url, topology, service, limit)
            waiting = await rt.queue_consumer.waiting(queue_name)
        except (deadletters.DeadLetterError, AMQPError, OSError) as failure:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"broker: {failure}") from failure
        return DeadLettersOut(
            queue=queue_name,
            waiting=waiting,
            dead_letters=[DeadLetterOut.model_validate(letter, from_attributes=True) for letter in found],
        )

    @router.post("/dead-letters/replay", openapi_extra=ADMIN_ONLY, responses=broker_away)
    async def replay_dead_letters(
        body: ReplayIn, rt: Annotated[Runtime, Depends(runtime)], queue: DeadLetterQueue = "own"
    ) -> ReplayOut:
        """Move dead letters back to the service's queue after a fix (unrouted ones: to the events exchange)."""
        topology, service = rt.settings.topology, which(rt, queue)
        try:
            done = await deadletters.replay_dead_letters(
                rt.settings.rabbitmq_url, topology, service, limit=body.limit, ids=body.message_ids
            )
        except (deadletters.DeadLetterError, AMQPError, OSError) as failure:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"broker: {failure}") from failure
        await rt.transaction(_audited_only)  # the replay's audit record: who moved which letters back
        return ReplayOut(queue=deadletters.replayed_to(topology, service), replayed=done.replayed, left=done.left)

    return router


async def _audited_only(unit: Unit[Any]) -> None:
    """A unit that changes nothing in the database: it writes the call's audit record (shared/unit.py)."""


def serve(spec: ServiceSpec, settings: ServiceSettings) -> None:
    """`python -m services.<name>`: run until SIGTERM or Ctrl-C, then drain and exit 0."""
    configure_logging(settings.log_level, settings.log_format)
    # uvicorn drains on SIGTERM/SIGINT and then re-raises the signal to the handler it found;
    # after a drained stop that is a normal exit, so the handler it finds does nothing.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: None)
    uvicorn.run(
        build_app(spec, settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )
