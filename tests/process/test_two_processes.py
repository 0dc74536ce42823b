"""Several processes on one SQLite file: `eventlog serve` and programs embedding eventlog."""

from __future__ import annotations

import asyncio
import collections
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eventlog.ids import decode

from .conftest import clean_env

pytestmark = pytest.mark.slow

SECONDS = 4.0
HTTP_WORKERS = 4
EMBEDDED = (1, 2)  # the process numbers of the embedded writers; the server's is 0
WRITER = Path(__file__).with_name("embedded_writer.py")
TIMEOUT = aiohttp.ClientTimeout(total=30)


def _start_embedded(dsn: str, number: int, out: Path) -> subprocess.Popen[bytes]:
    with open(out / f"embedded-{number}.log", "wb") as log:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, str(WRITER), dsn, str(number), str(out), str(SECONDS)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            cwd=out,
        )


async def _http_load(url: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Post singles and batches for SECONDS from HTTP_WORKERS tasks; every 200 is an ack."""
    acks: list[dict[str, Any]] = []
    errors: list[str] = []
    stop_at = time.monotonic() + SECONDS

    async def worker(session: aiohttp.ClientSession, k: int) -> None:
        execution_id = k + 1
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            if n % 5 == 0:
                # A batch of items without ids: the server mints five in one request.
                items = [{"name": "call.done", "step": f"b{n}", "payload": i} for i in range(5)]
                body: Any = {"execution_id": execution_id, "events": items}
                route = "/api/events/batch"
            else:
                body = {"execution_id": execution_id, "name": "step.enter", "step": f"s{n}"}
                if n % 2:
                    body["event_id"] = 10**6 * k + n
                route = "/api/events"
            async with session.post(url + route, json=body) as reply:
                text = await reply.text()
                if reply.status != 200:
                    errors.append(f"{reply.status} {text}")
                    continue
                data = await reply.json()
            ids = data["event_ids"] if "events" in body else [data["event_id"]]
            for event_id in ids:
                acks.append(
                    {
                        "execution_id": execution_id,
                        "event_id": int(event_id),
                        "minted": "event_id" not in body,
                        "duplicate": data["duplicate"] or bool(data.get("duplicates")),
                    }
                )

    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        await asyncio.gather(*(worker(session, k) for k in range(HTTP_WORKERS)))
    return acks, errors


def _read(out: Path, number: int, kind: str) -> list[str]:
    return (out / f"embedded-{number}.{kind}").read_text().splitlines()


async def test_serve_and_embedded_writers_on_one_sqlite_file_store_each_ack_once_without_collisions(
    tmp_path: Path, start_server
) -> None:
    """`eventlog serve` and two embedded programs append to one SQLite file at once (ids
    minted on all three): every acknowledged event is stored exactly once, no two events share
    an id, the processes hold different node ids, seq is 1..N in the order each writer saw its
    commits, no request fails, and the file passes an integrity check."""
    db = tmp_path / "events.db"
    dsn = f"sqlite:///{db}"
    server = start_server(dsn, node_id=1, env={"EVENTLOG_ACCESS_LOG": "off"})
    embedded = {n: _start_embedded(dsn, n, tmp_path) for n in EMBEDDED}
    try:
        deadline = time.monotonic() + 30
        while not all((tmp_path / f"embedded-{n}.ready").exists() for n in EMBEDDED):
            for n, proc in embedded.items():
                assert proc.poll() is None, _read(tmp_path, n, "log")
            assert time.monotonic() < deadline, "the embedded writers did not start"
            await asyncio.sleep(0.05)
        node_ids = {n: int(_read(tmp_path, n, "ready")[0]) for n in EMBEDDED}
        (tmp_path / "go").touch()
        http_acks, http_errors = await _http_load(server.url)
        for n, proc in embedded.items():
            assert proc.wait(timeout=60) == 0, _read(tmp_path, n, "log")
    finally:
        for proc in embedded.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert server.terminate() == 0, server.log()

    embedded_acks = {n: [json.loads(line) for line in _read(tmp_path, n, "acks")] for n in EMBEDDED}
    errors = {n: _read(tmp_path, n, "errors") for n in EMBEDDED} | {0: http_errors}
    counts = {n: len(a) for n, a in embedded_acks.items()} | {0: len(http_acks)}
    print(f"\nacknowledged events by process (0 = serve) in {SECONDS} s: {counts}")
    assert {n: e for n, e in errors.items() if e} == {}, "requests failed under contention"
    assert all(counts.values()), f"a process wrote nothing: {counts}"

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = conn.execute(
            "SELECT seq, execution_id, event_id FROM events ORDER BY seq"
        ).fetchall()
        live_claims = conn.execute(
            "SELECT node_id FROM node_claims WHERE token IS NOT NULL"
        ).fetchall()
    assert live_claims == [], "a process that exited still holds its node id"

    # seq: 1..N with no gap or repeat, across every writer.
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    # Every acknowledgement is stored exactly once, and nothing else is.
    stored = collections.Counter((r[1], r[2]) for r in rows)
    all_acks = http_acks + [a for acks in embedded_acks.values() for a in acks]
    acked = collections.Counter((a["execution_id"], a["event_id"]) for a in all_acks)
    assert [a for a in all_acks if a["duplicate"]] == [], "an append was taken as a retry"
    assert {k: c for k, c in acked.items() if c > 1} == {}, "two acks named one event"
    assert {k: c for k, c in stored.items() if c > 1} == {}
    assert set(stored) == set(acked)
    # No id is shared by two events, whichever process minted it or execution it went to.
    by_id = collections.Counter(r[2] for r in rows)
    assert {i: c for i, c in by_id.items() if c > 1} == {}, "an event id was minted twice"

    # Each process minted under a node id of its own.
    minted_nodes = {
        n: {decode(a["event_id"]).node_id for a in acks if a["minted"]}
        for n, acks in embedded_acks.items()
    } | {0: {decode(a["event_id"]).node_id for a in http_acks if a["minted"]}}
    assert minted_nodes == {0: {1}} | {n: {node_ids[n]} for n in EMBEDDED}
    assert sorted(node_ids.values()) == [0, 2], "auto claims skip the server's node id 1"

    # Each embedded task appends one event at a time, so its acks are in its commit order.
    for acks in embedded_acks.values():
        for k in {a["worker"] for a in acks}:
            seqs = [a["seq"] for a in acks if a["worker"] == k]
            assert seqs == sorted(set(seqs)), f"seq went back for worker {k}"
