"""Database outages: while the store is down, writes answer 503 `db_unavailable` with
Retry-After within the configured timeouts, and the service recovers by itself; nothing
acknowledged is lost and a retry of a refused write stores nothing twice.

PostgreSQL: a throwaway cluster of the test's own (initdb and pg_ctl, under `runuser -u
postgres` when run as root, since initdb refuses root) is stopped mid-load, once with
`pg_ctl stop -m fast` and once with `-m immediate`, and started again; in another test every
one of its processes is frozen with SIGSTOP (connections are accepted, nothing answers), so
only the server's own timeouts can end a request. SQLite: the server's file
size limit (RLIMIT_FSIZE, changed from outside with prlimit) drops to one byte mid-load, so every
write to the database files fails with EFBIG as on a full disk, then it is raised again.

The load comes from producers behind one small interface (Producer): another kind of producer
plugs into the same scenario by adding an entry to PRODUCERS.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import asyncpg
import attrs
import orjson
import pytest

from .conftest import Server, ServerFactory, clean_env
from .pgcluster import Cluster, throwaway_cluster

pytestmark = pytest.mark.slow

CONNECT_TIMEOUT = 1.0  # db_connect_timeout given to the server
COMMAND_TIMEOUT = 2.0  # db_command_timeout given to the server
# A write must be answered within the server's own database timeouts; the margin is for a busy
# machine. Past HANG the client gives up, and the reply counts as a hang.
WRITE_DEADLINE = CONNECT_TIMEOUT + COMMAND_TIMEOUT + 1.0
HANG = 15.0
RECOVERY = 5.0  # the bound: from the database's return to writes and /ready working
UP_S = 1.0  # load before each outage
DOWN_S = 2.0  # how long each outage lasts
PRODUCERS_PER_KIND = 6
EVENTS_PER_BATCH = 5  # every other producer posts batches of this many
SERVER_ENV = {
    "EVENTLOG_DB_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
    "EVENTLOG_DB_COMMAND_TIMEOUT": str(COMMAND_TIMEOUT),
    "EVENTLOG_ACCESS_LOG": "false",  # the log is read for what the server says about outages
}

Key = tuple[int, int]  # (execution_id, event_id)


# --- producers ---------------------------------------------------------------------------


@attrs.frozen
class Reply:
    """What one request got: the HTTP status (None when no reply came at all) and when."""

    status: int | None
    code: str | None
    retry_after: str | None
    started: float  # time.monotonic()
    ended: float
    error: str | None = None

    @property
    def latency(self) -> float:
        """Seconds from sending to the reply."""
        return self.ended - self.started


class Producer(Protocol):
    """Something that sends events to the service and says what came back."""

    name: str

    async def send(self, events: list[dict[str, Any]]) -> Reply:
        """Send ``events`` in one request (one event, or a batch); never raise."""
        ...


class HttpProducer:
    """Plain HTTP: one event to /api/events, several as a JSON array to /api/events/batch."""

    name = "http"

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self._session = session
        self._url = url

    async def send(self, events: list[dict[str, Any]]) -> Reply:
        """POST the events once; no retry (the scenario retries refused events itself)."""
        path, body = (
            ("/api/events", events[0]) if len(events) == 1 else ("/api/events/batch", events)
        )
        started = time.monotonic()
        try:
            async with self._session.post(self._url + path, json=body) as r:
                data = await r.read()
                code = None
                if r.content_type.endswith("json"):
                    parsed = orjson.loads(data)
                    code = parsed.get("code") if isinstance(parsed, dict) else None
                return Reply(
                    r.status, code, r.headers.get("Retry-After"), started, time.monotonic()
                )
        except (aiohttp.ClientError, TimeoutError) as e:
            return Reply(None, None, None, started, time.monotonic(), repr(e))


# Each kind of producer the scenario runs: a factory from (session, base URL).
PRODUCERS: dict[str, Callable[[aiohttp.ClientSession, str], Producer]] = {
    "http": HttpProducer,
}


def _event(execution_id: int, event_id: int, producer: str, n: int) -> dict[str, Any]:
    return {
        "execution_id": str(execution_id),
        "event_id": str(event_id),
        "event_type": "call.done",
        "step": f"step-{n % 7}",
        "worker_id": producer,
        "payload": {"n": n, "producer": producer},
    }


@attrs.define
class Sent:
    """One request of the load: its events and the reply."""

    producer: Producer
    events: list[dict[str, Any]]
    reply: Reply

    @property
    def keys(self) -> list[Key]:
        """The (execution_id, event_id) of each event."""
        return [(int(e["execution_id"]), int(e["event_id"])) for e in self.events]


class Load:
    """Producers posting new events with unique ids in a loop, until stopped.

    Every request is kept with its reply. A refused request is not retried during the load
    (its events are retried once the database is back, by retry_refused).
    """

    def __init__(self, producers: list[tuple[Producer, int]]) -> None:
        self.producers = producers  # (producer, events per request)
        self.sent: list[Sent] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def acked(self) -> set[Key]:
        """Every event a 2xx acknowledged."""
        return {k for s in self.sent if _ok(s.reply) for k in s.keys}

    @property
    def refused(self) -> list[Sent]:
        """Requests that were not acknowledged."""
        return [s for s in self.sent if not _ok(s.reply)]

    def start(self) -> None:
        """Start every producer."""
        for index, (producer, size) in enumerate(self.producers):
            self._tasks.append(asyncio.create_task(self._run(index, producer, size)))

    async def stop(self) -> None:
        """Stop after each producer's current request."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _run(self, index: int, producer: Producer, size: int) -> None:
        execution_id = 880_000_000_000_000_000 + index
        first_id = 700_000_000_000_000_000 + index * 1_000_000_000
        n = 0
        while not self._stop.is_set():
            events = []
            for _ in range(size):
                n += 1
                events.append(_event(execution_id, first_id + n, f"{producer.name}-{index}", n))
            reply = await producer.send(events)
            self.sent.append(Sent(producer, events, reply))
            if not _ok(reply):
                # A real producer waits Retry-After; a short pause keeps many samples coming
                # without spinning.
                await asyncio.sleep(0.02)

    async def retry_refused(self, deadline: float = 10.0) -> list[Sent]:
        """Send every refused request again, as it was sent, until each is acknowledged."""
        retries = []
        for sent in self.refused:
            until = time.monotonic() + deadline
            while True:
                reply = await sent.producer.send(sent.events)
                if _ok(reply) or time.monotonic() > until:
                    break
                await asyncio.sleep(0.1)
            retries.append(Sent(sent.producer, sent.events, reply))
        return retries


