"""eventlog at scale: load millions of realistic events and measure, at checkpoints, what a
growing log costs.

Run it through ./scripts/scale (which prepares .venv). It starts `eventlog serve` on a store of
its own and loads events the way producers do: NDJSON batches on POST /api/events/batch, a few
requests in flight, so the ingest rate is the service's. At each checkpoint the loading pauses
and it measures, through the same server, once the load's writes are on disk (sync):

  ingest rate            events/s over the segment loaded since the previous checkpoint
  single append          POST /api/events, one at a time
  execution page         GET /api/executions/{id}/events?limit=100, random executions
  feed, rare filter      GET /api/events?<filter>&limit=100, values that match nothing or a few;
                         the rare type also as a page of as many as it matched at the first
                         checkpoint (the same events, found in a larger log: the compared figure)
  execution summary      GET /api/executions/{id}
  database size          per million events held
  purge 10%              `eventlog purge --before <just past the ingested_at of the event at
                         10%>`, timed (per million removed, net of the command's start-up), with
                         single appends going on meanwhile; the longest time one of its steps
                         held the write lock, as the command reports it; "not available" while
                         this version has no purge command
  appends, purge or not  single appends' p99 and worst while the purge runs, and over the
                         --quiet seconds just before it (the host's own tail: a worst single
                         latency of 100 ms or more happens on a shared disk with no purge)

Then a table compares the last checkpoint with the first and flags every figure more than twice
as bad. Under it: the purge's longest write-lock hold against its own bound (HOLD_AIM, at both
checkpoints), and the worst single appends with and without the purge, not compared: the worst
of a few thousand latencies is the host's disk as much as the log's size. Loading stops at
--max-minutes; the measurements are then taken where it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

from eventlog.status import derive_status

PYTHON = sys.executable
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
NDJSON = {"Content-Type": "application/x-ndjson"}

# --- the workload --------------------------------------------------------------------------

STEPS = (
    "fetch_orders",
    "validate_orders",
    "enrich_customers",
    "score_risk",
    "transform",
    "load_warehouse",
    "refresh_views",
    "notify",
)
WORKERS = tuple(f"worker-{pool}-{n:02d}" for pool in ("cpu", "io", "gpu") for n in range(12))
RARE_TYPE = "worker.lease_expired"  # one event in RARE_EVERY: the filter that matches a few
RARE_EVERY = 200_000
# Filters whose values no event carries: with an index they answer at once; without one, the
# store walks the whole log to fill a page.
NOTHING = {
    "event_type": "no.such.type",
    "step": "no_such_step",
    "status": "NO_SUCH_STATUS",
    "worker_id": "no-such-worker",
}


class Execution:
    """One workflow run as a producer reports it: its remaining events, in order."""

    def __init__(self, execution_id: int, rng: random.Random) -> None:
        self.execution_id = execution_id
        self.rust = rng.random() < 0.5  # which producer dialect reports it
        self.worker = rng.choice(WORKERS)
        steps = rng.sample(STEPS, rng.randint(5, 8))
        fails = rng.random() < 0.03
        plan = [("start", "playbook.initialized")]
        for i, step in enumerate(steps):
            last = fails and i == len(steps) - 1
            plan += [(step, "step.enter"), (step, "command.issued"), (step, "command.claimed")]
            plan += [(step, "command.started")]
            if rng.random() < 0.1:  # a retried call
                plan += [(step, "call.error"), (step, "command.retry")]
            if last:
                plan += [(step, "call.error"), (step, "command.failed")]
                break
            plan += [(step, "call.done"), (step, "command.completed"), (step, "step.exit")]
        plan.append(("end", "playbook.failed" if fails else "playbook.completed"))
        plan.reverse()  # popped from the end
        self.plan = plan
        self.command = rng.getrandbits(62)


class Workload:
    """Events of many executions at once, interleaved as concurrent workflows interleave."""

    def __init__(self, seed: int = 13, active: int = 256) -> None:
        self.rng = random.Random(seed)
        self.next_execution = 600_000_000_000_000_000 + seed * 10**12
        self.active = [self._start() for _ in range(active)]
        self.last: dict[int, int] = {}  # execution id -> the number of its latest event
        self.count = 0
        self.rare = 0
        self.event_ids = 0

    def _start(self) -> Execution:
        self.next_execution += self.rng.randint(1, 4096)
        return Execution(self.next_execution, self.rng)

    def event(self) -> dict[str, Any]:
        """The next event some running execution reports."""
        rng = self.rng
        slot = rng.randrange(len(self.active))
        run = self.active[slot]
        self.count += 1
        self.last[run.execution_id] = self.count
        if self.count % RARE_EVERY == RARE_EVERY // 2:
            step, event_type = "start", RARE_TYPE
            self.rare += 1
        else:
            step, event_type = run.plan.pop()
            if not run.plan:
                self.active[slot] = self._start()
        payload = self._payload(event_type, step)
        meta = {"command_id": str(run.command + len(run.plan)), "attempt": 1,
                "trace_id": f"{rng.getrandbits(128):032x}"}  # fmt: skip
        if run.rust:  # the Rust executor's shape: canonical names, its own ids and clock
            self.event_ids += 1
            return {
                "execution_id": run.execution_id,
                "event_type": event_type,
                "step": step,
                "status": derive_status(event_type),
                "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "context": payload,
                "event_id": str((1 << 61) + self.event_ids),
                "worker_id": run.worker,
                "meta": meta,
            }
        return {  # the legacy Python worker's: aliases, server-minted id and time
            "execution_id": str(run.execution_id),
            "name": event_type,
            "node_name": step,
            "payload": payload,
            "worker_id": run.worker,
            "meta": meta,
        }

    def _payload(self, event_type: str, step: str) -> dict[str, Any]:
        rng = self.rng
        base: dict[str, Any] = {
            "step": step,
            "duration_ms": rng.randint(1, 90_000),
            "host": f"ip-10-0-{rng.randint(0, 255)}-{rng.randint(1, 254)}.internal",
        }
        if event_type in ("call.done", "command.completed"):
            base["result"] = {
                "rows": rng.randint(0, 2_000_000),
                "bytes": rng.randint(0, 10**9),
                "table": f"analytics.{step}_{rng.randint(2020, 2026)}",
                "checksum": f"sha256:{rng.getrandbits(256):064x}",
            }
        elif event_type.endswith(("error", "failed")):
            base["error"] = {
                "type": rng.choice(("TimeoutError", "HTTPError", "ValueError")),
                "message": f"upstream answered 503 after {rng.randint(1, 60)} s (attempt 1 of 3)",
                "url": f"https://api.example.com/v2/{step}?page={rng.randint(1, 500)}",
            }
        else:
            base["input"] = {
                "params": {"batch_size": rng.choice((100, 500, 1000)), "region": "eu-west-1"},
                "source": f"s3://datalake/raw/{step}/part-{rng.randint(0, 9999):05d}.parquet",
            }
        return base

    def ndjson(self, n: int) -> bytes:
        """A batch body of ``n`` events."""
        return "\n".join(json.dumps(self.event()) for _ in range(n)).encode()


# --- measuring -----------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class Latency:
    """Repeated timings of one operation: median and p99 in milliseconds."""

    def __init__(self, samples: list[float]) -> None:
        self.n = len(samples)
        self.p50 = statistics.median(samples) * 1000
        self.p99 = quantile(samples, 0.99) * 1000
        self.worst = max(samples) * 1000

    def __str__(self) -> str:
        return f"p50 {self.p50:8.2f} ms  p99 {self.p99:8.2f} ms  (n={self.n})"


async def repeat(call: Callable[[], Awaitable[None]], samples: int, budget: float) -> Latency:
    """Time ``call`` ``samples`` times, or as many as ``budget`` seconds allow (at least 5)."""
    timings: list[float] = []
    stop = time.monotonic() + budget
    while len(timings) < samples and (len(timings) < 5 or time.monotonic() < stop):
        started = time.perf_counter()
        await call()
        timings.append(time.perf_counter() - started)
    return Latency(timings)


class Service:
    """A running `eventlog serve` and an HTTP session to it."""

    def __init__(self, dsn: str, work: Path, name: str) -> None:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = work / f"{name}-serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTLOG_")}
        env["EVENTLOG_ACCESS_LOG"] = "off"  # a log line per request is not what is measured
        argv = [PYTHON, "-m", "eventlog", "serve", "--dsn", dsn, "--port", str(port)]
        self.proc = subprocess.Popen(
            argv, stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + 60
        while "listening on" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"eventlog serve did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        self.session: aiohttp.ClientSession | None = None
        self.retries = 0

    async def open(self) -> None:
        self.session = aiohttp.ClientSession(
            self.url, timeout=aiohttp.ClientTimeout(total=600), raise_for_status=False
        )

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; a 503 is retried after its Retry-After (and counted), anything else
        but a 2xx stops the run."""
        assert self.session is not None
        while True:
            async with self.session.request(method, path, **kwargs) as reply:
                body = await reply.read()
                if reply.status == 503:
                    self.retries += 1
                    await asyncio.sleep(float(reply.headers.get("Retry-After", "1")))
                    continue
                if reply.status >= 300:
                    raise RuntimeError(f"{method} {path}: {reply.status} {body[:500]!r}")
                return json.loads(body)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Store:
    """The store under test: its DSN, how big it is, and how to get rid of it."""

    def __init__(self, kind: str, dsn: str | None, work: Path) -> None:
        self.kind = kind
        self.created: str | None = None  # a PostgreSQL database of our own, to drop
        self.admin = DEFAULT_PG
        if kind == "sqlite":
            self.path = Path(urlsplit(dsn).path[1:]) if dsn else work / "scale.db"
            self.dsn = f"sqlite:///{self.path.resolve()}"
        else:
            self.dsn = dsn or ""

    async def prepare(self) -> None:
        if self.kind == "pg" and not self.dsn:
            self.created = f"eventlog_scale_{os.getpid()}"
            conn = await asyncpg.connect(self.admin, timeout=5)
            try:
                await conn.execute(f'CREATE DATABASE "{self.created}"')
            finally:
                await conn.close()
            self.dsn = urlunsplit(urlsplit(self.admin)._replace(path="/" + self.created))

    async def size(self) -> int:
        """Bytes on disk: the SQLite file and its WAL, or PostgreSQL's tables (with their
        indexes and TOAST) in the DSN's schema."""
        if self.kind == "sqlite":
            return sum(
                p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists()
            )
        conn = await asyncpg.connect(self.dsn)
        try:
            # Leaf tables only: a partitioned parent holds nothing itself.
            return int(
                await conn.fetchval(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')"
                )
            )
        finally:
            await conn.close()

    async def drop(self) -> None:
        if self.created is not None:
            conn = await asyncpg.connect(self.admin, timeout=5)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{self.created}" WITH (FORCE)')
            finally:
                await conn.close()

    def shown(self) -> str:
        parts = urlsplit(self.dsn)
        if self.kind == "sqlite":
            return self.dsn
        if parts.password:
            parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":…@"))
        return urlunsplit(parts)


