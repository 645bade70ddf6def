"""Refer-a-friend end to end, with referrals, loyalty and followups running as real processes.

A customer gets a code, a new customer orders with it: one ReferralConverted,
and loyalty rewards both sides. A promoter's feedback brings one invitation,
which followups e-mails to a real (in-process) SMTP server.
"""

import email
import email.policy
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.message import EmailMessage
from typing import Any

import aio_pika
import httpx
import pytest
from aiosmtpd.controller import Controller
from pymongo import AsyncMongoClient

from shared.events import Customer, LineItem, OrderPlaced, OrderPlacedEvent
from shared.testing.infra import Infrastructure
from shared.testing.processes import ServiceProcess, service_process
from shared.testing.tap import EventTap, eventually
from shared.topology import Topology

SERVICES = ("referrals", "loyalty", "followups")
KEY = "e2e-referrals-key"
ADMIN = {"Authorization": f"Bearer {KEY}"}


@dataclass
class Inbox:
    """What the test SMTP server received."""

    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 Message accepted for delivery"

    def to(self, address: str, containing: str = "") -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address and containing in m.get_body(("plain",)).get_content()]


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[Inbox, int]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture(scope="module")
async def stack(
    infra: Infrastructure, prefix: str, smtp: tuple[Inbox, int], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Topology, dict[str, ServiceProcess]]]:
    """The three services under a prefix of their own, so nothing they leave behind reaches other e2e tests."""
    topology = Topology(f"{prefix}-rf")
    log_dir = tmp_path_factory.mktemp("referrals-flow-logs")
    started = {
        name: service_process(
            name,
            rabbitmq_url=infra.rabbitmq_url,
            mongodb_url=infra.mongodb_url,
            prefix=topology.prefix,
            log_dir=log_dir,
            ADMIN_API_KEY=KEY,
            SMTP_URL=f"smtp://127.0.0.1:{smtp[1]}",
            SCHEDULER_INTERVAL_SECONDS="0.2",
            SHOP_NAME="Teapot & Co",
        )
        for name in SERVICES
    }
    for process in started.values():
        process.start()
    try:
        for process in started.values():
            process.wait_ready()
        yield topology, started
    finally:
        for process in started.values():
            try:
                if process.process is not None and process.terminate() != 0:
                    print(process.logs()[-3000:])
            finally:
                process.kill()  # only if SIGTERM did not stop it
        await _remove(infra, topology)


async def _remove(infra: Infrastructure, topology: Topology) -> None:
    connection = await aio_pika.connect(infra.rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        for service in SERVICES:
            await channel.queue_delete(topology.queue_name(service))
            await channel.queue_delete(f"{topology.queue_name(service)}.dlq")
        for exchange in (topology.events.name, topology.dead_letters.name):
            await channel.exchange_delete(exchange)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infra.mongodb_url)
    for service in SERVICES:
        await client.drop_database(topology.database(service))
    await client.close()


@pytest.fixture
async def tap(infra: Infrastructure, stack: tuple[Topology, dict[str, ServiceProcess]]) -> AsyncIterator[EventTap]:
    opened = await EventTap.open(infra.rabbitmq_url, stack[0])
    yield opened
    await opened.close()


def order(customer_id: str, order_id: str, mail: str, code: str | None = None) -> OrderPlacedEvent:
    data = OrderPlaced(
        order_id=order_id,
        customer=Customer(customer_id=customer_id, email=mail, first_name=customer_id.title(), locale="en"),
        placed_at=datetime.now(UTC) - timedelta(minutes=1),
        currency="EUR",
        total=Decimal("42.00"),
        line_items=[LineItem(sku="TEA", name="Tea", quantity=2, unit_price=Decimal("21.00"))],
        referral_code=code,
    )
    return OrderPlacedEvent.new(data, source="shop", subject=customer_id)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers=ADMIN, timeout=10) as client:
        yield client


async def consumed(http: httpx.AsyncClient, process: ServiceProcess, event_type: str) -> float:
    """Events of this type the process has taken, applied or skipped as duplicates."""
    text = (await http.get(f"{process.url}/metrics")).text
    total = 0.0
    for outcome in ("applied", "duplicate"):
        line = f'rapport_messages_consumed_total{{outcome="{outcome}",type="{event_type}"}} '
        total += sum(float(row.removeprefix(line)) for row in text.splitlines() if row.startswith(line))
    return total


