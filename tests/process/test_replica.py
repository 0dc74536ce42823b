"""Reads from a streaming hot standby (read_dsn), against a real primary and a real standby the
test starts itself (initdb, pg_basebackup -R, loopback ports; see pgcluster.py).

What is proven: the feed and the streams read from the standby are gap-free and repeat-free
under concurrent writes (seq is taken in commit order under a lock on the primary, the standby
replays commits in that order, so it always shows a prefix of the log); a read with the
Eventlog-Seq of a write as ?min_seq= sees the write, or after min_seq_wait answers 503
not_yet_replicated with Retry-After; writes and Idempotency-Key replays are answered by the
primary while the standby has replayed nothing of them; a standby that goes away makes the
reads 503 problem+json (never 500) while the writes go on, and /ready and /metrics say so.
Replay is held back with pg_wal_replay_pause(), so a lagging standby is certain, not hoped for.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import asyncpg
import attrs
import orjson
import pytest

from eventlog.config import Settings
from eventlog.web import create_app

from .pgcluster import Cluster, hot_standby, throwaway_cluster

pytestmark = pytest.mark.slow

WHAT = "the read replica test"
# Small and fast: nothing here needs to survive a crash of the machine.
SMALL = {"fsync": "off", "shared_buffers": "16MB", "max_connections": "50"}
CATCH_UP = 60.0  # seconds the standby may take to replay what the test wrote (a failure past it)


@pytest.fixture(scope="module")
def clusters() -> Iterator[tuple[Cluster, Cluster]]:
    """A primary and its streaming hot standby, for the whole module."""
    with (
        throwaway_cluster(WHAT, prefix="eventlog-primary-", settings=SMALL) as primary,
        hot_standby(primary, WHAT, prefix="eventlog-standby-", settings=SMALL) as standby,
    ):
        yield primary, standby


@attrs.frozen
class Pair:
    """One fresh database on the primary and the same database read on the standby."""

    primary: Cluster
    standby: Cluster
    database: str

    @property
    def primary_dsn(self) -> str:
        return self.primary.database_dsn(self.database)

    @property
    def standby_dsn(self) -> str:
        return self.standby.database_dsn(self.database)


_STARTING = (asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError)


async def caught_up(primary_dsn: str, standby_dsn: str) -> None:
    """Until the standby has replayed everything the primary has written so far."""
    async with asyncio.timeout(CATCH_UP):
        primary = await asyncpg.connect(primary_dsn)
        try:
            target = await primary.fetchval("SELECT pg_current_wal_lsn()")
        finally:
            await primary.close()
        while True:
            # (the database is not there yet, the standby is starting)
            with contextlib.suppress(OSError, asyncpg.InvalidCatalogNameError, *_STARTING):
                standby = await asyncpg.connect(standby_dsn)
                try:
                    # (asyncpg reads and writes a pg_lsn as an integer)
                    if await standby.fetchval("SELECT pg_last_wal_replay_lsn() >= $1", target):
                        return
                finally:
                    await standby.close()
            await asyncio.sleep(0.02)


@pytest.fixture
async def pair(clusters: tuple[Cluster, Cluster]) -> AsyncIterator[Pair]:
    """A database of the test's own, on a running standby that replays (whatever the last
    test left), present on both before the test starts."""
    primary, standby = clusters
    if not standby.running():
        await asyncio.to_thread(standby.start)
    with contextlib.suppress(OSError, asyncpg.PostgresError):
        await _replay(standby.dsn, pause=False)
    database = f"replica_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(primary.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
        found = Pair(primary, standby, database)
        await caught_up(primary.dsn, found.standby_dsn)
        yield found
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


def _settings(pair: Pair, **more: Any) -> Settings:
    return Settings(
        dsn=pair.primary_dsn,
        read_dsn=pair.standby_dsn,
        db_connect_timeout=2.0,
        db_command_timeout=5.0,
        **more,
    )


@pytest.fixture
def start(pair: Pair, aiohttp_client: Any) -> Callable[..., Awaitable[Any]]:
    """Start the service on the pair with these settings; its client, once the standby holds
    its schema."""

    async def started(**settings: Any) -> Any:
        client = await aiohttp_client(create_app(_settings(pair, **settings)))
        await caught_up(pair.primary_dsn, pair.standby_dsn)
        return client

    return started


async def _replay(standby_dsn: str, *, pause: bool) -> None:
    """Pause the standby's replay (returning once it is paused), or resume it."""
    conn = await asyncpg.connect(standby_dsn)
    try:
        if not pause:
            await conn.execute("SELECT pg_wal_replay_resume()")
            return
        await conn.execute("SELECT pg_wal_replay_pause()")
        async with asyncio.timeout(CATCH_UP):
            while await conn.fetchval("SELECT pg_get_wal_replay_pause_state()") != "paused":
                await asyncio.sleep(0.01)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def replay_paused(pair: Pair) -> AsyncIterator[None]:
    """The standby replays nothing inside the block (it still receives the WAL)."""
    await _replay(pair.standby_dsn, pause=True)
    try:
        yield
    finally:
        await _replay(pair.standby_dsn, pause=False)