def _ok(reply: Reply) -> bool:
    return reply.status is not None and 200 <= reply.status < 300


# --- the scenario -------------------------------------------------------------------------


@attrs.define
class Outage:
    """The timeline of one outage and what the service did during it."""

    label: str
    stop_called: float = 0.0
    stop_done: float = 0.0
    start_called: float = 0.0
    start_done: float = 0.0
    ready_after: float | None = None  # seconds from start_done to the first /ready 200
    write_after: float | None = None  # seconds from start_done to the first acknowledged write
    probes: list[tuple[str, int, str | None]] = attrs.Factory(list)  # (path, status, code)
    probe_latency: dict[str, float] = attrs.Factory(dict)  # the longest, by path

    def down(self, reply: Reply) -> bool:
        """Whether the request ran wholly while the database was down."""
        return self.stop_done <= reply.started and reply.ended <= self.start_called


PROBES = ("/health", "/ready", "/api/events?limit=1")


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str | None]:
    async with session.get(url) as r:
        body = await r.read()
        code = orjson.loads(body).get("code") if r.status != 200 else None
        return r.status, code


async def _probe_while_down(
    session: aiohttp.ClientSession, url: str, outage: Outage, until: asyncio.Event
) -> None:
    """/health, /ready and a read, a few times a second, while the database is down."""
    while not until.is_set():
        for path in PROBES:
            started = time.monotonic()
            status, code = await _get(session, url + path)
            latency = time.monotonic() - started
            outage.probes.append((path, status, code))
            outage.probe_latency[path] = max(latency, outage.probe_latency.get(path, 0.0))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.2):
                await until.wait()


async def _wait_ready(session: aiohttp.ClientSession, url: str, since: float) -> float:
    """Poll /ready until 200; seconds from ``since``."""
    while True:
        with contextlib.suppress(aiohttp.ClientError):
            status, _ = await _get(session, url + "/ready")
            if status == 200:
                return time.monotonic() - since
        if time.monotonic() - since > RECOVERY + 5:
            raise AssertionError(f"/ready did not answer 200 within {RECOVERY + 5} s")
        await asyncio.sleep(0.02)


