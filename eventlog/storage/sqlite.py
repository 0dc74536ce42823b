"""The SQLite backend (aiosqlite): one writer connection, one reader connection, WAL."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import queue
import resource
import shutil
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import aiosqlite
import attrs
import orjson

from ..envelope import Event, Execution, NewEvent
from ..ids import MAX_ID
from ..status import TERMINAL_EVENTS
from .base import (
    CLAIM_COLUMNS,
    EXECUTION_COLUMNS,
    Claim,
    Decide,
    EventStore,
    IdempotencyRecord,
    Key,
    NodeClaim,
    NodeClaimLost,
    NodeHolder,
    Page,
    PurgeStep,
    ReclaimStep,
    StoreError,
    StoreUnavailable,
    choose_node,
    claim_ceiling,
    execution_deltas,
    execution_from_row,
    load_migrations,
    lost_claim_message,
    pending,
    read_events,
    read_executions,
    record_from_row,
    settle,
)
from .columns import EVENTS, EventTable, Row

if TYPE_CHECKING:
    from ..config import Settings

T = TypeVar("T")

_ROWS_PER_INSERT = 1000  # 17,000 parameters: under SQLite's limit of 32,766


@functools.lru_cache(maxsize=128)
def _values_sql(template: str, width: int, count: int) -> str:
    return template.format(rows=", ".join(["(" + ", ".join("?" * width) + ")"] * count))


def _many(db: sqlite3.Connection, template: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run an INSERT over rows with one statement per thousand: one sqlite3 step (one release
    of the GIL) each, where executemany steps (and gives up and retakes the GIL) once per row."""
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        sql = _values_sql(template, len(chunk[0]), len(chunk))
        db.execute(sql, [v for row in chunk for v in row])


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


_MICROSECOND = timedelta(microseconds=1)


_STEP = "seq > ?1 AND seq <= ?2"  # the events of a purge step


def _step_entries(index: str, columns: str, *, where: str = "", read: str = "*") -> str:
    """A read of exactly one index's entries for the events of a purge step: those of the
    values the step's events hold in the index's columns, sought one by one (an index whose
    columns are followed by seq, which every SQLite index ends with, is also cut to the step's
    range: the entries of a long execution outside the step are not read at every step)."""
    tail = f" AND {_STEP}" if columns.count(",") == 0 else ""
    return (
        f"SELECT count({read}) FROM events INDEXED BY {index} WHERE {where}({columns}) IN "
        f"(SELECT {columns} FROM events WHERE {_STEP}){tail}"
    )


