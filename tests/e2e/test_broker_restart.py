"""RabbitMQ restarted mid-stream (`rabbitmqctl stop_app`, then `start_app`), with the four services running.

The shop has published half of a day when the broker stops. While it is down,
a customer's feedback is taken by followups (committed with its FeedbackReceived
in the outbox) and the shop keeps trying to publish the rest, sending each event
again under the same id until the broker confirms it. After `start_app` every
service reconnects by itself, the outbox relays what was committed during the
outage, and the day ends in the figures DESIGN.md §7 gives: nothing lost,
nothing doubled. A message in flight when the broker stopped may be delivered or
published again; inboxes absorb it, so events are counted by their ids.

The broker is restarted where it runs: in the RabbitMQ container the harness
started (`rabbitmqctl` through `docker exec`: the node restarts inside it, so the
container keeps its port mapping, which `docker restart` could change), or as the
machine's local node, whose every other user, other test runs included, loses its
connections for the few seconds it is down. The test always starts the node again
and waits until it accepts connections. Only a remote RABBITMQ_URL is skipped;
when `rabbitmqctl` is missing or may not stop the node, the test fails.
"""

import asyncio
import contextlib
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aio_pika
import httpx
import pytest
from pymongo import AsyncMongoClient
from yarl import URL

from shared.events import FeedbackReceived
from tests.e2e.day_checks import (
    balances,
    check_followups,
    check_no_dead_letters,
    check_orders,
    check_referrals,
    conversions,
    issue_codes,
    points_on_the_exchange,
    published_by_services,
    purchase_awards,
    wait_until_applied,
)
from tests.shop_day import plan_shop_day, referrers_of
from tests.support.infra import Infrastructure
from tests.support.processes import ServiceStack
from tests.support.tap import EventTap, eventually

if TYPE_CHECKING:
    from testcontainers.community.rabbitmq import RabbitMqContainer

Mongo = AsyncMongoClient[dict[str, Any]]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
Rabbitmqctl = Callable[[list[str]], tuple[int, str]]  # a command's exit code and what it printed


# When the broker drops the test's own connection, aiormq leaves a reset error in a future nobody awaits;
# pytest would report it as an unraisable exception, which is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    return {
        "THANK_YOU_DELAY_SECONDS": str(30 * 24 * 3600),
        "SCHEDULER_INTERVAL_SECONDS": "3600",
        "CALL_CUSTOMERS": "1000000",
    }


@dataclass(frozen=True)
class BrokerNode:
    """`rabbitmqctl` for the node under test, on this machine or inside its container."""

    where: str
    amqp_port: int  # the port the node itself listens on (in a container: not the mapped one)
    rabbitmqctl: Rabbitmqctl

    def ctl(self, *command: str) -> str:
        code, output = self.rabbitmqctl(list(command))
        if code != 0:
            pytest.fail(f"rabbitmqctl {' '.join(command)} {self.where} failed with {code} (not permitted?): {output}")
        return output


