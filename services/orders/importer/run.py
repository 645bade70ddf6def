"""One import run: read the export, publish each order's events with publisher confirms, keep a checkpoint.

The events go out in windows of whole orders through the services' own publisher (shared/outbox.py's
EventPublisher: persistent, DESIGN.md §3's properties, confirms awaited). After a window is
confirmed, the checkpoint — a small JSON file, by default next to the CSV — records how many orders
of the file are done, with the file's SHA-256 so that it is never applied to another export. A run
that stops (a crash, Ctrl-C, the broker away for minutes) is started again with the same command
and goes on after the last confirmed window; the orders before it are read again for the summary
but not published. What was in flight when it stopped (up to WINDOWS_IN_FLIGHT windows) may go out
a second time with the same ids, which the consumers' inboxes recognise. Nothing here needs any
service's database.
"""

import asyncio
import hashlib
import json
import os
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import TextIO
from urllib.parse import quote

import aio_pika
import httpx
from aio_pika.exceptions import ChannelNotFoundEntity

from services.orders.importer.exports import Platform, read_orders
from services.orders.importer.history import Outcome, Tally, less_what_was_told, told_by_webhooks, translate
from shared.events import OrderRefundedEvent
from shared.outbox import Publish
from shared.topology import Topology
from shared.unit import OutboxEntry, outbox_entry

WINDOW_EVENTS = 500  # events per confirmed window; the checkpoint moves once per window
WINDOWS_IN_FLIGHT = 4  # windows awaiting their confirms at once (the broker's fsync latency, overlapped)
MAX_ATTEMPTS = 12  # a window refused this often (the broker away for about a minute and a half) stops the run
STATE_VERSION = 1


class ImportStopped(RuntimeError):
    """The broker kept refusing the events; the checkpoint holds what was confirmed, run the command again."""


# What the webhooks told of an order's refunds already, per currency (`OrdersApi.told`), or None: not asked.
ToldRefunds = Callable[[str], Awaitable[Mapping[str, Decimal]]]


class OrdersApi:
    """The orders service's API, asked which refunds of an order the webhooks told already (`--orders-url`)."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http, self.url = http, url.rstrip("/")

    async def told(self, order_id: str) -> Mapping[str, Decimal]:
        try:
            answer = await self.http.get(f"{self.url}/orders/{quote(order_id, safe='')}")
        except httpx.HTTPError as error:
            raise ImportStopped(f"orders at {self.url} did not answer ({error!r}); run the command again") from error
        if answer.status_code == 404:
            return {}
        if not answer.is_success:
            raise ImportStopped(f"orders at {self.url} answered {answer.status_code} for order {order_id!r}")
        return told_by_webhooks(order_id, answer.json()["refunds"])


class WrongCheckpoint(ValueError):
    """The checkpoint file belongs to another export (the file changed since): refuse rather than skip orders."""


class MissingQueues(RuntimeError):
    """The services' queues are not there yet: the history would reach no service."""


# --- the checkpoint ----------------------------------------------------------------------------------------


def fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Checkpoint:
    """How many orders of one export are published and confirmed; saved atomically (write, then rename)."""

    path: Path
    export_sha256: str
    orders_done: int = 0
    finished: bool = False

    @classmethod
    def load(cls, path: Path, export_sha256: str) -> "Checkpoint":
        if not path.exists():
            return cls(path, export_sha256)
        state = json.loads(path.read_text())
        if state.get("export_sha256") != export_sha256:
            raise WrongCheckpoint(
                f"{path} is the checkpoint of another export (its SHA-256 differs): remove it to import this file "
                "from the start (events already published keep their ids, so nothing counts twice)"
            )
        return cls(path, export_sha256, int(state["orders_done"]), bool(state.get("finished", False)))

    def save(self, orders_done: int, *, finished: bool = False) -> None:
        self.orders_done, self.finished = orders_done, finished
        state = {
            "version": STATE_VERSION,
            "export_sha256": self.export_sha256,
            "orders_done": orders_done,
            "finished": finished,
            "saved_at": datetime.now(UTC).isoformat(),
        }
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(temporary, self.path)


def default_state_path(export: Path) -> Path:
    return export.with_name(export.name + ".import-state.json")


# --- progress ----------------------------------------------------------------------------------------------


