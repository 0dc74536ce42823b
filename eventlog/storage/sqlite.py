"""The SQLite backend (aiosqlite): one writer connection, one reader connection, WAL."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from ..envelope import Defaulted, Event, NewEvent
from .base import (
    EventStore,
    IdempotencyRecord,
    Key,
    Page,
    StoreError,
    StoreUnavailable,
    WriteTransaction,
    load_migrations,
)

_COLUMNS = (
    "seq, execution_id, event_id, step, event_type, status, payload, meta, worker_id, "
    "result_kind, result_uri, event_ids, actionable, informative, created_at, ingested_at, "
    "defaulted"
)
_INSERT = f"INSERT INTO events ({_COLUMNS}) VALUES ({', '.join('?' * 17)})"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _moment(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _event(row: sqlite3.Row | tuple[Any, ...]) -> Event:
    return Event(
        seq=row[0],
        execution_id=row[1],
        event_id=row[2],
        step=row[3],
        event_type=row[4],
        status=row[5],
        payload_json=row[6],
        meta_json=row[7],
        worker_id=row[8],
        result_kind=row[9],
        result_uri=row[10],
        event_ids=None if row[11] is None else tuple(orjson.loads(row[11])),
        actionable=bool(row[12]),
        informative=bool(row[13]),
        created_at=_moment(row[14]),
        ingested_at=_moment(row[15]),
        defaulted=Defaulted(row[16]),
    )


def _row(event: Event) -> tuple[Any, ...]:
    return (
        event.seq,
        event.execution_id,
        event.event_id,
        event.step,
        event.event_type,
        event.status,
        event.payload_json,
        event.meta_json,
        event.worker_id,
        event.result_kind,
        event.result_uri,
        None if event.event_ids is None else orjson.dumps(event.event_ids).decode(),
        int(event.actionable),
        int(event.informative),
        _micros(event.created_at),
        _micros(event.ingested_at),
        int(event.defaulted),
    )


def _statements(script: str) -> list[str]:
    """Split a migration into statements (sqlite3 runs one per execute)."""
    out, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    if current.strip():
        out.append(current.strip())
    return out


@contextlib.contextmanager
def _translated() -> Any:
    """sqlite3 errors become the store's own: a locked, full or read-only file is an outage."""
    try:
        yield
    except sqlite3.OperationalError as e:
        raise StoreUnavailable(f"sqlite: {e}") from e
    except sqlite3.Error as e:
        raise StoreError(f"sqlite: {e}") from e


class _Transaction(WriteTransaction):
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def find(self, keys: Sequence[Key]) -> dict[Key, Event]:
        if not keys:
            return {}
        with _translated():
            cursor = await self._db.execute(
                f"SELECT {_COLUMNS} FROM events WHERE (execution_id, event_id) IN "
                "(SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') "
                "FROM json_each(?))",
                (orjson.dumps(list(keys)).decode(),),
            )
            rows = await cursor.fetchall()
        events = (_event(r) for r in rows)
        return {e.key: e for e in events}

    async def insert(self, events: Sequence[NewEvent]) -> list[Event]:
        if not events:
            return []
        now = datetime.now(UTC)
        with _translated():
            cursor = await self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events")
            (head,) = await cursor.fetchone()  # type: ignore[misc]
            stored = [Event.stored(e, head + i, now) for i, e in enumerate(events, 1)]
            await self._db.executemany(_INSERT, [_row(e) for e in stored])
        return stored


    async def find_keys(self, keys: Sequence[str], now: datetime) -> dict[str, IdempotencyRecord]:
        if not keys:
            return {}
        with _translated():
            cursor = await self._db.execute(
                "SELECT key, fingerprint, outcome, created_at, expires_at FROM idempotency_keys "
                "WHERE key IN (SELECT value FROM json_each(?)) AND expires_at > ?",
                (orjson.dumps(list(keys)).decode(), _micros(now)),
            )
            rows = await cursor.fetchall()
        return {
            r[0]: IdempotencyRecord(r[0], r[1], r[2], _moment(r[3]), _moment(r[4])) for r in rows
        }

    async def save_keys(self, records: Sequence[IdempotencyRecord]) -> None:
        with _translated():
            await self._db.executemany(
                "INSERT OR REPLACE INTO idempotency_keys VALUES (?, ?, ?, ?, ?)",
                [
                    (r.key, r.fingerprint, r.outcome_json, _micros(r.created_at), _micros(r.expires_at))
                    for r in records
                ],
            )

    async def purge_keys(self, now: datetime) -> int:
        with _translated():
            cursor = await self._db.execute(
                "DELETE FROM idempotency_keys WHERE expires_at <= ?", (_micros(now),)
            )
        return cursor.rowcount


