"""Fixtures for the event browser's tests: the service in-process, Debian's chromium driven by
playwright, and helpers to post events and to see them arrive on screen.

Chromium comes from /usr/bin/chromium (./scripts/test installs it when missing); without it the
browser tests are skipped with a loud notice, or fail under EVENTLOG_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from eventlog.config import Settings
from eventlog.web import create_app

CHROMIUM = Path("/usr/bin/chromium")
REQUIRE = os.environ.get("EVENTLOG_REQUIRE_BROWSER") == "1"
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "browser"
MISSING = None if CHROMIUM.exists() else f"{CHROMIUM} is missing (apt-get install chromium)"


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run at all when a browser is required and there is none."""
    if MISSING and REQUIRE:
        raise pytest.UsageError(f"EVENTLOG_REQUIRE_BROWSER=1 but {MISSING}")


def pytest_report_header(config: pytest.Config) -> str:
    """Say which browser the run uses, or loudly that it has none."""
    if MISSING:
        return f"browser: NOT AVAILABLE ({MISSING}); the browser tests are SKIPPED"
    return f"browser: {CHROMIUM}; screenshots in {SHOTS}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Repeat the skip notice where nobody can miss it."""
    if MISSING:
        terminalreporter.section("Browser tests skipped", sep="!", red=True, bold=True)
        terminalreporter.write_line(
            f"{MISSING}: every browser test was skipped; EVENTLOG_REQUIRE_BROWSER=1 makes "
            "this an error."
        )


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless chromium (the system's, never a downloaded build)."""
    if MISSING:
        pytest.skip(MISSING)
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        await launched.close()


class Screen:
    """A page of the browser with what it logged as an error."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"console {message.type}: {message.text} ({message.location})")

    async def shot(self, name: str) -> Path:
        """Save a screenshot under test-output/browser/."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    async def seen_at(self, selector: str) -> float:
        """Wall-clock ms at which ``selector`` first matched (call arm() before the change)."""
        return float(await self.page.evaluate("(s) => window.__seen(s)", selector))

    async def arm(self, selector: str) -> None:
        """Start watching for ``selector``: its first match is timed by a MutationObserver."""
        await self.page.evaluate(_WATCH, selector)


_WATCH = """(selector) => {
  window.__watch ??= {};
  window.__watch[selector] = new Promise((resolve) => {
    if (document.querySelector(selector)) return resolve(Date.now());
    const observer = new MutationObserver(() => {
      if (document.querySelector(selector)) { observer.disconnect(); resolve(Date.now()); }
    });
    observer.observe(document, { subtree: true, childList: true, attributes: true });
  });
  window.__seen = (s) => window.__watch[s];
}"""


@pytest.fixture
def screen_factory(browser: Browser) -> Any:
    """New pages (each in a fresh context: its own sessionStorage) at a desktop size."""

    async def make(**options: Any) -> Screen:
        context = await browser.new_context(viewport={"width": 1440, "height": 900}, **options)
        return Screen(await context.new_page())

    return make


@pytest.fixture
async def screen(screen_factory: Any) -> Screen:
    """One page."""
    return await screen_factory()


class Service:
    """The service under test, on a real port, and a client that posts to it."""

    def __init__(self, base: str, session: aiohttp.ClientSession, token: str | None) -> None:
        self.base = base.rstrip("/")
        self.session = session
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def url(self, path: str) -> str:
        """An absolute URL of the service."""
        return self.base + path

    async def post(self, body: Any, *, batch: bool = False) -> dict[str, Any]:
        """Post one event (or a batch) and return the reply."""
        path = "/api/events/batch" if batch else "/api/events"
        # (a stream, not bytes: aiohttp warns about large bodies sent in one piece)
        data = io.BytesIO(orjson.dumps(body))
        headers = {**self.headers, "Content-Type": "application/json"}
        async with self.session.post(self.url(path), data=data, headers=headers) as reply:
            assert reply.status == 200, await reply.text()
            return await reply.json()

    async def get(self, path: str) -> Any:
        """A JSON read."""
        async with self.session.get(self.url(path), headers=self.headers) as reply:
            assert reply.status == 200, await reply.text()
            return await reply.json()


@pytest.fixture
async def service_factory(aiohttp_server: Any) -> AsyncIterator[Any]:
    """Start the app (optionally mounted in a host app under a prefix) on a real port."""
    sessions: list[aiohttp.ClientSession] = []

    async def start(settings: Settings, *, prefix: str = "", token: str | None = None) -> Service:
        app = create_app(settings)
        if prefix:
            from aiohttp import web

            host = web.Application()
            host.add_subapp(prefix, app)
            app = host
        server = await aiohttp_server(app, host="127.0.0.1")
        session = aiohttp.ClientSession()
        sessions.append(session)
        return Service(str(server.make_url(prefix or "/")), session, token)

    yield start
    for session in sessions:
        await session.close()


@pytest.fixture
async def service(service_factory: Any, settings: Settings) -> Service:
    """The service on the test's backend, without tokens."""
    return await service_factory(settings)