# --- the run -------------------------------------------------------------------------------


def purge_command() -> tuple[bool, float]:
    """Whether this version has `eventlog purge`, and how long the command takes to start."""
    started = time.perf_counter()
    done = subprocess.run(
        [PYTHON, "-m", "eventlog", "purge", "--help"], capture_output=True, check=False
    )
    return done.returncode == 0, time.perf_counter() - started


class Run:
    """Loading one store to its checkpoints, measuring at each."""

    def __init__(self, opts: argparse.Namespace, store: Store, service: Service) -> None:
        self.opts = opts
        self.store = store
        self.service = service
        self.workload = Workload()
        self.loaded = 0  # events acknowledged through the batch route
        self.extra = 0  # events appended by the measurements (single appends)
        self.started = time.monotonic()
        self.deadline = self.started + opts.max_minutes * 60
        self.results: list[dict[str, Any]] = []
        # Events numbered below this may have been purged. Seq and the workload's numbering
        # both count every event, and differ by at most the batches in flight.
        self.purged_below = 0
        # The rare type's matches at the first checkpoint: the size of its compared page.
        self.few: int | None = None

    def say(self, line: str) -> None:
        print(f"[{self.store.kind}] {line}", flush=True)

    def show(self, label: str, text: str) -> None:
        self.say(f"{label:<36} {text}")

    async def load(self, target: int) -> tuple[int, float]:
        """Load up to ``target`` events (fewer when time runs out); (events, seconds)."""
        first, began = self.loaded, time.monotonic()
        submitted = self.loaded
        path = "/api/events/batch"

        async def producer() -> None:
            nonlocal submitted
            while submitted < target and time.monotonic() < self.deadline:
                n = min(self.opts.batch, target - submitted)
                submitted += n
                await self.service.request(
                    "POST", path, data=self.workload.ndjson(n), headers=NDJSON
                )
                self.loaded += n

        async def progress() -> None:
            last, at = self.loaded, time.monotonic()
            while True:
                await asyncio.sleep(self.opts.progress)
                now = time.monotonic()
                rate = (self.loaded - last) / (now - at)
                last, at = self.loaded, now
                self.say(
                    f"{self.loaded:>12,} / {self.opts.events:,} events  {rate:>8,.0f}/s  "
                    f"{_clock(now - self.started)}"
                )

        ticker = asyncio.create_task(progress())
        try:
            await asyncio.gather(*(producer() for _ in range(self.opts.concurrency)))
        finally:
            ticker.cancel()
        return self.loaded - first, time.monotonic() - began

    async def single(self) -> None:
        body = json.dumps(self.workload.event())
        await self.service.request("POST", "/api/events", data=body, headers=_JSON)
        self.extra += 1

    async def held(self) -> tuple[int, int, str | None]:
        """The oldest seq held, the newest, and the cut-off that removes the oldest tenth: just
        past the ingested_at of the event a tenth in (a transaction's events share theirs, so
        the cut falls between transactions, never inside one)."""
        oldest = (await self.service.request("GET", "/api/events?limit=1"))["events"]
        newest = (await self.service.request("GET", "/api/events?limit=1&order=desc"))["events"]
        if not oldest:
            return 0, 0, None
        low, high = int(oldest[0]["seq"]), int(newest[0]["seq"])
        tenth = low + (high - low + 1) // 10
        at = await self.service.request("GET", f"/api/events?limit=1&after={tenth - 1}")
        moment = datetime.fromisoformat(at["events"][0]["ingested_at"])
        cut = (moment + timedelta(microseconds=1)).isoformat(timespec="microseconds")
        return low, high, cut.replace("+00:00", "Z")

    async def checkpoint(self, events: int, seconds: float) -> dict[str, Any]:
        opts, figures = self.opts, {}
        rate = events / seconds if seconds > 0 else 0.0
        low, high, cut = await self.held()
        held = high - low + 1 if high else 0
        figures["held"] = held
        # PostgreSQL leaves the pages the load dirtied to its checkpoints and the kernel: the
        # reads are measured once nothing of the load is still being written back (SQLite syncs
        # its own commits: nothing is left, and this takes no time there).
        settling = time.monotonic()
        await asyncio.to_thread(os.sync)
        settled = time.monotonic() - settling
        self.say(
            f"--- checkpoint: {self.loaded:,} events loaded, {held:,} held "
            f"(the load's writes synced to disk first: {settled:.1f} s)"
        )
        figures["ingest"] = rate
        self.show("ingest rate", f"{rate:>10,.0f} events/s  ({events:,} in {seconds:.1f} s)")

        figures["single"] = await repeat(self.single, opts.samples, opts.budget)
        self.show("single append", f"{figures['single']}")

        # Executions that have reported, less those a purge may have emptied (no summary).
        ids = [e for e, n in self.workload.last.items() if n > self.purged_below]
        rng = random.Random(self.loaded)

        def any_execution() -> int:
            return rng.choice(ids)

        async def execution_page() -> None:
            execution = any_execution()
            await self.service.request("GET", f"/api/executions/{execution}/events?limit=100")

        figures["page"] = await repeat(execution_page, opts.samples, opts.budget)
        self.show("execution page", f"{figures['page']}")

        async def summary() -> None:
            await self.service.request("GET", f"/api/executions/{any_execution()}")

        figures["summary"] = await repeat(summary, opts.samples, opts.budget)
        self.show("execution summary", f"{figures['summary']}")

        for key, label, query in self.filters():
            found: list[int] = []

            async def feed(query: dict[str, str] = query, found: list[int] = found) -> None:
                if "execution_id" in query:  # a random execution each time
                    query = {**query, "execution_id": str(any_execution())}
                params = {"limit": "100", **query}
                reply = await self.service.request("GET", "/api/events", params=params)
                found.append(len(reply["events"]))

            figures[key] = await repeat(feed, opts.samples, opts.budget)
            self.show(label, f"{figures[key]}  matched {max(found)}")

        size = await self.store.size()
        figures["size"] = size / max(held, 1) * 1e6 / 2**20
        self.show(
            "database size",
            f"{size / 2**20:>10,.1f} MiB, {figures['size']:,.1f} MiB per million events",
        )

        await self.purge(figures, low, cut)
        return figures

    def filters(self) -> list[tuple[str, str, dict[str, str]]]:
        """(figure key, label, query) of each feed filter measured."""
        out = [(f"feed {k}", f"feed {k}=<none>", {k: v}) for k, v in NOTHING.items()]
        # A page of 100 returns every match (ten times as many at ten times the log, so ten
        # times the reads); the compared figure is a page of as many as the first checkpoint
        # found: as many events each time (the oldest held), looked up in an ever larger log.
        if self.few is None:
            self.few = max(1, self.workload.rare)
        out.append(("feed rare", f"feed event_type=<all {self.workload.rare} of them>",
                    {"event_type": RARE_TYPE}))  # fmt: skip
        out.append(("feed few", f"feed event_type=<first {self.few} of them>",
                    {"event_type": RARE_TYPE, "limit": str(self.few)}))  # fmt: skip
        out.append(("feed execution_id+event_type", "feed execution_id+event_type=<none>",
                    {"execution_id": "", "event_type": NOTHING["event_type"]}))  # fmt: skip
        return out

    async def purge(self, figures: dict[str, Any], low: int, cut: str | None) -> None:
        available, startup = purge_command()
        if not available or cut is None:
            figures["purge"] = None
            self.say("purge: not available (this version has no `eventlog purge`)")
            return
        # The host's own tail, just before: as many appends as --quiet seconds allow.
        figures["quiet"] = await repeat(self.single, sys.maxsize, self.opts.quiet)
        stalls: list[float] = []
        argv = [PYTHON, "-m", "eventlog", "purge", "--dsn", self.store.dsn, "--before", cut]
        began = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        waiting = asyncio.create_task(proc.communicate())
        while not waiting.done():  # ingest goes on, waiting for the purge's steps at times
            started = time.perf_counter()
            await self.single()
            stalls.append(time.perf_counter() - started)
        output = (await waiting)[0].decode(errors="replace").strip()
        seconds = time.perf_counter() - began
        if proc.returncode != 0:  # said, and the run goes on: the other figures still hold
            figures["purge"] = None
            self.say(f"purge: FAILED (exit status {proc.returncode}):\n{output}")
            return
        after = (await self.service.request("GET", "/api/events?limit=1"))["events"]
        removed = (int(after[0]["seq"]) if after else low) - low
        self.purged_below = low + removed + self.opts.batch * self.opts.concurrency
        # Per million removed, without the command's own start-up (Python and its imports),
        # which would otherwise dominate small purges.
        per_million = max(seconds - startup, 0.0) / removed * 1e6 if removed else None
        figures["purge"] = per_million
        held = re.search(r"the write lock was held at most ([0-9.]+) ms", output)
        figures["hold"] = float(held.group(1)) if held else None
        figures["during"] = Latency(stalls) if stalls else None
        last = output.splitlines()[-1] if output else ""
        rate = "nothing removed" if per_million is None else f"{per_million:.2f} s per million"
        self.show(
            "purge 10%",
            f"{seconds:10.2f} s for {removed:,} events ({rate} after the command's start-up of "
            f"{startup:.2f} s); the command said: {last!r}",
        )
        hold = "not said" if held is None else f"{figures['hold']:.1f} ms"
        self.show("purge, longest write-lock hold", f"{hold:>10}")
        for label, tail in (("appends during purge", figures["during"]),
                            (f"appends, {self.opts.quiet:g} s before", figures["quiet"])):  # fmt: skip
            if tail is not None:
                self.show(label, f"{tail}  worst {tail.worst:.1f} ms")


