"""The dependency floors setup.cfg declares are versions eventlog works with."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from .conftest import clean_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]


@pytest.fixture
def pg_schema_dsn(pg_database_dsn: str) -> Iterator[str]:
    """An empty schema of the run's PostgreSQL database, dropped afterwards."""
    schema = f"floors_{secrets.token_hex(4)}"

    async def sql(statement: str) -> None:
        conn = await asyncpg.connect(pg_database_dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(sql(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{pg_database_dsn}?search_path={schema}"
    finally:
        asyncio.run(sql(f"DROP SCHEMA {schema} CASCADE"))


def test_the_declared_floors_install_and_serve(tmp_path, pg_schema_dsn):
    """scripts/floors.py installs every dependency at its declared floor into a fresh venv (from
    the package index, a regular install), then the example program runs and requests through
    the app work on SQLite and PostgreSQL."""
    done = subprocess.run(
        [sys.executable, "scripts/floors.py", "--keep", str(tmp_path), "--dsn", pg_schema_dsn],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "execution 1001: COMPLETED, 4 events" in output
    assert output.count("requests on") == 2, output
    assert "requests on sqlite ok" in output and "requests on postgresql ok" in output
