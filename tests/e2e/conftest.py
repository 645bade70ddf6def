"""What the end-to-end modules share: the services of one module as real processes, an SMTP server, clients."""

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from pymongo import AsyncMongoClient

from shared.topology import Topology
from tests.support.infra import Infrastructure, remove_declared
from tests.support.processes import ServiceProcess, ServiceStack, console_process, start_stack
from tests.support.smtp import SmtpInbox, smtp_server
from tests.support.tap import EventTap

ADMIN_KEY = "e2e-admin-key"
ALL_SERVICES = ("orders", "followups", "loyalty", "referrals")


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpInbox]:
    with smtp_server() as inbox:
        yield inbox


@pytest.fixture(scope="module")
def stack_services() -> tuple[str, ...]:
    """Which services a module runs; override in the module."""
    return ALL_SERVICES


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    """Settings (environment variables) for a module's services; override in the module."""
    return {}


@pytest.fixture(scope="module")
async def stack(
    request: pytest.FixtureRequest,
    infra: Infrastructure,
    prefix: str,
    stack_services: tuple[str, ...],
    stack_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[ServiceStack]:
    """The module's services under a prefix of its own, so nothing one module leaves behind reaches another."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    topology = Topology(f"{prefix}-{module.replace('_', '-')}")
    log_dir = tmp_path_factory.mktemp(f"{module}-logs")
    started = start_stack(infra, topology, stack_services, log_dir, ADMIN_API_KEY=ADMIN_KEY, **stack_env)
    try:
        yield started
    finally:
        for key, code in started.stop().items():
            if code != 0:
                print(f"{key} stopped with {code}:\n{started[key].logs()[-3000:]}")
        await remove_declared(infra, topology, started.services)


CONSOLE_OWNER = ("owner@teapot.example", "the owner's password")


@pytest.fixture(scope="module")
def console_env() -> dict[str, str]:
    """Settings (environment variables) for a module's console; override in the module."""
    return {}


@pytest.fixture(scope="module")
def console(
    infra: Infrastructure, stack: ServiceStack, console_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """The owner's console in front of the module's stack, its first owner CONSOLE_OWNER."""
    log_dir = tmp_path_factory.mktemp("console-logs")
    process = console_process(
        stack,
        mongodb_url=infra.mongodb_url,
        log_dir=log_dir,
        CONSOLE_API_KEY=ADMIN_KEY,
        CONSOLE_OWNER_EMAIL=CONSOLE_OWNER[0],
        CONSOLE_OWNER_PASSWORD=CONSOLE_OWNER[1],
        **{"MAIL_FOLDER": str(tmp_path_factory.mktemp("mail")), **console_env},
    )
    process.start()
    try:
        process.wait_ready()
        yield process
    finally:
        code = process.terminate()
        if code != 0:
            print(f"console stopped with {code}:\n{process.logs()[-3000:]}")


@pytest.fixture
async def tap(infra: Infrastructure, stack: ServiceStack) -> AsyncIterator[EventTap]:
    opened = await EventTap.open(infra.rabbitmq_url, stack.topology)
    yield opened
    await opened.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
async def mongo(infra: Infrastructure) -> AsyncIterator[AsyncMongoClient[dict[str, object]]]:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(infra.mongodb_url)
    yield client
    await client.close()