_JSON = {"Content-Type": "application/json"}


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


# Rows of the comparison: key, label, unit, whether a higher value is better.
COMPARED = [
    ("ingest", "ingest rate", "events/s", True),
    ("single.p50", "single append p50", "ms", False),
    ("single.p99", "single append p99", "ms", False),
    ("page.p50", "execution page p50", "ms", False),
    ("page.p99", "execution page p99", "ms", False),
    ("summary.p50", "execution summary p50", "ms", False),
    ("summary.p99", "execution summary p99", "ms", False),
    *[(f"feed {k}.p50", f"feed {k}=<none> p50", "ms", False) for k in NOTHING],
    ("feed few.p50", "feed event_type=<first few> p50", "ms", False),
    ("feed execution_id+event_type.p50", "feed execution_id+event_type=<none> p50", "ms", False),
    ("size", "size per million events", "MiB", False),
    ("purge", "purge, s per million removed", "s", False),
    ("during.p99", "append p99 during purge", "ms", False),
]
# Shown under them, with a bound of its own or none (see the module's docstring).
HOLD_AIM = 50.0  # ms: a purge never holds the write lock much longer at a time
SHOWN = [
    ("hold", "purge, longest write-lock hold", "ms", HOLD_AIM),
    ("during.worst", "worst append during purge", "ms", None),
    ("quiet.worst", "worst append just before, no purge", "ms", None),
]


