"""eventlog's write-path benchmark: every figure beside the baseline it is judged against.

Run it through ./scripts/bench (which prepares .venv). Everything runs on loopback, bounded in
time: each scenario runs for --duration seconds after a warm-up, --repeat times, and the table
shows the median run. The load generator is a separate process speaking plain HTTP/1.1 over
keep-alive connections, so it costs little CPU and the server is what is measured.

Scenarios:
  bare aiohttp      a handler that reads the body and answers 200: the ceiling for one event
                    per request, at the same concurrency, with the same generator
  single            eventlog, one event per request, concurrency 16 and 64, SQLite and PostgreSQL
  half rate         eventlog at half its measured single-event maximum (open loop): p99 latency
  batch 100 / 1000  eventlog batches, SQLite and PostgreSQL
  raw driver        the same rows straight through the driver, one transaction per batch:
                    executemany (aiosqlite) and copy_records_to_table (asyncpg)
  stream latency    100 live SSE subscribers while events are written: commit to delivery
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


# --- the load generator (runs in its own process) -----------------------------------------


def single_body(n: int, run: int) -> bytes:
    """The legacy Python worker's body, with an event id unique to this request."""
    return (
        b'{"execution_id": "%d", "event_id": "%d", "name": "call.done", "step": "fetch", '
        b'"payload": {"result": "ok", "rows": 42}, "worker_id": "w-2"}'
        % (478775660589088776 + n % 97, run * 10**12 + n)
    )


def batch_body(n: int, run: int, size: int) -> bytes:
    """NoETL's batch object with ``size`` items, each with its own event id."""
    base = run * 10**12 + n * size
    items = b",".join(
        b'{"step": "start", "name": "step.exit", "payload": {"status": "COMPLETED"}, '
        b'"informative": true, "event_id": "%d", "meta": {"command_id": 771290770522243237}}'
        % (base + i)
        for i in range(size)
    )
    return (
        b'{"execution_id": "771290770346082466", "worker_id": "worker-1", "events": [%s]}' % items
    )