# A purge step's reads, done before it takes the write lock, on a connection of its own: once
# the log outgrows memory, the pages a step changes may be on the disk, and a step that reads
# them under the lock holds it for those reads (on PostgreSQL, with the caches emptied, one
# step's DELETE held it 207 ms). Read here, they are in the system's page cache when the step
# needs them. Every index of the events is read (a test compares the list with the schema's):
# a delete changes an entry in each one.
_PURGE_READ_AHEAD = {
    # the rows, to their last column (reading it reads any overflow pages of a large payload)
    "events": f"SELECT count(defaulted) FROM events WHERE {_STEP}",
    "events_execution": _step_entries("events_execution", "execution_id", read="defaulted"),
    "sqlite_autoindex_events_1": _step_entries(
        "sqlite_autoindex_events_1", "execution_id, event_id"
    ),
    "events_event_id": _step_entries("events_event_id", "event_id"),
    "events_event_type": _step_entries("events_event_type", "event_type"),
    "events_step": _step_entries("events_step", "step"),
    "events_status": _step_entries("events_status", "status"),
    "events_worker_id": _step_entries(
        "events_worker_id", "worker_id", where="worker_id IS NOT NULL AND "
    ),
    "executions": "SELECT count(status) FROM executions WHERE execution_id IN "
    f"(SELECT execution_id FROM events WHERE {_STEP})",
    # the summaries the step removes: those whose last event it removes
    "executions_last_seq": "SELECT count(*) FROM executions INDEXED BY executions_last_seq "
    "WHERE last_seq > ?1 AND last_seq <= ?2",
}


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def _moment(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


# Timestamps are stored as integer microseconds; booleans bind as 0/1 by themselves.
_ENCODERS = {datetime: _micros}
_DECODERS: dict[Any, Callable[[Any], Any]] = {datetime: _moment, bool: bool}


@attrs.frozen
class _EventSql:
    """The statements and row conversions of one EventTable, built from its columns."""

    columns: str
    insert: str  # a template: {rows} takes the VALUES tuples
    head_and_find: str  # the head of the log and the stored events among the keys
    row: Callable[[Event], tuple[Any, ...]]
    event: Callable[[Row], Event]
    stored: Callable[[NewEvent, int, datetime], Event]


# The head: the newest event, or the purge horizon once every event is gone (seq never goes back).
_HEAD = (
    "max(COALESCE((SELECT MAX(seq) FROM events), 0), "
    "(SELECT purged_seq FROM eventlog_head WHERE id = 1))"
)
_TERMINAL = ", ".join(f"'{t}'" for t in TERMINAL_EVENTS)


@functools.cache
def _event_sql(table: EventTable) -> _EventSql:
    """Built once per table."""
    columns = ", ".join(table.names)
    return _EventSql(
        columns=columns,
        insert=f"INSERT INTO events ({columns}) VALUES {{rows}}",
        head_and_find=(
            f"SELECT h.head, e.* FROM (SELECT {_HEAD} AS head) h "
            f"LEFT JOIN (SELECT {columns} FROM events WHERE (execution_id, event_id) IN "
            "(SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') "
            "FROM json_each(?))) e"
        ),
        row=table.row(_ENCODERS),
        event=table.decoder(_DECODERS),
        stored=table.stored(),
    )


def _execution(row: Row) -> Execution:
    return execution_from_row(row, _moment)


async def _connect_reader(target: str | Path, **options: Any) -> aiosqlite.Connection:
    reader = await aiosqlite.connect(target, isolation_level=None, **options)
    reader.row_factory = sqlite3.Row  # rows are read by column name
    return reader


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


def _unwritable(path: Path, e: sqlite3.Error) -> StoreError:
    """A failed write as the store's error, naming the file and what is known of the cause:
    SQLite reports a full disk, a file size limit or a failing device alike, as an I/O error."""
    name = getattr(e, "sqlite_errorname", None)
    causes = [f"{e} ({name})" if name else str(e)]
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(path.parent).free
        if free < 64 * 1024 * 1024:
            causes.append(f"{free} bytes free on its filesystem")
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        causes.append(f"the process's file size limit (ulimit -f) is {limit} bytes")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        causes.append("no permission to write it")
    message = f"sqlite: cannot write {path}: {'; '.join(causes)}"
    if isinstance(e, sqlite3.OperationalError):
        return StoreUnavailable(message)
    return StoreError(message)


_FIND_KEYS = (
    "SELECT key, fingerprint, outcome, created_at, expires_at FROM idempotency_keys "
    "WHERE key IN (SELECT value FROM json_each(?)) AND expires_at > ?"
)
_SAVE_KEY = "INSERT OR REPLACE INTO idempotency_keys VALUES (?, ?, ?, ?, ?)"
_UPSERT_EXECUTIONS = """
INSERT INTO executions VALUES {rows}
ON CONFLICT (execution_id) DO UPDATE SET
    event_count = event_count + excluded.event_count,
    first_event_at = min(first_event_at, excluded.first_event_at),
    last_event_at = max(last_event_at, excluded.last_event_at),
    last_event_type = excluded.last_event_type,
    last_seq = excluded.last_seq,
    status = CASE WHEN excluded.status = 'RUNNING' THEN executions.status ELSE excluded.status END
"""


# Write calls are merged into one transaction up to about this many events. Past it, merging
# saves little and costs overlap: while the thread commits one large group, the loop can parse
# the next; merged, both would wait (batches of 1,000 fell to 0.65 of their rate, measured).
_MERGE_EVENTS = 1000


def _WRITE() -> None:  # the marker of a write() call (its work is _write_together)
    """Not called."""


def _STOP(db: sqlite3.Connection | None) -> None:
    """The writer thread's last call: close its connection."""
    if db is not None:
        db.close()


@attrs.define(eq=False)
class _Call:
    """A call for the writer thread, and the future of the loop that waits for it."""

    call: Callable[..., Any]
    args: tuple[Any, ...]
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[Any] | None = None


@attrs.define(eq=False)
class _Write(_Call):
    keys: Sequence[Key] = ()
    idempotency_keys: Sequence[str] = ()
    now: datetime = datetime.min.replace(tzinfo=UTC)
    decide: Decide | None = None


def _settle(calls: list[_Call], results: list[Any]) -> None:
    """In the loop: answer every call of one turn of the writer thread."""
    for call, result in zip(calls, results, strict=True):
        settle(call.future, result)


def page_query(page: Page, columns: str) -> tuple[str, list[Any]]:
    """The statement and arguments that read ``page``."""
    # SQLite has no statistics on the values of a column, so with several filters it could
    # walk any of their indexes: the leading filter's index is the one, and a unary + keeps
    # the others' from being considered (they are then checked on each row).
    leading = page.leading()
    conditions = page.conditions()
    where = " AND ".join(
        f"{'' if column in (leading, 'seq') else '+'}{column} {op} ?"
        for column, op, _ in conditions
    )
    order = "DESC" if page.descending else "ASC"
    return (
        f"SELECT {columns} FROM events WHERE {where or '1'} ORDER BY seq {order} LIMIT ?",
        [*(value for _, _, value in conditions), page.limit],
    )


class SqliteStore(EventStore):
    """Events in one SQLite file, in WAL mode.

    Write transactions run whole in a thread of their own, on one plain sqlite3 connection: one
    hop between the event loop and the thread per group commit, and the thread may wait for a
    lock held by another process, or for the disk, without stalling the loop. Rows go in with
    one INSERT per thousand (each sqlite3 step gives up the GIL and must win it back from the
    busy loop thread, so a step per row made transactions crawl). Reads use aiosqlite.

    Durability: ``synchronous=FULL`` (the default) syncs the WAL in every COMMIT, before any
    reply: an acknowledged event survives a crash of the process and of the machine. ``NORMAL``
    survives a process crash only.
    """

    backend = "sqlite"
    events_table: ClassVar[EventTable] = EVENTS
    # Groups handed to the writer thread at once: those waiting when it finishes a transaction
    # go into the next one together, so the thread commits whatever is waiting.
    write_concurrency = 8
    # A writer of another process (another `serve --workers` worker, a service beside
    # `eventlog purge`) waits for the lock by sleeping, up to 50 ms at a time before it has
    # waited a quarter of a second: a pause as long lets it in between two steps.
    purge_pause = 0.05

    def __init__(
        self,
        dsn: str,
        *,
        synchronous: str = "FULL",
        busy_timeout_ms: int = 10_000,
        read_only: bool = False,
    ):
        if not dsn.startswith("sqlite:///"):
            raise ValueError(
                "a SQLite DSN looks like sqlite:///relative/path.db or sqlite:////abs.db"
            )
        self.path = Path(dsn.removeprefix("sqlite:///"))
        self._synchronous = synchronous.upper()
        if self._synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, EXTRA or NORMAL")
        self._busy_timeout_ms = busy_timeout_ms
        self._sql = _event_sql(self.events_table)
        self._read_only = read_only
        self._thread: threading.Thread | None = None
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._writer: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        # The purge's own connection (its read-ahead and its checkpoints), opened by its first step
        self._purger: sqlite3.Connection | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> SqliteStore:
        return cls(settings.dsn, synchronous=settings.sqlite_synchronous, **options)

    def _pragmas(self) -> list[str]:
        return [
            f"PRAGMA busy_timeout = {self._busy_timeout_ms}",
            "PRAGMA journal_mode = WAL",
            f"PRAGMA synchronous = {self._synchronous}",
        ]

    def _connect_writer(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row  # rows are read by column name
        # Takes effect in a new file (before its first table), so that purges can hand freed
        # pages back step by step; an older file keeps its mode until a VACUUM (which this
        # setting then converts): `eventlog vacuum`.
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        for pragma in self._pragmas():
            db.execute(pragma)
        return db

    async def _in_writer(self, call: Callable[..., T], *args: Any) -> T:
        if self._thread is None or self._writer is None:
            raise StoreUnavailable("the store is not open")
        result: T = await self._call(_Call(call, args))
        return result

    def _call(self, item: _Call) -> asyncio.Future[Any]:
        item.loop = asyncio.get_running_loop()
        item.future = item.loop.create_future()
        self._calls.put(item)
        return item.future

    def _run_writer(self) -> None:
        """The writer thread: calls in order; write calls waiting together share one
        transaction (one lookup, one INSERT, one COMMIT), answered by one wake-up of the loop."""
        later: _Call | None = None
        while True:
            item = later if later is not None else self._calls.get()
            later = None
            if item is None:
                return
            batch = [item]
            if isinstance(item, _Write):
                events = len(item.keys)
                while events < _MERGE_EVENTS:
                    try:
                        more = self._calls.get_nowait()
                    except queue.Empty:
                        break
                    if not isinstance(more, _Write):
                        later = more
                        break
                    batch.append(more)
                    events += len(more.keys)
                results = self._write_together(batch)  # type: ignore[arg-type]
            else:
                try:
                    results = [item.call(*item.args)]
                except sqlite3.Error as e:
                    results = [_unwritable(self.path, e)]
                except BaseException as e:  # noqa: BLE001 (handed to the caller)
                    results = [e]
            assert item.loop is not None
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                item.loop.call_soon_threadsafe(_settle, batch, results)
            if later is None and item.call is _STOP:
                return

    async def open(self) -> None:
        if self._read_only:
            return await self._open_read_only()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._calls = queue.SimpleQueue()
            self._thread = threading.Thread(
                target=self._run_writer, name="eventlog-sqlite-writer", daemon=True
            )
            self._thread.start()
            self._writer = await self._call(_Call(self._connect_writer, ()))
            self._reader = await _connect_reader(self.path)
            for pragma in self._pragmas():
                await self._reader.execute(pragma)
        except (sqlite3.Error, OSError) as e:
            await self.close()
            raise StoreUnavailable(f"cannot open SQLite file {self.path}: {e}") from e
        except StoreError as e:
            await self.close()
            raise StoreUnavailable(f"cannot open SQLite file {self.path}: {e}") from e

    async def _open_read_only(self) -> None:
        """Only a reader, on a file that must exist: sqlite3 would create a missing one, and a
        reader has no business leaving an empty database behind. Writes fail: not open."""
        if not self.path.is_file():
            raise StoreUnavailable(f"no SQLite file at {self.path}")
        uri = f"file:{urllib.parse.quote(str(self.path.resolve()))}?mode=ro"
        try:
            self._reader = await _connect_reader(uri, uri=True)
            await self._reader.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        except sqlite3.Error as e:
            await self.close()
            raise StoreUnavailable(f"cannot open SQLite file {self.path}: {e}") from e

    async def close(self) -> None:
        if self._purger is not None:
            self._purger.close()
            self._purger = None
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        if self._thread is not None:
            thread, self._thread = self._thread, None
            writer, self._writer = self._writer, None
            await self._call(_Call(_STOP, (writer,)))
            thread.join()

    @property
    def _r(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StoreUnavailable("the store is not open")
        return self._reader

    # --- writes: the methods ending in _sync run in the writer thread ---------------------

    @contextlib.contextmanager
    def _immediate(self) -> Any:
        """BEGIN IMMEDIATE takes SQLite's write lock up front (other processes included), so
        MAX(seq) + 1 … is read and written under one lock: seq order is commit order."""
        db = self._writer
        assert db is not None
        if db.in_transaction:  # a ROLLBACK failed last time: end that transaction first
            db.execute("ROLLBACK")
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                # The first error is the one to report; a failed ROLLBACK is retried above.
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    def _write_together(self, writes: list[_Write]) -> list[Any]:
        """Several write() calls in one transaction, each deciding in turn on what is stored
        and on what the ones before it wrote, as if each had committed alone; one whose
        decide raises writes nothing and gets the exception."""
        results: list[Any] = []
        try:
            with self._immediate() as db:
                keys = list({k: None for w in writes for k in w.keys})
                sql = self._sql
                rows = db.execute(sql.head_and_find, (orjson.dumps(keys).decode(),)).fetchall()
                head = rows[0]["head"]
                known = {
                    (r["execution_id"], r["event_id"]): sql.event(r)
                    for r in rows
                    if r["seq"] is not None
                }
                records: dict[str, IdempotencyRecord] = {}
                idempotency_keys = list({k: None for w in writes for k in w.idempotency_keys})
                if idempotency_keys:
                    oldest = min(w.now for w in writes)
                    found = db.execute(
                        _FIND_KEYS, (orjson.dumps(idempotency_keys).decode(), _micros(oldest))
                    )
                    records = {r["key"]: record_from_row(r, _moment) for r in found.fetchall()}
                at = datetime.now(UTC)  # ingested_at: the lock is held, the commit follows
                stored: list[Event] = []
                saved: list[IdempotencyRecord] = []
                for w in writes:
                    existing = {k: known[k] for k in w.keys if k in known}
                    live = {
                        k: records[k]
                        for k in w.idempotency_keys
                        if k in records and records[k].expires_at > w.now
                    }
                    try:
                        assert w.decide is not None
                        plan = w.decide(existing, live)
                    except Exception as e:  # noqa: BLE001 (that call's failure alone)
                        results.append(e)
                        continue
                    base = head + len(stored)
                    mine = [sql.stored(e, base + i, at) for i, e in enumerate(plan.events, 1)]
                    stored += mine
                    known.update((e.key, e) for e in mine)
                    saved += plan.records
                    records.update((r.key, r) for r in plan.records)
                    results.append(mine)
                self._append(db, stored, head, saved)
        except sqlite3.Error as e:
            return [_unwritable(self.path, e)] * len(writes)
        except BaseException as e:  # noqa: BLE001 (handed to every caller)
            return [e] * len(writes)
        return results

    def _append(
        self,
        db: sqlite3.Connection,
        stored: list[Event],
        head: int,
        records: list[IdempotencyRecord],
    ) -> None:
        if stored:
            _many(db, self._sql.insert, [self._sql.row(e) for e in stored])
            _many(
                db,
                _UPSERT_EXECUTIONS,
                [
                    (
                        d.execution_id,
                        d.count,
                        _micros(d.first_event_at),
                        _micros(d.last_event_at),
                        d.last_event_type,
                        head + d.last_index,
                        d.terminal or "RUNNING",
                    )
                    for d in execution_deltas(stored)
                ],
            )
        if records:
            db.executemany(
                _SAVE_KEY,
                [
                    (
                        r.key,
                        r.fingerprint,
                        r.outcome_json,
                        _micros(r.created_at),
                        _micros(r.expires_at),
                    )
                    for r in records
                ],
            )

    async def write(
        self, keys: Sequence[Key], idempotency_keys: Sequence[str], now: datetime, decide: Decide
    ) -> list[Event]:
        if self._thread is None or self._writer is None:
            raise StoreUnavailable("the store is not open")
        stored: list[Event] = await self._call(
            _Write(_WRITE, (), keys=keys, idempotency_keys=idempotency_keys, now=now, decide=decide)
        )
        return stored

    def _purge_sync(self, now: datetime) -> int:
        with self._immediate() as db:
            deleted: int = db.execute(
                "DELETE FROM idempotency_keys WHERE expires_at <= ?", (_micros(now),)
            ).rowcount
        return deleted

    async def purge_keys(self, now: datetime) -> int:
        return await self._in_writer(self._purge_sync, now)

    @contextlib.contextmanager
    def _unsynced(self) -> Any:
        """A purge's transactions commit without waiting for the disk: the write lock is
        then held for the step's work alone, not for a sync that a busy disk can stretch (to
        100 ms for PostgreSQL's at 10 million events). The next durable commit syncs the WAL
        with them; a crash before it loses only steps that the next purge does again (events
        that were due to go, still there)."""
        db = self._writer
        assert db is not None
        db.execute("PRAGMA synchronous = NORMAL")
        try:
            yield
        finally:
            db.execute(f"PRAGMA synchronous = {self._synchronous}")

    def _purge_chunk_sync(self, through: int, limit: int) -> PurgeStep:
        with self._unsynced(), self._immediate() as db:  # the write lock, to the COMMIT's end
            locked = time.perf_counter()
            removed = self._purge_locked(db, through, limit)
        return PurgeStep(removed, time.perf_counter() - locked)

    def _purge_locked(self, db: sqlite3.Connection, through: int, limit: int) -> int:
        (horizon,) = db.execute("SELECT purged_seq FROM eventlog_head WHERE id = 1").fetchone()
        high = min(horizon + limit, through)
        if high <= horizon:
            return 0
        span = (horizon, high)
        # The events left of each execution are all newer than those removed: its last
        # event (type, seq) stays; its count, its created_at range (when a removed event
        # held an end of it) and, when its last terminal event went, its status change.
        # Counts first, in one statement for the whole step (executions run interleaved: a
        # step's events belong to nearly as many executions, and a statement per execution
        # was most of a step's time), and the summaries left with no events go.
        db.execute(
            "UPDATE executions SET event_count = event_count - gone.n FROM "
            "(SELECT execution_id, count(*) AS n FROM events WHERE seq > ? AND seq <= ? "
            "GROUP BY execution_id) AS gone WHERE executions.execution_id = gone.execution_id",
            span,
        )
        db.execute(
            "DELETE FROM executions WHERE event_count <= 0 AND execution_id IN "
            "(SELECT execution_id FROM events WHERE seq > ? AND seq <= ?)",
            span,
        )
        # Only executions that outlive the purge (last seq past its cut) are recounted: the
        # others lose their summary when their last event goes, and recounting them at
        # every step read each one's events again and again.
        outliving = db.execute(
            "SELECT e.execution_id, min(e.created_at), max(e.created_at), "
            f"max(lower(e.event_type) IN ({_TERMINAL})) FROM events e "
            "JOIN executions x ON x.execution_id = e.execution_id AND x.last_seq > ? "
            "WHERE e.seq > ? AND e.seq <= ? GROUP BY e.execution_id",
            (through, *span),
        ).fetchall()
        removed: int = db.execute("DELETE FROM events WHERE seq > ? AND seq <= ?", span).rowcount
        db.executemany(
            "UPDATE executions SET first_event_at = (SELECT min(created_at) FROM events e "
            "WHERE e.execution_id = executions.execution_id) "
            "WHERE execution_id = ? AND first_event_at >= ?",
            [(x, first) for x, first, _, _ in outliving],
        )
        db.executemany(
            "UPDATE executions SET last_event_at = (SELECT max(created_at) FROM events e "
            "WHERE e.execution_id = executions.execution_id) "
            "WHERE execution_id = ? AND last_event_at <= ?",
            [(x, last) for x, _, last, _ in outliving],
        )
        db.executemany(
            "UPDATE executions SET status = 'RUNNING' WHERE execution_id = ? "
            "AND status <> 'RUNNING' AND NOT EXISTS (SELECT 1 FROM events e "
            "WHERE e.execution_id = executions.execution_id "
            f"AND lower(e.event_type) IN ({_TERMINAL}))",
            [(x,) for x, *_, terminal in outliving if terminal],
        )
        db.execute("UPDATE eventlog_head SET purged_seq = ? WHERE id = 1", (high,))
        return removed

    async def purge_chunk(self, through: int, limit: int) -> PurgeStep:
        await self._on_purger(self._read_ahead, through, limit)
        step = await self._in_writer(self._purge_chunk_sync, through, limit)
        await self._checkpoint()
        return step

    def _read_ahead(self, db: sqlite3.Connection, through: int, limit: int) -> None:
        """The next step's reads, without the write lock (_PURGE_READ_AHEAD)."""
        (horizon,) = db.execute("SELECT purged_seq FROM eventlog_head WHERE id = 1").fetchone()
        span = (horizon, min(horizon + limit, through))
        for read in _PURGE_READ_AHEAD.values():
            db.execute(read, span).fetchall()

    async def _on_purger(self, call: Callable[..., T], *args: Any) -> T:
        """Run call(connection, *args) in a thread on the purge's own connection."""

        def run() -> T:
            if self._purger is None:
                self._purger = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False
                )
                self._purger.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            return call(self._purger, *args)

        with _translated():
            return await asyncio.to_thread(run)

    async def _checkpoint(self) -> None:
        """Copy the WAL into the file on a connection of its own, in a thread of its own: a
        purge writes the WAL full fast, and the writer thread would otherwise run the
        checkpoint itself inside a commit (measured: 100 ms that every write waits for).
        PASSIVE: it takes no lock that writers need."""
        await self._on_purger(lambda db: db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall())

    def _reclaim_sync(self, pages: int) -> ReclaimStep:
        db = self._writer
        assert db is not None
        # sqlite3's execute() steps this pragma once, freeing one page; sqlite3_exec (through
        # executescript, which commits nothing here: no transaction is open) runs it through,
        # in a transaction of its own: the write lock, from its start to its commit's end.
        with self._unsynced():
            started = time.perf_counter()
            db.executescript(f"PRAGMA incremental_vacuum({int(pages)})")
            held = time.perf_counter() - started
        (free,) = db.execute("PRAGMA freelist_count").fetchone()
        (mode,) = db.execute("PRAGMA auto_vacuum").fetchone()
        return ReclaimStep(bool(free > 0 and mode == 2), held)  # 2: incremental

    async def reclaim(self, pages: int) -> ReclaimStep:
        step = await self._in_writer(self._reclaim_sync, pages)
        await self._checkpoint()
        return step

    def _vacuum_sync(self) -> None:
        db = self._writer
        assert db is not None
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # VACUUM applies it to an older file
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    async def vacuum(self) -> None:
        await self._in_writer(self._vacuum_sync)

    def _migrate_sync(self) -> list[str]:
        done = []
        # The write lock first, so two processes starting together apply each step once.
        with self._immediate() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS eventlog_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            applied = {v for (v,) in db.execute("SELECT version FROM eventlog_migrations")}
            for m in load_migrations(self.backend):
                if m.version in applied:
                    continue
                for statement in _statements(m.sql):
                    db.execute(statement)
                db.execute(
                    "INSERT INTO eventlog_migrations VALUES (?, ?, ?)",
                    (m.version, m.name, datetime.now(UTC).isoformat()),
                )
                done.append(m.label)
        return done

    async def migrate(self, progress: Callable[[str], None] | None = None) -> list[str]:
        return await self._in_writer(self._migrate_sync)

    # --- reads ----------------------------------------------------------------------------

    async def pending_migrations(self) -> list[str]:
        with _translated():
            cursor = await self._r.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'eventlog_migrations'"
            )
            applied: set[int] = set()
            if await cursor.fetchone():
                cursor = await self._r.execute("SELECT version FROM eventlog_migrations")
                applied = {v for (v,) in await cursor.fetchall()}
        return pending(self.backend, applied)

    async def ping(self) -> None:
        with _translated():
            await self._r.execute("SELECT 1")

    async def idempotency_record(self, key: str, now: datetime) -> IdempotencyRecord | None:
        with _translated():
            cursor = await self._r.execute(_FIND_KEYS, (orjson.dumps([key]).decode(), _micros(now)))
            row = await cursor.fetchone()
        return None if row is None else record_from_row(row, _moment)

    async def get(self, event_id: int, execution_id: int | None = None) -> Event | None:
        sql = f"SELECT {self._sql.columns} FROM events WHERE event_id = ?"
        args: tuple[int, ...] = (event_id,)
        if execution_id is not None:
            sql += " AND execution_id = ?"
            args += (execution_id,)
        with _translated():
            cursor = await self._r.execute(sql + " ORDER BY seq LIMIT 1", args)
            row = await cursor.fetchone()
        return None if row is None else read_events([row], self._sql.event)[0]

    async def page(self, page: Page) -> list[Event]:
        with _translated():
            cursor = await self._r.execute(*page_query(page, self._sql.columns))
            rows = await cursor.fetchall()
        return read_events(rows, self._sql.event)

    async def head(self) -> int:
        with _translated():
            cursor = await self._r.execute(f"SELECT {_HEAD}")
            row = await cursor.fetchone()
        assert row is not None  # an aggregate always yields its one row
        return int(row[0])

    async def purged_through(self) -> int:
        with _translated():
            cursor = await self._r.execute("SELECT purged_seq FROM eventlog_head WHERE id = 1")
            row = await cursor.fetchone()
        return 0 if row is None else int(row[0])

    async def purge_cut(self, before: datetime) -> int:
        # The seq index walks the oldest events first and stops at the first kept one: no
        # index on ingested_at is needed (ingested_at grows with seq: one lock assigns both).
        with _translated():
            cursor = await self._r.execute(
                "SELECT max(COALESCE((SELECT seq - 1 FROM events WHERE ingested_at >= ? "
                f"ORDER BY seq LIMIT 1), {_HEAD}), "
                "(SELECT purged_seq FROM eventlog_head WHERE id = 1))",
                (_micros(before),),
            )
            row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    async def count_through(self, through: int) -> int:
        with _translated():
            cursor = await self._r.execute("SELECT count(*) FROM events WHERE seq <= ?", (through,))
            row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    async def execution(self, execution_id: int) -> Execution | None:
        with _translated():
            cursor = await self._r.execute(
                f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE execution_id = ?",
                (execution_id,),
            )
            row = await cursor.fetchone()
        return None if row is None else read_executions([row], _execution)[0]

    async def executions(
        self, before: int | None, limit: int, status: str | None = None
    ) -> list[Execution]:
        chosen = "" if status is None else " AND status = ?"
        args = () if status is None else (status,)
        with _translated():
            cursor = await self._r.execute(
                f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE last_seq < ?{chosen} "
                "ORDER BY last_seq DESC LIMIT ?",
                (MAX_ID if before is None else before, *args, limit),
            )
            rows = await cursor.fetchall()
        return read_executions(rows, _execution)

    # --- node id claims (appended: whole transactions in the writer thread) --------------

    def _claim_node_sync(
        self, holder: NodeHolder, node_id: int | None, lease: float, wall_ms: int
    ) -> Claim:
        # Under BEGIN IMMEDIATE: a process that starts at the same moment waits its turn
        # (busy_timeout), then sees this claim.
        with self._immediate() as db:
            now = datetime.now(UTC)
            rows = db.execute(f"SELECT {CLAIM_COLUMNS} FROM node_claims").fetchall()
            chosen, floor = choose_node(
                [NodeClaim.from_row(r, _moment) for r in rows], holder, node_id, now, wall_ms
            )
            expires = now + timedelta(seconds=lease)
            ceiling = claim_ceiling(wall_ms, floor, lease)
            db.execute(
                "INSERT INTO node_claims VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (node_id) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
                "token = excluded.token, claimed_at = excluded.claimed_at, "
                "renewed_at = excluded.renewed_at, expires_at = excluded.expires_at, "
                "ceiling_ms = excluded.ceiling_ms",
                (
                    chosen,
                    holder.host,
                    holder.pid,
                    holder.token,
                    _micros(now),
                    _micros(now),
                    _micros(expires),
                    ceiling,
                ),
            )
        return Claim(chosen, floor, ceiling, expires)

    async def claim_node(
        self, holder: NodeHolder, node_id: int | None, lease: float, wall_ms: int
    ) -> Claim:
        return await self._in_writer(self._claim_node_sync, holder, node_id, lease, wall_ms)

    def _renew_node_sync(
        self, holder: NodeHolder, node_id: int, lease: float, ceiling_ms: int
    ) -> datetime:
        with self._immediate() as db:
            now = datetime.now(UTC)
            expires = now + timedelta(seconds=lease)
            renewed = db.execute(
                "UPDATE node_claims SET renewed_at = ?, expires_at = ?, "
                "ceiling_ms = max(ceiling_ms, ?) WHERE node_id = ? AND token = ?",
                (_micros(now), _micros(expires), ceiling_ms, node_id, holder.token),
            ).rowcount
            if not renewed:
                row = db.execute(
                    f"SELECT {CLAIM_COLUMNS} FROM node_claims WHERE node_id = ?",
                    (node_id,),
                ).fetchone()
                raise NodeClaimLost(
                    lost_claim_message(
                        node_id, None if row is None else NodeClaim.from_row(row, _moment)
                    )
                )
        return expires

    async def renew_node(
        self, holder: NodeHolder, node_id: int, lease: float, ceiling_ms: int
    ) -> datetime:
        return await self._in_writer(self._renew_node_sync, holder, node_id, lease, ceiling_ms)

    def _release_node_sync(self, holder: NodeHolder, node_id: int, last_ms: int) -> None:
        with self._immediate() as db:
            db.execute(
                "UPDATE node_claims SET host = NULL, pid = NULL, token = NULL, "
                "claimed_at = NULL, renewed_at = NULL, expires_at = NULL, ceiling_ms = ? "
                "WHERE node_id = ? AND token = ?",
                (last_ms, node_id, holder.token),
            )

    async def release_node(self, holder: NodeHolder, node_id: int, last_ms: int) -> None:
        await self._in_writer(self._release_node_sync, holder, node_id, last_ms)