class Progress:
    """A progress line on stderr: orders, rows/s and the time left, from how far into the file the reader is."""

    def __init__(self, total_bytes: int, stream: TextIO = sys.stderr, every_seconds: float | None = None) -> None:
        self._total = max(total_bytes, 1)
        self._stream = stream
        self._tty = stream.isatty()
        self._every = every_seconds if every_seconds is not None else (0.25 if self._tty else 5.0)
        self._started = time.monotonic()
        self._shown = 0.0
        self.read_bytes = 0

    def count(self, lines: Iterable[str]) -> Iterator[str]:
        for line in lines:
            self.read_bytes += len(line)  # characters: close enough to bytes for a time estimate
            yield line

    def show(self, tally: Tally, published: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._shown < self._every:
            return
        self._shown = now
        elapsed = max(now - self._started, 1e-6)
        share = min(self.read_bytes / self._total, 1.0)
        left = elapsed * (1 - share) / share if share > 0 else 0.0
        text = (
            f"{share:6.1%}  {tally.orders:,} orders, {tally.rows:,} rows ({tally.rows / elapsed:,.0f} rows/s), "
            f"{published:,} events published, {sum(tally.skipped.values()):,} skipped, "
            f"ETA {_clock(0 if final else left)}"
        )
        end = "\n" if final or not self._tty else ""
        self._stream.write(("\r" if self._tty else "") + text + end)
        self._stream.flush()


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


# --- the run -----------------------------------------------------------------------------------------------


@dataclass
class Report:
    """What the run did: the whole file's tally, events published now, and orders done before this run."""

    platform: Platform
    export: Path
    tally: Tally
    published: int = 0
    resumed_after: int = 0
    already_finished: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        tally = self.tally
        skipped = ", ".join(f"{count:,} {reason}" for reason, count in tally.skipped.most_common()) or "none"
        status = (
            "already imported before: nothing published"
            if self.already_finished
            else f"resumed after order {self.resumed_after:,} of the file"
            if self.resumed_after
            else "from the start"
        )
        rate = self.published / self.seconds if self.seconds else 0.0
        return "\n".join(
            [
                f"{self.platform} history {self.export.name}: {tally.rows:,} rows, {status}",
                f"  orders imported   {tally.orders:,}",
                f"  customers         {len(tally.customers):,}",
                f"  fulfilments       {tally.fulfilments:,}",
                f"  refunds           {tally.refunds:,}",
                f"  cancellations     {tally.cancellations:,}",
                f"  orders skipped    {sum(tally.skipped.values()):,}: {skipped}",
                f"  events published  {self.published:,} in {self.seconds:.1f} s ({rate:,.0f} events/s)",
            ]
        )


async def import_history(
    platform: Platform,
    export: Path,
    publish: Publish,
    checkpoint: Checkpoint,
    *,
    shop_timezone: tzinfo = UTC,
    customer_ids: Mapping[str, str] | None = None,
    placed_before: datetime | None = None,
    told_refunds: ToldRefunds | None = None,
    window_events: int = WINDOW_EVENTS,
    windows_in_flight: int = WINDOWS_IN_FLIGHT,
    progress: Progress | None = None,
    retry_seconds: float = 0.5,
) -> Report:
    """Publish the export's events after the checkpoint's orders; return what was done."""
    report = Report(platform, export, Tally(), resumed_after=checkpoint.orders_done)
    report.already_finished = checkpoint.finished
    started = time.perf_counter()
    pending: list[OutboxEntry] = []
    in_flight: deque[tuple[asyncio.Task[None], int, int]] = deque()  # a window, its size, orders done after it

    async def confirmed(oldest: bool = True) -> None:
        # The checkpoint moves only past windows whose predecessors are all confirmed.
        while in_flight and (oldest or in_flight[0][0].done()):
            task, size, orders_done = in_flight.popleft()
            await task
            report.published += size
            checkpoint.save(orders_done)
            oldest = False

    done = 0  # orders of the file read so far
    try:
        with export.open(encoding="utf-8-sig", newline="") as file:
            lines: Iterable[str] = progress.count(file) if progress else file
            for order, rows in read_orders(platform, lines, shop_timezone=shop_timezone):
                outcome = translate(order, customer_ids, placed_before=placed_before)
                done += 1
                if done > checkpoint.orders_done and told_refunds is not None and _refunded(outcome):
                    outcome = less_what_was_told(outcome, await told_refunds(order.order_id))
                report.tally.add(outcome, rows)
                if done > checkpoint.orders_done:
                    pending.extend(_entries(outcome))
                    if len(pending) >= window_events:
                        in_flight.append(
                            (asyncio.create_task(_send(publish, pending, retry_seconds)), len(pending), done)
                        )
                        pending = []
                        await asyncio.sleep(0)  # let the window go out while the next one is read
                        await confirmed(oldest=len(in_flight) >= windows_in_flight)
                if progress:
                    progress.show(report.tally, report.published)
        if pending:
            in_flight.append((asyncio.create_task(_send(publish, pending, retry_seconds)), len(pending), done))
        while in_flight:
            await confirmed()
    finally:
        for task, _, _ in in_flight:  # stopped: what is not confirmed is sent again by the next run
            task.cancel()
        await asyncio.gather(*(task for task, _, _ in in_flight), return_exceptions=True)
    checkpoint.save(done, finished=True)
    report.seconds = time.perf_counter() - started
    if progress:
        progress.show(report.tally, report.published, final=True)
    return report


def _refunded(outcome: Outcome) -> bool:
    return any(isinstance(event, OrderRefundedEvent) for event in outcome.events)


def _entries(outcome: Outcome) -> list[OutboxEntry]:
    now = datetime.now(UTC)
    return [outbox_entry(event, now) for event in outcome.events]


async def _send(publish: Publish, entries: list[OutboxEntry], retry_seconds: float) -> None:
    """Publish until the broker has confirmed every entry; the same entries again after a refusal."""
    waiting = entries
    for attempt in range(MAX_ATTEMPTS):
        outcomes = await publish(waiting)
        waiting = [entry for entry, error in zip(waiting, outcomes, strict=True) if error is not None]
        if not waiting:
            return
        await asyncio.sleep(min(retry_seconds * 2**attempt, 10.0))
    raise ImportStopped(
        f"the broker refused {len(waiting)} events {MAX_ATTEMPTS} times; what was confirmed is in the checkpoint: "
        "run the same command again once the broker is back"
    )


async def check_queues(rabbitmq_url: str, topology: Topology, services: Iterable[str]) -> None:
    """The events exchange and each service's queue must exist, or the history reaches nobody."""
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        for name, what in [(topology.events.name, "exchange")] + [
            (topology.queue_name(service), "queue") for service in services
        ]:
            channel = await connection.channel()
            try:
                if what == "exchange":
                    await channel.get_exchange(name, ensure=True)
                else:
                    await channel.get_queue(name, ensure=True)
            except ChannelNotFoundEntity:
                raise MissingQueues(
                    f"the {what} {name!r} does not exist: start the services once (python -m services.<name>, "
                    "or make run) so their queues are there, then import"
                ) from None
            await channel.close()