async def _run_outage(
    session: aiohttp.ClientSession,
    url: str,
    load: Load,
    label: str,
    go_down: Callable[[], Awaitable[None]],
    come_back: Callable[[], Awaitable[None]],
    down_s: float = DOWN_S,
) -> Outage:
    """Run the load for UP_S, take the database away for ``down_s``, bring it back, and time
    the recovery of writes and of /ready."""
    outage = Outage(label)
    await asyncio.sleep(UP_S)
    outage.stop_called = time.monotonic()
    await go_down()
    outage.stop_done = time.monotonic()
    back = asyncio.Event()
    prober = asyncio.create_task(_probe_while_down(session, url, outage, back))
    await asyncio.sleep(down_s)
    back.set()
    await prober
    outage.start_called = time.monotonic()
    await come_back()
    outage.start_done = time.monotonic()
    outage.ready_after = await _wait_ready(session, url, outage.start_done)
    while outage.write_after is None:
        acks = [
            s.reply.ended for s in load.sent if _ok(s.reply) and s.reply.ended > outage.start_called
        ]
        if acks:
            outage.write_after = max(0.0, min(acks) - outage.start_done)
        elif time.monotonic() - outage.start_done > RECOVERY + 5:
            break
        await asyncio.sleep(0.02)
    return outage


def _check_replies(
    load: Load,
    outages: list[Outage],
    probes: set[tuple[str, int, str | None]],
    min_down: int = 20,
) -> None:
    """Every reply is a 200 or a 503 db_unavailable with Retry-After, in time; every request
    made while the database was down was refused; the probes answered ``probes``."""
    assert load.sent, "the load sent nothing"
    for sent in load.sent:
        reply = sent.reply
        assert reply.status is not None, f"no reply after {reply.latency:.1f} s: {reply.error}"
        assert reply.latency <= WRITE_DEADLINE, (
            f"a write took {reply.latency:.2f} s (reply {reply.status}); the bound is "
            f"{WRITE_DEADLINE} s"
        )
        if not _ok(reply):
            assert (reply.status, reply.code) == (503, "db_unavailable"), reply
            assert reply.retry_after is not None and int(reply.retry_after) >= 1, reply
    for outage in outages:
        down = [s.reply for s in load.sent if outage.down(s.reply)]
        assert len(down) >= min_down, f"{outage.label}: only {len(down)} writes while down"
        assert all(r.status == 503 for r in down), f"{outage.label}: a write succeeded while down"
        assert sum(1 for s in load.sent if _ok(s.reply) and s.reply.ended < outage.stop_called)
        assert set(outage.probes) == probes, outage.probes
        assert outage.ready_after is not None and outage.ready_after <= RECOVERY, outage
        assert outage.write_after is not None and outage.write_after <= RECOVERY, outage


def _summary(load: Load, outages: list[Outage]) -> str:
    lines = []
    for o in outages:
        down = [s.reply.latency for s in load.sent if o.down(s.reply)]
        lines.append(
            f"{o.label}: {len(down)} writes while down, latency median "
            f"{statistics.median(down) * 1000:.1f} ms max {max(down) * 1000:.1f} ms; "
            f"after the database returned: first write {o.write_after:.2f} s, "
            f"/ready 200 {o.ready_after:.2f} s; slowest probes while down: "
            + ", ".join(f"{p} {t * 1000:.0f} ms" for p, t in o.probe_latency.items())
        )
    every = [s.reply.latency for s in load.sent]
    lines.append(
        f"{len(load.sent)} requests, {len(load.acked)} events acknowledged, "
        f"{len(load.refused)} requests refused; max latency {max(every) * 1000:.1f} ms"
    )
    return "\n".join(lines)


def _log_lines(log: str, pattern: str) -> list[str]:
    return [line for line in log.splitlines() if re.search(pattern, line)]


def _check_log(log: str, outages: int) -> None:
    """One line when writes start failing and one when they work again, per outage; no
    traceback."""
    assert "Traceback" not in log, log
    down = _log_lines(log, r"database unavailable")
    up = _log_lines(log, r"database available again")
    assert outages <= len(down) <= 2 * outages, "\n".join(down)
    assert outages <= len(up) <= 2 * outages, "\n".join(up)


def _producers(session: aiohttp.ClientSession, url: str, kind: str) -> list[tuple[Producer, int]]:
    make = PRODUCERS[kind]
    return [
        (make(session, url), EVENTS_PER_BATCH if i % 2 else 1) for i in range(PRODUCERS_PER_KIND)
    ]