def ev(execution_id: int, event_id: int, **extra: Any) -> dict[str, Any]:
    return {
        "execution_id": str(execution_id),
        "event_id": str(event_id),
        "event_type": "call.done",
        "step": f"s{event_id % 5}",
        **extra,
    }


async def _problem(reply: Any, status: int, code: str) -> dict[str, Any]:
    assert reply.status == status, await reply.text()
    assert reply.content_type == "application/problem+json"
    doc: dict[str, Any] = await reply.json(content_type=None)
    assert doc["code"] == code and doc["status"] == status
    return doc


# --- gap-free, repeat-free under concurrent writes ------------------------------------------

WRITERS = 8
REQUESTS_EACH = 30
BATCH = 4  # every other request is a batch of this many


async def _write(client: Any, writer: int, acked: list[tuple[int, int]]) -> None:
    execution = 7_000 + writer
    next_id = writer * 1_000_000
    for n in range(REQUESTS_EACH):
        size = BATCH if n % 2 else 1
        events = [ev(execution, next_id + i) for i in range(size)]
        next_id += size
        if size == 1:
            reply = await client.post("/api/events", json=events[0])
        else:
            reply = await client.post("/api/events/batch", json=events)
        assert reply.status == 200, await reply.text()
        acked += [(execution, int(e["event_id"])) for e in events]


async def _follow_feed(client: Any, total: asyncio.Future[int]) -> list[dict[str, Any]]:
    """Page the feed by cursor, as a reader that follows it does, until it holds ``total``."""
    seen: list[dict[str, Any]] = []
    cursor = None
    async with asyncio.timeout(CATCH_UP):
        while not (total.done() and len(seen) >= total.result()):
            params = {"limit": "37", **({"after": str(cursor)} if cursor else {})}
            reply = await client.get("/api/events", params=params)
            assert reply.status == 200, await reply.text()
            events = (await reply.json())["events"]
            seen += events
            if events:
                cursor = events[-1]["seq"]
            else:
                await asyncio.sleep(0.005)
    return seen


async def _follow_stream(
    client: Any, path: str, count: asyncio.Future[int], opened: asyncio.Event | None = None
) -> list[dict[str, Any]]:
    """Read an SSE stream from the start until it has brought ``count`` events; ``opened`` is
    set once the service has subscribed it."""
    seen: list[dict[str, Any]] = []
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with (
        asyncio.timeout(CATCH_UP),
        client.get(path, params={"after": "0"}, timeout=timeout) as reply,
    ):
        assert reply.status == 200, await reply.text()
        async for line in reply.content:
            if line.startswith(b": stream open") and opened is not None:
                opened.set()
            if line.startswith(b"data: "):
                seen.append(orjson.loads(line[6:]))
            if count.done() and len(seen) >= count.result():
                return seen
            if line.startswith(b"event: "):
                raise AssertionError(f"the stream ended: {line!r}")
    raise AssertionError("the stream closed")


