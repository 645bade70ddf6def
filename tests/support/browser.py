"""A real browser for page tests: Debian's Chromium driven by Playwright, axe-core for accessibility.

`playwright install` cannot download browsers on these machines, so the tests launch the system's Chromium
(`deploy/local/ensure-chromium.sh` installs it; CHROMIUM_PATH points elsewhere). Screenshots are kept as test
artifacts under `.data/test-artifacts/screenshots/`.
"""

import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page, async_playwright

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / ".data" / "test-artifacts" / "screenshots"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERIOUS = {"serious", "critical"}


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    if not Path(path).exists():
        raise RuntimeError(f"no Chromium at {path}: run deploy/local/ensure-chromium.sh (make test does)")
    return path


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, for as long as the block runs."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path(), args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def screenshot(page: Page, name: str) -> Path:
    """Keep a full-page screenshot as a test artifact; the name says what it shows (e.g. `today-fa`)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def accessibility_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now (each with id, impact, nodes)."""
    result = await Axe().run(page)
    violations: list[dict[str, Any]] = result.response["violations"]
    return [violation for violation in violations if violation.get("impact") in SERIOUS]


def describe(violations: list[dict[str, Any]]) -> str:
    """One line per violation, with the first offending element, for an assertion message."""
    lines = []
    for violation in violations:
        target = violation["nodes"][0]["target"] if violation.get("nodes") else "?"
        lines.append(f"{violation['id']} ({violation['impact']}): {violation['help']} at {target}")
    return "\n".join(lines)