# --- a throwaway PostgreSQL cluster -------------------------------------------------------


@pytest.fixture
def pg_cluster() -> Iterator[Cluster]:
    """A started throwaway cluster, stopped (immediately) and removed however the test ends."""
    with throwaway_cluster("the PostgreSQL outage test", prefix="eventlog-outage-pg-") as cluster:
        yield cluster


# --- following a live stream ----------------------------------------------------------------


class StreamWatcher:
    """Reads an SSE stream and notes each event's key and when it arrived."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.arrived: dict[Key, float] = {}
        self.opened = asyncio.Event()
        self._session = session
        self._url = url
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StreamWatcher:
        self._task = asyncio.create_task(self._read())
        async with asyncio.timeout(10):
            await self.opened.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _read(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with self._session.get(self._url, timeout=timeout) as r:
            assert r.status == 200
            async for line in r.content:
                if line.startswith(b": stream open"):
                    self.opened.set()
                elif line.startswith(b"data: "):
                    event = orjson.loads(line[6:])
                    key = (int(event["execution_id"]), int(event["event_id"]))
                    self.arrived.setdefault(key, time.monotonic())

    async def wait_for(self, keys: set[Key], timeout: float) -> None:
        """Until every key arrived, or ``timeout`` seconds."""
        until = time.monotonic() + timeout
        while not keys <= self.arrived.keys() and time.monotonic() < until:
            await asyncio.sleep(0.05)


async def _stored(dsn: str) -> list[Key]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch("SELECT execution_id, event_id FROM events")
    finally:
        await conn.close()
    return [(r[0], r[1]) for r in rows]


def _twice(keys: list[Key]) -> list[Key]:
    seen: set[Key] = set()
    return sorted({k for k in keys if k in seen or seen.add(k)})  # type: ignore[func-returns-value]


def _check_stored(stored: list[Key], load: Load, retries: list[Sent]) -> None:
    """Every acknowledged event stored once; every refused one stored once after its retry."""
    assert _twice(stored) == [], "an event is stored twice"
    acked = load.acked
    assert acked - set(stored) == set(), "an acknowledged event was lost"
    assert all(_ok(r.reply) for r in retries), [r.reply for r in retries if not _ok(r.reply)]
    retried = {k for r in retries for k in r.keys}
    sent = {k for s in load.sent for k in s.keys}
    assert set(stored) == acked | retried == sent


@pytest.mark.parametrize("kind", sorted(PRODUCERS))
async def test_postgres_stopped_mid_load_gives_503_then_recovers_within_5_s_losing_nothing(
    pg_cluster: Cluster, start_server: ServerFactory, kind: str
) -> None:
    """pg_ctl stop (fast, then immediate) mid-load: 503 db_unavailable with Retry-After while
    down, /ready 503 and /health 200; writes and /ready back within 5 s of pg_ctl start; every
    acknowledged event stored once, retries of refused ones too; another instance's live
    stream resumes (its LISTEN connection is reopened)."""
    server = start_server(pg_cluster.dsn, node_id=1, env=SERVER_ENV)
    # Another instance that learns of new events only through LISTEN (its poll is a minute).
    follower = start_server(
        pg_cluster.dsn, node_id=2, env={**SERVER_ENV, "EVENTLOG_STREAM_POLL_INTERVAL": "60"}
    )
    timeout = aiohttp.ClientTimeout(total=HANG)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        StreamWatcher(session, f"{follower.url}/api/events/stream?after=0") as watcher,
    ):
        load = Load(_producers(session, server.url, kind))
        load.start()
        outages = []
        try:
            for mode in ("fast", "immediate"):
                outages.append(
                    await _run_outage(
                        session,
                        server.url,
                        load,
                        f"pg_ctl stop -m {mode}",
                        lambda mode=mode: asyncio.to_thread(pg_cluster.stop, mode),
                        lambda: asyncio.to_thread(pg_cluster.start),
                    )
                )
            await asyncio.sleep(0.5)
        finally:
            await load.stop()
        print("\n" + _summary(load, outages))
        down = ("/ready", 503, "db_unavailable"), ("/api/events?limit=1", 503, "db_unavailable")
        _check_replies(load, outages, {("/health", 200, None), *down})
        retries = await load.retry_refused()
        stored = await _stored(pg_cluster.dsn)
        _check_stored(stored, load, retries)

        # The follower's stream: everything, including what was written after each restart.
        await watcher.wait_for(set(stored), RECOVERY)
        assert set(stored) - watcher.arrived.keys() == set(), "the follower's stream stalled"
        for o in outages:
            resumed = min(t for t in watcher.arrived.values() if t > o.start_done)
            print(f"{o.label}: the follower's stream resumed {resumed - o.start_done:.2f} s after")
            assert resumed - o.start_done <= RECOVERY
    _check_log(server.log(), len(outages))
    assert "Traceback" not in follower.log(), follower.log()


async def test_client_library_rides_out_a_postgres_restart_storing_each_event_once(
    pg_cluster: Cluster, start_server: ServerFactory
) -> None:
    """EventLogClient producers keep emitting (ids minted by the client, singles and batches)
    while PostgreSQL is stopped and started again: every call ends with a receipt, the calls
    that spanned the outage were retried through it, and each logical event is stored exactly
    once under the id its receipt names."""
    from eventlog.client import EventLogClient

    server = start_server(pg_cluster.dsn, env=SERVER_ENV)
    receipts: list[tuple[str, list[int], float]] = []  # (marker, event ids, seconds the call took)
    stop = asyncio.Event()

    async def produce(index: int) -> None:
        async with EventLogClient(
            server.url,
            node_id=100 + index,
            backoff=0.05,
            max_backoff=0.5,
            deadline=30.0,
            max_attempts=100,
        ) as client:
            n = 0
            while not stop.is_set():
                n += 1
                base = {"execution_id": 990_000 + index, "event_type": "call.done"}
                started = time.monotonic()
                if index % 2:
                    items = [
                        {**base, "step": "s", "payload": {"marker": f"{index}-{n}-{k}"}}
                        for k in range(EVENTS_PER_BATCH)
                    ]
                    batch = await client.emit_batch(items)
                    took = time.monotonic() - started
                    for k, event_id in enumerate(batch.event_ids):
                        receipts.append((f"{index}-{n}-{k}", [event_id], took))
                else:
                    body = {**base, "step": "s", "payload": {"marker": f"{index}-{n}"}}
                    receipt = await client.emit(body)
                    receipts.append(
                        (f"{index}-{n}", [receipt.event_id], time.monotonic() - started)
                    )

    producers = [asyncio.create_task(produce(i)) for i in range(PRODUCERS_PER_KIND)]
    await asyncio.sleep(UP_S)
    await asyncio.to_thread(pg_cluster.stop, "fast")
    await asyncio.sleep(DOWN_S)
    await asyncio.to_thread(pg_cluster.start)
    await asyncio.sleep(UP_S)
    stop.set()
    await asyncio.gather(*producers)  # an exception here is a call the client gave up on

    conn = await asyncpg.connect(pg_cluster.dsn, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT payload::jsonb ->> 'marker', event_id FROM events WHERE execution_id >= 990000"
        )
    finally:
        await conn.close()
    stored: dict[str, list[int]] = {}
    for marker, event_id in rows:
        stored.setdefault(marker, []).append(event_id)
    expected = {marker: ids for marker, ids, _ in receipts}
    twice = {m: ids for m, ids in stored.items() if len(ids) > 1}
    assert twice == {}, f"stored more than once: {twice}"
    assert stored == expected
    spanned = [took for _, _, took in receipts if took >= DOWN_S / 2]
    print(
        f"\nclient producers: {len(receipts)} events acknowledged, all stored once; "
        f"{len(spanned)} waited through the outage (longest {max(spanned):.2f} s)"
    )
    assert spanned, "no call spanned the outage: the client's retries were not exercised"


# --- SQLite: a file that cannot grow ------------------------------------------------------


class PipedServerFactory(ServerFactory):
    """Servers whose output reaches their log file through a pipe: a process with a file size
    limit could not write its own log file, so the test's thread writes it."""

    def __call__(self, dsn: str | None, node_id: int | None = 1, **kw: Any) -> Server:  # type: ignore[override]
        """Start a server; its output is copied to server-N.log by a thread."""
        log_path = self.tmp_path / f"server-{len(self.servers) + 1}.log"
        command = [sys.executable, "-m", "eventlog", "serve", "--dsn", str(dsn), "--port", "0"]
        command += ["--node-id", str(node_id)]
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=clean_env(kw.get("env")),
            cwd=self.tmp_path,
        )
        threading.Thread(target=_copy, args=(proc, log_path), daemon=True).start()
        server = Server(proc, log_path)
        self.servers.append(server)
        log_path.touch()
        server.wait_listening()
        return server