async def test_feed_and_streams_from_the_standby_are_gap_free_and_repeat_free(start, pair):
    """Eight writers on the primary; a feed follower, the whole-log stream and one execution's
    stream on the standby: each sees seq 1..N in order, once each, and exactly what was
    acknowledged."""
    # The chase after the primary's wake-ups, not the poll, must carry the streams.
    service = await start(stream_poll_interval=5.0)
    loop = asyncio.get_running_loop()
    total: asyncio.Future[int] = loop.create_future()
    one: asyncio.Future[int] = loop.create_future()
    acked: list[tuple[int, int]] = []
    readers = [
        asyncio.create_task(_follow_feed(service, total)),
        asyncio.create_task(_follow_stream(service, "/api/events/stream", total)),
        asyncio.create_task(_follow_stream(service, "/api/executions/7003/events/stream", one)),
    ]
    await asyncio.gather(*(_write(service, w, acked) for w in range(WRITERS)))
    total.set_result(len(acked))
    one.set_result(sum(1 for x, _ in acked if x == 7003))
    feed, stream, execution = await asyncio.gather(*readers)
    n = len(acked)
    assert n == WRITERS * REQUESTS_EACH * (1 + BATCH) // 2
    for seen in (feed, stream):
        assert [int(e["seq"]) for e in seen] == list(range(1, n + 1))
        assert sorted((int(e["execution_id"]), int(e["event_id"])) for e in seen) == sorted(acked)
    own = [e for e in feed if e["execution_id"] == "7003"]
    assert execution == own
    # They were the standby's to serve: it holds the service's read connections.
    standby = await asyncpg.connect(pair.standby_dsn)
    try:
        readers_there = await standby.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            pair.database,
        )
    finally:
        await standby.close()
    assert readers_there >= 1


async def test_a_stream_opened_while_the_standby_lags_starts_from_what_it_holds(start, pair):
    """Events committed while replay is paused (the primary's wake-ups announce them) are not
    where a stream opened then starts from: resumed from 0, it brings every one, in order,
    once replay goes on."""
    service = await start()
    loop = asyncio.get_running_loop()
    count: asyncio.Future[int] = loop.create_future()
    opened = asyncio.Event()
    async with replay_paused(pair):
        for n in range(1, 6):
            assert (await service.post("/api/events", json=ev(5, n))).status == 200
        reader = asyncio.create_task(_follow_stream(service, "/api/events/stream", count, opened))
        async with asyncio.timeout(CATCH_UP):
            await opened.wait()
    for n in range(6, 11):
        assert (await service.post("/api/events", json=ev(5, n))).status == 200
    count.set_result(10)
    seen = await reader
    assert [int(e["seq"]) for e in seen] == list(range(1, 11))
    assert [int(e["event_id"]) for e in seen] == list(range(1, 11))


# --- read-your-writes -----------------------------------------------------------------------


async def test_a_read_with_the_seq_of_a_write_waits_for_the_standby_and_sees_it(start, pair):
    """With replay paused the standby lacks the write (a plain read is a 404: the reads are
    its); a read with min_seq waits, and once replay resumes it answers with the write."""
    service = await start(min_seq_wait=60.0)
    async with replay_paused(pair):
        reply = await service.post("/api/events", json=ev(1, 11))
        assert reply.status == 200
        seq = reply.headers["Eventlog-Seq"]
        assert (await service.get("/api/events/11")).status == 404
        waiting = asyncio.ensure_future(service.get("/api/events/11", params={"min_seq": seq}))
        await asyncio.sleep(0.3)
        assert not waiting.done()
    read = await waiting
    assert read.status == 200, await read.text()
    assert (await read.json())["seq"] == seq