def request_bytes(path: str, body: bytes) -> bytes:
    """One HTTP/1.1 POST on a keep-alive connection."""
    return (
        b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body)
    )


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    """Send one request, read its reply; the status code."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    at = lower.index(b"content-length:") + 15
    await reader.readexactly(int(lower[at : lower.index(b"\r\n", at)]))
    return int(head[9:12])


async def loadgen(opts: dict[str, Any]) -> dict[str, Any]:
    """Drive the server closed-loop (fixed concurrency) or open-loop (fixed rate)."""
    host, port, path = opts["host"], opts["port"], opts["path"]
    size, run = opts["batch"], opts["run"]
    counter = itertools.count()

    def next_request() -> bytes:
        n = next(counter)
        body = single_body(n, run) if size == 0 else batch_body(n, run, size)
        return request_bytes(path, body)

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    warmup_end = time.perf_counter() + opts["warmup"]
    end = warmup_end + opts["duration"]

    def record(status: int, started: float, finished: float) -> None:
        if started >= warmup_end and finished <= end:
            latencies.append(finished - started)
            statuses[status] = statuses.get(status, 0) + 1

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(host, port, limit=2**22)

    if opts["rate"] == 0:  # closed loop

        async def worker() -> None:
            reader, writer = await connect()
            while (now := time.perf_counter()) < end:
                status = await exchange(reader, writer, next_request())
                record(status, now, time.perf_counter())
            writer.close()

        await asyncio.gather(*(worker() for _ in range(opts["concurrency"])))
    else:  # open loop: requests leave on schedule; latency counts from the scheduled moment
        idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        pending: set[asyncio.Task[None]] = set()

        async def one(scheduled: float) -> None:
            conn = idle.pop() if idle else await connect()
            status = await exchange(*conn, next_request())
            record(status, scheduled, time.perf_counter())
            idle.append(conn)

        interval, start = 1.0 / opts["rate"], time.perf_counter()
        for i in itertools.count():
            scheduled = start + i * interval
            if scheduled >= end:
                break
            if (delay := scheduled - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(scheduled))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
        for _, writer in idle:
            writer.close()

    latencies.sort()
    return {
        "requests": len(latencies),
        "statuses": statuses,
        "seconds": opts["duration"],
        "p50": latencies[len(latencies) // 2] if latencies else None,
        "p99": latencies[int(len(latencies) * 0.99)] if latencies else None,
    }


async def streamgen(opts: dict[str, Any]) -> dict[str, Any]:
    """``subscribers`` live streams while events are posted at ``rate``: the delay from each
    event's ingested_at (taken in its commit) to its arrival at each subscriber."""
    host, port = opts["host"], opts["port"]
    latencies: list[float] = []
    ready = asyncio.Event()
    opened = 0
    end = time.time() + opts["warmup"] + opts["duration"]
    measure_from = time.time() + opts["warmup"]

    async def subscriber() -> None:
        nonlocal opened
        reader, writer = await asyncio.open_connection(host, port, limit=2**22)
        writer.write(
            b"GET /api/events/stream HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"
        )
        await reader.readuntil(b"\r\n\r\n")
        opened += 1
        if opened == opts["subscribers"]:
            ready.set()
        pending = b""
        marker = b'"ingested_at":"'
        while time.time() < end + 1:
            try:
                data = await asyncio.wait_for(
                    reader.read(1 << 16), timeout=max(0.1, end + 1 - time.time())
                )
            except TimeoutError:
                break
            if not data:
                break
            arrived = time.time()
            data, at, done = pending + data, 0, 0
            while (at := data.find(marker, at)) >= 0 and at + 42 <= len(data):
                stamp = data[at + 15 : at + 41].decode()
                ingested = datetime.fromisoformat(stamp + "+00:00").timestamp()
                if ingested >= measure_from:
                    latencies.append(arrived - ingested)
                at = done = at + 42
            # Keep what may hold the start of a marker cut by the chunk's end, nothing counted.
            pending = data[at:] if at >= 0 else data[max(done, len(data) - len(marker)) :]
        writer.close()

    async def producer() -> None:
        await ready.wait()
        reader, writer = await asyncio.open_connection(host, port)
        interval, start, n = 1.0 / opts["rate"], time.time(), 0
        while time.time() < end:
            n += 1
            await exchange(
                reader, writer, request_bytes("/api/events", single_body(n, opts["run"]))
            )
            if (delay := start + n * interval - time.time()) > 0:
                await asyncio.sleep(delay)
        writer.close()

    await asyncio.gather(producer(), *(subscriber() for _ in range(opts["subscribers"])))
    latencies.sort()
    return {
        "deliveries": len(latencies),
        "p50": latencies[len(latencies) // 2] if latencies else None,
        "p99": latencies[int(len(latencies) * 0.99)] if latencies else None,
    }


# --- wrk: the closed-loop generator when installed -----------------------------------------

# A request per call, each with an event id of its own; `done` prints the summary as JSON.
WRK_SCRIPT = r"""
local n = 0
local run = "%(run)d"
local size = %(size)d
local path = "%(path)s"
local headers = {["Content-Type"] = "application/json"}
request = function()
  n = n + 1
  local body
  if size == 0 then
    body = '{"execution_id": "4787756605890887' .. string.format("%%02d", n %% 97) ..
      '", "event_id": "' .. run .. string.format("%%010d", n) ..
      '", "name": "call.done", "step": "fetch", "payload": {"result": "ok", "rows": 42}, ' ..
      '"worker_id": "w-2"}'
  else
    local items = {}
    for i = 1, size do
      items[i] = '{"step": "start", "name": "step.exit", "payload": {"status": "COMPLETED"}, ' ..
        '"informative": true, "event_id": "' .. run .. string.format("%%010d", n * size + i) ..
        '", "meta": {"command_id": 771290770522243237}}'
    end
    body = '{"execution_id": "771290770346082466", "worker_id": "worker-1", "events": [' ..
      table.concat(items, ",") .. ']}'
  end
  return wrk.format("POST", path, headers, body)
end
done = function(summary, latency, requests)
  io.write(string.format(
    '{"requests": %%d, "non2xx": %%d, "errors": %%d, "p50": %%f, "p99": %%f}\n',
    summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1e6, latency:percentile(99) / 1e6))
end
"""


def in_child(generator: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one of this script's Python generators in a process of its own; its summary."""
    out = subprocess.run(
        [PYTHON, __file__, generator, json.dumps(spec)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process and its descendants still running
    (the workers of `serve --workers`): what a request costs, whatever the machine's noise."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return total


# The server process listening on each port, for its CPU time per request.
SERVER_PIDS: dict[int, int] = {}


def wrk_drive(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """One closed-loop run with wrk (one thread: the other core is the server's)."""
    script = work / f"wrk-{spec['run']}.lua"
    # Run numbers below 10^8 keep ids under 2^63 (run, then ten digits of request number).
    script.write_text(
        WRK_SCRIPT % {"run": spec["run"] % 10**8, "size": spec["batch"], "path": spec["path"]}
    )
    url = f"http://{spec['host']}:{spec['port']}"
    base = ["wrk", "-t1", f"-c{spec['concurrency']}", "-s", str(script), "--timeout", "30s"]
    if spec["warmup"] > 0:
        warmup = max(1, round(spec["warmup"]))  # wrk takes whole seconds
        subprocess.run([*base, f"-d{warmup}s", url], capture_output=True, check=True)
    seconds = max(1, round(spec["duration"]))
    pid = SERVER_PIDS.get(spec["port"])
    cpu_before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run([*base, f"-d{seconds}s", url], capture_output=True, text=True, check=True)
    cpu = cpu_seconds(pid) - cpu_before if pid else None
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    bad = summary["non2xx"] + summary["errors"]
    return {
        "cpu": cpu,
        "requests": summary["requests"] - bad,
        "statuses": {"200": summary["requests"] - bad, "599": bad}
        if bad
        else {"200": summary["requests"]},
        "seconds": seconds,
        "p50": summary["p50"],
        "p99": summary["p99"],
    }


# --- the bare baseline server -------------------------------------------------------------


def bare_server(port: int) -> None:
    """A bare aiohttp handler: read the body, parse it, answer 200 with a small JSON reply."""
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        json.loads(await request.read())
        return web.json_response(
            {"status": "ok", "event_id": "1", "commands_generated": 0, "duplicate": False}
        )

    app = web.Application(client_max_size=16 * 2**20)
    app.router.add_post("/api/events", handler)
    app.router.add_post("/api/events/batch", handler)
    print(f"bare listening on http://127.0.0.1:{port}", flush=True)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --- orchestration ------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process and its peak resident memory."""

    def __init__(self, argv: list[str], log: Path, *, listening: int = 1, **settings: str) -> None:
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTLOG_")}
        env.update({f"EVENTLOG_{k.upper()}": v for k, v in settings.items()})
        self.proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while log.read_text().count("listening on") < listening:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text()}")
            time.sleep(0.05)

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_bare(work: Path) -> tuple[Server, int]:
    port = free_port()
    server = Server([PYTHON, __file__, "bare-server", "--port", str(port)], work / "bare.log")
    SERVER_PIDS[port] = server.proc.pid
    return server, port


def start_eventlog(
    work: Path, dsn: str, name: str, *, access_log: bool = False, workers: int = 1
) -> tuple[Server, int]:
    port = free_port()
    argv = [PYTHON, "-m", "eventlog", "serve", "--dsn", dsn, "--port", str(port)]
    argv += ["--workers", str(workers)]
    # By default no access log, as for the bare server: both are measured without it. Its
    # lines go to a file, as a service's log would.
    server = Server(
        argv, work / f"{name}.log", listening=workers, access_log="on" if access_log else "off"
    )
    SERVER_PIDS[port] = server.proc.pid
    return server, port


def drive(
    port: int,
    *,
    path: str,
    concurrency: int,
    batch: int,
    rate: float,
    opts: argparse.Namespace,
    run: int,
) -> dict[str, Any]:
    spec = {
        "host": "127.0.0.1",
        "port": port,
        "path": path,
        "concurrency": concurrency,
        "batch": batch,
        "rate": rate,
        "run": run,
        "warmup": opts.warmup,
        "duration": opts.duration,
    }
    if rate == 0 and opts.generator == "wrk":
        result = wrk_drive(spec, opts.work)
    else:
        result = in_child("loadgen", spec)
    events = result["requests"] * max(batch, 1)
    result["events_per_s"] = events / result["seconds"]
    if result.get("cpu") is not None and events:
        result["cpu_us"] = result["cpu"] * 1e6 / events
    return result


def raw_row(seq: int, run: int, no: Any, yes: Any, moment: Any) -> tuple[Any, ...]:
    """One events row as the batch scenario's items become, in the table's column order;
    booleans and timestamps in the driver's own types."""
    return (
        seq,
        771290770346082466,
        run * 10**12 + seq,
        "start",
        "step.exit",
        "COMPLETED",
        '{"status":"COMPLETED"}',
        '{"command_id":771290770522243237}',
        "worker-1",
        "data",
        None,
        None,
        no,
        yes,
        moment,
        moment,
        0,
    )


async def raw_sqlite(path: Path, size: int, seconds: float, run: int) -> float:
    """Rows per second through aiosqlite's executemany, one transaction per ``size`` rows."""
    import aiosqlite

    insert = "INSERT INTO events VALUES (" + ", ".join("?" * 17) + ")"  # the table's 17 columns
    db = await aiosqlite.connect(path, isolation_level=None)
    await db.execute("PRAGMA journal_mode = WAL")
    await db.execute("PRAGMA synchronous = FULL")
    cursor = await db.execute("SELECT COALESCE(MAX(seq), 0) FROM events")
    (seq,) = await cursor.fetchone()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        rows = []
        for _ in range(size):
            seq += 1
            rows.append(raw_row(seq, run, 0, 1, 1796017004715000))
        await db.execute("BEGIN IMMEDIATE")
        await db.executemany(insert, rows)
        await db.execute("COMMIT")
        count += size
    elapsed = time.perf_counter() - start
    await db.close()
    return count / elapsed


async def raw_postgres(dsn: str, size: int, seconds: float, run: int) -> float:
    """Rows per second through asyncpg's copy_records_to_table, one transaction per batch."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    seq = await conn.fetchval("SELECT COALESCE(MAX(seq), 0) FROM events")
    now = datetime.now(UTC)
    columns = [
        "seq",
        "execution_id",
        "event_id",
        "step",
        "event_type",
        "status",
        "payload",
        "meta",
        "worker_id",
        "result_kind",
        "result_uri",
        "event_ids",
        "actionable",
        "informative",
        "created_at",
        "ingested_at",
        "defaulted",
    ]
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        rows = []
        for _ in range(size):
            seq += 1
            rows.append(raw_row(seq, run, False, True, now))
        async with conn.transaction():
            await conn.copy_records_to_table("events", records=rows, columns=columns)
        count += size
    elapsed = time.perf_counter() - start
    await conn.close()
    return count / elapsed


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput (so its latencies belong to one real run)."""
    ordered = sorted(runs, key=lambda r: r["events_per_s"])
    return ordered[len(ordered) // 2]


async def pg_database(admin: str) -> str | None:
    import asyncpg

    try:
        conn = await asyncpg.connect(admin, timeout=5)
    except (OSError, asyncpg.PostgresError) as e:
        print(f"PostgreSQL not available ({e}); its rows are skipped", file=sys.stderr)
        return None
    name = f"eventlog_bench_{os.getpid()}"
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.execute(f'CREATE DATABASE "{name}_raw"')
    await conn.close()
    return name


async def drop_pg_database(admin: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin)
    for database in (name, name + "_raw"):
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    await conn.close()


def with_database(dsn: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


def paired(
    baseline: Any, subject: Any, repeat: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run baseline and subject alternately, so that both see the same moments of a noisy
    machine; the ratio of each pair is what the table reports (its median)."""
    pairs = [(baseline(), subject()) for _ in range(repeat)]
    return [b for b, _ in pairs], [s for _, s in pairs]


def summary(
    results: list[dict[str, Any]], baselines: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The median run (its latencies belong to one real run), with the median paired ratio."""
    best = dict(median_run(results))
    if baselines:
        best["ratio"] = statistics.median(
            r["events_per_s"] / b["events_per_s"] for r, b in zip(results, baselines, strict=True)
        )
        best["baseline"] = statistics.median(b["events_per_s"] for b in baselines)
        if all(r.get("cpu_us") for r in results + baselines):
            best["cpu_ratio"] = statistics.median(
                b["cpu_us"] / r["cpu_us"] for r, b in zip(results, baselines, strict=True)
            )
    cpu = [r["cpu_us"] for r in results if r.get("cpu_us")]
    if cpu:
        best["cpu_us"] = statistics.median(cpu)
    return best


SINGLE_TARGET = {"sqlite": 0.7, "postgres": 0.6}  # of bare aiohttp, one event per request


def main_bench(opts: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="eventlog-bench-"))
    opts.work = work
    if opts.generator == "auto":
        opts.generator = "wrk" if shutil.which("wrk") else "python"
    if opts.generator == "python":
        print(
            "# closed-loop load from the Python generator (wrk not found: apt-get install wrk); "
            "on a small machine it may limit the fastest rows",
            file=sys.stderr,
        )
    admin = opts.pg or os.environ.get("EVENTLOG_TEST_PG_DSN", DEFAULT_PG)
    pg_name = None if opts.no_pg else asyncio.run(pg_database(admin))
    # The raw-driver baselines write to stores of their own, so neither disturbs the other's seq.
    stores = {"sqlite": (f"sqlite:///{work}/bench.db", f"sqlite:///{work}/raw.db")}
    if pg_name:
        stores["postgres"] = (with_database(admin, pg_name), with_database(admin, pg_name + "_raw"))
    rows: list[dict[str, Any]] = []
    runs = itertools.count(1)
    bare_server, bare_port = start_bare(work)
    try:
        print(
            f"# {opts.repeat} paired runs of {opts.duration:g}s (+{opts.warmup:g}s warm-up) per scenario",
            file=sys.stderr,
        )
        for backend, (dsn, raw_dsn) in stores.items():
            subprocess.run(
                [PYTHON, "-m", "eventlog", "migrate", "--dsn", raw_dsn],
                check=True,
                capture_output=True,
            )
            server, port = start_eventlog(work, dsn, backend)

            def single(target: int, concurrency: int) -> dict[str, Any]:
                return drive(
                    target,
                    path="/api/events",
                    concurrency=concurrency,
                    batch=0,
                    rate=0,
                    opts=opts,
                    run=next(runs),
                )

            try:
                single_max = 0.0
                single_target = SINGLE_TARGET[backend]
                for c in opts.concurrency:
                    bare, ours = paired(
                        lambda c=c: single(bare_port, c), lambda c=c: single(port, c), opts.repeat
                    )
                    best = summary(ours, bare)
                    best["rss"] = server.peak_rss_mb()
                    single_max = max(single_max, best["events_per_s"])
                    target = single_target if c == 64 else None
                    rows.append(
                        row("eventlog single", backend, f"c={c}", best, "bare aiohttp", target)
                    )
                top = max(opts.concurrency)

                def versus(baseline_port: int, name: str, **kwargs: Any) -> dict[str, Any]:
                    """Single events at the top concurrency on a server of its own, paired
                    with the baseline on ``baseline_port``."""
                    other, other_port = start_eventlog(work, dsn, f"{backend}-{name}", **kwargs)
                    try:
                        base, ours = paired(
                            lambda: single(baseline_port, top),
                            lambda: single(other_port, top),
                            opts.repeat,
                        )
                        best = summary(ours, base)
                        best["rss"] = other.peak_rss_mb()
                    finally:
                        other.stop()
                    return best

                # The default service logs every request: at most 10% below the row without it.
                best = versus(bare_port, "log", access_log=True)
                rows.append(
                    row(
                        "eventlog single, access log on",
                        backend,
                        f"c={top}",
                        best,
                        "bare aiohttp",
                        single_target * 0.9,
                    )
                )
                if opts.workers > 1:
                    best = versus(port, "workers", workers=opts.workers)
                    best["rss"] = None  # the parent's alone: not the workers'
                    rows.append(
                        row(
                            f"eventlog single, --workers {opts.workers}",
                            backend,
                            f"c={top}",
                            best,
                            "eventlog --workers 1",
                            None,
                        )
                    )
                rate = single_max / 2
                results = [
                    drive(
                        port,
                        path="/api/events",
                        concurrency=0,
                        batch=0,
                        rate=rate,
                        opts=opts,
                        run=next(runs),
                    )
                    for _ in range(opts.repeat)
                ]
                best = summary(results)
                best["rss"] = server.peak_rss_mb()
                rows.append(
                    row("eventlog half rate", backend, f"{rate:.0f}/s open loop", best, None, None)
                )
                spec = {
                    "host": "127.0.0.1",
                    "port": port,
                    "subscribers": opts.subscribers,
                    "rate": opts.stream_rate,
                    "run": next(runs),
                    "warmup": opts.warmup,
                    "duration": opts.duration,
                }
                result = in_child("streamgen", spec)
                result["events_per_s"] = opts.stream_rate
                result["rss"] = server.peak_rss_mb()
                rows.append(
                    row(
                        f"stream latency, {opts.subscribers} subscribers",
                        backend,
                        f"{opts.stream_rate}/s written",
                        result,
                        None,
                        None,
                    )
                )
                driver = "executemany" if backend == "sqlite" else "copy_records_to_table"
                for size in opts.batch:

                    def raw_run(size: int = size) -> dict[str, Any]:
                        if backend == "sqlite":
                            rate = asyncio.run(
                                raw_sqlite(
                                    Path(raw_dsn.removeprefix("sqlite:///")),
                                    size,
                                    opts.duration,
                                    next(runs),
                                )
                            )
                        else:
                            rate = asyncio.run(
                                raw_postgres(raw_dsn, size, opts.duration, next(runs))
                            )
                        return {"events_per_s": rate}

                    raw, ours = paired(
                        raw_run,
                        lambda size=size: drive(
                            port,
                            path="/api/events/batch",
                            concurrency=opts.batch_concurrency,
                            batch=size,
                            rate=0,
                            opts=opts,
                            run=next(runs),
                        ),
                        opts.repeat,
                    )
                    best = summary(ours, raw)
                    best["rss"] = server.peak_rss_mb()
                    rows.append(
                        row(
                            f"eventlog batch {size}",
                            backend,
                            f"c={opts.batch_concurrency}",
                            best,
                            f"raw {driver}, {size} rows/tx",
                            0.5,
                        )
                    )
            finally:
                server.stop()
    finally:
        bare_server.stop()
        if pg_name:
            asyncio.run(drop_pg_database(admin, pg_name))
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows, opts)


def row(
    name: str,
    backend: str,
    load: str,
    result: dict[str, Any],
    baseline: str | None,
    target: float | None,
) -> dict[str, Any]:
    bad = sum(n for s, n in result.get("statuses", {}).items() if int(s) != 200)
    return {
        "name": name,
        "backend": backend,
        "load": load,
        "eps": result["events_per_s"],
        "p50": result.get("p50"),
        "p99": result.get("p99"),
        "rss": result.get("rss"),
        "baseline": baseline,
        "baseline_eps": result.get("baseline"),
        "ratio": result.get("ratio"),
        "cpu_us": result.get("cpu_us"),
        "cpu_ratio": result.get("cpu_ratio"),
        "target": target,
        "non200": bad,
    }


def print_table(rows: list[dict[str, Any]], opts: argparse.Namespace) -> None:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1000:.1f}"

    print(
        f"eventlog bench, {datetime.now(UTC):%Y-%m-%d}, {platform.node()} ({os.cpu_count()} cores, "
        f"Python {platform.python_version()}), {opts.repeat} paired runs of {opts.duration:g}s, medians, "
        f"closed-loop load from {opts.generator}, load average before the run {opts.load}"
    )
    print()
    print(
        "| scenario | store | load | events/s | p50 ms | p99 ms | peak RSS MB | CPU µs/event | baseline | baseline events/s | ratio | CPU ratio | target |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|")
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.0%}"
        target = "-"
        if r["target"] is not None:
            target = f"≥ {r['target']:.0%} {'met' if r['ratio'] >= r['target'] else 'MISSED'}"
        if r["name"].endswith("half rate"):
            target = (
                f"p99 ≤ 10 ms {'met' if r['p99'] is not None and r['p99'] <= 0.010 else 'MISSED'}"
            )
        if r["name"].startswith("stream latency"):
            target = (
                f"p99 ≤ 100 ms {'met' if r['p99'] is not None and r['p99'] <= 0.100 else 'MISSED'}"
            )
        rss = "-" if r["rss"] is None else f"{r['rss']:.0f}"
        base = "-" if r["baseline_eps"] is None else f"{r['baseline_eps']:,.0f}"
        errors = f" ({r['non200']} non-200)" if r["non200"] else ""
        cpu = "-" if r["cpu_us"] is None else f"{r['cpu_us']:.0f}"
        cpu_ratio = "-" if r["cpu_ratio"] is None else f"{r['cpu_ratio']:.0%}"
        print(
            f"| {r['name']} | {r['backend']} | {r['load']} | {r['eps']:,.0f}{errors} | {ms(r['p50'])} | "
            f"{ms(r['p99'])} | {rss} | {cpu} | {r['baseline'] or '-'} | {base} | {ratio} | "
            f"{cpu_ratio} | {target} |"
        )
    peak = max((r["rss"] for r in rows if r["rss"] is not None), default=0)
    print()
    print(
        "CPU µs/event: user + system CPU of the server's processes (PostgreSQL's own not "
        "included) per event in the measured runs; CPU ratio: the baseline's CPU per event over "
        "eventlog's, paired like the ratio. It hardly moves with the machine's other load."
    )
    print(
        f"server peak RSS over the whole run: {peak:.0f} MB (target ≤ 150 MB: {'met' if peak <= 150 else 'MISSED'})"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "loadgen":
        print(json.dumps(asyncio.run(loadgen(json.loads(sys.argv[2])))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "streamgen":
        print(json.dumps(asyncio.run(streamgen(json.loads(sys.argv[2])))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "bare-server":
        bare_server(int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="unmeasured seconds before each run"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per scenario (the median is shown)"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--batch", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--batch-concurrency", type=int, default=4)
    parser.add_argument(
        "--subscribers", type=int, default=100, help="live streams in the latency run"
    )
    parser.add_argument(
        "--stream-rate", type=int, default=500, help="events/s written in the latency run"
    )
    parser.add_argument(
        "--pg",
        help="admin DSN of the PostgreSQL to use (default: EVENTLOG_TEST_PG_DSN or 127.0.0.1:5432)",
    )
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    parser.add_argument(
        "--workers", type=int, default=2, help="the --workers row's process count (1: no row)"
    )
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="closed-loop load generator (auto: wrk when installed)",
    )
    opts = parser.parse_args()
    opts.load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    main_bench(opts)


if __name__ == "__main__":
    main()
