"""`eventlog purge` and `eventlog vacuum` as real processes, and retention in a running
service, on every backend."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import pytest

from eventlog.codec import format_timestamp
from eventlog.log import EventLog
from eventlog.retention import ndjson
from eventlog.storage.base import Page

pytestmark = pytest.mark.slow


def _seed(dsn: str, executions: list[int]) -> list[dict]:
    """Append one event per execution (each its own transaction); their canonical forms."""

    async def seed() -> list[dict]:
        async with EventLog.open(dsn) as log:
            for x in executions:
                await log.append({"execution_id": x, "event_type": "step.enter", "step": "s"})
            return [json.loads(line) for line in (await _export(log)).splitlines()]

    return asyncio.run(seed())


async def _export(log: EventLog) -> bytes:
    return ndjson(await log.store.page(Page(limit=10_000)))


def _held(dsn: str) -> list[dict]:
    async def read() -> bytes:
        async with EventLog.open(dsn) as log:
            return await _export(log)

    return [json.loads(line) for line in asyncio.run(read()).splitlines()]


def test_purge_by_time_dry_run_then_with_an_archive(run_eventlog, dsn: str, tmp_path: Path):
    """--dry-run prints the count and changes nothing; the purge prints the same count, writes
    exactly the removed events to the gzip archive and keeps the rest; again, it prints 0."""
    old = _seed(dsn, [1, 1, 2])
    time.sleep(0.01)
    kept = _seed(dsn, [2, 3])
    before = kept[len(old)]["ingested_at"]  # the first event of the second seeding
    dry = run_eventlog("purge", "--dsn", dsn, "--before", before, "--dry-run")
    assert (dry.returncode, dry.stdout) == (0, "3\n"), dry.stderr
    assert _held(dsn) == kept
    archive = tmp_path / "old.ndjson.gz"
    done = run_eventlog("purge", "--dsn", dsn, "--before", before, "--archive", str(archive))
    assert (done.returncode, done.stdout) == (0, "3\n"), done.stderr
    assert [json.loads(line) for line in gzip.decompress(archive.read_bytes()).splitlines()] == (
        kept[: len(old)]
    )
    assert _held(dsn) == kept[len(old) :]
    again = run_eventlog("purge", "--dsn", dsn, "--before", before)
    assert (again.returncode, again.stdout) == (0, "0\n"), again.stderr


def test_purge_by_duration_removes_what_is_older(run_eventlog, dsn: str):
    """--before 1s removes what was ingested more than a second ago; --before 1h, nothing."""
    _seed(dsn, [1, 2])
    none = run_eventlog("purge", "--dsn", dsn, "--before", "1h")
    assert (none.returncode, none.stdout) == (0, "0\n"), none.stderr
    time.sleep(1.1)
    done = run_eventlog("purge", "--dsn", dsn, "--before", "1s")
    assert (done.returncode, done.stdout) == (0, "2\n"), done.stderr
    # The log says how long the purge held the write lock at a time (scripts read it).
    assert re.search(r"removed 2 events in \d+ steps; the write lock was held at most "
                     r"\d+\.\d ms at a time", done.stderr), done.stderr  # fmt: skip
    assert _held(dsn) == []


@pytest.mark.parametrize("before", ["yesterday", "90", "2026-01-01T00:00:00", "0d"])
def test_purge_with_a_bad_cut_off_exits_2_naming_it(run_eventlog, dsn: str, before: str):
    """A cut-off that is neither an RFC 3339 time with an offset nor a duration is refused."""
    done = run_eventlog("purge", "--dsn", dsn, "--before", before)
    assert done.returncode == 2 and "--before" in done.stderr, done.stderr


def test_vacuum_runs_on_every_backend(run_eventlog, dsn: str):
    """`eventlog vacuum` runs to completion on a store holding events."""
    _seed(dsn, [1])
    done = run_eventlog("vacuum", "--dsn", dsn)
    assert (done.returncode, done.stdout) == (0, "vacuumed\n"), done.stderr


def test_a_running_service_with_retention_removes_old_events(start_server, dsn: str):
    """EVENTLOG_RETENTION=2s: events the service took disappear by themselves, their
    execution's summary too, while the service goes on taking new ones."""
    server = start_server(
        dsn, env={"EVENTLOG_RETENTION": "2s", "EVENTLOG_RETENTION_INTERVAL": "0.2"}
    )

    async def scenario() -> None:
        async with aiohttp.ClientSession(server.url) as http:
            body = {"execution_id": 5, "event_type": "step.enter", "step": "s"}
            assert (await http.post("/api/events", json=body)).status == 200
            assert (await http.get("/api/executions/5")).status == 200
            async with asyncio.timeout(30):
                while (await http.get("/api/executions/5")).status != 404:
                    await asyncio.sleep(0.1)
            assert (await (await http.get("/api/events")).json())["events"] == []
            assert (await http.post("/api/events", json=body)).status == 200
            (new,) = (await (await http.get("/api/events")).json())["events"]
            assert new["seq"] == "2"  # after the removed one, never again seq 1

    asyncio.run(scenario())
    # Logged once the purge has also handed the space back: after the summary went.
    deadline = time.monotonic() + 30
    while "retention removed 1 events" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)


def test_the_cut_off_time_is_read_as_rfc_3339(run_eventlog, dsn: str):
    """--before takes a time with any offset (or Z)."""
    _seed(dsn, [1])
    earlier = datetime(2000, 1, 1, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    done = run_eventlog("purge", "--dsn", dsn, "--before", earlier.isoformat(), "--dry-run")
    assert (done.returncode, done.stdout) == (0, "0\n"), done.stderr
    done = run_eventlog(
        "purge",
        "--dsn",
        dsn,
        "--before",
        format_timestamp(datetime(2999, 1, 1, tzinfo=UTC)),
        "--dry-run",
    )
    assert (done.returncode, done.stdout) == (0, "1\n"), done.stderr


def test_purge_of_a_missing_sqlite_file_exits_1_and_creates_nothing(run_eventlog, tmp_path: Path):
    """A purge has nothing to do on a file that is not there, and leaves none behind."""
    path = tmp_path / "none.db"
    done = run_eventlog("purge", "--dsn", f"sqlite:///{path}", "--before", "1d")
    assert done.returncode == 1 and "no SQLite file" in done.stderr, done.stderr
    assert not path.exists()
