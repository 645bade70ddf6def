"""Benchmark: the whole pipeline — a shop's day through the four services running as processes — next to the raw floor.

    make bench       # or: .venv/bin/python -m tests.bench.pipeline [--orders 20000] [--customers 5000] ...

In one run, on one machine (broker, database, services and this load generator
sharing it):

1. Raw floor: as many messages as the day has events, through a quorum queue
   into a minimal aio-pika consumer (inbox insert + one `$inc` upsert per
   message, 100 per transaction, ack after commit).
2. Sustained throughput: the day (tests/shop_day.py: orders with 1–5 line
   items, fulfilments, refunds, feedback, friends' first orders with a code) is
   published as fast as the broker confirms, and the clock stops when every
   downstream effect is there (below).
3. Latency: OrderPlaced at a steady rate (200/s; `--rates` for others) for
   15 s; time from publishing each to its PointsAwarded arriving on the
   exchange. Each order is taken by all four services; between rates the
   services catch up first.
4. Memory: each service's resident memory (VmRSS now, VmHWM peak).
5. Step 2 again with two loyalty processes on the same queue.

"Every downstream effect" is: each service has taken every event it consumes
(`rapport_messages_consumed_total`, including the ReferralConverted and
ReferralInvited other services publish), every outbox is empty
(`rapport_outbox_backlog`), and a PointsAwarded for each order's purchase and a
ReferralConverted for each friend have been seen on the exchange. E-mails are
not part of it: the followups scheduler is held back (its sending is SMTP-bound
and runs on its own clock).

Prints figures and Markdown rows for docs/benchmarks.md; asserts nothing.
"""

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import httpx
from pymongo import AsyncMongoClient

from shared.events import Envelope
from shared.outbox import EventPublisher
from shared.settings import ServiceSettings
from shared.topology import Topology
from shared.unit import OutboxEntry, outbox_entry
from tests.bench.common import FLOOR_BATCH, raw_floor
from tests.shop_day import CONSUMERS, ShopDay, order_placed, plan_shop_day, referrers_of
from tests.support.infra import Infrastructure, provide, remove_declared
from tests.support.processes import ServiceStack, cpu_seconds, start_stack
from tests.support.tap import EventTap

SERVICES = ("orders", "followups", "loyalty", "referrals")
KEY = "bench-admin-key"
SETTINGS = {
    "ADMIN_API_KEY": KEY,
    "LOG_LEVEL": "WARNING",
    "SCHEDULER_INTERVAL_SECONDS": "86400",  # followups: no e-mail during the run (see the docstring)
    "EXPIRY_INTERVAL_SECONDS": "86400",  # loyalty: no expiry round during the run
    "SEGMENT_INTERVAL_SECONDS": "86400",  # orders: no RFM scoring round during the run
}


def run_queue_seconds(pid: int) -> float:
    """Time the process's threads spent runnable but waiting for a CPU (/proc/<pid>/task/*/schedstat)."""
    waited = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            waited += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError):
            continue  # a thread that ended meanwhile
    return waited / 1e9


class CpuMeter:
    """CPU seconds used by each part of the system over a stretch of time, by the whole machine, and how long
    each part waited for a CPU while it could have run (what is left of the wall time it spent blocked on I/O)."""

    def __init__(self, parts: dict[str, int]) -> None:
        self.parts = parts  # name → pid
        self.start = self._read()
        self.start_waits = self._waits()

    @staticmethod
    def _machine() -> float:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def _read(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.parts.items()} | {"machine": self._machine()}

    def _waits(self) -> dict[str, float]:
        return {name: run_queue_seconds(pid) for name, pid in self.parts.items()}

    def used(self) -> dict[str, float]:
        now = self._read()
        used = {name: now[name] - self.start[name] for name in now}
        used["everything else"] = used["machine"] - sum(v for k, v in used.items() if k != "machine")
        return used

    def waited(self) -> dict[str, float]:
        now = self._waits()
        return {name: now[name] - self.start_waits[name] for name in now}


def infrastructure_pids(infra: Infrastructure) -> dict[str, int]:
    """The mongod serving this run (by its port) and the RabbitMQ node, when they run on this machine."""
    found = {}
    port = infra.mongodb_url.rsplit(":", 1)[-1].split("/")[0]
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if words[0].endswith(b"mongod") and f"--port\0{port}".encode() in b"\0".join(words):
            found["mongod"] = int(cmdline.parent.name)
        elif words[0].endswith(b"beam.smp") and b"rabbit" in b" ".join(words):
            found["rabbitmq"] = int(cmdline.parent.name)
    return found


