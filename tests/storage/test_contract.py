"""The EventStore contract: one suite, run against every backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import attrs
import pytest

from eventlog.envelope import Defaulted, NewEvent
from eventlog.storage.base import (
    EventStore,
    IdempotencyRecord,
    Page,
    StoreUnavailable,
    WritePlan,
    load_migrations,
)
from eventlog.storage.registry import open_store


def new_event(execution_id: int = 1, event_id: int = 1, **changes: object) -> NewEvent:
    """A fully resolved event to append."""
    event = NewEvent(
        execution_id=execution_id,
        event_id=event_id,
        step="s",
        event_type="step.enter",
        status="RUNNING",
        payload_json='{"n":18446744073709551616,"t":"a\\u0000b"}',
        meta_json=None,
        worker_id=None,
        result_kind="data",
        result_uri=None,
        event_ids=None,
        actionable=True,
        informative=True,
        created_at=datetime(2026, 5, 31, 10, 0, 0, 123456, tzinfo=UTC),
        defaulted=Defaulted.NONE,
    )
    return attrs.evolve(event, **changes)


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[EventStore]:
    """An opened, migrated store of the test's backend."""
    async with open_store(dsn) as store:
        await store.migrate()
        yield store


NOW = datetime(2026, 6, 1, tzinfo=UTC)


async def append(store: EventStore, *events: NewEvent):
    """Append in one transaction."""
    return await store.write([e.key for e in events], [], NOW, lambda *_: WritePlan(events))


async def stored_among(store: EventStore, keys) -> dict:
    """What write() finds stored among ``keys`` (writing nothing)."""
    seen = {}

    def decide(existing, records):
        seen.update(existing)
        return WritePlan()

    await store.write(keys, [], NOW, decide)
    return seen


async def test_migrations_apply_once(dsn):
    """A fresh store has every migration pending; after migrate, none; migrate again is a no-op."""
    async with open_store(dsn) as store:
        shipped = [f"{m.version:04d}_{m.name}" for m in load_migrations(store.backend)]
        assert shipped[:2] == ["0001_events", "0002_idempotency_keys"]
        assert await store.pending_migrations() == shipped
        assert await store.migrate() == shipped
        assert await store.pending_migrations() == []
        assert await store.migrate() == []


async def test_every_field_round_trips(store):
    """What is appended reads back equal, field by field, by id and by page."""
    event = new_event(
        meta_json='{"a":[1,2.5,null]}',
        worker_id="w",
        result_kind="refs",
        result_uri="u",
        event_ids=(1, 2**63 - 1),
        actionable=False,
        informative=False,
        defaulted=Defaulted.STATUS | Defaulted.CREATED_AT,
        execution_id=2**63 - 1,
        event_id=2**63 - 1,
    )
    (stored,) = await append(store, event)
    assert stored.seq == 1
    got = await store.get(event.event_id)
    assert got == stored
    assert attrs.asdict(got, filter=lambda a, _: a.name not in ("seq", "ingested_at")) == (
        attrs.asdict(event)
    )
    assert await store.page(Page(event.execution_id)) == [stored]


async def test_seq_grows_in_commit_order_across_transactions(store):
    """seq continues from the last commit, one per event, in list order."""
    first = await append(store, new_event(event_id=1), new_event(event_id=2))
    second = await append(store, new_event(event_id=3))
    assert [e.seq for e in first + second] == [1, 2, 3]


async def test_failing_decision_writes_nothing(store):
    """An exception from the decision aborts the transaction; seq is not consumed."""

    def refuse(existing, records):
        raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        await store.write([(1, 1)], ["k"], NOW, refuse)
    assert await store.get(1) is None
    (stored,) = await append(store, new_event(event_id=2))
    assert stored.seq == 1


async def test_write_sees_stored_events_by_key(store):
    """write() tells the decision which keys are stored, and ignores the rest."""
    await append(store, new_event(1, 10), new_event(2, 10))
    found = await stored_among(store, [(1, 10), (2, 10), (3, 10)])
    assert set(found) == {(1, 10), (2, 10)}
    assert found[(2, 10)].execution_id == 2
    assert found[(2, 10)] == await store.get(10, 2)


async def test_get_picks_the_execution_when_asked(store):
    """Two executions may share an event id; get() returns the first unless told which."""
    await append(store, new_event(1, 10), new_event(2, 10))
    assert (await store.get(10)).execution_id == 1
    assert (await store.get(10, 2)).execution_id == 2
    assert await store.get(10, 3) is None


async def test_page_orders_and_cursors(store):
    """Pages follow seq ascending or descending, starting past the cursor."""
    await append(store, *(new_event(7, i) for i in range(1, 6)), new_event(8, 1))
    assert [e.event_id for e in await store.page(Page(7, limit=2))] == [1, 2]
    assert [e.event_id for e in await store.page(Page(7, after=2, limit=2))] == [3, 4]
    assert [e.event_id for e in await store.page(Page(7, descending=True, limit=2))] == [5, 4]
    assert [e.event_id for e in await store.page(Page(7, after=4, descending=True))] == [3, 2, 1]


async def test_concurrent_writers_on_one_database_keep_seq_unique_and_ordered(dsn, store):
    """Two store instances (as two processes would) writing at once: seq unique and gap-free."""
    async with open_store(dsn) as other:

        async def writer(target: EventStore, base: int) -> None:
            for i in range(20):
                await append(target, new_event(base, i + 1), new_event(base, i + 1001))

        await asyncio.gather(writer(store, 1), writer(other, 2))
    events = await store.page(Page(1, limit=100)) + await store.page(Page(2, limit=100))
    seqs = sorted(e.seq for e in events)
    assert seqs == list(range(1, 81))


async def test_closed_store_is_unavailable(dsn):
    """Using a store that is not open raises StoreUnavailable, not an AttributeError."""
    store = open_store(dsn)
    with pytest.raises(StoreUnavailable):
        await store.ping()


async def test_idempotency_records_round_trip_expire_and_purge(store):
    """Records are seen until they expire, replaced once expired, and purged after."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    record = IdempotencyRecord("k1", "f1", '{"a":1}', t0, t0 + timedelta(hours=1))
    other = IdempotencyRecord("k2", "f2", '{"b":2}', t0, t0 + timedelta(hours=3))
    await store.write([], [], t0, lambda *_: WritePlan(records=[record, other]))
    seen = {}

    def look(existing, records):
        seen.update(records)
        return WritePlan()

    await store.write([], ["k1", "k2", "k3"], t0, look)
    assert seen == {"k1": record, "k2": other}
    seen.clear()
    later = t0 + timedelta(hours=2)
    await store.write([], ["k1", "k2"], later, look)
    assert set(seen) == {"k2"}
    renewed = IdempotencyRecord("k1", "f9", "{}", later, t0 + timedelta(hours=5))
    await store.write([], [], later, lambda *_: WritePlan(records=[renewed]))
    assert await store.idempotency_record("k1", later) == renewed
    assert await store.purge_keys(t0 + timedelta(hours=4)) == 1
    assert await store.idempotency_record("k2", t0) is None
    assert await store.idempotency_record("k1", t0) == renewed


async def test_events_and_records_commit_together(store):
    """A plan's events and idempotency record are written in the same transaction."""
    record = IdempotencyRecord("k", "f", "{}", NOW, NOW + timedelta(hours=1))
    plan = WritePlan([new_event(event_id=5)], [record])
    (stored,) = await store.write([(1, 5)], ["k"], NOW, lambda *_: plan)
    assert await store.get(5) == stored
    assert await store.idempotency_record("k", NOW) == record
