"""PostgreSQL only: the events table partitioned by ingestion time (migration 0006)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from eventlog.config import ConfigError, make_settings
from eventlog.envelope import Event
from eventlog.log import EventLog, SchemaNotCurrent
from eventlog.retention import purge
from eventlog.storage import partitions
from eventlog.storage.base import Page, WritePlan, load_migrations
from eventlog.storage.postgres import PostgresStore
from eventlog.storage.registry import open_store, store_from_settings

from .test_contract import NOW, append, new_event, stored_among

WEEK = timedelta(days=7)


@pytest.fixture
def backend() -> str:
    """These tests are about PostgreSQL's partitions; the run's database must exist."""
    return "postgres"


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[PostgresStore]:
    """A migrated PostgreSQL store, partitions a week wide."""
    async with open_store(dsn, partition_days=7) as store:
        assert isinstance(store, PostgresStore)
        await store.migrate()
        yield store


async def moved(store: PostgresStore, ingested_at: datetime, *seqs: int) -> None:
    """Give events another ingestion time: PostgreSQL moves them to its partition."""
    async with store.pool.acquire() as conn:
        held = await partitions.partitions(conn)
        await partitions.cover(conn, ingested_at, held[-1].upper - WEEK, WEEK)
        await conn.execute(
            "UPDATE events SET ingested_at = $1 WHERE seq = ANY($2::bigint[])", ingested_at, seqs
        )


async def where(store: PostgresStore, seq: int) -> str:
    """The name of the partition holding the event at ``seq``."""
    return await store.pool.fetchval(
        "SELECT tableoid::regclass::text FROM events WHERE seq = $1", seq
    )


def assert_contiguous(held: list[partitions.Partition]) -> None:
    """Each partition starts where the one before ends."""
    assert all(a.upper == b.lower for a, b in zip(held, held[1:], strict=False)), held


async def test_a_new_database_is_partitioned_with_partitions_ahead(store):
    """After migrate, events is partitioned by ingested_at, from today's midnight to two
    partitions past the one holding now, contiguous, with no default partition."""
    now = datetime.now(UTC)
    async with store.pool.acquire() as conn:
        assert await partitions.partitioned(conn)
        bounds = await conn.fetch(
            "SELECT pg_get_expr(c.relpartbound, c.oid) AS b FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass"
        )
    assert not any("DEFAULT" in r["b"] for r in bounds)
    held = await store.list_partitions()
    assert held[0].lower == now.replace(hour=0, minute=0, second=0, microsecond=0)
    assert held[-1].upper - now >= 2 * WEEK
    assert all(p.upper - p.lower == WEEK for p in held)
    assert_contiguous(held)
    [event] = await append(store, new_event(1, 1))
    holder = next(p for p in held if p.lower <= event.ingested_at < p.upper)
    assert await where(store, event.seq) == holder.name


async def test_the_upkeep_keeps_partitions_ahead_of_now(store):
    """maintain(now) adds partitions so that two lie beyond the one holding now."""
    later = datetime.now(UTC) + timedelta(days=40)
    await store.maintain(later)
    held = await store.list_partitions()
    assert held[-1].upper - later >= 2 * WEEK
    assert_contiguous(held)
    await store.maintain(later)  # nothing more to do
    assert await store.list_partitions() == held


async def test_a_write_that_finds_no_partition_for_its_time_makes_it(store):
    """With no partition at all (the upkeep far behind), both write paths still succeed: the
    missing partition is made and the write tried again."""
    async with store.pool.acquire() as conn:
        for p in await partitions.partitions(conn):
            await conn.execute(f"DROP TABLE {p.name}")
    assert await store.list_partitions() == []
    [first] = await append(store, new_event(1, 1))  # the single-statement path
    held = await store.list_partitions()
    assert any(p.lower <= first.ingested_at < p.upper for p in held)
    async with store.pool.acquire() as conn:
        for p in held:
            await conn.execute(f"ALTER TABLE events DETACH PARTITION {p.name}")
            await conn.execute(f"DROP TABLE {p.name}")
    # The general path: a key already asked about makes write() decide in a transaction.
    decided = []

    def decide(existing, records):
        decided.append(set(existing))
        return WritePlan([new_event(1, 2)])

    [second] = await store.write([(1, 2)], ["k"], NOW, decide)
    assert second.seq == first.seq + 1
    assert await store.get(2) == second
    assert await store.get(1) is None  # dropped with its partition


async def test_a_key_stored_in_an_older_partition_is_found(store):
    """Idempotency spans partitions: a key whose event sits in a partition months old is
    found by the next write, which then stores nothing (duplicate or conflict is decided
    from the stored event)."""
    [old] = await append(store, new_event(5, 50))
    await moved(store, datetime.now(UTC) - timedelta(days=100), old.seq)
    holder = await where(store, old.seq)
    [p] = [p for p in await store.list_partitions() if p.name == holder]
    assert p.upper <= datetime.now(UTC) - timedelta(days=90)
    found = await stored_among(store, [(5, 50), (5, 51)])
    assert set(found) == {(5, 50)}
    assert found[(5, 50)].seq == old.seq
    # The optimistic single statement finds it too, and writes nothing.
    decided: list[set] = []

    def decide(existing, records):
        decided.append(set(existing))
        return WritePlan([e for e in [new_event(5, 50)] if e.key not in existing])

    assert await store.write([(5, 50)], [], NOW, decide) == []
    assert decided == [set(), {(5, 50)}]
    assert await store.pool.fetchval("SELECT count(*) FROM events WHERE event_id = 50") == 1
    assert (await store.get(50)).seq == old.seq


async def test_two_instances_writing_the_same_keys_at_once_store_each_once(store, dsn):
    """Two stores (two instances) race to append the same new keys, over and over: the
    log's write lock and the check of the head in the single statement store each key once,
    with no unique index to catch a miss."""
    async with open_store(dsn) as other:
        for round_ in range(40):
            keys = [(9, round_ * 10 + i) for i in range(3)]

            def decide(existing, records, keys=keys):
                return WritePlan([new_event(*k) for k in keys if k not in existing])

            results = await asyncio.gather(
                store.write(keys, [], NOW, decide), other.write(keys, [], NOW, decide)
            )
            assert sorted(len(r) for r in results) == [0, 3]
    counts = await store.pool.fetch(
        "SELECT event_id, count(*) AS n FROM events GROUP BY event_id HAVING count(*) > 1"
    )
    assert counts == []
    assert await store.pool.fetchval("SELECT count(*) FROM events") == 120
    seqs = [e.seq for e in await store.page(Page(limit=1000))]
    assert seqs == list(range(1, 121))  # gap-free


async def test_dropping_before_a_cutoff_removes_whole_partitions_only(store):
    """purge_whole removes the partitions wholly before the cut-off and counts their
    events, leaves the straddling one whole, and corrects the execution summaries."""
    events = await append(
        store,
        *(
            new_event(x, n, created_at=NOW + timedelta(seconds=n))
            for n, x in enumerate([1, 1, 2, 2, 3, 3], 1)
        ),
    )
    now = datetime.now(UTC)
    await moved(store, now - timedelta(days=30), events[0].seq, events[2].seq)  # old
    await moved(store, now - timedelta(days=29), events[1].seq)  # old too: x1 all gone
    held = await store.list_partitions()
    cutoff = now - timedelta(days=10)
    straddling = partitions.straddling(held, cutoff)
    await moved(store, cutoff - timedelta(hours=1), events[4].seq)  # before, in the straddler
    doomed = [p.name for p in held if p.upper <= cutoff]
    assert doomed
    assert await store.purge_whole(cutoff) == 3
    left = await store.list_partitions()
    assert [p.name for p in left] == [p.name for p in held if p.upper > cutoff]
    assert straddling is not None and straddling.name in [p.name for p in left]
    remaining = [e.event_id for e in await store.page(Page(limit=100))]
    assert remaining == [4, 5, 6]  # the straddler's event before the cut-off stays
    assert await store.execution(1) is None  # every event gone
    summary = await store.execution(2)
    assert summary.event_count == 1
    assert summary.first_event_at == events[3].created_at
    assert (await store.execution(3)).event_count == 2


async def unpartitioned_database(dsn: str, count: int) -> list[Event]:
    """A database as the versions before partitioning left it (migrations up to 0005), with
    ``count`` events; returns them as they read back."""
    async with open_store(dsn) as store:
        assert isinstance(store, PostgresStore)
        async with store.pool.acquire() as conn:
            await conn.execute(
                "CREATE TABLE eventlog_migrations (version integer PRIMARY KEY, "
                "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for m in load_migrations("postgres"):
                if m.version < 6:
                    await conn.execute(m.sql)
                    await conn.execute(
                        "INSERT INTO eventlog_migrations (version, name) VALUES ($1, $2)",
                        m.version,
                        m.name,
                    )
        assert not await partitioned(store)
        batch = [
            new_event(n % 7 + 1, n, created_at=NOW + timedelta(seconds=n))
            for n in range(1, count + 1)
        ]
        await append(store, *batch)
        # Spread over two months of ingestion, as an old log is.
        start = datetime.now(UTC) - timedelta(days=60)
        await store.pool.execute(
            "UPDATE events SET ingested_at = $1::timestamptz + seq * interval '1 hour'", start
        )
        return await store.page(Page(limit=count + 1))


async def partitioned(store: PostgresStore) -> bool:
    async with store.pool.acquire() as conn:
        return await partitions.partitioned(conn)


async def test_an_unpartitioned_database_is_copied_into_partitions_resumably(dsn, monkeypatch):
    """migrate on a database from before 0006 copies every event into partitions, a chunk per
    transaction with a progress line each; interrupted, the schema is still pending and the
    next migrate goes on from where it stopped, even past an event appended meanwhile; nothing
    is lost, repeated or changed."""
    before = await unpartitioned_database(dsn, 1000)
    monkeypatch.setattr("eventlog.storage.postgres._COPY_CHUNK_EVENTS", 300)
    lines: list[str] = []

    class Interrupted(Exception):
        pass

    def interrupted(line: str) -> None:
        lines.append(line)
        if line.startswith("copied 600"):
            raise Interrupted

    async with open_store(dsn) as store:
        assert isinstance(store, PostgresStore)
        with pytest.raises(Interrupted):
            await store.migrate(progress=interrupted)
        assert lines == [
            "copying 1000 of 1000 events into partitions",
            lines[1],
            lines[2],
        ]
        assert lines[1].startswith("copied 300 of 1000 events")
        # Named first, before the later migrations it precedes.
        assert (await store.pending_migrations())[0] == "0006_partitions (copy)"
        # An instance that was not stopped appends meanwhile: the copy still resumes after
        # the last old event it copied, not after this one.
        [meanwhile] = await append(store, new_event(99, 99))
        assert meanwhile.seq == 1001
        lines.clear()
        assert await store.migrate(progress=lines.append) == []
        assert lines[0] == "copying 400 of 1000 events into partitions"
        assert lines[-1] == "copied 1000 events; the old table is dropped"
        assert await store.pending_migrations() == []
        after = await store.page(Page(limit=1002))
        assert after == [*before, meanwhile]
        held = await store.list_partitions()
        assert held[0].lower <= before[0].ingested_at
        assert len(held) >= 9  # two months of weeks, and two ahead
        assert_contiguous(held)
        # The log goes on from the head, gap-free.
        [next_event] = await append(store, new_event(99, 100))
        assert next_event.seq == 1002


async def test_an_unfinished_copy_keeps_a_service_that_does_not_migrate_from_starting(dsn):
    """While the copy is unfinished, pending_migrations names it, and a service configured not
    to migrate at start refuses to start rather than serve half a log."""
    await unpartitioned_database(dsn, 10)
    async with open_store(dsn) as store:
        async with store.pool.acquire() as conn:
            # The state an interrupted copy leaves: 0006 applied, the old table still there.
            m = load_migrations("postgres")[5]
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO eventlog_migrations (version, name) VALUES ($1, $2)", 6, m.name
            )
        # Named first, before the later migrations it precedes.
        assert (await store.pending_migrations())[0] == "0006_partitions (copy)"
    log = EventLog(make_settings(dsn=dsn, migrate_on_start=False))
    with pytest.raises(SchemaNotCurrent, match="0006_partitions"):
        await log.start()


async def test_partition_listing_reports_rows_and_size(store):
    """Each partition has its name, bounds, an estimate of its rows and its size on disk."""
    await append(store, *(new_event(1, n) for n in range(1, 101)))
    await store.pool.execute("ANALYZE events")
    held = await store.list_partitions()
    now = datetime.now(UTC)
    current = next(p for p in held if p.lower <= now < p.upper)
    assert current.rows == 100
    assert current.bytes > 0
    assert all(p.rows == 0 for p in held if p is not current)


def test_a_straddling_partition_is_the_one_holding_the_cutoff():
    """straddling() names the partition whose range holds the cut-off strictly inside."""
    t = datetime(2026, 1, 1, tzinfo=UTC)
    held = [partitions.Partition(f"p{i}", t + i * WEEK, t + (i + 1) * WEEK, 0, 0) for i in range(3)]
    assert partitions.straddling(held, t + WEEK + timedelta(days=1)) == held[1]
    assert partitions.straddling(held, t + WEEK) is None  # a boundary: nothing straddles
    assert partitions.straddling(held, t - WEEK) is None


async def test_a_sqlite_store_has_no_partitions_to_keep(tmp_path):
    """SQLite's upkeep does nothing and its log is one table (the CLI says so)."""
    async with open_store(f"sqlite:///{tmp_path}/e.db") as store:
        await store.migrate()
        await store.maintain(datetime.now(UTC))
        assert not hasattr(store, "list_partitions")


