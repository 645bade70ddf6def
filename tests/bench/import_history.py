"""Benchmark: a shop's history imported through the four services running as processes.

    make bench-import     # or: .venv/bin/python -m tests.bench.import_history [--orders 100000] [--customers 25000]

A Shopify order export of `--orders` orders (1–3 line items each, one row per line item, over the
past three years, by `--customers` customers; 87 % paid and fulfilled, 5 % partly and 3 % fully
refunded, 3 % pending and 2 % test orders, which are skipped) is written first, off the clock.
Then `python -m services.orders.importer shopify …` runs as a process, as a shop owner runs it,
against the four services started like `make bench` starts them (tests/bench/pipeline.py: the
followups scheduler, loyalty's expiry and orders' RFM rounds held back, so the run measures intake).

Figures: orders/s to publish (the importer's wall time, from process start to its summary: reading,
translating, publishing with confirms), and orders/s until every service has taken every event it
consumes and every outbox is empty (the drain), next to `make bench`'s sustained figure recorded in
docs/benchmarks.md. Prints figures; asserts nothing.
"""

import argparse
import asyncio
import csv
import os
import random
import re
import resource
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from shared.topology import Topology
from tests.bench.pipeline import SERVICES, SETTINGS, CpuMeter, infrastructure_pids, machine, outboxes_empty, taken
from tests.shop_day import CONSUMERS
from tests.support.infra import provide, remove_declared
from tests.support.processes import ROOT, start_stack

HEADER = (Path(__file__).parents[1] / "fixtures" / "history" / "shopify_orders_export.csv").read_text().splitlines()[0]
COLUMNS = HEADER.split(",")
PRODUCTS = [(f"SKU-{n:03d}", f"Product {n}", f"{5 + (n * 7) % 76}.{(n * 13) % 100:02d}") for n in range(120)]
MAKE_BENCH_ORDERS_PER_SECOND = 367  # docs/benchmarks.md, `make bench`, one process per service