def figure(figures: dict[str, Any], key: str) -> float | None:
    name, _, part = key.partition(".")
    value = figures.get(name)
    if value is None:
        return None
    return float(getattr(value, part)) if part else float(value)


def compare(kind: str, first: dict[str, Any], last: dict[str, Any]) -> None:
    a, b = first["loaded"], last["loaded"]
    print(
        f"\n{kind}: {_count(b)} against {_count(a)} "
        f"(ratio = value at {_count(b)} / value at {_count(a)})"
    )
    print(f"| figure | unit | at {_count(a)} | at {_count(b)} | ratio | over 2× worse |")
    print("|---|---|---:|---:|---:|---|")
    for key, label, unit, higher_better in COMPARED:
        x, y = figure(first["figures"], key), figure(last["figures"], key)
        if x is None or y is None:
            print(f"| {label} | {unit} | {_num(x)} | {_num(y)} | - | not available |")
            continue
        ratio = y / x if x else math.inf
        worse = (1 / ratio if ratio else math.inf) if higher_better else ratio
        print(
            f"| {label} | {unit} | {_num(x)} | {_num(y)} | {ratio:.2f} "
            f"| {'YES' if worse > 2 else 'no'} |"
        )
    for key, label, unit, aim in SHOWN:
        x, y = figure(first["figures"], key), figure(last["figures"], key)
        ratio = f"{y / x:.2f}" if x and y is not None else "-"
        if aim is None:
            said = "not compared"
        else:
            over = [_count(n) for n, v in ((a, x), (b, y)) if v is not None and v > aim]
            said = f"OVER ~{aim:g} {unit} at {' and '.join(over)}" if over else (
                f"within ~{aim:g} {unit} at both")  # fmt: skip
        print(f"| {label} | {unit} | {_num(x)} | {_num(y)} | {ratio} | {said} |")


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def _count(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n:,}"


