"""Benchmark: the owner's console on a shop of 100,000 customers: Today, the customer page and search.

    .venv/bin/python -m tests.bench.console [customers]      # 100,000 by default

The four services and the console run as processes. Orders' profiles (and one order each, with its order number)
are written straight into its database the way the service writes them (`store.with_lines`, as
tests/bench/orders_customers.py does), with names, e-mails and phones; 300 more customers come through the event
contract, so followups plans their calls (the first 100 are due today), loyalty keeps their points, and three
unhappy answers open escalations. Then a signed-in owner asks the console, one request at a time as a browser does:
Today, customer pages (half of them the customers Today lists, half from the bulk), and searches by name, e-mail,
phone and order number. Prints p50/p95/max per page; asserts nothing.
"""

import asyncio
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from services.orders.domain import OrderLine, stats_of
from services.orders.store import CUSTOMERS, ORDERS, new_profile, with_lines
from shared.events import LineItem
from shared.topology import Topology
from tests.shop_day import order_fulfilled, order_placed
from tests.support.infra import provide, remove_declared
from tests.support.processes import console_process, start_stack
from tests.support.tap import EventTap, eventually

KEY = "bench-console-key"
OWNER = ("owner@bench.example", "bench owner password")
NOW = datetime.now(UTC).replace(microsecond=0)
FIRST = ("Jana", "Peter", "Eva", "Lukáš", "Zuzana", "Márton", "Anna", "Tomáš", "Ilze", "Ani", "Réka", "Juraj", "Mária")
LAST = ("Nováková", "Horváth", "Kováčová", "Szabó", "Tóth", "Bērziņa", "Hakobyan", "Varga", "Kráľ", "Lukáčová", "Kiss")
SEGMENTS = ("champions", "loyal", "potential_loyalists", "new", "promising", "need_attention", "at_risk", "hibernating")
LIVE = 300