def _copy(proc: subprocess.Popen[bytes], log_path: Path) -> None:
    assert proc.stdout is not None
    with proc.stdout, open(log_path, "ab") as out:
        for line in proc.stdout:
            out.write(line)
            out.flush()


@pytest.fixture
def start_piped_server(tmp_path: Path) -> Iterator[PipedServerFactory]:
    """A factory for servers with piped output, all killed and reaped when the test ends."""
    factory = PipedServerFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


async def _limit_file_size(pid: int, limit: int) -> None:
    """Set a running process's RLIMIT_FSIZE (the writes that pass it fail with EFBIG: Python
    ignores SIGXFSZ)."""
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))


@pytest.mark.parametrize("kind", sorted(PRODUCERS))
async def test_sqlite_file_that_cannot_grow_gives_503_and_one_log_line_then_recovers(
    tmp_path: Path, start_piped_server: PipedServerFactory, kind: str
) -> None:
    """A SQLite store whose files cannot be written (the file size limit at one byte, as on a
    full disk): writes answer 503 db_unavailable with Retry-After, one log line names the file
    and the cause, reads still work; writes succeed again within 5 s of the limit's removal
    and nothing acknowledged is lost."""
    if not hasattr(resource, "prlimit"):
        pytest.skip("NO prlimit ON THIS PLATFORM (Linux only); the SQLite outage test is SKIPPED")
    path = tmp_path / "events.db"
    server = start_piped_server(f"sqlite:///{path}", node_id=1, env=SERVER_ENV)
    pid = server.proc.pid
    assert server.proc.poll() is None
    timeout = aiohttp.ClientTimeout(total=HANG)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        load = Load(_producers(session, server.url, kind))
        load.start()
        try:
            outage = await _run_outage(
                session,
                server.url,
                load,
                "RLIMIT_FSIZE 1 byte",
                lambda: _limit_file_size(pid, 1),
                lambda: _limit_file_size(pid, resource.RLIM_INFINITY),
            )
            await asyncio.sleep(0.5)
        finally:
            await load.stop()
        print("\n" + _summary(load, [outage]))
        # Reads still work; so does /ready, as the store answers and its schema is current.
        _check_replies(
            load, [outage], {("/health", 200, None), ("/ready", 200, None), (PROBES[2], 200, None)}
        )
        retries = await load.retry_refused()
        server.terminate()

    with contextlib.closing(sqlite3.connect(path)) as db:
        stored = list(db.execute("SELECT execution_id, event_id FROM events"))
    _check_stored(stored, load, retries)
    log = server.log()
    assert "Traceback" not in log, log
    down = _log_lines(log, r"database unavailable")
    assert len(down) == 1, log
    assert f"cannot write {path}" in down[0] and "SQLITE_IOERR" in down[0], down
    assert "file size limit (ulimit -f) is 1 bytes" in down[0], down
    assert len(_log_lines(log, r"database available again")) == 1, log


