"""Retention on every backend: purges remove exactly the oldest events, in short steps, and
leave the summaries, the head and the purge horizon true."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import attrs
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventlog import retention
from eventlog.codec import converter
from eventlog.envelope import Event, Execution
from eventlog.log import EventLog
from eventlog.problems import ResumeExpired
from eventlog.retention import purge
from eventlog.storage import sqlite as sqlite_store
from eventlog.storage.base import (
    EventStore,
    Filter,
    Page,
    ReclaimStep,
    StoreUnavailable,
    execution_deltas,
)
from eventlog.storage.registry import open_store
from eventlog.stream import Expired

from .test_contract import append, new_event

_ids = itertools.count(1)


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[EventStore]:
    """An opened, migrated store of the test's backend."""
    async with open_store(dsn) as store:
        await store.migrate()
        yield store


async def everything(store: EventStore, **filters: object) -> list[Event]:
    """Every held event (matching ``filters``), in seq order."""
    return await store.page(Page(limit=1_000_000, **filters))  # type: ignore[arg-type]


def fresh_summary(events: list[Event]) -> Execution | None:
    """The summary the executions table would hold had only ``events`` (one execution's, in
    seq order) ever been written."""
    if not events:
        return None
    (d,) = execution_deltas(events)
    return Execution(
        execution_id=d.execution_id,
        event_count=d.count,
        first_event_at=d.first_event_at,
        last_event_at=d.last_event_at,
        last_event_type=d.last_event_type,
        last_seq=events[-1].seq,
        status=d.terminal or "RUNNING",
    )


async def test_purge_removes_the_events_ingested_before_the_cut_off_and_nothing_else(store):
    """Events of an earlier transaction go, those of the later one stay; the count is exact,
    the horizon moves to the last removed seq and the head does not move."""
    old = await append(store, *(new_event(1, next(_ids)) for _ in range(5)))
    await asyncio.sleep(0.002)  # a later ingested_at than the old ones
    kept = await append(store, *(new_event(2, next(_ids)) for _ in range(3)))
    head = await store.head()
    result = await purge(store, kept[0].ingested_at)
    assert result.removed == 5
    assert await everything(store) == kept
    assert await store.purged_through() == old[-1].seq
    assert await store.head() == head
    assert await store.execution(1) is None
    again = await purge(store, kept[0].ingested_at)
    assert (again.through, again.removed, again.archived) == (result.through, 0, None)


async def test_dry_run_counts_and_removes_nothing(store):
    """A dry run reports what a purge would remove and leaves the log and its horizon alone."""
    events = await append(store, *(new_event(1, next(_ids)) for _ in range(4)))
    later = events[-1].ingested_at + timedelta(seconds=1)
    result = await purge(store, later, dry_run=True)
    assert (result.removed, result.through) == (4, events[-1].seq)
    assert await everything(store) == events
    assert await store.purged_through() == 0
    assert (await purge(store, events[0].ingested_at, dry_run=True)).removed == 0


async def test_seq_goes_on_from_the_horizon_when_every_event_was_removed(store):
    """Emptied by a purge, the log still appends after its old head: seq never goes back."""
    events = await append(store, *(new_event(1, next(_ids)) for _ in range(3)))
    await purge(store, events[-1].ingested_at + timedelta(seconds=1))
    assert await everything(store) == []
    assert await store.head() == events[-1].seq == await store.purged_through()
    (after,) = await append(store, new_event(1, next(_ids)))
    assert after.seq == events[-1].seq + 1
    assert await store.execution(1) == fresh_summary([after])


