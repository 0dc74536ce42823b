"""The column spec: it matches each backend's migrated schema, and a field added to it (model,
spec, migration) is stored and read back by both backends with no other change."""

from __future__ import annotations

import sqlite3
import typing
from collections.abc import AsyncIterator

import asyncpg
import attrs
import pytest

from eventlog.envelope import Event, NewEvent
from eventlog.storage.base import EventStore, Page, WritePlan
from eventlog.storage.columns import EVENT_COLUMNS, Column, EventTable
from eventlog.storage.registry import open_store

from .test_contract import NOW, append, new_event


async def _schema(store: EventStore, dsn: str) -> list[tuple[str, str]]:
    """(name, type) of the events table's columns, in order, as the database reports them."""
    _skip_unless_built_in(store)
    if store.backend == "sqlite":
        with sqlite3.connect(dsn.removeprefix("sqlite:///")) as db:
            return [(r[1], r[2]) for r in db.execute("PRAGMA table_info(events)")]
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT attname, atttypid::regtype::text FROM pg_attribute "
            "WHERE attrelid = 'events'::regclass AND attnum > 0 AND NOT attisdropped "
            "ORDER BY attnum"
        )
        return [(r[0], r[1]) for r in rows]
    finally:
        await conn.close()


def _skip_unless_built_in(store: EventStore) -> None:
    if store.backend not in ("sqlite", "postgres"):
        pytest.skip(f"this test reads the schema of SQLite and PostgreSQL, not {store.backend}")


async def _spelled_by_database(dsn: str, backend: str, types: list[str]) -> list[str]:
    """The spec's SQL types as the database names them (timestamptz: timestamp with time zone)."""
    if backend == "sqlite":
        return types
    conn = await asyncpg.connect(dsn)
    try:
        return [await conn.fetchval("SELECT $1::regtype::text", t) for t in types]
    finally:
        await conn.close()


async def test_the_spec_matches_the_migrated_schema_column_for_column(dsn):
    """Every column of the spec is in the events table, in the same order, with its type."""
    async with open_store(dsn) as store:
        await store.migrate()
        found = await _schema(store, dsn)
    types = [getattr(c, store.backend) for c in EVENT_COLUMNS]
    wanted = list(
        zip(
            [c.name for c in EVENT_COLUMNS],
            await _spelled_by_database(dsn, store.backend, types),
            strict=True,
        )
    )
    assert found == wanted


@attrs.define
class TaggedNewEvent(NewEvent):
    """A NewEvent with one field more, as a new version of the model would have."""

    tenant: str | None = None


@attrs.define
class TaggedEvent(Event):
    """The stored form of TaggedNewEvent."""

    tenant: str | None = None


TENANT = Column("tenant", str | None, "TEXT", "text")
TAGGED = EventTable(EVENT_COLUMNS + (TENANT,), TaggedEvent)


@pytest.fixture
async def tagged(dsn: str) -> AsyncIterator[EventStore]:
    """A store of the test's backend whose table spec has the tenant column, migrated and with
    the migration a new version would ship (adding the column) applied."""
    base = type(open_store(dsn))
    store_class = type(f"Tagged{base.__name__}", (base,), {"events_table": TAGGED})
    async with store_class(dsn) as store:
        _skip_unless_built_in(store)
        await store.migrate()
        alter = f"ALTER TABLE events ADD COLUMN {TENANT.name} {getattr(TENANT, store.backend)}"
        if store.backend == "sqlite":
            with sqlite3.connect(dsn.removeprefix("sqlite:///")) as db:
                db.execute(alter)
        else:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(alter)
            finally:
                await conn.close()
        yield store


def tagged_event(event_id: int, tenant: str | None) -> TaggedNewEvent:
    """A new event carrying the added field."""
    return TaggedNewEvent(**attrs.asdict(new_event(event_id=event_id)), tenant=tenant)


async def test_a_field_added_to_model_spec_and_schema_is_stored_and_read(tagged):
    """The added field round-trips through every write path (the one-statement append, the
    locked transaction with an idempotency record) and every read (get, page, the write's own
    lookup of stored keys)."""
    first = tagged_event(1, "acme")
    (stored,) = await append(tagged, first)
    assert isinstance(stored, TaggedEvent) and stored.tenant == "acme"

    second = tagged_event(2, None)
    seen = {}

    def decide(existing, records):
        seen.update(existing)
        return WritePlan([second])

    (stored_second,) = await tagged.write([first.key, second.key], ["k"], NOW, decide)
    assert stored_second.seq == 2 and stored_second.tenant is None
    assert seen[first.key] == stored

    assert await tagged.get(1) == stored
    page = await tagged.page(Page(1))
    assert [(e.event_id, e.tenant) for e in page] == [(1, "acme"), (2, None)]


def test_the_spec_and_the_stored_model_have_the_same_fields_and_types():
    """Every column names an attribute of Event with the column's Python type, and every
    attribute of Event has its column: the model and the spec cannot drift apart."""
    hints = typing.get_type_hints(Event)
    assert {c.attr: c.python for c in EVENT_COLUMNS} == hints