async def run_store(opts: argparse.Namespace, kind: str, dsn: str | None, work: Path) -> None:
    store = Store(kind, dsn, work)
    await store.prepare()
    service = None
    try:
        service = Service(store.dsn, work, kind)
        await service.open()
        run = Run(opts, store, service)
        if (await run.held())[1]:
            raise SystemExit(f"{store.shown()} already holds events: give an empty store")
        run.say(
            f"store {store.shown()}; ingest through POST /api/events/batch of `eventlog serve` "
            f"(pid {service.proc.pid}): NDJSON batches of {opts.batch}, {opts.concurrency} in "
            "flight; single appends and reads through the same server, one at a time"
        )
        checkpoints = sorted({c for c in opts.checkpoints if c < opts.events} | {opts.events})
        for target in checkpoints:
            events, seconds = await run.load(target)
            stopped = run.loaded < target
            if stopped:
                run.say(f"time is up (--max-minutes {opts.max_minutes:g}) at {run.loaded:,} events")
            figures = await run.checkpoint(events, seconds)
            run.results.append({"loaded": run.loaded, "figures": figures})
            if stopped:
                break
        if service.retries:
            run.say(f"{service.retries} requests were answered 503 and retried")
        run.say(f"done in {_clock(time.monotonic() - run.started)}")
        if len(run.results) > 1:
            compare(kind, run.results[0], run.results[-1])
    finally:
        if service is not None:
            await service.close()
            service.stop()
        if not opts.keep:
            await store.drop()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=10_000_000, help="events to load")
    parser.add_argument(
        "--checkpoints",
        default="1000000,10000000",
        help="comma-separated event counts to measure at (the last is --events)",
    )
    parser.add_argument("--store", choices=("sqlite", "pg", "both"), default="both")
    parser.add_argument(
        "--dsn",
        action="append",
        default=[],
        help="an empty store to load (sqlite:///… or postgresql://…; may be given for each); "
        "default: a SQLite file in a temporary folder, and a fresh database on "
        f"{DEFAULT_PG.rsplit('/', 1)[0]} that is dropped at the end",
    )
    parser.add_argument("--max-minutes", type=float, default=85.0, help="per store")
    parser.add_argument("--batch", type=int, default=1000, help="events per batch request")
    parser.add_argument("--concurrency", type=int, default=4, help="batch requests in flight")
    parser.add_argument("--samples", type=int, default=300, help="timings per latency figure")
    parser.add_argument(
        "--budget", type=float, default=20.0, help="seconds per latency figure (at least 5 timings)"
    )
    parser.add_argument(
        "--progress", type=float, default=10.0, help="seconds between progress lines"
    )
    parser.add_argument("--keep", action="store_true", help="keep the loaded stores")
    parser.add_argument(
        "--quiet", type=float, default=10.0, help="seconds of single appends before each purge"
    )
    opts = parser.parse_args(argv)
    opts.checkpoints = [int(c.replace("_", "")) for c in opts.checkpoints.split(",") if c]
    return opts


def main() -> None:
    opts = parse()
    kinds = ["sqlite", "pg"] if opts.store == "both" else [opts.store]
    dsns = {("sqlite" if d.startswith("sqlite:") else "pg"): d for d in opts.dsn}
    work = Path(tempfile.mkdtemp(prefix="eventlog-scale-"))
    print(
        f"eventlog scale, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f}; "
        f"{opts.events:,} events per store, checkpoints {', '.join(map(_count, opts.checkpoints))}",
        flush=True,
    )
    try:
        for kind in kinds:
            asyncio.run(run_store(opts, kind, dsns.get(kind), work))
    finally:
        if opts.keep:
            print(f"stores and server logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