class SqliteStore(EventStore):
    """Events in one SQLite file.

    Durability: WAL with ``synchronous=FULL`` (the default here) syncs the log on every commit,
    so an acknowledged event survives a crash of the process and of the machine; ``NORMAL``
    survives a process crash only.
    """

    backend = "sqlite"

    def __init__(self, dsn: str, *, synchronous: str = "FULL", busy_timeout_ms: int = 10_000):
        if not dsn.startswith("sqlite:///"):
            raise ValueError("a SQLite DSN looks like sqlite:///relative/path.db or sqlite:////abs.db")
        self.path = Path(dsn.removeprefix("sqlite:///"))
        self._synchronous = synchronous.upper()
        if self._synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, EXTRA or NORMAL")
        self._busy_timeout_ms = busy_timeout_ms
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        await db.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute(f"PRAGMA synchronous = {self._synchronous}")
        return db

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = await self._connect()
            self._reader = await self._connect()
        except (sqlite3.Error, OSError) as e:
            await self.close()
            raise StoreUnavailable(f"cannot open SQLite file {self.path}: {e}") from e

    async def close(self) -> None:
        for db in (self._writer, self._reader):
            if db is not None:
                await db.close()
        self._writer = self._reader = None

    @property
    def _w(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise StoreUnavailable("the store is not open")
        return self._writer

    @property
    def _r(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StoreUnavailable("the store is not open")
        return self._reader

    async def _applied(self, db: aiosqlite.Connection) -> set[int]:
        await db.execute(
            "CREATE TABLE IF NOT EXISTS eventlog_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        cursor = await db.execute("SELECT version FROM eventlog_migrations")
        return {v for (v,) in await cursor.fetchall()}

    async def migrate(self) -> list[str]:
        db = self._w
        done = []
        with _translated():
            # The write lock first, so two processes starting together apply each step once.
            await db.execute("BEGIN IMMEDIATE")
            try:
                applied = await self._applied(db)
                for m in load_migrations(self.backend):
                    if m.version in applied:
                        continue
                    for statement in _statements(m.sql):
                        await db.execute(statement)
                    await db.execute(
                        "INSERT INTO eventlog_migrations VALUES (?, ?, ?)",
                        (m.version, m.name, datetime.now(UTC).isoformat()),
                    )
                    done.append(f"{m.version:04d}_{m.name}")
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise
        return done

    async def pending_migrations(self) -> list[str]:
        with _translated():
            cursor = await self._r.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'eventlog_migrations'"
            )
            applied: set[int] = set()
            if await cursor.fetchone():
                cursor = await self._r.execute("SELECT version FROM eventlog_migrations")
                applied = {v for (v,) in await cursor.fetchall()}
        return [
            f"{m.version:04d}_{m.name}"
            for m in load_migrations(self.backend)
            if m.version not in applied
        ]

    async def ping(self) -> None:
        with _translated():
            await self._r.execute("SELECT 1")

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[WriteTransaction]:
        db = self._w
        with _translated():
            await db.execute("BEGIN IMMEDIATE")
        try:
            yield _Transaction(db)
            with _translated():
                await db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                await db.execute("ROLLBACK")
            raise

    async def get(self, event_id: int, execution_id: int | None = None) -> Event | None:
        sql = f"SELECT {_COLUMNS} FROM events WHERE event_id = ?"
        args: tuple[int, ...] = (event_id,)
        if execution_id is not None:
            sql += " AND execution_id = ?"
            args += (execution_id,)
        with _translated():
            cursor = await self._r.execute(sql + " ORDER BY seq LIMIT 1", args)
            row = await cursor.fetchone()
        return None if row is None else _event(row)

    async def page(self, page: Page) -> list[Event]:
        op, order = ("<", "DESC") if page.descending else (">", "ASC")
        sql = f"SELECT {_COLUMNS} FROM events WHERE execution_id = ?"
        args: tuple[int, ...] = (page.execution_id,)
        if page.after is not None:
            sql += f" AND seq {op} ?"
            args += (page.after,)
        with _translated():
            cursor = await self._r.execute(f"{sql} ORDER BY seq {order} LIMIT ?", (*args, page.limit))
            rows = await cursor.fetchall()
        return [_event(r) for r in rows]
