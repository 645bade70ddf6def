"""`make demo`: a realistic shop in a fresh Rapport running here (`make run` in another terminal), through the contract.

Three hundred customers with names, towns and phones order tea and teapots over the last four months (OrderPlaced,
OrderFulfilled, a few OrderRefunded on the exchange, as a shop backend publishes them); the shop's first customers
are due their call today; a few answer the feedback e-mail (POST /feedback as the shop would log them): promoters
get their referral invitation, one unhappy customer opens an escalation with its hour running. Then orders scores
the segments at once. Reads ADMIN_API_KEY from the environment or from .data/local-secrets.json (`make run`).
"""

import asyncio
import json
import os
import random
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the event helpers are the tests' (dev-only, like this command)

from shared.events import LineItem, ShippingAddress  # noqa: E402
from shared.topology import Topology  # noqa: E402
from tests.shop_day import PRODUCTS, order_fulfilled, order_placed, order_refunded  # noqa: E402
from tests.support.tap import EventTap, eventually  # noqa: E402

CUSTOMERS = 300
FIRST_NAMES = ("Jana", "Peter", "Eva", "Lukáš", "Zuzana", "Márton", "Anna", "Tomáš", "Ilze", "Ani", "Réka", "Juraj")
LAST_NAMES = ("Nováková", "Horváth", "Kováčová", "Szabó", "Tóth", "Bērziņa", "Hakobyan", "Varga", "Kral", "Lukáčová")
TOWNS = (
    ("Košice", "040 01"),
    ("Bratislava", "811 01"),
    ("Budapest", "1051"),
    ("Riga", "LV-1050"),
    ("Prešov", "080 01"),
)
COMMENTS = ("Lovely tea, and it came beautifully packed.", "Quick delivery, thank you!", "Exactly what I hoped for.")


def urls() -> dict[str, str]:
    return {
        name: os.environ.get(f"{name.upper()}_URL", f"http://127.0.0.1:{port}")
        for name, port in (("orders", 8001), ("followups", 8002), ("loyalty", 8003), ("referrals", 8004))
    }


def admin_key() -> str:
    key = os.environ.get("ADMIN_API_KEY")
    kept = ROOT / ".data" / "local-secrets.json"
    if not key and kept.exists():
        key = json.loads(kept.read_text()).get("ADMIN_API_KEY")
    if not key:
        raise SystemExit("ADMIN_API_KEY is not set (and no .data/local-secrets.json from `make run`)")
    return key


async def main() -> int:
    rng = random.Random(2026)  # noqa: S311 - a repeatable demo shop, not a secret
    now = datetime.now(UTC).replace(microsecond=0)
    base = urls()
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {admin_key()}"}, timeout=30) as http:
        known = await http.get(f"{base['orders']}/customers", params={"limit": 1})
        known.raise_for_status()
        if known.json()["customers"]:
            print("The shop has customers already: `make demo` fills a fresh one (`make clean` starts over).")
            return 0
        topology = Topology(os.environ.get("CRM_PREFIX", "crm"))
        tap = await EventTap.open(os.environ.get("RABBITMQ_URL", "amqp://guest:guest@localhost:5672/"), topology)
        events, fulfilled = [], []
        for n in range(CUSTOMERS):
            customer_id = f"demo-{n:04d}"
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            town, postal_code = rng.choice(TOWNS)
            person = {
                "first_name": first,
                "last_name": last,
                "city": town,
                "phone": f"+421 9{rng.randint(10000000, 99999999)}",
            }
            address = ShippingAddress(
                line1=f"{rng.choice(('Hlavná', 'Fő utca', 'Brīvības iela'))} {n + 1}",
                postal_code=postal_code,
                city=town,
                country="SK",
            )
            # The first customers came early (so their calls are due now); everyone orders one to four times.
            first_order = now - timedelta(days=120 - n * 100 / CUSTOMERS, hours=rng.uniform(0, 12))
            for k in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
                placed_at = min(now - timedelta(hours=3), first_order + timedelta(days=k * rng.randint(12, 40)))
                items = [
                    LineItem(sku=sku, name=name, quantity=rng.randint(1, 3), unit_price=Decimal(price), category=cat)
                    for sku, name, cat, price in rng.sample(PRODUCTS, rng.randint(1, 3))
                ]
                order_id = f"ord-{customer_id}-{k}"
                email = f"{first}.{last}.{n}@example.com".lower()
                events.append(
                    order_placed(
                        customer_id, order_id, items, at=placed_at, email=email, shipping_address=address, **person
                    )
                )
                done_at = placed_at + timedelta(days=rng.uniform(0.5, 2))
                if done_at < now:
                    events.append(order_fulfilled(customer_id, order_id, at=done_at))
                    fulfilled.append((customer_id, order_id, done_at))
                    if rng.random() < 0.04:
                        events.append(
                            order_refunded(
                                customer_id,
                                order_id,
                                Decimal("5.00"),
                                at=done_at + timedelta(days=1),
                                refund_id=f"ref-{order_id}",
                            )
                        )
        await tap.publish_many(events)
        await tap.close()
        print(f"published {len(events)} events for {CUSTOMERS} customers")

        async def heard() -> bool:
            got = await http.get(f"{base['orders']}/customers", params={"limit": 500})
            return len(got.json()["customers"]) >= CUSTOMERS

        await eventually(heard, timeout=300, interval=1.0)
        # A few answer the feedback e-mail: mostly happy, one not at all (an escalation opens).
        recent = sorted(fulfilled, key=lambda f: f[2])[-40:]
        for index, (customer_id, order_id, _) in enumerate(recent[::4]):
            unhappy = index == 0
            body = {
                "customer_id": customer_id,
                "order_id": order_id,
                "channel": "email",
                "ratings": {"overall": 1 if unhappy else 5},
                "nps": 2 if unhappy else rng.choice((9, 10, 10, 8)),
                "comment": "The teapot arrived cracked and nobody answers." if unhappy else rng.choice(COMMENTS),
            }
            (await http.post(f"{base['followups']}/feedback", json=body)).raise_for_status()
        (await http.post(f"{base['orders']}/segments/refresh")).raise_for_status()
        due = await http.get(f"{base['followups']}/followups", params={"status": "due", "kind": "call"})
        escalations = await http.get(f"{base['followups']}/escalations")
        print(
            f"{len(due.json()['followups'])} calls due, {len(escalations.json()['escalations'])} open escalation(s): "
            "see Today in the console"
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