async def has_consumed(http: httpx.AsyncClient, process: ServiceProcess, event_type: str, count: int) -> bool:
    return await consumed(http, process, event_type) == count


async def test_a_friend_ordering_with_a_code_converts_once_and_loyalty_rewards_both(
    stack: tuple[Topology, dict[str, ServiceProcess]], tap: EventTap, http: httpx.AsyncClient
) -> None:
    referrals = stack[1]["referrals"]
    await tap.publish(order("cus-ada", "ord-ada-1", "ada@example.com"))
    await eventually(lambda: has_consumed(http, referrals, "OrderPlaced", 1))
    issued = await http.post(f"{referrals.url}/referrers/cus-ada/code")
    assert issued.status_code == 201, issued.text
    code = issued.json()["code"]

    friend = order("cus-ben", "ord-ben-1", "ben@example.com", code=code.lower())
    await tap.publish(friend)
    await tap.publish(friend)  # delivered twice
    [converted] = await tap.wait_for(lambda e: e["type"] == "ReferralConverted" and e["subject"] == "cus-ben")
    assert (converted["data"]["referrer_customer_id"], converted["data"]["program"]) == ("cus-ada", "customer")
    rewarded = await tap.wait_for(
        lambda e: e["type"] == "PointsAwarded" and e["data"]["reason"] == "referral", count=2, timeout=30
    )
    assert sorted((e["data"]["customer_id"], e["data"]["points"]) for e in rewarded) == [
        ("cus-ada", 500),
        ("cus-ben", 250),
    ]

    await tap.publish(order("cus-ada", "ord-ada-2", "ada@example.com", code=code))  # Ada's own order
    await eventually(lambda: has_consumed(http, referrals, "OrderPlaced", 4))
    page = (await http.get(f"{referrals.url}/referrals/{code}")).json()
    assert {r["order_id"]: (r["outcome"], r["reason"]) for r in page["referrals"]} == {
        "ord-ben-1": ("converted", None),
        "ord-ada-2": ("refused", "own_order"),
    }
    assert page["conversions"] == 1
    assert [e["data"]["order_id"] for e in tap.bodies("ReferralConverted")] == ["ord-ben-1"]


async def test_a_promoter_is_invited_once_and_followups_emails_the_invitation(
    stack: tuple[Topology, dict[str, ServiceProcess]],
    tap: EventTap,
    smtp: tuple[Inbox, int],
    http: httpx.AsyncClient,
) -> None:
    processes = stack[1]
    inbox = smtp[0]
    await tap.publish(order("cus-pia", "ord-pia-1", "pia@example.com"))
    await eventually(lambda: inbox.to("pia@example.com"), timeout=30)  # the thank-you: followups knows her now

    happy = {"customer_id": "cus-pia", "ratings": {"overall": 5}, "nps": 10, "channel": "phone"}
    posted = await http.post(f"{processes['followups'].url}/feedback", json=happy)
    assert posted.status_code == 201, posted.text
    [invited] = await tap.wait_for(lambda e: e["type"] == "ReferralInvited" and e["subject"] == "cus-pia")
    code = invited["data"]["code"]
    assert invited["data"]["feedback_id"] == posted.json()["feedback_id"]
    await tap.wait_for(lambda e: e["type"] == "FollowUpSent" and e["data"]["kind"] == "referral_invite", timeout=30)
    [invitation] = inbox.to("pia@example.com", containing=code)
    assert "Teapot & Co" in invitation["Subject"]

    again = await http.post(f"{processes['followups'].url}/feedback", json=happy | {"nps": 9})
    assert again.status_code == 201, again.text
    await eventually(lambda: has_consumed(http, processes["referrals"], "FeedbackReceived", 2))
    listed = await http.get(f"{processes['followups'].url}/followups", params={"kind": "referral_invite"})
    planned = listed.json()["followups"]
    assert [(f["customer_id"], f["status"]) for f in planned] == [("cus-pia", "sent")]
    assert len([e for e in tap.bodies("ReferralInvited") if e["subject"] == "cus-pia"]) == 1
    assert len(inbox.to("pia@example.com", containing=code)) == 1
