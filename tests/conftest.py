"""Session fixtures: real RabbitMQ and MongoDB (DESIGN.md §8), one CRM_PREFIX per run."""

import uuid
from collections.abc import AsyncIterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page

from shared.topology import Topology
from tests.support.browser import chromium
from tests.support.infra import Infrastructure, provide, remove_declared

SERVICES = ("orders", "followups", "loyalty", "referrals")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The folder a test lives in is its marker: unit/, service/ or e2e/."""
    for item in items:
        folder = Path(item.path).parent.name
        if folder in {"unit", "service", "e2e"}:
            item.add_marker(getattr(pytest.mark, folder))


@pytest.fixture(scope="session")
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def topology(prefix: str) -> Topology:
    return Topology(prefix)


@pytest.fixture(scope="session")
def used_services() -> list[str]:
    """Services a test ran under this run's prefix; their queues are deleted at the end."""
    return list(SERVICES)


@pytest.fixture(scope="session")
async def infra(
    tmp_path_factory: pytest.TempPathFactory, topology: Topology, used_services: list[str]
) -> AsyncIterator[Infrastructure]:
    """The broker and database of this run; what the run declared in them is removed at the end."""
    with ExitStack() as cleanup:
        found = provide(tmp_path_factory.mktemp("infra"), cleanup)
        print(f"\ninfrastructure: {found.how}")
        yield found
        await remove_declared(found, topology, used_services)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the run's page tests (tests/support/browser.py)."""
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh browser context and page per test: no cookies or storage carried over."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    opened = await context.new_page()
    yield opened
    await context.close()
