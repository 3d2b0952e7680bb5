"""Browser fixtures: headless Chromium (Debian's /usr/bin/chromium, driven by Playwright's async
API in the tests' own event loop) against the real web server (`flowgate serve`, one per
session, tests/live_server.py) on the test database and Redis DB. The worker is the `run_worker`
fixture: a real arq burst worker in the test process, on the same database and Redis.

`make test` installs Chromium first when it can (scripts/ensure-chromium.sh); without it these
tests skip and say why. Never `playwright install`: the Debian build is the one we test with."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Error, Page, async_playwright, expect

from tests.factories import PASSWORD
from tests.live_server import LiveServer
from web.domain import users
from web.domain.actors import Actor

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}  # the "readable at 1280x800"
CSP_VIOLATIONS_TO_CONSOLE = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error("Content Security Policy violation: " + event.violatedDirective
                + " blocked " + (event.blockedURI || "inline") + " in " + event.documentURI);
});
"""


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(
            f"{CHROMIUM} is missing: run scripts/ensure-chromium.sh as root "
            "(or `apt-get install chromium`) to run the browser tests"
        )
    playwright = await async_playwright().start()
    try:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000
        )
        yield launched
        await launched.close()
    finally:
        await playwright.stop()


@pytest.fixture(scope="session")
def live_server(browser: Browser) -> Iterator[LiveServer]:
    """`flowgate serve` on a free port, with the test environment conftest.py set up."""
    server = LiveServer().start()
    yield server
    server.stop()


@pytest.fixture
async def page(browser: Browser, live_server: LiveServer) -> AsyncIterator[Page]:
    """A fresh browser context (no cookies) at 1280x800; fails the test on any JavaScript error
    and on anything the dashboard's Content-Security-Policy blocked (web.dashboard.headers)."""
    context = await browser.new_context(
        base_url=live_server.url, viewport=VIEWPORT, locale="en-US", timezone_id="UTC"
    )
    context.set_default_timeout(5_000)
    # Every CSP violation as a console error too (Chromium logs most, not all, by itself).
    await context.add_init_script(CSP_VIOLATIONS_TO_CONSOLE)
    tab = await context.new_page()
    errors: list[Error] = []
    blocked: list[str] = []
    tab.on("pageerror", lambda error: errors.append(error))
    tab.on(
        "console",
        lambda message: (
            blocked.append(message.text)
            if message.type == "error" and "Content Security Policy" in message.text
            else None
        ),
    )
    yield tab
    await context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
    assert not blocked, f"blocked by the Content-Security-Policy: {blocked}"


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where the tests save their screenshots: the README's docs/screenshots/ with
    FLOWGATE_UPDATE_SCREENSHOTS=1, else a temporary folder (so a test run leaves the tree as it
    was: every run has new ids and times)."""
    return DOCS_SCREENSHOTS if os.environ.get("FLOWGATE_UPDATE_SCREENSHOTS") == "1" else tmp_path


@pytest.fixture
async def api(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the live server's public API (what a customer site does)."""
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        yield http


async def _sign_in(page: Page, role: str) -> Page:
    email = f"{role}@example.com"
    await users.create_user(email, PASSWORD, role, actor=Actor.system())
    await page.goto("/dashboard/executions")  # signed out: sent to the login form
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator(".who")).to_have_text(f"{email} · {role}")
    return page


@pytest.fixture
async def reviewer_page(page: Page) -> Page:
    """`page`, signed in through the login form as reviewer@example.com."""
    return await _sign_in(page, "reviewer")


@pytest.fixture
async def admin_page(page: Page) -> Page:
    """`page`, signed in through the login form as admin@example.com."""
    return await _sign_in(page, "admin")
