"""How long ingest waits while a purge runs: the figure behind "purging never holds the write
lock for more than ~50 ms at a time".

Run it through ./scripts/purge-stall. For each store it loads --events old events (straight
through the store, 5,000 per transaction), then appends one event at a time through an
EventLog (the service's write path: writer queue, group commit, durable commit), timing every
append, first for a few seconds alone (the baseline), then while a purge removes every old
event. Two purges are measured: in the same process, as the `retention` setting runs it (it
shares the writer), and `eventlog purge` as a separate process, as an operator runs it by hand.
Printed: append latency p50 / p99 / worst, alone and during each purge; the purge's duration
and the longest step it took; and that every acknowledged append is held once.

PostgreSQL: a throwaway database on --pg-dsn's server, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from eventlog.envelope import Defaulted, NewEvent
from eventlog.log import EventLog
from eventlog.retention import purge
from eventlog.storage.base import EventStore, Page, WritePlan

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
LOAD_BATCH = 5000
BASELINE_SECONDS = 3.0


def _old_event(n: int) -> NewEvent:
    return NewEvent(
        execution_id=1 + n // 50,  # executions of fifty events
        event_id=10**12 + n,
        step=f"step-{n % 7}",
        event_type="playbook.completed" if n % 50 == 49 else "call.done",
        status="RUNNING",
        payload_json=f'{{"rows":{n},"note":"an old event, about as large as a real one"}}',
        meta_json=None,
        worker_id=f"w-{n % 4}",
        result_kind="data",
        result_uri=None,
        event_ids=None,
        actionable=True,
        informative=True,
        created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(milliseconds=n),
        defaulted=Defaulted.NONE,
    )


async def load(store: EventStore, count: int) -> None:
    started = time.perf_counter()
    for start in range(0, count, LOAD_BATCH):
        events = [_old_event(n) for n in range(start, min(start + LOAD_BATCH, count))]
        await store.write(
            [e.key for e in events], [], datetime.now(UTC), lambda *_, ev=events: WritePlan(ev)
        )
        if start and start % 200_000 == 0:
            print(f"  loaded {start:,} events ({time.perf_counter() - started:.0f} s)", flush=True)
    print(f"  loaded {count:,} events in {time.perf_counter() - started:.0f} s", flush=True)


class Appender:
    """Appends one event at a time, recording each one's latency, until stopped."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.latencies: list[float] = []
        self.acknowledged: list[int] = []
        self._stop = False

    async def run(self) -> None:
        n = 0
        while not self._stop:
            n += 1
            body = {"execution_id": 9_000_000 + n % 10, "event_type": "step.enter", "step": "s"}
            started = time.perf_counter()
            done = await self.log.append(body)
            self.latencies.append(time.perf_counter() - started)
            self.acknowledged.append(done.event.event_id)

    def stop(self) -> None:
        self._stop = True


def _figures(latencies: list[float]) -> str:
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (
        f"{len(ms):6d} appends  p50 {statistics.median(ms):6.2f} ms  p99 {p99:6.2f} ms  "
        f"worst {ms[-1]:7.2f} ms"
    )


async def measure(dsn: str, events: int, by_hand: bool) -> None:
    async with EventLog.open(dsn, node_id=7) as log:
        await load(log.store, events)
        cut = datetime.now(UTC)
        await asyncio.sleep(0.01)
        appender = Appender(log)
        task = asyncio.create_task(appender.run())
        await asyncio.sleep(BASELINE_SECONDS)
        baseline = appender.latencies[:]
        appender.latencies.clear()
        started = time.perf_counter()
        if by_hand:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "eventlog",
                "purge",
                "--dsn",
                dsn,
                "--before",
                cut.isoformat(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            out, err = await proc.communicate()
            removed = int(out)
            said = err.decode(errors="replace").strip().splitlines()
            longest = said[-1].split(" events ", 1)[-1] if said else ""
        else:
            result = await purge(log.store, cut)
            removed = result.removed
            longest = result.steps_said
        took = time.perf_counter() - started
        during = appender.latencies[:]
        appender.stop()
        await task
        held = await log.store.page(Page(limit=len(appender.acknowledged) + 10))
        assert removed == events, (removed, events)
        assert sorted(e.event_id for e in held) == sorted(appender.acknowledged)
        how = "by hand (eventlog purge, another process)" if by_hand else "in process (retention)"
        print(f"  purge {how}: {removed:,} events in {took:.1f} s, {longest}")
        print(f"    alone:        {_figures(baseline)}")
        print(f"    during purge: {_figures(during)}")
        print(f"    every one of {len(appender.acknowledged):,} acknowledged appends held once")


def _with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


async def on_postgres(admin: str, events: int, by_hand: bool) -> None:
    name = f"eventlog_purge_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        await measure(_with_database(admin, name), events, by_hand)
    finally:
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--how", default="process,hand", help="process, hand, or both")
    parser.add_argument("--pg-dsn", default=os.environ.get("EVENTLOG_TEST_PG_DSN", DEFAULT_PG))
    args = parser.parse_args()
    print(f"purge stall: {args.events:,} old events; {os.cpu_count()} cores")
    for store in args.stores.split(","):
        for how in args.how.split(","):
            print(f"{store}:", flush=True)
            if store == "sqlite":
                with tempfile.TemporaryDirectory() as tmp:
                    dsn = f"sqlite:///{Path(tmp) / 'events.db'}"
                    await measure(dsn, args.events, how == "hand")
            else:
                await on_postgres(args.pg_dsn, args.events, how == "hand")


if __name__ == "__main__":
    asyncio.run(main())