@pytest.mark.parametrize("name", ["removed.ndjson", "removed.ndjson.gz"])
async def test_the_archive_holds_exactly_what_was_removed(store, tmp_path: Path, name: str):
    """--archive writes the removed events as canonical NDJSON (gzip by its name), the same
    lines a read renders, before they are removed."""
    old = await append(store, *(new_event(n % 3 + 1, next(_ids)) for n in range(7)))
    await asyncio.sleep(0.002)
    (kept,) = await append(store, new_event(9, next(_ids)))
    path = tmp_path / name
    result = await purge(store, kept.ingested_at, archive=path)
    raw = path.read_bytes()
    if name.endswith(".gz"):
        raw = gzip.decompress(raw)
    lines = [json.loads(line) for line in raw.splitlines()]
    assert lines == [json.loads(orjson.dumps(converter.unstructure(e))) for e in old]
    assert result.archived == result.removed == len(old)
    assert await everything(store) == [kept]


async def test_an_archive_read_short_of_what_would_be_removed_removes_nothing(
    store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Reads that lag behind the writes (a read replica) would leave events out of the
    archive: the purge sees the archive short, removes nothing and says why."""
    old = await append(store, *(new_event(1, next(_ids)) for _ in range(5)))
    await asyncio.sleep(0.002)
    (kept,) = await append(store, new_event(2, next(_ids)))
    real_page = store.page

    async def lagging(page: Page) -> list[Event]:  # a standby that has replayed three
        return [e for e in await real_page(page) if e.seq <= old[2].seq]

    monkeypatch.setattr(store, "page", lagging)
    with pytest.raises(StoreUnavailable, match="3 of the 5 events"):
        await purge(store, kept.ingested_at, archive=tmp_path / "short.ndjson")
    monkeypatch.undo()
    assert await everything(store) == [*old, kept]
    assert await store.purged_through() == 0


transactions = st.lists(
    st.lists(
        st.tuples(
            st.integers(1, 4),  # execution, among this example's four
            st.sampled_from(["step.enter", "call.done", "playbook.completed", "workflow.failed"]),
            st.integers(0, 10_000),  # created_at, seconds from a base: in any order
        ),
        min_size=1,
        max_size=8,
    ),
    min_size=1,
    max_size=6,
)


@given(transactions, st.integers(0, 48), st.lists(st.integers(1, 10), min_size=1, max_size=4))
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_summaries_after_a_purge_equal_fresh_summaries_of_what_is_left(
    store, transactions, removed, steps
):
    """Whatever was written and wherever the purge stops (in steps of any size), each
    execution's summary equals the one its remaining events alone would make; an execution
    with none left has none."""
    base = next(_ids) * 10
    created = new_event().created_at
    written: list[Event] = []
    for rows in transactions:
        written += await append(
            store,
            *(
                new_event(
                    base + x, next(_ids), event_type=t, created_at=created + timedelta(seconds=s)
                )
                for x, t, s in rows
            ),
        )
    # Through one of this example's events (those of earlier examples go first) or none.
    removed = min(removed, len(written))
    through = written[removed - 1].seq if removed else written[0].seq - 1
    sizes = itertools.cycle(steps)
    while await store.purged_through() < through:
        await store.purge_chunk(through, next(sizes))
    for x in range(base + 1, base + 5):
        left = await everything(store, execution_id=x)
        assert left == [e for e in written if e.execution_id == x and e.seq > through]
        assert await store.execution(x) == fresh_summary(left)


async def test_ingest_during_a_purge_loses_nothing_and_stores_nothing_twice(dsn: str):
    """Appends go on while a purge removes thousands of older events in steps: every
    acknowledged event is held once, and the seq values left run without a gap."""
    async with EventLog.open(dsn) as log:
        await log.append_batch(
            [{"execution_id": 1, "event_type": "step.enter", "step": "s"}] * 3000
        )
        cut = (await log.page(Page(descending=True, limit=1)))[0].ingested_at + timedelta(
            microseconds=1
        )
        await asyncio.sleep(0.002)
        acknowledged = []

        async def ingest() -> None:
            for n in range(300):
                sent = {"execution_id": 2 + n % 3, "event_type": "step.enter", "step": str(n)}
                done = await log.append(sent)
                acknowledged.append({**sent, "event_id": done.event.event_id})

        writing = asyncio.create_task(ingest())
        result = await purge(log.store, cut)
        await writing
        retried = [await log.append(sent) for sent in acknowledged[:50]]
        held = await everything(log.store)
        assert result.removed == 3000
        assert sorted(e.event_id for e in held) == sorted(a["event_id"] for a in acknowledged)
        assert [e.seq for e in held] == list(range(result.through + 1, held[-1].seq + 1))
        assert all(r.duplicate for r in retried)


async def test_purge_steps_commit_without_waiting_for_the_disk_and_writes_still_do(dsn: str):
    """A purge's transactions skip the commit's sync (the lock is held for the work alone);
    the setting is scoped to them: the writes before and after sync as configured."""
    statements: list[str] = []
    async with EventLog.open(dsn) as log:
        store = log.store
        await log.append_batch([{"execution_id": 1, "event_type": "e", "step": "s"}] * 600)
        cut = (await log.page(Page(descending=True, limit=1)))[0].ingested_at
        if store.backend == "sqlite":
            store._writer.set_trace_callback(statements.append)  # type: ignore[attr-defined]
        else:
            async with store.pool.acquire() as conn:  # type: ignore[attr-defined]
                conn.add_query_logger(lambda q: statements.append(q.query))
        await purge(store, cut + timedelta(microseconds=1))
        await log.append({"execution_id": 2, "event_type": "e", "step": "s"})
        if store.backend == "sqlite":
            (level,) = store._writer.execute("PRAGMA synchronous").fetchone()  # type: ignore
            assert level == 2  # FULL, as configured
            steps = [i for i, q in enumerate(statements) if q.startswith("DELETE FROM events")]
            assert steps
            for i in steps:  # each step between NORMAL and back to FULL, around its BEGIN
                before = [
                    q for q in statements[:i] if q.startswith(("PRAGMA synchronous", "BEGIN"))
                ]
                assert before[-2:] == ["PRAGMA synchronous = NORMAL", "BEGIN IMMEDIATE"]
                after = [q for q in statements[i:] if q.startswith("PRAGMA synchronous")]
                assert after[0] == "PRAGMA synchronous = FULL"
            writes = [i for i, q in enumerate(statements) if q.startswith("INSERT INTO events")]
            assert writes and all(
                [q for q in statements[:i] if q.startswith("PRAGMA synchronous")][-1]
                == "PRAGMA synchronous = FULL"
                for i in writes
            )
        else:
            lock = "SELECT purged_seq FROM eventlog_head WHERE id = 1 FOR UPDATE"
            locks = [i for i, q in enumerate(statements) if q == lock]
            assert locks and statements.count("SET LOCAL synchronous_commit = off") == len(locks)
            # Each step that removes events reads them before its transaction takes the lock
            # (not under it); the last step, finding nothing left to remove, reads nothing.
            ahead = [i for i, q in enumerate(statements) if "count(created_at) FROM step" in q]
            assert len(ahead) == len(locks) - 1 and all(
                before < a < lock for before, a, lock in zip([-1, *locks], ahead, locks)
            )
            async with store.pool.acquire() as conn:  # type: ignore[attr-defined]
                assert await conn.fetchval("SHOW synchronous_commit") == "on"


async def test_sqlite_purge_steps_first_read_every_entry_they_change(tmp_path: Path):
    """Before each step takes the write lock, the purge's own connection reads what the step
    will read and change: its rows, each index's entries for them (every index of the schema,
    each read through that index and finding exactly those entries, not those of the rest of
    its executions), and their summaries."""
    path = tmp_path / "events.db"
    async with EventLog.open(f"sqlite:///{path}") as log:
        store = log.store
        await log.append_batch(
            [
                {
                    "execution_id": 1 + n % 7,
                    "event_type": f"t{n % 3}",
                    "step": f"s{n % 5}",
                    "status": "FAILED" if n % 11 == 0 else "RUNNING",
                    "worker_id": None if n % 4 else f"w{n % 3}",
                    "payload": {"big": "x" * (6000 if n % 50 == 0 else 1)},  # overflow pages
                }
                for n in range(1400)
            ]
        )
        with sqlite3.connect(path) as db:
            indexes = {
                name
                for (name,) in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'index' "
                    "AND tbl_name IN ('events', 'executions')"
                )
            }
            assert set(sqlite_store._PURGE_READ_AHEAD) == indexes | {"events", "executions"}
            span = (300, 1397)  # four executions end in it, three go on after it
            in_span = "FROM events WHERE seq > ? AND seq <= ?"
            (rows,) = db.execute(f"SELECT count(*) {in_span}", span).fetchone()
            (workers,) = db.execute(f"SELECT count(worker_id) {in_span}", span).fetchone()
            (of_executions,) = db.execute(
                "SELECT count(*) FROM events WHERE execution_id IN "
                f"(SELECT execution_id {in_span})",
                span,
            ).fetchone()
            (executions,) = db.execute(
                f"SELECT count(DISTINCT execution_id) {in_span}", span
            ).fetchone()
            (ending,) = db.execute(
                "SELECT count(*) FROM executions WHERE last_seq > ? AND last_seq <= ?", span
            ).fetchone()
            expected = dict.fromkeys(set(indexes) - {"executions_last_seq"}, rows)
            expected |= {
                "events": rows,
                "events_worker_id": workers,
                "executions": executions,
                "executions_last_seq": ending,
            }
            assert 0 < ending < executions < rows < of_executions and 0 < workers < rows
            for name, read in sqlite_store._PURGE_READ_AHEAD.items():
                assert db.execute(read, span).fetchone() == (expected[name],), name
                plan = " ".join(r[-1] for r in db.execute(f"EXPLAIN QUERY PLAN {read}", span))
                assert (name if name in indexes else f"{name} USING INTEGER PRIMARY KEY") in plan

        # In a purge, each step's reads come before its transaction, on another connection.
        said: list[tuple[str, str]] = []
        await store._on_purger(  # type: ignore[attr-defined]
            lambda db: db.set_trace_callback(lambda q: said.append(("purger", q)))
        )
        store._writer.set_trace_callback(  # type: ignore[attr-defined]
            lambda q: said.append(("writer", q))
        )
        first = await log.page(Page(limit=1400))
        result = await purge(store, first[-1].ingested_at + timedelta(microseconds=1))
    steps = [i for i, (_, q) in enumerate(said) if q.startswith("DELETE FROM events")]
    assert result.removed == 1400 and len(steps) == result.steps - 1 >= 2  # the last finds none
    for i, previous in zip(steps, [-1, *steps]):
        deleted = re.fullmatch(r"DELETE FROM events WHERE seq > (\d+) AND seq <= (\d+)", said[i][1])
        assert deleted
        low, high = deleted.groups()
        reads = {
            q.replace("?1", low).replace("?2", high)
            for q in sqlite_store._PURGE_READ_AHEAD.values()
        }
        begin = max(j for j in range(previous + 1, i) if said[j] == ("writer", "BEGIN IMMEDIATE"))
        assert reads <= {q for who, q in said[previous + 1 : begin] if who == "purger"}


async def test_the_purge_reports_the_longest_time_a_step_held_the_write_lock(dsn: str):
    """A step made slow inside its transaction (a trigger sleeping 80 ms when one event goes)
    is the longest hold the purge reports; the others, short, leave it at that step's."""
    async with EventLog.open(dsn) as log:
        store = log.store
        _, written = await log.append_batch(
            [{"execution_id": 1, "event_type": "e", "step": str(n)} for n in range(1200)]
        )
        slow = written[700].event.seq
        if store.backend == "sqlite":
            store._writer.create_function("pause", 1, time.sleep)  # type: ignore[attr-defined]
            store._writer.execute(  # type: ignore[attr-defined]
                f"CREATE TEMP TRIGGER slow AFTER DELETE ON main.events WHEN old.seq = {slow} "
                "BEGIN SELECT pause(0.08); END"
            )
        else:
            async with store.pool.acquire() as conn:  # type: ignore[attr-defined]
                await conn.execute(
                    "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN PERFORM pg_sleep(0.08); RETURN OLD; END $$; "
                    "CREATE TRIGGER slow AFTER DELETE ON events FOR EACH ROW "
                    f"WHEN (OLD.seq = {slow}) EXECUTE FUNCTION slow()"
                )
        started = time.perf_counter()
        result = await purge(store, written[-1].event.ingested_at + timedelta(microseconds=1))
        took = time.perf_counter() - started
    assert result.removed == 1200 and result.steps >= 3  # the first step is 500
    assert 0.08 <= result.longest_hold < took
    assert f"in {result.steps} steps;" in result.steps_said