def person(rng: random.Random, n: int) -> dict[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return {
        "first_name": first,
        "last_name": f"{last}{n % 97}" if n % 3 else last,  # names repeat as in a real shop, not all alike
        "email": f"{first}.{last}.{n}@example.com".lower(),
        "phone": f"+4219{n:08d}",
        "city": rng.choice(("Košice", "Bratislava", "Budapest", "Riga", "Yerevan")),
    }


def documents(rng: random.Random, n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """One customer's profile and their latest order, as orders stores them."""
    customer_id = f"bulk-{n:06d}"
    placed_at = NOW - timedelta(days=rng.randint(1, 700))
    total = Decimal(rng.randint(500, 25000)) / 100
    order_id = f"{customer_id}-o1"
    line = OrderLine(order_id, placed_at, "EUR", total, Decimal(0))
    contact = person(rng, n)
    profile = with_lines(new_profile(customer_id), [line], stats_of([line]))
    profile |= {"contact": contact, "segment": rng.choice(SEGMENTS)}
    item = {"sku": "TEA-GREEN", "name": "Green tea 100 g", "quantity": 1, "unit_price": str(total), "category": "tea"}
    order = {
        "_id": order_id,
        "customer_id": customer_id,
        "placed": {
            "order_id": order_id,
            "order_number": f"#{100000 + n}",
            "customer": {"customer_id": customer_id, **contact},
            "placed_at": placed_at,
            "currency": "EUR",
            "total": str(total),
            "line_items": [item],
        },
        "placed_by": None,
        "fulfilled_at": placed_at + timedelta(days=1),
        "refunds": [],
    }
    return profile, order


def percentiles(timings: list[float]) -> str:
    ordered = sorted(timings)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return (
        f"p50 {statistics.median(ordered):.0f} ms, p95 {p95:.0f} ms, max {ordered[-1]:.0f} ms ({len(ordered)} requests)"
    )


async def timed(http: httpx.AsyncClient, paths: list[str]) -> list[float]:
    timings = []
    for path in paths:
        began = time.perf_counter()
        answer = await http.get(path)
        timings.append((time.perf_counter() - began) * 1000)
        if answer.status_code != 200:
            raise RuntimeError(f"{path}: {answer.status_code} {answer.text[:300]}")
    return timings


async def sign_in(http: httpx.AsyncClient) -> None:
    form = await http.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    answer = await http.post("/login", data={"csrf": token.group(1), "email": OWNER[0], "password": OWNER[1]})
    assert answer.status_code == 303, answer.text


async def main(count: int) -> None:
    rng = random.Random(17)  # noqa: S311 - a repeatable shop, not a secret
    with ExitStack() as cleanup, tempfile.TemporaryDirectory() as workdir:
        infra = provide(Path(workdir), cleanup)
        topology = Topology(f"benchconsole{uuid.uuid4().hex[:6]}")
        logs = Path(workdir) / "logs"
        logs.mkdir()
        services = ("orders", "followups", "loyalty", "referrals")
        stack = start_stack(
            infra, topology, services, logs, ADMIN_API_KEY=KEY, SEGMENT_INTERVAL_SECONDS="86400", LOG_LEVEL="WARNING"
        )
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infra.mongodb_url)
        try:
            db = mongo[f"{topology.prefix}_orders"]
            started = time.perf_counter()
            for start in range(0, count, 5000):
                made = [documents(rng, n) for n in range(start, min(count, start + 5000))]
                await db[CUSTOMERS].insert_many([profile for profile, _ in made])
                await db[ORDERS].insert_many([order for _, order in made])
            print(f"{count} customers (profiles and an order each) written in {time.perf_counter() - started:.1f} s")

            tap = await EventTap.open(infra.rabbitmq_url, topology, routing_keys=("none",))
            events = []
            for n in range(LIVE):
                customer_id, order_id = f"live-{n:04d}", f"live-{n:04d}-o1"
                mug = LineItem(sku="MUG-RED", name="Red mug", quantity=1 + n % 3, unit_price=Decimal("12.50"))
                contact = person(rng, count + n)
                contact.pop("email")
                events.append(
                    order_placed(
                        customer_id,
                        order_id,
                        [mug],
                        at=NOW - timedelta(days=30),
                        email=f"{customer_id}@example.com",
                        **contact,
                    )
                )
                events.append(order_fulfilled(customer_id, order_id, at=NOW - timedelta(days=16)))
            await tap.publish_many(events)
            await tap.close()
            async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as api:

                async def planned() -> bool:
                    due = await api.get(f"{stack['followups'].url}/followups", params={"status": "due", "kind": "call"})
                    return len(due.json()["followups"]) >= 100

                await eventually(planned, timeout=600, interval=1.0)
                for n in range(3):
                    unhappy = {
                        "customer_id": f"live-{n:04d}",
                        "ratings": {"overall": 1},
                        "nps": 1,
                        "comment": "Broken.",
                    }
                    (await api.post(f"{stack['followups'].url}/feedback", json=unhappy)).raise_for_status()
            print(f"{LIVE} customers through the event contract; 100 calls due, 3 escalations open")

            # Where Today's time goes: each question it asks, alone.
            since = (NOW - timedelta(days=1)).isoformat()
            followups = stack["followups"].url
            questions = {
                "calls due": f"{followups}/followups?status=due&kind=call&limit=100",
                "win-backs due": f"{followups}/followups?status=due&kind=win_back&limit=100",
                "escalations": f"{followups}/escalations?open=true",
                "feedback today": f"{followups}/feedback/received?since={since.replace('+', '%2B')}&limit=50",
                "one brief": f"{followups}/customers/live-0001/brief",
                "one customer (orders)": f"{stack['orders'].url}/customers/live-0001",
            }
            async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as api:
                for name, url in questions.items():
                    alone = []
                    for _ in range(20):
                        began = time.perf_counter()
                        (await api.get(url)).raise_for_status()
                        alone.append((time.perf_counter() - began) * 1000)
                    print(f"  {name}: {percentiles(alone)}")

            console = console_process(
                stack,
                mongodb_url=infra.mongodb_url,
                log_dir=logs,
                CONSOLE_API_KEY=KEY,
                CONSOLE_OWNER_EMAIL=OWNER[0],
                CONSOLE_OWNER_PASSWORD=OWNER[1],
                LOG_LEVEL="WARNING",
            )
            console.start()
            console.wait_ready()
            try:
                async with httpx.AsyncClient(base_url=console.url, timeout=30) as http:
                    await sign_in(http)
                    await timed(http, ["/today", "/customers/live-0001", "/customers?q=jana"])  # warm up
                    today = await timed(http, ["/today"] * 50)
                    pages = [f"/customers/live-{rng.randrange(LIVE):04d}" for _ in range(50)]
                    pages += [f"/customers/bulk-{rng.randrange(count):06d}" for _ in range(50)]
                    customer = await timed(http, pages)
                    searches = []
                    for _ in range(50):
                        n = rng.randrange(count)
                        searches += [
                            f"/customers?q={rng.choice(FIRST)}",
                            f"/customers?q={rng.choice(FIRST)}+{rng.choice(LAST)[:3]}",
                            f"/customers?q=%2B4219{n:08d}",
                            f"/customers?q=%23{100000 + n}",
                        ]
                    search = await timed(http, searches)
                print(f"GET /today (20 calls listed, 5 with their brief, 3 escalations): {percentiles(today)}")
                print(f"GET /customers/{{id}} (profile, points, follow-ups, feedback, brief): {percentiles(customer)}")
                print(f"GET /customers?q= (name, full name, phone, order number): {percentiles(search)}")
                print(
                    f"console CPU {console.cpu_seconds():.1f} s; services CPU "
                    + ", ".join(f"{p.name} {p.cpu_seconds():.1f} s" for p in stack)
                )
            finally:
                console.terminate()
        finally:
            await mongo.close()
            stack.stop()
            await remove_declared(infra, topology, services)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
