"""What the feed filters' indexes (migration 0005) cost and buy, on both stores.

Run it through ./scripts/filters [--events 200000] [--batches 50] [--no-pg]. For each store:
load --events events in batches of 1,000 (the writer's default group) into a fresh database,
then time a feed page whose filter matches nothing (event_type, step, status, worker_id, each
alone and with an execution) and the batch ingest rate with the filter indexes, drop them, and
time the same again without them. Timings are medians of repeated runs; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eventlog.envelope import Defaulted, NewEvent  # noqa: E402
from eventlog.storage.base import FILTERS, EventStore, Page, WritePlan  # noqa: E402
from eventlog.storage.registry import open_store  # noqa: E402

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
BATCH = 1000
TYPES = ["step.enter", "step.exit", "call.done", "command.completed", "step.failed"]
ABSENT = {"event_type": "no.such", "step": "nowhere", "status": "UNKNOWN", "worker_id": "w-99"}
INDEXES = {
    "sqlite": ["events_event_type", "events_step", "events_status", "events_worker_id"],
    "postgres": [f"events_{f}_seq" for f in FILTERS],
}
NOW = datetime.now(UTC)


def batch(first: int) -> list[NewEvent]:
    """BATCH events with ids from ``first``, 100 to an execution, varied filter values."""
    return [
        NewEvent(
            execution_id=n // 100 + 1,
            event_id=n + 1,
            step=f"step{n % 12}",
            event_type=TYPES[n % len(TYPES)],
            status=("RUNNING", "COMPLETED", "FAILED")[n % 7 % 3],
            payload_json='{"rows": 42, "uri": "s3://bucket/some/object"}',
            meta_json=None,
            worker_id=(None, "w-1", "w-2", "w-3")[n % 4],
            result_kind="data",
            result_uri=None,
            event_ids=None,
            actionable=True,
            informative=True,
            created_at=NOW,
            defaulted=Defaulted.NONE,
        )
        for n in range(first, first + BATCH)
    ]


async def load(store: EventStore, first: int, batches: int) -> float:
    """Append ``batches`` batches; events per second."""
    plans = [batch(first + i * BATCH) for i in range(batches)]
    started = time.perf_counter()
    for events in plans:
        await store.write([], [], NOW, lambda *_, events=events: WritePlan(events))
    return batches * BATCH / (time.perf_counter() - started)


async def rare_pages_ms(store: EventStore) -> float:
    """Median milliseconds of a page whose filter matches nothing (each filter, alone and
    with an execution)."""
    times = []
    for _ in range(5):
        for name in FILTERS:
            for execution_id in (None, 7):
                started = time.perf_counter()
                await store.page(Page(execution_id=execution_id, **{name: ABSENT[name]}))
                times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def run(dsn: str, events: int, batches: int) -> None:
    async with open_store(dsn) as store:
        await store.migrate()
        started = time.perf_counter()
        for first in range(0, events, 20 * BATCH):
            await load(store, first, min(20, (events - first) // BATCH))
        print(f"{store.backend}: loaded {events} events in {time.perf_counter() - started:.0f} s")
        await analyze(store)
        figures = {}
        for label in ("with filter indexes", "without"):
            rates = [
                await load(
                    store, events + (i + 10 * (label != "without")) * BATCH * batches, batches
                )
                for i in range(3)
            ]
            figures[label] = (await rare_pages_ms(store), statistics.median(rates))
            await drop_indexes(store)
        for label, (ms, rate) in figures.items():
            print(
                f"{store.backend:8} {label:20} rare-filter page {ms:7.2f} ms   "
                f"batch ingest {rate:8.0f} events/s"
            )


async def analyze(store: EventStore) -> None:
    if store.backend == "postgres":
        await store.pool.execute("ANALYZE events")  # type: ignore[attr-defined]


async def drop_indexes(store: EventStore) -> None:
    for name in INDEXES[store.backend]:
        if store.backend == "postgres":
            await store.pool.execute(f"DROP INDEX IF EXISTS {name}")  # type: ignore[attr-defined]
        else:
            db = sqlite3.connect(store.path)  # type: ignore[attr-defined]
            db.execute(f"DROP INDEX IF EXISTS {name}")
            db.close()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000, help="events loaded first")
    parser.add_argument("--batches", type=int, default=20, help="batches per ingest run")
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    parser.add_argument("--pg", default=os.environ.get("EVENTLOG_TEST_PG_DSN", DEFAULT_PG))
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        await run(f"sqlite:///{tmp}/events.db", opts.events, opts.batches)
    if opts.no_pg:
        return
    name = f"eventlog_filters_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(opts.pg)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        await run(
            urlunsplit(urlsplit(opts.pg)._replace(path="/" + name)), opts.events, opts.batches
        )
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
