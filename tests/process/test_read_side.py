"""Readers against real processes: two instances on one PostgreSQL, and export/import."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import sqlite3

import aiohttp
import pytest

from eventlog.config import Settings
from eventlog.log import EventLog
from eventlog.tools import read_sse

pytestmark = pytest.mark.slow


@pytest.fixture
def backend() -> str:
    """These tests need PostgreSQL (skipped with the notice when there is none)."""
    return "postgres"


async def test_two_instances_give_every_reader_each_acknowledged_event_once_in_order(
    dsn, start_server
):
    """Two servers on one PostgreSQL, four concurrent writers: a feed reader and a stream
    reader, following all along, each end with exactly the acknowledged events, each once,
    in strictly increasing seq."""
    env = {"EVENTLOG_STREAM_POLL_INTERVAL": "0.2", "EVENTLOG_ACCESS_LOG": "off"}
    servers = [start_server(dsn, node_id=n, env=env) for n in (1, 2)]
    acknowledged: set[tuple[str, str]] = set()
    ids = itertools.count(1)

    async def writer(session: aiohttp.ClientSession, n: int) -> None:
        rng = random.Random(n)
        for _ in range(60):
            url = servers[rng.randrange(2)].url
            if rng.random() < 0.3:
                items = [
                    {"event_id": next(ids), "name": "step.enter", "step": "s"}
                    for _ in range(rng.randint(2, 8))
                ]
                reply = await session.post(
                    f"{url}/api/events/batch", json={"execution_id": n, "events": items}
                )
                if reply.status == 200:
                    acknowledged.update((str(n), str(i["event_id"])) for i in items)
            else:
                body = {"execution_id": n, "event_id": next(ids), "name": "call.done", "step": "s"}
                reply = await session.post(f"{url}/api/events", json=body)
                if reply.status == 200:
                    acknowledged.add((str(n), str(body["event_id"])))
            assert reply.status == 200, await reply.text()

    async def feed_reader(session: aiohttp.ClientSession, seen: list[dict]) -> None:
        after = "0"
        while True:
            page = await (
                await session.get(
                    f"{servers[0].url}/api/events", params={"after": after, "limit": "50"}
                )
            ).json()
            seen += page["events"]
            if page["events"]:
                after = page["events"][-1]["seq"]
            else:
                await asyncio.sleep(0.02)

    async def stream_reader(session: aiohttp.ClientSession, seen: list[dict]) -> None:
        reply = await session.get(f"{servers[1].url}/api/events/stream", params={"after": "0"})
        async for message in read_sse(reply.content):
            seen.append(json.loads(message.data))

    from_feed: list[dict] = []
    from_stream: list[dict] = []
    async with aiohttp.ClientSession() as session:
        readers = [
            asyncio.create_task(feed_reader(session, from_feed)),
            asyncio.create_task(stream_reader(session, from_stream)),
        ]
        await asyncio.gather(*(writer(session, n) for n in range(1, 5)))
        # The readers follow on; give them until they have as many events as were acknowledged.
        async with asyncio.timeout(20):
            while min(len(from_feed), len(from_stream)) < len(acknowledged):
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # time enough for a repeat or a stray event to show
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    for name, seen in (("feed", from_feed), ("stream", from_stream)):
        missing = acknowledged - {(e["execution_id"], e["event_id"]) for e in seen}
        assert not missing, (
            f"the {name} reader never saw {len(missing)} events: {sorted(missing)[:5]}"
        )
    for seen in (from_feed, from_stream):
        seqs = [int(e["seq"]) for e in seen]
        assert seqs == sorted(set(seqs)), "seq must strictly increase, with no repeat"
        assert [(e["execution_id"], e["event_id"]) for e in seen] != []
        assert {(e["execution_id"], e["event_id"]) for e in seen} == acknowledged
        assert len(seen) == len(acknowledged)


async def test_export_from_sqlite_and_import_into_postgres_round_trips_exactly(
    dsn, tmp_path, run_eventlog
):
    """100,000 events: SQLite → NDJSON → PostgreSQL keeps ids, payloads and timestamps;
    importing the same file again changes nothing."""
    source = f"sqlite:///{tmp_path}/source.db"
    async with EventLog(Settings(dsn=source)) as log:
        from eventlog.codec import structure_batch

        for chunk in range(100):
            items = [
                {
                    "execution_id": 1 + (chunk * 1000 + i) % 37,
                    "name": ["step.enter", "call.done", "command.failed"][i % 3],
                    "step": f"s{i % 11}",
                    "payload": {
                        "n": chunk * 1000 + i,
                        "big": 2**63 + i,
                        "text": "ä\u0000😀",
                        "f": i / 7,
                    },
                    "meta": None if i % 2 else {"attempt": i},
                    "created_at": f"2026-05-31T10:{i % 60:02d}:{(i * 7) % 60:02d}.{i:06d}+02:00",
                    "worker_id": f"w-{i % 5}",
                    "actionable": i % 4 == 0,
                }
                for i in range(1000)
            ]
            await log.ingest(structure_batch(items), batch=True)
    dump = tmp_path / "events.ndjson"
    with open(dump, "wb") as out:
        result = run_eventlog("export", "--dsn", source, timeout=120)
        assert result.returncode == 0, result.stderr
        out.write(result.stdout.encode())
    assert "exported 100000 events" in result.stderr

    first = run_eventlog("import", "--dsn", dsn, str(dump), timeout=300)
    assert first.returncode == 0, first.stderr
    assert "imported 100000 new events, 0 already stored" in first.stderr
    second = run_eventlog("import", "--dsn", dsn, str(dump), timeout=300)
    assert second.returncode == 0, second.stderr
    assert "imported 0 new events, 100000 already stored" in second.stderr

    again = run_eventlog("export", "--dsn", dsn, timeout=120)
    assert again.returncode == 0, again.stderr
    exported = [json.loads(line) for line in dump.read_text().splitlines()]
    imported = [json.loads(line) for line in again.stdout.splitlines()]
    assert len(imported) == len(exported) == 100_000

    def content(event: dict) -> dict:
        return {k: v for k, v in event.items() if k not in ("seq", "ingested_at")}

    assert [content(e) for e in imported] == [content(e) for e in exported]
    # The source file is untouched by the export.
    with sqlite3.connect(tmp_path / "source.db") as db:
        assert db.execute("SELECT count(*) FROM events").fetchone() == (100_000,)


async def test_tail_prints_the_stream_and_resumes_after_the_server_restarts(
    dsn, start_server, tmp_path
):
    """`eventlog tail` prints each event as a JSON line; when the server goes away and comes
    back on the same address, it resumes after the last seq it printed: nothing lost, nothing
    printed twice."""
    import socket
    import subprocess
    import sys

    from .conftest import clean_env

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    first = start_server(dsn, node_id=1, args=("--port", str(port)))
    out_path = tmp_path / "tail.out"
    with open(out_path, "wb") as out:
        tail = subprocess.Popen(
            [sys.executable, "-m", "eventlog", "tail", "--url", first.url, "--after", "0"],
            stdout=out,
            stderr=subprocess.DEVNULL,
            env=clean_env(),
        )
    try:

        async def post(session, event_id):
            body = {"execution_id": 1, "event_id": event_id, "name": "step.enter", "step": "s"}
            reply = await session.post(f"{first.url}/api/events", json=body)
            assert reply.status == 200

        async def printed(count):
            async with asyncio.timeout(20):
                while len(out_path.read_text().splitlines()) < count:
                    await asyncio.sleep(0.05)
            return [json.loads(line) for line in out_path.read_text().splitlines()]

        # A new connection per request: the first server's connections die with it.
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True)
        ) as session:
            for i in (1, 2, 3):
                await post(session, i)
            await printed(3)
            first.kill()
            start_server(dsn, node_id=2, args=("--port", str(port)))
            for i in (4, 5):
                await post(session, i)
            await printed(5)
            await asyncio.sleep(0.5)  # time enough for a repeat to show
        lines = [json.loads(line) for line in out_path.read_text().splitlines()]
        assert [e["event_id"] for e in lines] == ["1", "2", "3", "4", "5"]
    finally:
        tail.kill()
        tail.wait()


def test_sigterm_with_open_streams_exits_promptly(dsn, start_server):
    """Streams end at shutdown: SIGTERM with a stream open exits 0 well within the shutdown
    timeout (10 s) instead of waiting it out."""
    import time
    import urllib.request

    server = start_server(dsn, node_id=1)
    stream = urllib.request.urlopen(f"{server.url}/api/events/stream", timeout=10)
    assert stream.readline() == b": stream open\n"
    started = time.monotonic()
    assert server.terminate() == 0
    assert time.monotonic() - started < 5
    stream.close()


async def test_tail_sends_its_token_and_says_why_when_it_has_none(start_server, tmp_path):
    """With tokens required, `eventlog tail` reads with EVENTLOG_TOKEN; without one it exits 1
    naming the 401 instead of retrying for ever."""
    import subprocess
    import sys

    from .conftest import clean_env

    server = start_server(
        f"sqlite:///{tmp_path}/events.db",
        env={"EVENTLOG_READ_TOKENS": "r-tok", "EVENTLOG_WRITE_TOKENS": "w-tok"},
    )
    command = [sys.executable, "-m", "eventlog", "tail", "--url", server.url, "--after", "0"]
    refused = subprocess.run(
        command, capture_output=True, text=True, env=clean_env(), timeout=30, check=False
    )
    assert refused.returncode == 1 and "unauthorized" in refused.stderr.lower()
    out_path = tmp_path / "tail.out"
    with open(out_path, "wb") as out:
        tail = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.DEVNULL,
            env=clean_env({"EVENTLOG_TOKEN": "r-tok"}),
        )
    try:
        async with aiohttp.ClientSession() as session:
            body = {"execution_id": 3, "event_id": 9, "name": "step.enter", "step": "s"}
            reply = await session.post(
                f"{server.url}/api/events", json=body, headers={"Authorization": "Bearer w-tok"}
            )
            assert reply.status == 200
        async with asyncio.timeout(20):
            while not out_path.read_text():
                assert tail.poll() is None, "tail exited"
                await asyncio.sleep(0.05)
        assert json.loads(out_path.read_text().splitlines()[0])["event_id"] == "9"
    finally:
        tail.kill()
        tail.wait()