@dataclass
class Throughput:
    events: int
    orders: int
    seconds: float
    published_in: float
    done_after: dict[str, float]  # service → seconds until it had taken every event it consumes
    memory: dict[str, tuple[float, float]] = field(default_factory=dict)  # process → (VmRSS, VmHWM) MiB
    cpu: dict[str, float] = field(default_factory=dict)  # part of the system → CPU seconds used during the run
    per_commit: dict[str, float] = field(default_factory=dict)  # process → messages per group commit
    run_queue: dict[str, float] = field(default_factory=dict)  # part → seconds runnable but waiting for a CPU

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds

    @property
    def orders_per_second(self) -> float:
        return self.orders / self.seconds


def expected_intake(day: ShopDay) -> dict[str, int]:
    """Events each service takes in for the day, those the services publish to each other included."""
    intake: Counter[str] = Counter()
    for event in day.events:
        intake.update(CONSUMERS[event.type])
    intake.update({service: len(day.conversions) for service in CONSUMERS["ReferralConverted"]})
    intake.update({service: len(day.promoters) for service in CONSUMERS["ReferralInvited"]})
    return dict(intake)


async def taken(stack: ServiceStack, service: str) -> float:
    """Events a service (all its replicas) has taken since its processes started."""
    return sum([await p.consumed() for p in stack if p.name == service])


async def outboxes_empty(stack: ServiceStack) -> bool:
    backlogs = [await p.metric("rapport_outbox_backlog") for p in stack]
    return not any(backlogs)


async def issue_codes(stack: ServiceStack, referrers: list[str]) -> dict[str, str]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=10) as http:
        codes = {}
        for customer_id in referrers:
            issued = await http.post(f"{stack['referrals'].url}/referrers/{customer_id}/code")
            issued.raise_for_status()
            codes[customer_id] = issued.json()["code"]
        return codes


async def settled(stack: ServiceStack, intake: dict[str, int]) -> None:
    """Until every service has taken `intake` events and every outbox is empty: the next measurement starts clean."""
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        taken_now = {service: await taken(stack, service) for service in SERVICES}
        if all(taken_now[s] >= intake[s] for s in SERVICES) and await outboxes_empty(stack):
            return
        await asyncio.sleep(0.25)
    raise TimeoutError(f"the services did not catch up with {intake}")


class ShopBackend:
    """Publishes a day's events as fast as the broker confirms, through the services' own lean publisher.

    The events are turned into messages before the clock starts, and go out in
    windows of `WINDOW` awaiting their confirms, so that the load generator, which
    shares the two cores, takes as little from the services as it can.
    """

    WINDOW = 100
    WINDOWS_IN_FLIGHT = 2
    ATTEMPTS = 50

    def __init__(self, publisher: EventPublisher, entries: list[OutboxEntry]) -> None:
        self._publisher = publisher
        self._entries = entries

    @classmethod
    async def open(cls, rabbitmq_url: str, topology: Topology, events: list[Envelope[Any]]) -> "ShopBackend":
        publisher = EventPublisher(rabbitmq_url, topology.events.name, name="rapport-bench-shop")
        await publisher.start()
        now = datetime.now(UTC)
        return cls(publisher, [outbox_entry(event, now) for event in events])

    async def publish_all(self) -> None:
        lanes = self.WINDOWS_IN_FLIGHT
        await asyncio.gather(*(self._publish(self._entries[lane::lanes]) for lane in range(lanes)))

    async def _publish(self, entries: list[OutboxEntry]) -> None:
        for start in range(0, len(entries), self.WINDOW):
            window = entries[start : start + self.WINDOW]
            for _attempt in range(self.ATTEMPTS):
                outcomes = await self._publisher.publish(window)
                window = [entry for entry, error in zip(window, outcomes, strict=True) if error is not None]
                if not window:
                    break
                await asyncio.sleep(0.1)  # refused or timed out: the same events again (the inboxes de-duplicate)
            else:
                raise RuntimeError(f"the broker refused {len(window)} events {self.ATTEMPTS} times")

    async def close(self) -> None:
        await self._publisher.stop()


