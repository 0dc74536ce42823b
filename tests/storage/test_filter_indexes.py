"""Every feed filter, alone and with an execution, is answered from an index (both stores).

The plans are read with EXPLAIN over a log with realistic statistics: many executions, a few
event types, steps and workers, three statuses, most workers' events NULL-free."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import AsyncIterator

import pytest

from eventlog.storage import postgres, sqlite
from eventlog.storage.base import FILTERS, EventStore, Page, WritePlan
from eventlog.storage.registry import open_store

from .test_contract import NOW, append, new_event

EXECUTIONS, PER_EXECUTION = 400, 50
TYPES = ["step.enter", "step.exit", "call.done", "command.completed", "step.failed"]
STEPS = [f"step{i}" for i in range(12)]
STATUSES = ["RUNNING", "COMPLETED", "FAILED"]
WORKERS = [None, "w-1", "w-2", "w-3"]
# A value of each filter that some events hold, and one that none does.
COMMON = {"event_type": "step.enter", "step": "step3", "status": "RUNNING", "worker_id": "w-3"}
ABSENT = {"event_type": "no.such", "step": "nowhere", "status": "UNKNOWN", "worker_id": "w-99"}
# Each filter's index by name (on PostgreSQL, each partition's copy ends with it too).
INDEX = {
    "sqlite": {f: f"events_{f}" for f in FILTERS},
    "postgres": {f: f"{f}_seq" for f in FILTERS},
}
# PostgreSQL's events_execution_seq; a partition's copy is named from its columns:
# ..._execution_id_seq_idx. SQLite reads an execution from the index holding its events whole.
EXECUTION_INDEX = ("execution_seq", "execution_id_seq")
SQLITE_EXECUTION = "COVERING INDEX events_execution "


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[EventStore]:
    """A migrated store holding 20,000 events, its statistics up to date."""
    async with open_store(dsn) as store:
        await store.migrate()
        counter = itertools.count()
        events = []
        for x in range(1, EXECUTIONS + 1):
            for _ in range(PER_EXECUTION):
                n = next(counter)
                events.append(
                    new_event(
                        x,
                        n + 1,
                        event_type=TYPES[n % len(TYPES)],
                        step=STEPS[n % len(STEPS)],
                        status=STATUSES[n % 7 % 3],
                        worker_id=WORKERS[n % len(WORKERS)],
                    )
                )
        for start in range(0, len(events), 5000):
            await append(store, *events[start : start + 5000])
        await _analyze(store)
        yield store


async def _analyze(store: EventStore) -> None:
    if store.backend == "postgres":
        async with store.pool.acquire() as conn:  # type: ignore[attr-defined]
            await conn.execute("ANALYZE events")
            held = await store.list_partitions()  # type: ignore[attr-defined]
            full = {
                r[0]
                for r in await conn.fetch("SELECT DISTINCT tableoid::regclass::text FROM events")
            }
            EMPTY.clear()
            EMPTY.update(p.name for p in held if p.name not in full)


async def plan(store: EventStore, page: Page) -> str:
    """The database's plan for the statement the store reads ``page`` with, as text."""
    if store.backend == "postgres":
        sql, args = postgres.page_query(page, "*")
        async with store.pool.acquire() as conn:  # type: ignore[attr-defined]
            rows = await conn.fetch("EXPLAIN " + sql, *args)
        return "\n".join(r[0] for r in rows)
    sql, args = sqlite.page_query(page, "*")
    db = sqlite3.connect(store.path)  # type: ignore[attr-defined]
    try:
        rows = db.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()
    finally:
        db.close()
    return "\n".join(r[-1] for r in rows)


def assert_reads(store: EventStore, text: str, *indexes: str, dense: bool = False) -> None:
    """The plan reads events through one of ``indexes``: never a walk of the table, nor of
    the log in seq order checking each row, nor (SQLite) a sort of every match. PostgreSQL may walk the
    log in seq order for a ``dense`` value (most rows match: the page fills at once), scan
    partitions that hold nothing (made ahead of time), and sort what its indexes yield."""
    if store.backend == "postgres" and dense:
        indexes += ("pkey",)
    assert any(index in text for index in indexes), text
    # PostgreSQL may sort what the indexes yield when partitions made ahead are in the plan.
    for walk in ("INTEGER PRIMARY KEY", "USE TEMP B-TREE"):
        assert walk not in text, text
    for line in text.splitlines():
        if "Seq Scan on" in line:
            assert line.split("Seq Scan on ")[1].split()[0] in EMPTY, text
    assert "SCAN events" not in text.replace("SCAN events USING", ""), text


# Partitions made ahead, which hold no event (filled in by the store fixture).
EMPTY: set[str] = set()


@pytest.mark.parametrize("name", FILTERS)
async def test_a_filter_that_matches_nothing_is_one_probe_of_its_index(store, name):
    """A filter's absent value is looked up in that filter's own index."""
    text = await plan(store, Page(**{name: ABSENT[name]}, after=0))
    assert_reads(store, text, INDEX[store.backend][name])
    assert await store.page(Page(**{name: ABSENT[name]})) == []


@pytest.mark.parametrize("name", FILTERS)
async def test_a_filter_with_common_values_reads_an_index(store, name):
    """A value much of the log holds is read in seq order from an index."""
    text = await plan(store, Page(**{name: COMMON[name]}, after=100))
    assert_reads(store, text, INDEX[store.backend][name], dense=True)
    events = await store.page(Page(**{name: COMMON[name]}, after=100, limit=100))
    assert len(events) == 100
    assert all(getattr(e, name) == COMMON[name] and e.seq > 100 for e in events)