async def test_the_longest_hold_includes_the_steps_that_give_space_back(tmp_path: Path):
    """On SQLite the purge's incremental-vacuum steps hold the write lock too: the longest hold
    the purge reports covers them (one said to have held it 200 ms here)."""
    async with open_store(f"sqlite:///{tmp_path / 'events.db'}") as store:
        await store.migrate()
        written = await _fill(store, 500)
        real, said = store.reclaim, []

        async def reclaim(pages: int) -> ReclaimStep:
            step = await real(pages)
            said.append(step)
            return attrs.evolve(step, held=0.2) if len(said) == 1 else step

        store.reclaim = reclaim  # type: ignore[method-assign]
        result = await purge(store, written[-1].ingested_at + timedelta(seconds=1))
    assert said and all(s.held > 0 for s in said)  # measured by the store
    assert result.longest_hold == 0.2


# Hold times exact in binary, so that the expected sizes are computed as the purge does.
@pytest.mark.parametrize("held", [1 / 32, 1 / 1024], ids=["slow steps", "fast steps"])
async def test_purge_and_reclaim_steps_are_paced_by_how_long_they_hold_the_lock(
    tmp_path: Path, held
):
    """Each step's size aims at STEP_SECONDS from how long the last one held the lock (as the
    store reported it): twice too long halves it (down to the floor), much too short grows it
    by half at most. The incremental vacuum that follows a SQLite purge is paced the same way.
    The time a step takes outside the lock does not count."""
    path = tmp_path / "events.db"
    async with open_store(f"sqlite:///{path}") as store:
        await store.migrate()
        written = await _fill(store, 500)
        store.purge_pause = 0.0  # type: ignore[misc]  # the pauses then last as long as a hold
        sizes: dict[str, list[int]] = {"purge_chunk": [], "reclaim": []}
        for name, recorded in sizes.items():
            real = getattr(store, name)

            async def recording(*args, real=real, recorded=recorded):
                recorded.append(args[-1])
                step = await real(*args)
                await asyncio.sleep(0.03)  # time taken without the lock
                return attrs.evolve(step, held=held)

            setattr(store, name, recording)
        await purge(store, written[-1].ingested_at + timedelta(seconds=1))
    steps, reclaims = sizes["purge_chunk"], sizes["reclaim"]
    assert steps[0] == retention.FIRST_STEP and reclaims[0] == retention.FIRST_RECLAIM
    for seen, low in ((steps, retention.MIN_STEP), (reclaims, retention.MIN_RECLAIM)):
        pairs = list(itertools.pairwise(seen))
        assert pairs, seen
        if held > retention.STEP_SECONDS:
            assert all(b == max(low, int(a * retention.STEP_SECONDS / held)) for a, b in pairs)
        else:
            assert all(b == int(a * 1.5) for a, b in pairs[:3]), seen
    if held > retention.STEP_SECONDS:
        assert reclaims[-1] == retention.MIN_RECLAIM  # the floor