async def sustained_throughput(
    infra: Infrastructure, stack: ServiceStack, args: argparse.Namespace, tag: str
) -> tuple[Throughput, ShopDay, dict[str, int]]:
    codes = await issue_codes(stack, referrers_of(tag, args.customers))
    day = plan_shop_day(args.seed, tag=tag, customers=args.customers, orders=args.orders, codes=codes)
    intake = expected_intake(day)
    orders = {order.order_id for order in day.orders}
    friends = {conversion.order_id for conversion in day.conversions}
    awarded: set[str] = set()
    converted: set[str] = set()

    def seen(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        data = json.loads(message.body)["data"]
        if message.type == "PointsAwarded" and data["reason"] == "purchase":
            awarded.add(data["order_id"])
        elif message.type == "ReferralConverted":
            converted.add(data["order_id"])

    tap = await EventTap.open(infra.rabbitmq_url, stack.topology, routing_keys=("points.awarded", "referral.converted"))
    tap.listeners.append(seen)
    print(f"  {len(day.events)} events: {len(orders)} orders, {dict(Counter(e.type for e in day.events))}")
    shop = await ShopBackend.open(infra.rabbitmq_url, stack.topology, day.events)
    parts = {key: p.process.pid for key, p in stack.processes.items() if p.process is not None}
    meter = CpuMeter(parts | infrastructure_pids(infra) | {"load generator": os.getpid()})
    started = time.perf_counter()

    async def publish_day() -> float:
        await shop.publish_all()
        return time.perf_counter() - started

    publishing = asyncio.create_task(publish_day())
    done_after: dict[str, float] = {}
    deadline = time.monotonic() + 1800
    while True:
        if time.monotonic() > deadline:  # something was lost: say what, rather than wait forever
            missing = {s: intake[s] - await taken(stack, s) for s in SERVICES if s not in done_after}
            raise TimeoutError(f"not every effect arrived in 30 min: still to take {missing}")
        await asyncio.sleep(0.25)
        for service in SERVICES:
            if service not in done_after and await taken(stack, service) >= intake[service]:
                done_after[service] = time.perf_counter() - started
        if (
            len(done_after) == len(SERVICES)
            and awarded >= orders
            and converted >= friends
            and await outboxes_empty(stack)
        ):
            break
    seconds = time.perf_counter() - started
    result = Throughput(len(day.events), len(orders), seconds, await publishing, done_after, cpu=meter.used())
    result.run_queue = meter.waited()
    await tap.close()
    await shop.close()
    result.memory = {key: process.memory_mb() for key, process in stack.processes.items()}
    for key, process in stack.processes.items():
        commits = await process.metric("rapport_commit_batch_size_count")
        result.per_commit[key] = await process.metric("rapport_commit_batch_size_sum") / max(commits, 1)
    return result, day, intake


async def latency(infra: Infrastructure, stack: ServiceStack, day: ShopDay, rate: int, seconds: int) -> list[float]:
    """Milliseconds from publishing each OrderPlaced to its PointsAwarded on the exchange, at a steady rate."""
    rng = random.Random(11)  # noqa: S311 - repeatable orders, not a secret
    customers = day.customers
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}

    def stamp(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        body = json.loads(message.body)
        if body["data"]["reason"] == "purchase" and body["causationid"] in sent:
            arrived.setdefault(body["causationid"], time.perf_counter())

    tap = await EventTap.open(infra.rabbitmq_url, stack.topology, routing_keys=("points.awarded",))
    tap.listeners.append(stamp)
    template = day.orders
    publishes = []
    parts = {key: p.process.pid for key, p in stack.processes.items() if p.process is not None}
    meter = CpuMeter(parts | infrastructure_pids(infra) | {"load generator": os.getpid()})
    start = time.perf_counter()
    for n in range(rate * seconds):
        if (wait := start + n / rate - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        like = template[n % len(template)]
        event = order_placed(
            rng.choice(customers),
            f"latency-{rate}-{n}",
            list(like.line_items),
            at=datetime.now(UTC) - timedelta(seconds=1),
        )
        sent[event.id] = time.perf_counter()
        # Each publish is its own task, so a slow confirm does not hold back the offered load.
        publishes.append(asyncio.create_task(tap.publish(event)))
    await asyncio.gather(*publishes)
    offered_for = time.perf_counter() - start
    cpu = ", ".join(f"{key} {used / offered_for:.0%}" for key, used in meter.used().items())
    print(f"  CPU while {rate} orders/s were offered, share of one core: {cpu}")
    deadline = time.monotonic() + 60
    while len(arrived) < len(sent) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await tap.close()
    if len(arrived) < len(sent):
        print(f"  {len(sent) - len(arrived)} PointsAwarded had not arrived 60 s after the last order")
    return sorted((arrived[k] - sent[k]) * 1000 for k in arrived)


def percentile(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p * len(values)))]