@pytest.mark.parametrize("value", [COMMON, ABSENT], ids=["common", "absent"])
@pytest.mark.parametrize("name", FILTERS)
async def test_a_filter_within_an_execution_reads_an_index(store, name, value):
    """With execution_id, the page walks an index: the execution's, or the filter's when it
    matches fewer events (PostgreSQL may also intersect both)."""
    page = Page(execution_id=7, **{name: value[name]}, after=0)
    text = await plan(store, page)
    if store.backend == "sqlite":
        assert_reads(store, text, SQLITE_EXECUTION)
    else:
        # BitmapAnd of both, then a sort of the execution's few matches, is also fine.
        if "BitmapAnd" not in text:
            assert_reads(store, text, *EXECUTION_INDEX, INDEX["postgres"][name])
    events = await store.page(page)
    assert all(e.execution_id == 7 and getattr(e, name) == value[name] for e in events)
    assert (events != []) == (value is COMMON)


@pytest.mark.parametrize("backend", ["sqlite"])  # PostgreSQL's index entries are bounded
@pytest.mark.parametrize("descending", [False, True])
async def test_an_execution_is_read_without_visiting_the_table_on_sqlite(store, descending):
    """SQLite keeps an execution's events together, in an index that holds every column: its
    pages, filtered or not, never read a row of the table (one read of the file per event once
    the log outgrows memory)."""
    for extra in ({}, {"event_type": ABSENT["event_type"]}, {"worker_id": COMMON["worker_id"]}):
        page = Page(execution_id=7, after=0, descending=descending, **extra)
        text = await plan(store, page)
        assert SQLITE_EXECUTION in text and len(text.splitlines()) == 1, text
    events = await store.page(Page(execution_id=7, limit=1000))
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert len(events) == PER_EXECUTION and {e.execution_id for e in events} == {7}
    db = sqlite3.connect(store.path)  # type: ignore[attr-defined]
    try:
        table = [r[1] for r in db.execute("PRAGMA table_info(events)")]
        index = [r[2] for r in db.execute("PRAGMA index_info(events_execution)")]
    finally:
        db.close()
    assert index[:2] == ["execution_id", "seq"]
    assert sorted(index) == sorted(table), "a column of events is missing from events_execution"


@pytest.mark.parametrize("backend", ["postgres"])
@pytest.mark.parametrize("duplicate", [False, True], ids=["all new", "one stored"])
async def test_postgres_writes_a_group_execution_by_execution(dsn, duplicate):
    """PostgreSQL's table is in insertion order: a group's rows go in execution by execution,
    so an execution's page reads a heap page for each few of its events; their seq values stay
    in arrival order. Both insert statements (a group with a stored key takes the other)."""
    async with open_store(dsn) as store:
        await store.migrate()
        if duplicate:
            await append(store, new_event(3, 10**6))
        group = [new_event(1 + n % 8, 10**6 + n) for n in range(400)]  # interleaved, as produced
        if duplicate:
            group.append(new_event(3, 10**6))  # stored already: written once, not again
        await store.write(
            [e.key for e in group],
            [],
            NOW,
            lambda stored, _: WritePlan([e for e in group if e.key not in stored]),
        )
        async with store.pool.acquire() as conn:  # type: ignore[attr-defined]
            rows = await conn.fetch(
                "SELECT execution_id, event_id, seq FROM events WHERE event_id >= $1 ORDER BY ctid",
                10**6 + int(duplicate),
            )
    order = [r["execution_id"] for r in rows]
    runs = [x for i, x in enumerate(order) if i == 0 or order[i - 1] != x]
    assert runs == sorted(runs) and len(runs) == 8, runs  # one run of rows per execution
    by_id = {r["event_id"]: r["seq"] for r in rows}
    seqs = [by_id[e.event_id] for e in group if e.event_id in by_id]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # arrival order, no gap


@pytest.mark.parametrize("pair", list(itertools.combinations(FILTERS, 2)))
async def test_two_filters_read_an_index(store, pair):
    """Two filters without an execution: an index of one of them, the other checked per row."""
    indexes = [INDEX[store.backend][name] for name in pair]
    for value in (COMMON, ABSENT):
        page = Page(**{name: value[name] for name in pair}, after=0)
        assert_reads(store, await plan(store, page), *indexes, dense=value is COMMON)
        if store.backend == "sqlite":  # the leading filter's, by the rule
            assert INDEX["sqlite"][page.leading()] in await plan(store, page)
    first, second = pair
    events = await store.page(Page(**{first: COMMON[first], second: COMMON[second]}))
    assert events
    assert all(getattr(e, first) == COMMON[first] for e in events)
    assert all(getattr(e, second) == COMMON[second] for e in events)


def test_the_leading_filter_is_the_most_selective_by_rule():
    """SQLite has no statistics per value; Filter.leading names the index it walks."""
    assert Page(status="RUNNING", step="s", execution_id=1).leading() == "execution_id"
    assert Page(status="RUNNING", worker_id="w").leading() == "worker_id"
    assert Page(step="s", event_type="t").leading() == "event_type"
    assert Page(status="RUNNING").leading() == "status"
    assert Page(after=3).leading() is None