async def test_postgres_frozen_mid_load_gives_503_within_the_db_timeouts_then_recovers(
    pg_cluster: Cluster, start_server: ServerFactory
) -> None:
    """Every PostgreSQL process stopped with SIGSTOP (connections are accepted, nothing
    answers): writes, /ready and reads answer 503 within the configured timeouts, never hang;
    after SIGCONT writes and /ready work again within 5 s and nothing acknowledged is lost."""
    server = start_server(pg_cluster.dsn, node_id=1, env=SERVER_ENV)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HANG)) as session:
        load = Load(_producers(session, server.url, "http"))
        load.start()
        try:
            outage = await _run_outage(
                session,
                server.url,
                load,
                "SIGSTOP",
                lambda: asyncio.to_thread(pg_cluster.freeze),
                lambda: asyncio.to_thread(pg_cluster.thaw),
                down_s=WRITE_DEADLINE + 0.5,  # the first attempts end by their timeouts
            )
            await asyncio.sleep(0.5)
        finally:
            await load.stop()
        print("\n" + _summary(load, [outage]))
        down = ("/ready", 503, "db_unavailable"), ("/api/events?limit=1", 503, "db_unavailable")
        # Few samples: when every producer's request joins one attempt, each round of them
        # lasts a connect timeout.
        _check_replies(load, [outage], {("/health", 200, None), *down}, min_down=3)
        retries = await load.retry_refused()
        _check_stored(await _stored(pg_cluster.dsn), load, retries)
    _check_log(server.log(), 1)