def write_export(path: Path, orders: int, customers: int, seed: int) -> Counter[str]:
    """A Shopify order export; returns the events the importer will publish, by type."""
    rng = random.Random(seed)  # noqa: S311 - a repeatable history, not a secret
    now = datetime.now(UTC).replace(microsecond=0)
    moments = sorted((now - timedelta(seconds=rng.randrange(3 * 365 * 86400)) for _ in range(orders)), reverse=True)
    events: Counter[str] = Counter()
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(COLUMNS)
        for number, placed in enumerate(moments):
            fate = rng.random()
            status = (
                "paid"
                if fate < 0.87
                else "partially_refunded"
                if fate < 0.92
                else "refunded"
                if fate < 0.95
                else "pending"
                if fate < 0.98
                else "paid"
            )
            test = fate >= 0.98
            lines = [rng.choice(PRODUCTS) for _ in range(rng.randint(1, 3))]
            quantities = [rng.randint(1, 3) for _ in lines]
            total = sum(float(price) * q for (_, _, price), q in zip(lines, quantities, strict=True))
            refunded = {"partially_refunded": round(total / 3, 2), "refunded": round(total, 2)}.get(status, 0.0)
            counted = status != "pending" and not test
            if counted:
                events["OrderPlaced"] += 1
                events["OrderFulfilled"] += 1
                events["OrderRefunded"] += refunded > 0
            who = rng.randrange(customers)
            shown = placed.strftime("%Y-%m-%d %H:%M:%S +0000")
            fulfilled = (placed + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S +0000") if counted else ""
            for index, ((sku, name, price), quantity) in enumerate(zip(lines, quantities, strict=True)):
                row = dict.fromkeys(COLUMNS, "")
                row |= {
                    "Name": f"#{100000 + number}",
                    "Email": f"customer{who}@example.com",
                    "Created at": shown,
                    "Lineitem quantity": str(quantity),
                    "Lineitem name": name,
                    "Lineitem price": price,
                    "Lineitem sku": sku,
                }
                if index == 0:
                    row |= {
                        "Financial Status": status,
                        "Paid at": shown if status != "pending" else "",
                        "Fulfillment Status": "fulfilled" if counted else "unfulfilled",
                        "Fulfilled at": fulfilled,
                        "Accepts Marketing": rng.choice(("yes", "no")),
                        "Currency": "EUR",
                        "Subtotal": f"{total:.2f}",
                        "Total": f"{total:.2f}",
                        "Billing Name": f"Customer {who}",
                        "Billing Address1": f"Street {who % 90 + 1}",
                        "Billing City": "Košice",
                        "Billing Zip": "'040 01",
                        "Billing Country": "SK",
                        "Payment Method": "bogus" if test else "Shopify Payments",
                        "Refunded Amount": f"{refunded:.2f}",
                        "Id": str(6_000_000_000_000 + number),
                    }
                writer.writerow([row[column] for column in COLUMNS])
    return events


async def main(args: argparse.Namespace) -> None:
    with ExitStack() as cleanup, tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        infra = provide(workdir, cleanup)
        print(f"{machine()}; infrastructure: {infra.how}")
        export = workdir / "orders_export.csv"
        started = time.perf_counter()
        events = write_export(export, args.orders, args.customers, args.seed)
        size = export.stat().st_size / 1e6
        print(
            f"export: {args.orders:,} orders by {args.customers:,} customers, {size:.0f} MB, written in "
            f"{time.perf_counter() - started:.1f} s; the importer will publish {dict(events)}"
        )
        intake = Counter[str]()
        for event_type, count in events.items():
            intake.update(dict.fromkeys(CONSUMERS[event_type], count))
        topology = Topology(f"bench{uuid.uuid4().hex[:6]}")
        log_dir = workdir / topology.prefix
        log_dir.mkdir()
        stack = start_stack(infra, topology, SERVICES, log_dir, **SETTINGS)
        try:
            env = {**os.environ, "RABBITMQ_URL": infra.rabbitmq_url, "CRM_PREFIX": topology.prefix}
            stderr = (workdir / "importer.err").open("w")
            parts = {key: p.process.pid for key, p in stack.processes.items() if p.process is not None}
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            begun = time.perf_counter()
            importer = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.orders.importer",
                "shopify",
                str(export),
                cwd=ROOT,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
            meter = CpuMeter(parts | infrastructure_pids(infra))
            summary_task = asyncio.create_task(importer.communicate())
            done_after: dict[str, float] = {}
            published_after = 0.0
            cpu_while_publishing: dict[str, float] = {}
            deadline = time.monotonic() + 3600
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                if not published_after and summary_task.done():
                    published_after = time.perf_counter() - begun
                    cpu_while_publishing = meter.used()
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the importer, reaped once it ended
                    cpu_while_publishing["importer"] = (
                        after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                    )
                try:
                    for service in SERVICES:
                        if service not in done_after and await taken(stack, service) >= intake[service]:
                            done_after[service] = time.perf_counter() - begun
                    if published_after and len(done_after) == len(SERVICES) and await outboxes_empty(stack):
                        break
                except httpx.TransportError:
                    continue  # a busy service answered /metrics late: ask again

            else:
                missing = {s: intake[s] - await taken(stack, s) for s in SERVICES if s not in done_after}
                raise TimeoutError(f"not drained within an hour: still to take {missing}")
            drained_after = time.perf_counter() - begun
            cpu = meter.used()
            out, _ = await summary_task
            stderr.close()
            summary = out.decode()
            print(summary.rstrip())
            print(f"  progress, last line: {(workdir / 'importer.err').read_text().strip().splitlines()[-1]}")
            imported = int(re.search(r"orders imported\s+([\d,]+)", summary)[1].replace(",", ""))  # type: ignore[index]
            publish_rate, drain_rate = imported / published_after, imported / drained_after
            done = ", ".join(f"{s} {done_after[s]:.1f} s" for s in SERVICES)
            print(
                f"\npublish: {imported:,} orders ({sum(events.values()):,} events) in {published_after:.1f} s = "
                f"{publish_rate:,.0f} orders/s (importer process start to exit)"
            )
            print(
                f"drain through all four services: {drained_after:.1f} s = {drain_rate:,.0f} orders/s, "
                f"{sum(events.values()) / drained_after:,.0f} events/s; each service done after: {done}"
            )
            print(f"make bench (a live shop's day, docs/benchmarks.md): {MAKE_BENCH_ORDERS_PER_SECOND} orders/s")
            share = ", ".join(f"{k} {v / published_after:.0%}" for k, v in cpu_while_publishing.items())
            print(f"  CPU while the importer ran, share of one core: {share}")
            share = ", ".join(f"{k} {v / drained_after:.0%}" for k, v in cpu.items())
            print(f"  CPU over the whole drain, share of one core: {share}")
            print("\nMarkdown row for docs/benchmarks.md:\n")
            print("| orders | events | publish | orders/s to publish | drain | orders/s drained | make bench |")
            print("|---|---|---|---|---|---|---|")
            print(
                f"| {imported:,} | {sum(events.values()):,} | {published_after:.1f} s | {publish_rate:,.0f} | "
                f"{drained_after:.1f} s | {drain_rate:,.0f} | {MAKE_BENCH_ORDERS_PER_SECOND} |"
            )
        finally:
            stack.stop()
            await remove_declared(infra, topology, SERVICES)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m tests.bench.import_history")
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=25_000)
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(arguments()))