async def test_min_seq_the_standby_does_not_reach_in_the_wait_is_503_and_lag_is_reported(
    start, pair
):
    """Replay paused: min_seq past the standby is 503 not_yet_replicated with Retry-After,
    on a page and on a stream (past the primary too: 400); /ready and /metrics report the lag
    in seq."""
    service = await start(min_seq_wait=0.2)
    async with replay_paused(pair):
        reply = await service.post("/api/events/batch", json=[ev(2, 21), ev(2, 22)])
        seq = reply.headers["Eventlog-Seq"]
        for path in ("/api/executions/2/events", "/api/events/stream", "/api/executions/2"):
            read = await service.get(path, params={"min_seq": seq})
            await _problem(read, 503, "not_yet_replicated")
            assert read.headers["Retry-After"] == "1"
        # Past the primary's head is no replication lag: never named by a reply, a 400 at once.
        beyond = await service.get("/api/events", params={"min_seq": str(int(seq) + 1)})
        await _problem(beyond, 400, "invalid_parameter")
        ready = await (await service.get("/ready")).json()
        assert ready["status"] == "ready"
        assert ready["replica"]["reachable"] is True and int(ready["replica"]["lag_seq"]) >= 2
        metrics = await (await service.get("/metrics")).text()
        assert "eventlog_replica_up 1.0" in metrics
        lag = next(x for x in metrics.splitlines() if x.startswith("eventlog_replica_lag_seq "))
        assert float(lag.split()[1]) >= 2
    await caught_up(pair.primary_dsn, pair.standby_dsn)
    read = await service.get("/api/executions/2/events", params={"min_seq": seq})
    assert [e["event_id"] for e in (await read.json())["events"]] == ["21", "22"]
    ready = await (await service.get("/ready")).json()
    assert ready["replica"] == {"reachable": True, "lag_seconds": 0.0, "lag_seq": "0"}


async def test_writes_and_idempotency_are_answered_by_the_primary(start, pair):
    """While the standby has replayed nothing of them: a retried Idempotency-Key request right
    after the first is a replay, a retried event a duplicate; the primary holds each once."""
    service = await start()
    key = {"Idempotency-Key": "replica-1"}
    batch = [ev(3, 31), ev(3, 32)]
    async with replay_paused(pair):
        first = await service.post("/api/events/batch", json=batch, headers=key)
        again = await service.post("/api/events/batch", json=batch, headers=key)
        single = await service.post("/api/events", json=ev(3, 33))
        retried = await service.post("/api/events", json=ev(3, 33))
        assert (await first.json())["duplicate"] is False
        replay = await again.json()
        assert replay["duplicate"] is True
        assert replay["event_ids"] == (await first.json())["event_ids"]
        assert (await retried.json())["duplicate"] is True
        assert retried.headers["Eventlog-Seq"] == single.headers["Eventlog-Seq"]
        assert (await service.get("/api/executions/3/events")).status == 200
        assert (await (await service.get("/api/executions/3/events")).json())["events"] == []
    primary = await asyncpg.connect(pair.primary_dsn)
    try:
        stored = await primary.fetch("SELECT event_id FROM events ORDER BY seq")
    finally:
        await primary.close()
    assert [r[0] for r in stored] == [31, 32, 33]


# --- the standby goes away ------------------------------------------------------------------


async def test_a_standby_that_goes_away_makes_reads_503_while_writes_go_on(start, pair):
    """Standby stopped: every read route is a 503 db_unavailable problem (never a 500), the
    writes are acknowledged, /ready says degraded, /metrics replica down; once it is back,
    the writes made meanwhile are read."""
    service = await start(min_seq_wait=30.0)
    await service.post("/api/events", json=ev(4, 40))
    await caught_up(pair.primary_dsn, pair.standby_dsn)
    assert (await service.get("/api/events")).status == 200  # the read pool is connected
    await asyncio.to_thread(pair.standby.stop, "immediate")
    written = await service.post("/api/events", json=ev(4, 41))
    assert written.status == 200, await written.text()
    for path in (
        "/api/events",
        "/api/events/40",
        "/api/executions",
        "/api/executions/4",
        "/api/executions/4/events",
        "/api/events/stream?after=0",
    ):
        read = await service.get(path)
        await _problem(read, 503, "db_unavailable")
        assert read.headers["Retry-After"]
    assert (await service.post("/api/events", json=ev(4, 42))).status == 200
    ready = await service.get("/ready")
    assert ready.status == 200
    assert await ready.json() == {"status": "degraded", "replica": {"reachable": False}}
    assert "eventlog_replica_up 0.0" in await (await service.get("/metrics")).text()
    await asyncio.to_thread(pair.standby.start)
    last = (await service.post("/api/events", json=ev(4, 43))).headers["Eventlog-Seq"]
    read = await service.get("/api/executions/4/events", params={"min_seq": last})
    assert read.status == 200, await read.text()
    assert [e["event_id"] for e in (await read.json())["events"]] == ["40", "41", "42", "43"]
