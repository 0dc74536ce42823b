"""Reads from a hot standby under write load: how far it lags, how often a read right after a
write misses it, how long a read-your-writes read (?min_seq=) takes, and how soon a stream on
the standby delivers an event, beside the same service reading from the primary.

Run it through ./scripts/bench-replica (which prepares .venv). It starts a throwaway primary
and a `pg_basebackup -R` standby of it (tests/process/pgcluster.py; fsync off, loopback), then
`eventlog serve` twice: reading from the primary, then with read_dsn on the standby. Each run
lasts --duration seconds with --writers closed-loop writers posting single events, while one
probe posts an event and reads it back (once plain, once with min_seq) and a stream follows the
log, and /ready is sampled for the replica's lag.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.process.pgcluster import hot_standby, throwaway_cluster  # noqa: E402

SMALL = {"fsync": "off", "shared_buffers": "32MB", "max_connections": "60"}
LISTENING = re.compile(rb"eventlog listening on (http://\S+?:\d+) \(")


@contextlib.contextmanager
def serve(dsn: str, read_dsn: str | None) -> Iterator[str]:
    """`eventlog serve` on a free port; its base URL until the block ends."""
    log = tempfile.NamedTemporaryFile(prefix="eventlog-bench-replica-", suffix=".log")
    command = [sys.executable, "-m", "eventlog", "serve", "--dsn", dsn, "--port", "0"]
    env = {"EVENTLOG_ACCESS_LOG": "false", "PATH": "/usr/bin:/bin"}
    if read_dsn is not None:
        env["EVENTLOG_READ_DSN"] = read_dsn
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while (match := LISTENING.search(Path(log.name).read_bytes())) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(Path(log.name).read_text(errors="replace"))
            time.sleep(0.05)
        yield match[1].decode()
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.1f}"


async def run(url: str, duration: float, writers: int, tag: int) -> dict[str, Any]:
    """One timed run against the service at ``url``."""
    stop = asyncio.Event()
    written = 0
    stale = fresh = 0
    ryw: list[float] = []
    delivered: dict[int, float] = {}
    posted: dict[int, float] = {}
    lag_seq: list[int] = []
    lag_s: list[float] = []

    async with aiohttp.ClientSession() as http:

        async def writer(w: int) -> None:
            nonlocal written
            n = 0
            while not stop.is_set():
                n += 1
                body = {
                    "execution_id": str(tag * 1000 + w + 1),
                    "event_id": str(tag * 10**12 + w * 10**9 + n),
                    "event_type": "call.done",
                    "step": "load",
                }
                async with http.post(url + "/api/events", json=body) as r:
                    await r.read()
                    if r.status == 200:
                        written += 1

        async def probe() -> None:
            nonlocal stale, fresh
            n = 0
            while not stop.is_set():
                n += 1
                event_id = tag * 10**12 + 999 * 10**9 + n
                body = {
                    "execution_id": str(tag * 1000 + 999),
                    "event_id": str(event_id),
                    "event_type": "probe",
                    "step": "probe",
                }
                async with http.post(url + "/api/events", json=body) as r:
                    await r.read()
                    seq = r.headers["Eventlog-Seq"]
                posted[event_id] = time.perf_counter()
                async with http.get(f"{url}/api/events/{event_id}") as r:
                    await r.read()
                    stale, fresh = stale + (r.status == 404), fresh + (r.status == 200)
                started = time.perf_counter()
                async with http.get(f"{url}/api/events/{event_id}?min_seq={seq}") as r:
                    await r.read()
                    if r.status == 200:
                        ryw.append(time.perf_counter() - started)
                await asyncio.sleep(0.01)

        async def stream() -> None:
            timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
            path = f"{url}/api/executions/{tag * 1000 + 999}/events/stream"
            async with http.get(path, timeout=timeout) as r:
                async for line in r.content:
                    if line.startswith(b"data: "):
                        event = orjson.loads(line[6:])
                        delivered[int(event["event_id"])] = time.perf_counter()

        async def sample() -> None:
            while not stop.is_set():
                async with http.get(url + "/ready") as r:
                    data = await r.json()
                replica = data.get("replica")
                if replica and replica["reachable"]:
                    lag_seq.append(int(replica["lag_seq"]))
                    lag_s.append(replica["lag_seconds"])
                await asyncio.sleep(0.05)

        follower = asyncio.create_task(stream())
        await asyncio.sleep(0.5)
        started = time.perf_counter()
        tasks = [asyncio.create_task(writer(w)) for w in range(writers)]
        tasks += [asyncio.create_task(probe()), asyncio.create_task(sample())]
        await asyncio.sleep(duration)
        stop.set()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        await asyncio.sleep(1.0)
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    latency = [delivered[k] - posted[k] for k in posted if k in delivered]
    return {
        "writes/s": f"{written / elapsed:,.0f}",
        "plain read after write: missing": f"{stale}/{stale + fresh}",
        "min_seq read p50/p99 ms": f"{_ms(ryw, 0.5)} / {_ms(ryw, 0.99)}",
        "stream delivery p50/p99 ms": f"{_ms(latency, 0.5)} / {_ms(latency, 0.99)}",
        "lag seq p50/max": f"{statistics.median(lag_seq):.0f} / {max(lag_seq)}" if lag_seq else "-",
        "lag s max": f"{max(lag_s):.3f}" if lag_s else "-",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--writers", type=int, default=16, help="concurrent writers")
    args = parser.parse_args()
    what = "the replica benchmark"
    rows = {}
    with (
        throwaway_cluster(what, prefix="eventlog-bench-primary-", settings=SMALL) as primary,
        hot_standby(primary, what, prefix="eventlog-bench-standby-", settings=SMALL) as standby,
    ):
        for tag, (name, read_dsn) in enumerate(
            (("reads from the primary", None), ("reads from the standby", standby.dsn)), 1
        ):
            with serve(primary.dsn, read_dsn) as url:
                rows[name] = asyncio.run(run(url, args.duration, args.writers, tag))
    columns = list(next(iter(rows.values())))
    print("| reads | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(row[c] for c in columns) + " |")
    print(f"\n{args.writers} writers, {args.duration:g} s per run, single events, loopback")


if __name__ == "__main__":
    main()
