"""Fixtures: every store-backed test runs on SQLite and on a real PostgreSQL.

PostgreSQL comes from EVENTLOG_TEST_PG_DSN, else the server at 127.0.0.1:5432 (user postgres)
when it answers. The run creates a database of its own and drops it at the end; each test works
in a schema of its own inside it. Without a server the PostgreSQL half is skipped with a notice,
unless EVENTLOG_REQUIRE_PG=1, which turns the missing server into an error.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from eventlog.config import Settings
from eventlog.log import EventLog
from eventlog.web import create_app

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
REQUIRE_PG = os.environ.get("EVENTLOG_REQUIRE_PG") == "1"


def _with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


async def _create_database(admin_dsn: str) -> str:
    name = f"eventlog_test_{os.getpid()}_{secrets.token_hex(3)}"
    conn = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def _drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


class _Postgres:
    """The throwaway database of this run, or why there is none."""

    def __init__(self) -> None:
        self.admin_dsn = os.environ.get("EVENTLOG_TEST_PG_DSN", DEFAULT_PG)
        self.database: str | None = None
        self.error: str | None = None

    @property
    def dsn(self) -> str:
        assert self.database is not None
        return _with_database(self.admin_dsn, self.database)

    def start(self) -> None:
        try:
            self.database = asyncio.run(_create_database(self.admin_dsn))
        except (OSError, asyncpg.PostgresError, TimeoutError) as e:
            self.error = f"{type(e).__name__}: {e}"

    def stop(self) -> None:
        if self.database is not None:
            asyncio.run(_drop_database(self.admin_dsn, self.database))


_PG = _Postgres()


def pytest_configure(config: pytest.Config) -> None:
    """Create the run's PostgreSQL database once, before any test."""
    if not hasattr(config, "workerinput"):
        _PG.start()
    if _PG.error and REQUIRE_PG:
        raise pytest.UsageError(
            f"EVENTLOG_REQUIRE_PG=1 but PostgreSQL at {_PG.admin_dsn} is unusable: {_PG.error}"
        )


def pytest_unconfigure(config: pytest.Config) -> None:
    """Drop the run's database."""
    _PG.stop()


def pytest_report_header(config: pytest.Config) -> str:
    """Say which PostgreSQL the run uses, or loudly that it uses none."""
    if _PG.database:
        return f"postgresql: database {_PG.database} on {urlsplit(_PG.admin_dsn).netloc}"
    return f"postgresql: NOT AVAILABLE ({_PG.error}); the PostgreSQL half of the suite is SKIPPED"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Repeat the skip notice where nobody can miss it."""
    if _PG.error:
        terminalreporter.section("PostgreSQL tests skipped", sep="!", red=True, bold=True)
        terminalreporter.write_line(
            f"No PostgreSQL at {_PG.admin_dsn} ({_PG.error}). Every PostgreSQL test was "
            "skipped; set EVENTLOG_TEST_PG_DSN, or EVENTLOG_REQUIRE_PG=1 to make this an error."
        )


# Stores of other backends to run the store-backed tests against: DSN templates, separated by
# whitespace, in which {tmp_path} is the test's own directory and {unique} a fresh name, e.g.
# EVENTLOG_TEST_STORES='mydb://localhost/{unique}' with the module that registers "mydb"
# loaded as a plugin (pytest -p mypackage.eventlog_store).
OTHER_STORES = os.environ.get("EVENTLOG_TEST_STORES", "").split()
BACKENDS = ["sqlite", "postgres", *OTHER_STORES]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each store-backed test runs once per backend."""
    if request.param == "postgres" and _PG.database is None:
        pytest.skip(f"PostgreSQL not available: {_PG.error}")
    return request.param


@pytest.fixture
def pg_database_dsn() -> str:
    """The run's PostgreSQL database (skips when there is none)."""
    if _PG.database is None:
        pytest.skip(f"PostgreSQL not available: {_PG.error}")
    return _PG.dsn


@pytest.fixture
async def dsn(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A DSN for an empty store of the test's backend, removed after the test."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/events.db"
        return
    if backend != "postgres":
        yield backend.format(tmp_path=tmp_path, unique=f"t_{secrets.token_hex(6)}")
        return
    schema = f"t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(_PG.dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        yield f"{_PG.dsn}?search_path={schema}"
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


@pytest.fixture
def settings(dsn: str) -> Settings:
    """Default settings on the test's store."""
    return Settings(dsn=dsn)


@pytest.fixture
async def event_log(settings: Settings) -> AsyncIterator[EventLog]:
    """A started EventLog on the test's store."""
    async with EventLog(settings) as log:
        yield log


@pytest.fixture
async def client(aiohttp_client, settings: Settings) -> TestClient:  # type: ignore[no-untyped-def]
    """An HTTP client for the service on the test's store."""
    return await aiohttp_client(create_app(settings))