async def test_the_service_keeps_partitions_ahead_in_the_background(dsn, monkeypatch):
    """A started EventLog runs the store's upkeep by itself, again and again: with its clock
    moved 60 days on, partitions appear that reach two weeks past that day."""
    later = datetime.now(UTC) + timedelta(days=60)
    monkeypatch.setattr("eventlog.log.UPKEEP_INTERVAL", 0.05)
    async with EventLog(make_settings(dsn=dsn)) as log:
        store = log.store
        assert isinstance(store, PostgresStore)
        assert (await store.list_partitions())[-1].upper < later
        monkeypatch.setattr("eventlog.log.now", lambda: later)
        for _ in range(200):
            held = await store.list_partitions()
            if held[-1].upper - later >= 2 * WEEK:
                break
            await asyncio.sleep(0.05)
        assert held[-1].upper - later >= 2 * WEEK
        assert_contiguous(held)


async def test_a_removal_interrupted_after_its_detach_is_finished_by_the_next(store):
    """A partition detached but not dropped (the process died in between) is counted,
    taken out of the summaries and dropped by the next removal, whatever its cut-off."""
    [old, new] = await append(store, new_event(1, 1), new_event(2, 2))
    await moved(store, datetime.now(UTC) - timedelta(days=30), old.seq)
    name = await where(store, old.seq)
    await store.pool.execute(f"ALTER TABLE events DETACH PARTITION {name}")
    assert await store.purge_whole(datetime.now(UTC) - timedelta(days=60)) == 1
    assert await store.execution(1) is None
    assert (await store.execution(2)).event_count == 1
    assert await store.pool.fetchval("SELECT to_regclass($1)", name) is None


