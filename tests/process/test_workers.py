"""`eventlog serve --workers 2`: two processes on one port, on both stores."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import aiohttp
import pytest

from eventlog.ids import decode

from .conftest import Server, ServerFactory, stored_keys

pytestmark = pytest.mark.slow

ENV = {"EVENTLOG_STREAM_POLL_INTERVAL": "0.1", "EVENTLOG_ACCESS_LOG": "off"}
PIDS = re.compile(r"with 2 worker processes \(pids (\d+), (\d+)\)")
TIMEOUT = aiohttp.ClientTimeout(total=30)


def _start(start_server: ServerFactory, dsn: str) -> Server:
    """Two workers, both listening."""
    server = start_server(dsn, args=("--port", "0", "--workers", "2"), env=ENV)
    _wait_for(server, lambda log: log.count("eventlog listening on") >= 2)
    return server


def _wait_for(server: Server, condition, timeout: float = 30.0) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition(log := server.log()):
        if time.monotonic() > deadline:
            pytest.fail(f"the condition was not met within {timeout} s; log:\n{log}")
        time.sleep(0.05)
    return log


async def _post_many(url: str, execution_id: int, count: int) -> list[int]:
    """Post ``count`` events without ids, each on a new connection (so the kernel spreads
    them over the workers); the ids of the acknowledged ones."""
    ids: list[int] = []

    async def one(n: int) -> None:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:
            body = {"execution_id": execution_id, "name": "step.enter", "step": f"s{n}"}
            async with session.post(f"{url}/api/events", json=body) as reply:
                assert reply.status == 200, await reply.text()
                ids.append(int((await reply.json())["event_id"]))

    for start in range(0, count, 20):
        await asyncio.gather(*(one(n) for n in range(start, min(start + 20, count))))
    return ids


async def test_two_workers_mint_under_distinct_node_ids_and_store_each_ack_once(dsn, start_server):
    """Both workers take requests, each mints under its own node id, no id is minted twice,
    and every acknowledged event is stored exactly once."""
    server = _start(start_server, dsn)
    ids = await _post_many(server.url, 7, 200)
    assert len(set(ids)) == len(ids) == 200
    assert len({decode(i).node_id for i in ids}) == 2
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        stored = await stored_keys(session, server.url, "7", 1000)
    assert sorted(int(event_id) for _, event_id in stored) == sorted(ids)
    assert server.terminate() == 0


async def test_a_stream_on_one_worker_sees_what_the_other_commits(dsn, start_server):
    """A stream is served by one worker; events committed by both reach it, in seq order."""
    server = _start(start_server, dsn)
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.get(f"{server.url}/api/executions/8/events/stream") as stream,
    ):
        assert await stream.content.readline() == b": stream open\n"
        ids = await _post_many(server.url, 8, 60)
        assert len({decode(i).node_id for i in ids}) == 2
        seen: list[int] = []
        async with asyncio.timeout(20):
            async for line in stream.content:
                if line.startswith(b"data: "):
                    seen.append(int(re.search(rb'"event_id":"(\d+)"', line)[1]))  # type: ignore[index]
                    if len(seen) == len(ids):
                        break
    assert sorted(seen) == sorted(ids)
    assert server.terminate() == 0


def test_sigterm_drains_both_workers_and_exits_0(dsn, start_server):
    """SIGTERM to the parent: each worker shuts down as a lone server does; the parent exits 0."""
    server = _start(start_server, dsn)
    assert server.terminate() == 0
    log = server.log()
    assert log.count("stopped after") == 2
    assert log.count("released node id") == 2
    assert "all 2 workers stopped" in log


async def test_a_killed_worker_is_replaced(dsn, start_server):
    """A worker killed with SIGKILL is replaced (with a log line) and the port keeps serving."""
    server = _start(start_server, dsn)
    match = PIDS.search(server.log())
    assert match is not None
    os.kill(int(match[1]), signal.SIGKILL)
    log = _wait_for(server, lambda log: log.count("eventlog listening on") >= 3)
    assert f"(pid {match[1]}) exited with code -9; starting another" in log
    ids = await _post_many(server.url, 9, 40)
    assert len(set(ids)) == 40
    assert server.terminate() == 0
