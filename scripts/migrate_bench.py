"""How long `eventlog migrate` stops a PostgreSQL log to partition it, and what partitions
cost at ingest.

Run it through ./scripts/migrate-bench [--events 1000000] [--days 90]. It makes a throwaway
database at migration 0005 (unpartitioned) holding --events events ingested over --days days,
times the batch ingest rate there, runs the migration (timed, with its progress lines), and
times the batch ingest rate again on the partitioned table. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from filters import NOW, batch, load, rare_pages_ms  # noqa: E402

from eventlog.storage.base import Page, WritePlan, load_migrations  # noqa: E402
from eventlog.storage.postgres import PostgresStore  # noqa: E402

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"

_FILL = """
INSERT INTO events (seq, execution_id, event_id, step, event_type, status, payload, meta,
                    worker_id, result_kind, result_uri, event_ids, actionable, informative,
                    created_at, ingested_at, defaulted)
SELECT g, g / 100 + 1, g, 'step' || (g % 12),
       (ARRAY['step.enter', 'step.exit', 'call.done', 'command.completed', 'step.failed'])[g % 5 + 1],
       (ARRAY['RUNNING', 'COMPLETED', 'FAILED'])[g % 7 % 3 + 1],
       '{"rows": 42, "uri": "s3://bucket/some/object"}', NULL,
       (ARRAY[NULL, 'w-1', 'w-2', 'w-3'])[g % 4 + 1], 'data', NULL, NULL, true, true,
       t, t, 0
FROM generate_series($1::bigint, $2::bigint) AS g,
     LATERAL (SELECT now() - $3 * interval '1 day' * (1 - g::float8 / $2)) AS x(t)
"""


async def prepare(dsn: str, events: int, days: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE eventlog_migrations (version integer PRIMARY KEY, "
            "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for m in load_migrations("postgres"):
            if m.version < 6:
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO eventlog_migrations VALUES ($1, $2)", m.version, m.name
                )
        for first in range(1, events + 1, 100_000):
            await conn.execute(_FILL, first, min(first + 99_999, events), days)
        await conn.execute("UPDATE eventlog_head SET last_seq = $1", events)
        await conn.execute(
            "INSERT INTO executions (execution_id, event_count, first_event_at, last_event_at, "
            "last_event_type, last_seq, status) SELECT execution_id, count(*), min(created_at), "
            "max(created_at), 'step.enter', max(seq), 'RUNNING' FROM events GROUP BY 1"
        )
        await conn.execute("VACUUM ANALYZE events")
    finally:
        await conn.close()


async def overlapping(store: PostgresStore, first: int, seconds: float = 5.0) -> float:
    """Events per second from two writers of 100-event batches at once, as the service's
    writer keeps two transactions under way."""
    counter = iter(range(first, first + 10**9, 1000))
    done = 0

    async def writer() -> None:
        nonlocal done
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            events = batch(next(counter))[:100]
            await store.write([], [], NOW, lambda *_, events=events: WritePlan(events))
            done += len(events)

    started = time.perf_counter()
    await asyncio.gather(writer(), writer())
    return done / (time.perf_counter() - started)


async def reads_ms(store: PostgresStore, events: int) -> str:
    """Median milliseconds of a feed page, an execution's page and a lookup by id."""
    times: dict[str, list[float]] = {"feed page": [], "execution page": [], "get by id": []}
    for i in range(50):
        for label, call in (
            ("feed page", lambda: store.page(Page(after=events // 2 + i * 1000, limit=100))),
            ("execution page", lambda: store.page(Page(execution_id=i * 197 + 1, limit=100))),
            ("get by id", lambda: store.get(i * 9973 + 1)),
        ):
            started = time.perf_counter()
            await call()
            times[label].append((time.perf_counter() - started) * 1000)
    figures = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    figures["rare-filter page"] = await rare_pages_ms(store)
    return ", ".join(f"{k} {v:.2f} ms" for k, v in figures.items())


async def run(dsn: str, events: int, days: int, batches: int) -> None:
    started = time.perf_counter()
    await prepare(dsn, events, days)
    print(f"loaded {events} events over {days} days in {time.perf_counter() - started:.0f} s")
    async with PostgresStore(dsn) as store:
        before = await load(store, events + 1, batches)
        print(f"batch ingest, unpartitioned: {before:.0f} events/s")
        two = await overlapping(store, 10**8)
        print(f"two writers of 100-event batches, unpartitioned: {two:.0f} events/s")
        print(f"reads, unpartitioned: {await reads_ms(store, events)}")
        started = time.perf_counter()
        await store.migrate(progress=lambda line: print("  " + line, flush=True))
        took = time.perf_counter() - started
        print(f"migration: {took:.1f} s, {took / (events / 1e6):.1f} s per million events")
        held = await store.list_partitions()
        after = await load(store, events + 1 + batches * 1000, batches)
        print(f"batch ingest, {len(held)} partitions: {after:.0f} events/s")
        two = await overlapping(store, 2 * 10**8)
        print(f"two writers of 100-event batches, {len(held)} partitions: {two:.0f} events/s")
        await store.pool.execute("ANALYZE events")
        print(f"reads, {len(held)} partitions: {await reads_ms(store, events)}")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90, help="the span of their ingestion")
    parser.add_argument("--batches", type=int, default=20, help="batches of 1,000 per rate")
    parser.add_argument("--pg", default=os.environ.get("EVENTLOG_TEST_PG_DSN", DEFAULT_PG))
    opts = parser.parse_args()
    name = f"eventlog_migrate_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(opts.pg)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        dsn = urlunsplit(urlsplit(opts.pg)._replace(path="/" + name))
        await run(dsn, opts.events, opts.days, opts.batches)
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