async def test_the_partition_width_is_a_setting(dsn):
    """pg_partition_days reaches the store and sets the width of the partitions it makes; it
    is refused outside 1 to 366 days."""
    settings = make_settings(dsn=dsn, pg_partition_days=3)
    async with store_from_settings(settings) as store:
        assert isinstance(store, PostgresStore)
        await store.migrate()
        held = await store.list_partitions()
    assert {p.upper - p.lower for p in held} == {timedelta(days=3)}
    for bad in (0, 367):
        with pytest.raises(ConfigError, match="pg_partition_days"):
            make_settings(dsn=dsn, pg_partition_days=bad)


async def test_a_purge_drops_whole_partitions_and_deletes_rows_only_in_the_straddler(store):
    """retention's purge on a partitioned log: the partitions wholly before the cut-off go as
    tables, the horizon moves past their events, and only the one straddling the cut-off has
    rows deleted; the count, the horizon and the summaries are those of a row-by-row purge."""
    events = await append(
        store,
        *(
            new_event(x, n, created_at=NOW + timedelta(seconds=n))
            for n, x in enumerate([1, 1, 2, 2, 3, 3], 1)
        ),
    )
    now = datetime.now(UTC)
    cutoff = now - timedelta(days=10)
    # Ingestion times that grow with seq, as one lock assigns both.
    for seq, ago in ((1, 30), (2, 29), (3, 20)):
        await moved(store, now - timedelta(days=ago), events[seq - 1].seq)
    await moved(store, cutoff - timedelta(hours=1), events[3].seq)
    held = await store.list_partitions()
    straddler = partitions.straddling(held, cutoff)
    assert straddler is not None and await where(store, events[3].seq) == straddler.name
    whole = [p.name for p in held if p.upper <= cutoff]
    assert whole and await where(store, events[0].seq) in whole

    result = await purge(store, cutoff)
    assert (result.through, result.removed) == (events[3].seq, 4)
    assert await store.purged_through() == events[3].seq
    left = [p.name for p in await store.list_partitions()]
    assert not set(whole) & set(left) and straddler.name in left
    assert [e.seq for e in await store.page(Page(limit=100))] == [events[4].seq, events[5].seq]
    assert await store.execution(1) is None and await store.execution(2) is None
    summary = await store.execution(3)
    assert summary is not None and summary.event_count == 2
    # Nothing left to remove: a second purge removes nothing.
    assert (await purge(store, cutoff)).removed == 0