def _pages(path: Path) -> tuple[int, int]:
    """The SQLite file's auto_vacuum mode and its size in pages, read from the file itself."""
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA auto_vacuum").fetchone()[0], db.execute(
            "PRAGMA page_count"
        ).fetchone()[0]


async def _fill(store: EventStore, count: int) -> list[Event]:
    big = '{"pad":"' + "x" * 2000 + '"}'
    written: list[Event] = []
    for _ in range(count // 500):
        written += await append(
            store, *(new_event(1, next(_ids), payload_json=big) for _ in range(500))
        )
    return written


async def test_a_new_sqlite_file_shrinks_after_a_purge(tmp_path: Path):
    """A file created by this version has incremental auto-vacuum: the purge hands the pages
    of the removed events back, and the file gets smaller."""
    path = tmp_path / "events.db"
    async with open_store(f"sqlite:///{path}") as store:
        await store.migrate()
        written = await _fill(store, 3000)
        mode, before = _pages(path)
        await purge(store, written[-1].ingested_at + timedelta(seconds=1))
    mode, after = _pages(path)
    assert mode == 2  # incremental
    assert after < before / 4


async def test_vacuum_shrinks_an_older_sqlite_file_and_switches_it_to_incremental(tmp_path: Path):
    """A file made without auto-vacuum keeps its size after a purge; `vacuum` shrinks it once
    and converts it, so that the next purges shrink it by themselves."""
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA auto_vacuum = NONE")
        db.execute("CREATE TABLE made_by_an_older_version (x)")
    async with open_store(f"sqlite:///{path}") as store:
        await store.migrate()
        written = await _fill(store, 2000)
        _, full = _pages(path)
        await purge(store, written[-1].ingested_at + timedelta(seconds=1))
        assert _pages(path) == (0, full)
        await store.vacuum()
        mode, vacuumed = _pages(path)
        assert mode == 2 and vacuumed < full / 4
        written = await _fill(store, 2000)
        _, refilled = _pages(path)
        await purge(store, written[-1].ingested_at + timedelta(seconds=1))
    assert _pages(path)[1] < refilled / 4


async def test_the_library_raises_resume_expired_for_a_removed_resume_point(dsn: str):
    """EventLog's pages and subscriptions resumed below the horizon raise ResumeExpired naming
    it; from the horizon they go on."""
    async with EventLog.open(dsn) as log:
        for n in range(3):
            await log.append({"execution_id": 1, "event_type": "step.enter", "step": str(n)})
        await asyncio.sleep(0.002)
        kept = (await log.append({"execution_id": 1, "event_type": "x", "step": "s"})).event
        await purge(log.store, kept.ingested_at)
        with pytest.raises(ResumeExpired) as raised:
            await log.page(Page(after=0))
        assert (raised.value.after, raised.value.purged_through) == (0, kept.seq - 1)
        with pytest.raises(ResumeExpired):
            async for _ in log.subscribe(after=1):
                break
        assert [e async for e in log.events(after=kept.seq - 1)] == [kept]
        assert [e async for e in log.events()] == [kept]


async def test_a_live_stream_overtaken_by_a_purge_is_told_not_jumped(
    dsn: str, monkeypatch: pytest.MonkeyPatch
):
    """The hub follows the log; if a purge removes events it has not read yet (it fell
    behind), its subscribers get an Expired naming the horizon, then what comes after."""
    async with EventLog.open(dsn, stream_poll_interval=60) as log:
        async with log.follow(Filter(), heartbeat=None) as subscription:
            chunks = subscription.chunks()
            # The hub held back from reading (on PostgreSQL the commits' notifications wake
            # it) until the events are written and purged: it falls behind, deterministically.
            gate, read = asyncio.Event(), log.hub._catch_up

            async def held() -> None:
                await gate.wait()
                await read()

            monkeypatch.setattr(log.hub, "_catch_up", held)
            missed = await append(log.store, *(new_event(1, next(_ids)) for _ in range(3)))
            await asyncio.sleep(0.002)
            (after,) = await append(log.store, new_event(1, next(_ids)))
            await purge(log.store, after.ingested_at)
            gate.set()
            log.hub.notify()
            async with asyncio.timeout(10):
                gap = await anext(chunks)
                assert gap == Expired(missed[0].seq - 1, missed[-1].seq)
                assert await anext(chunks) == [after]