def machine() -> str:
    memory = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    gib = int(memory.split()[1]) / 1024 / 1024
    try:
        rabbitmq = subprocess.run(
            ["rabbitmqctl", "version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rabbitmq = "?"
    return (
        f"{os.cpu_count()} cores, {gib:.0f} GiB, {platform.platform()}, Python {platform.python_version()}, "
        f"RabbitMQ {rabbitmq}"
    )


def print_throughput(label: str, run: Throughput, floor: float) -> None:
    done = ", ".join(f"{s} {run.done_after[s]:.1f} s" for s in SERVICES)
    print(
        f"{label}: {run.events} events in {run.seconds:.1f} s = {run.events_per_second:,.0f} events/s, "
        f"{run.orders_per_second:,.0f} orders/s ({run.events_per_second / floor:.0%} of the floor); "
        f"published in {run.published_in:.1f} s; each service done after: {done}"
    )
    memory = ", ".join(f"{key} {rss:.0f}/{peak:.0f}" for key, (rss, peak) in run.memory.items())
    print(f"  resident memory MiB (now/peak): {memory}")
    cpu = ", ".join(f"{key} {used / run.seconds:.0%}" for key, used in run.cpu.items())
    print(f"  CPU during the run, share of one core: {cpu}")
    waits = ", ".join(f"{key} {waited / run.seconds:.0%}" for key, waited in run.run_queue.items())
    print(f"  waiting for a CPU while runnable, share of the run: {waits}")
    batches = ", ".join(f"{key} {size:.1f}" for key, size in run.per_commit.items())
    print(f"  messages per group commit: {batches}")


async def run_stack(
    infra: Infrastructure, args: argparse.Namespace, workdir: Path, replicas: dict[str, int], *, with_latency: bool
) -> tuple[Throughput, dict[int, list[float]]]:
    topology = Topology(f"bench{uuid.uuid4().hex[:6]}")
    log_dir = workdir / topology.prefix
    log_dir.mkdir()
    stack = start_stack(infra, topology, SERVICES, log_dir, replicas=replicas, **SETTINGS)
    try:
        run, day, intake = await sustained_throughput(infra, stack, args, tag=topology.prefix)
        latencies = {}
        for rate in args.rates if with_latency else []:
            latencies[rate] = await latency(infra, stack, day, rate, args.seconds)
            intake = {s: n + (rate * args.seconds if s in CONSUMERS["OrderPlaced"] else 0) for s, n in intake.items()}
            await settled(stack, intake)
        if with_latency:
            run.memory = {key: process.memory_mb() for key, process in stack.processes.items()}
        return run, latencies
    finally:
        stack.stop()
        await remove_declared(infra, topology, SERVICES)


async def main(args: argparse.Namespace) -> None:
    with ExitStack() as cleanup, tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        infra = provide(workdir, cleanup)
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infra.mongodb_url)
        mongodb = (await mongo.server_info())["version"]
        await mongo.close()
        print(f"{machine()}, MongoDB {mongodb}; infrastructure: {infra.how}")
        batching = ServiceSettings()  # the services read the same environment
        print(
            f"settings: {args.orders} orders, {args.customers} customers, seed {args.seed}; "
            f"latency at {', '.join(map(str, args.rates))} orders/s for {args.seconds} s each; "
            f"BATCH_SIZE {batching.batch_size}, BATCH_WAIT_MS {batching.batch_wait_ms:g}"
        )
        sample = plan_shop_day(args.seed, tag="floor", customers=args.customers, orders=args.orders, codes={})
        bodies = [event.model_dump_json().encode() for event in sample.events]
        floor = await raw_floor(infra.rabbitmq_url, infra.mongodb_url, f"bench{uuid.uuid4().hex[:6]}", bodies)
        print(f"raw floor ({len(bodies)} messages, {FLOOR_BATCH} per commit): {floor:,.0f} messages/s")

        one, latencies = await run_stack(infra, args, workdir, {}, with_latency=True)
        print_throughput("one process per service", one, floor)
        for rate, measured in latencies.items():
            if measured:
                print(
                    f"latency OrderPlaced → PointsAwarded at {rate}/s: p50 {percentile(measured, 0.5):.1f} ms, "
                    f"p95 {percentile(measured, 0.95):.1f} ms, p99 {percentile(measured, 0.99):.1f} ms, "
                    f"max {measured[-1]:.1f} ms ({len(measured)} orders)"
                )
        two, _ = await run_stack(infra, args, workdir, {"loyalty": args.replicas}, with_latency=False)
        print_throughput(f"{args.replicas} loyalty processes", two, floor)

        print("\nMarkdown rows for docs/benchmarks.md:\n")
        print("| run | events/s | orders/s | share of the floor | done after (orders, followups, loyalty, referrals) |")
        print("|---|---|---|---|---|")
        for label, run in (("one process per service", one), (f"{args.replicas} loyalty processes", two)):
            done = " / ".join(f"{run.done_after[s]:.1f}" for s in SERVICES)
            print(
                f"| {label} | {run.events_per_second:,.0f} | {run.orders_per_second:,.0f} | "
                f"{run.events_per_second / floor:.0%} | {done} s |"
            )


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m tests.bench.pipeline")
    parser.add_argument("--orders", type=int, default=20_000, help="orders in the day (about 2 events each)")
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--rates",
        type=lambda text: [int(rate) for rate in text.split(",")],
        default=[200],
        help="orders/s offered in the latency runs, comma-separated (e.g. 200,50)",
    )
    parser.add_argument("--seconds", type=int, default=15, help="length of each latency run")
    parser.add_argument("--replicas", type=int, default=2, help="loyalty processes in the scaling run")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(arguments()))