def on_this_machine(binary: str) -> Rabbitmqctl:
    def run(command: list[str]) -> tuple[int, str]:
        try:
            done = subprocess.run([binary, *command], capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            pytest.fail(f"rabbitmqctl {' '.join(command)} could not run: {error}")
        return done.returncode, done.stdout if done.returncode == 0 else (done.stderr or done.stdout).strip()

    return run


def in_container(container: "RabbitMqContainer") -> Rabbitmqctl:
    def run(command: list[str]) -> tuple[int, str]:
        result = container.exec(["rabbitmqctl", *command])
        code = -1 if result.exit_code is None else result.exit_code
        return code, result.output.decode(errors="replace")

    return run


@pytest.fixture(scope="module")
def broker_node(infra: Infrastructure) -> BrokerNode:
    """The node of the broker under test; skips only for a remote broker this run did not start."""
    container = infra.rabbitmq_container
    if container is not None:
        node = BrokerNode(
            f"in the container {container.get_wrapped_container().short_id}", container.port, in_container(container)
        )
    else:
        url = URL(infra.rabbitmq_url)
        if url.host not in LOCAL_HOSTS:
            pytest.skip(f"RABBITMQ_URL points to a remote broker ({url.host}): this test cannot restart it")
        found = shutil.which("rabbitmqctl") or shutil.which("rabbitmqctl", path="/usr/sbin:/usr/local/sbin")
        if found is None:
            pytest.fail("rabbitmqctl is not installed here: this test restarts the local RabbitMQ node with it")
        node = BrokerNode("on this machine", url.port or 5672, on_this_machine(found))
    if not re.search(rf"port: {node.amqp_port}, protocol: amqp", node.ctl("status")):
        pytest.fail(
            f"the node rabbitmqctl controls {node.where} does not listen on {node.amqp_port}, the broker's port"
        )
    return node


@contextlib.asynccontextmanager
async def broker_stopped(node: BrokerNode, rabbitmq_url: str) -> AsyncIterator[None]:
    """`stop_app` now; on the way out, whatever happened, `start_app` and wait until it accepts connections."""
    await asyncio.to_thread(node.ctl, "stop_app")
    try:
        yield
    finally:
        await asyncio.to_thread(node.ctl, "start_app")
        await asyncio.to_thread(node.ctl, "await_startup")

        async def connects() -> bool:
            try:
                connection = await aio_pika.connect(rabbitmq_url, timeout=5)
            except (OSError, aio_pika.exceptions.AMQPError):
                return False
            await connection.close()
            return True

        await eventually(connects, timeout=60, interval=0.5)


async def every_service_sees_the_broker(stack: ServiceStack, http: httpx.AsyncClient, state: str) -> bool:
    """Whether every service says the broker is `state` ("ok" or "unreachable") on /readyz."""
    answers = set()
    for process in stack:
        with contextlib.suppress(httpx.TransportError):
            answers.add((await http.get(f"{process.url}/readyz")).json()["broker"])
    return answers == {state}


async def test_rabbitmq_restarted_mid_stream_loses_nothing_and_doubles_nothing(
    stack: ServiceStack, broker_node: BrokerNode, http: httpx.AsyncClient, mongo: Mongo, infra: Infrastructure
) -> None:
    tag, customers = "restart", 80
    codes = await issue_codes(http, stack, referrers_of(tag, customers))
    day = plan_shop_day(5566, tag=tag, customers=customers, orders=600, codes=codes)
    half = len(day.events) // 2
    # Someone who has not been asked yet: their feedback (a promoter's review) is given while the broker is down.
    happy_order = next(o for o in day.orders[: half // 2] if o.customer.customer_id not in day.promoters | set(codes))
    tap = await EventTap.open(infra.rabbitmq_url, stack.topology, durable_queue=f"{stack.topology.prefix}.watch")
    try:
        await tap.publish_many(day.events[:half])
        stopped = time.monotonic()
        async with broker_stopped(broker_node, infra.rabbitmq_url):
            await eventually(lambda: every_service_sees_the_broker(stack, http, "unreachable"), timeout=30)
            posted = await http.post(
                f"{stack['followups'].url}/feedback",
                json={
                    "customer_id": happy_order.customer.customer_id,
                    "order_id": happy_order.order_id,
                    "ratings": {"overall": 5},
                    "nps": 10,
                    "comment": "Wonderful tea, I tell all my friends.",
                    "channel": "phone",
                },
            )
            assert posted.status_code == 201, posted.text
            publishing = asyncio.create_task(tap.publish_many(day.events[half:], retrying=True))
        print(f"broker down and back in {time.monotonic() - stopped:.1f} s")
        await publishing
        # Each service reconnected by itself.
        await eventually(lambda: every_service_sees_the_broker(stack, http, "ok"), timeout=60)

        said = FeedbackReceived.model_validate(posted.json())
        await wait_until_applied(mongo, stack, day.events, timeout=120)
        expected = day.expected_balances(extra_feedback=[said])
        await eventually(
            lambda: points_on_the_exchange(tap.distinct(), expected) == expected, timeout=120, interval=0.25
        )
        assert await balances(http, stack, sorted(expected)) == expected
        awards = purchase_awards(tap.distinct(), day)
        assert {order: found for order, found in awards.items() if len(found) != 1} == {}
        assert conversions(tap.distinct(), day) == sorted(c.order_id for c in day.conversions)
        promoters = day.promoters | {said.customer_id}

        def invited() -> list[str]:
            return sorted(e["subject"] for e in tap.distinct("ReferralInvited") if e["subject"] in promoters)

        await eventually(lambda: invited() == sorted(promoters), timeout=60)
        await wait_until_applied(mongo, stack, [*day.events, *published_by_services(tap)])
        await check_orders(http, stack, day)
        await check_followups(mongo, stack, day, promoters=promoters)
        await check_referrals(http, stack, day, codes)
        await check_no_dead_letters(infra, stack)
        print(f"events seen again on the exchange (absorbed by inboxes): {len(tap.bodies()) - len(tap.distinct())}")
    finally:
        await tap.close()
