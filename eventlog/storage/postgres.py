"""The PostgreSQL backend (asyncpg): a connection pool; batches go in one round trip."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import asyncpg
import attrs

from ..envelope import Event, Execution, NewEvent
from ..ids import MAX_ID
from ..status import TERMINAL_EVENTS
from . import partitions
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
    ReplicaLag,
    StoreError,
    StoreUnavailable,
    ValueNotStorable,
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
)
from .columns import EVENTS, Column, EventTable, Row

if TYPE_CHECKING:
    from ..config import Settings

_MIGRATION_LOCK = 0x6576656E746C6F67  # pg_advisory_lock key: "eventlog" in ASCII

log = logging.getLogger("eventlog.postgres")

# Errors that mean "cannot talk to the database now" rather than "this request is wrong".
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # The driver lost track of a connection's state, as when a shutdown interrupts the pool's
    # reset of a released connection ("cannot switch to state 15 ...").
    asyncpg.InternalClientError,
    # Class 57: shutting down, starting up, crash recovery, a cancelled statement.
    asyncpg.OperatorInterventionError,
    # Class 53 (disk full, out of memory, too many connections) and 58 (I/O error).
    asyncpg.InsufficientResourcesError,
    asyncpg.PostgresSystemError,
    asyncpg.ReadOnlySQLTransactionError,  # a standby (after a failover) cannot take writes
)
_RELISTEN_MAX_DELAY = 1.0  # seconds between attempts to reopen the LISTEN connection


class _QuietPoolFloor(logging.Filter):
    """asyncpg's pool logs a traceback each time it fails to reconnect its idle minimum, every
    few seconds of an outage; the writer and the stream hub report the outage once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to restore the pool connection floor")


_quiet_pool_floor = _QuietPoolFloor()


def _seq(payload: str, schema: str) -> int | None:
    """The seq a notification announces (committed up to it), when it carries one and comes
    from the log in ``schema``: the channel is the database's, and another log sharing the
    database in a schema of its own announces seqs of its own (a wake-up all the same)."""
    seq, _, where = payload.partition(" ")
    return int(seq) if seq.isdigit() and where == schema else None


def _same(moment: datetime) -> datetime:
    return moment


def _execution(row: Row) -> Execution:
    return execution_from_row(row, _same)


@contextlib.asynccontextmanager
async def _dropped_if_failed(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """A write transaction that, when anything fails or times out inside it, drops the
    connection instead of sending ROLLBACK: a database that stopped answering would hold the
    ROLLBACK (and the writer's answer) past the write's timeout, and the server rolls back
    what a lost connection left anyway. The pool replaces the connection."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield
        await transaction.commit()
    except BaseException:
        conn.terminate()
        raise


@contextlib.contextmanager
def _translated() -> Any:
    try:
        yield
    except _UNAVAILABLE as e:
        detail = str(e) or ("no answer in time" if isinstance(e, TimeoutError) else repr(e))
        raise StoreUnavailable(f"postgresql: {detail}") from e
    except (asyncpg.DataError, asyncpg.UntranslatableCharacterError) as e:
        raise ValueNotStorable(f"postgresql: {e}") from e
    except asyncpg.PostgresError as e:
        raise StoreError(f"postgresql: {e}") from e


_EXECUTION_UPDATE = """
    event_count = executions.event_count + EXCLUDED.event_count,
    first_event_at = LEAST(executions.first_event_at, EXCLUDED.first_event_at),
    last_event_at = GREATEST(executions.last_event_at, EXCLUDED.last_event_at),
    last_event_type = EXCLUDED.last_event_type,
    last_seq = EXCLUDED.last_seq,
    status = CASE WHEN EXCLUDED.status = 'RUNNING' THEN executions.status ELSE EXCLUDED.status END
"""
_UPSERT_EXECUTIONS = f"""
INSERT INTO executions (execution_id, event_count, first_event_at, last_event_at,
                        last_event_type, last_seq, status)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[], $4::timestamptz[],
                     $5::text[], $6::bigint[], $7::text[])
ON CONFLICT (execution_id) DO UPDATE SET {_EXECUTION_UPDATE}
"""
_HEAD = "SELECT last_seq FROM eventlog_head WHERE id = 1"
_LOCK = _HEAD + " FOR UPDATE"
_NO_PARTITION = "no partition of relation"
_COPY_CHUNK_EVENTS = 50_000
_COPY_CHUNK = """
WITH moved AS (
    INSERT INTO events
    SELECT * FROM events_unpartitioned WHERE seq > $1 ORDER BY seq LIMIT $2
    RETURNING seq
)
SELECT count(*), max(seq) FROM moved
"""
_FIND_KEYS = (
    "SELECT key, fingerprint, outcome::text AS outcome, created_at, expires_at "
    "FROM idempotency_keys WHERE key = ANY($1::text[]) AND expires_at > $2"
)
_SAVE_KEYS = """
INSERT INTO idempotency_keys (key, fingerprint, outcome, created_at, expires_at)
SELECT key, fingerprint, outcome::json, created_at, expires_at
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])
     AS t(key, fingerprint, outcome, created_at, expires_at)
ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, outcome = EXCLUDED.outcome,
    created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
"""


# One purge step: the removed events' executions as parallel arrays (id, count, earliest
# and latest created_at, whether a terminal event was among them). The events left of each
# execution are all newer than those removed: its last event (type, seq) stays; its count, its
# created_at range (when a removed event held an end of it) and, when its last terminal event
# went, its status change.
_PURGE_GONE = """
WITH gone AS (DELETE FROM events WHERE seq > $1 AND seq <= $2
              RETURNING execution_id, created_at, event_type)
SELECT execution_id, count(*) AS n, min(created_at) AS first_at, max(created_at) AS last_at,
       bool_or(lower(event_type) = ANY($3::text[])) AS terminal
FROM gone GROUP BY execution_id
"""
# What a purge step will read under the head's lock, read before it without the lock: the
# step's rows (created_at comes from the table itself: the primary key alone would not bring
# its pages in) and their executions' summaries. The seq range is given as values: bounds read
# from the head in the same statement are unknown when it is planned, and over 10 million
# events the planner then chose to scan the whole partition (at every step).
_PURGE_READ_AHEAD = """
WITH step AS MATERIALIZED (SELECT execution_id, created_at FROM events WHERE seq > $1 AND seq <= $2)
SELECT (SELECT count(created_at) FROM step),
       (SELECT count(x.status) FROM executions x
        WHERE x.execution_id = ANY (ARRAY(SELECT DISTINCT execution_id FROM step)))
"""
_PURGE_SUMMARIES = """
WITH d AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[], $4::timestamptz[],
                         $5::boolean[]) AS d(execution_id, n, first_at, last_at, terminal)
)
UPDATE executions x SET
    event_count = x.event_count - d.n,
    first_event_at = CASE WHEN d.first_at > x.first_event_at OR x.last_seq <= $7
        THEN x.first_event_at ELSE
        COALESCE((SELECT min(e.created_at) FROM events e WHERE e.execution_id = x.execution_id),
                 x.first_event_at) END,
    last_event_at = CASE WHEN d.last_at < x.last_event_at OR x.last_seq <= $7
        THEN x.last_event_at ELSE
        COALESCE((SELECT max(e.created_at) FROM events e WHERE e.execution_id = x.execution_id),
                 x.last_event_at) END,
    status = CASE WHEN d.terminal AND x.last_seq > $7 AND NOT EXISTS (
        SELECT 1 FROM events e WHERE e.execution_id = x.execution_id
        AND lower(e.event_type) = ANY($6::text[])) THEN 'RUNNING' ELSE x.status END
FROM d WHERE x.execution_id = d.execution_id
"""
_TERMINAL = list(TERMINAL_EVENTS)


def _delta_args(events: Sequence[NewEvent], base: int) -> list[list[Any]]:
    """Per-execution summary changes as parallel arrays; last_seq is base + position."""
    deltas = execution_deltas(events)
    return [
        [d.execution_id for d in deltas],
        [d.count for d in deltas],
        [d.first_event_at for d in deltas],
        [d.last_event_at for d in deltas],
        [d.last_event_type for d in deltas],
        [base + d.last_index for d in deltas],
        [d.terminal or "RUNNING" for d in deltas],
    ]


def _array_type(column: Column) -> str:
    # json travels as JSON text (an asyncpg json codec in text format breaks COPY, and costs a
    # parse per value).
    return "text" if column.postgres == "json" else column.postgres


def _selected(column: Column) -> str:
    return f"{column.name}::text AS {column.name}" if column.postgres == "json" else column.name


def _value(column: Column) -> str:
    return f"i.{column.name}::json" if column.postgres == "json" else f"i.{column.name}"


@attrs.frozen
class _EventSql:
    """The statements and row conversions of one EventTable, built from its columns. Both
    appending statements take the NewEvent columns as parallel arrays first ($1 … $n)."""

    columns: str  # the select list
    append_if_new: str
    insert: str
    find: str
    arrays: Callable[[Sequence[NewEvent]], list[list[Any]]]
    event: Callable[[Row], Event]
    stored: Callable[[NewEvent, int, datetime], Event]


_DELTA_TYPES = ("bigint", "bigint", "timestamptz", "timestamptz", "text", "bigint", "text")


@functools.cache
def _event_sql(table: EventTable) -> _EventSql:
    """Built once per table."""
    new = table.new
    n = len(new)
    arrays = ", ".join(f"${i}::{_array_type(c)}[]" for i, c in enumerate(new, 1))
    unnest = f"unnest({arrays}) WITH ORDINALITY AS i({', '.join(c.name for c in new)}, ord)"
    insert_into = f"INSERT INTO events (seq, {', '.join(c.name for c in new)}, ingested_at)"
    values = ", ".join(_value(c) for c in new)
    deltas = ", ".join(f"${n + i}::{t}[]" for i, t in enumerate(_DELTA_TYPES, 1))
    columns = ", ".join(_selected(c) for c in table.columns)
    return _EventSql(
        columns=columns,
        # The common case: append a group in which no key is stored yet, in one statement run
        # right after the head's row lock is taken (write()), so that its snapshot holds every
        # commit that could have stored one of its keys: a lookup that sees a key only after
        # the lock is the guarantee that a retry is not stored twice, as the partitioned events
        # table can have no unique index on the key. The head moves (and the insert takes its
        # seq values from it) only when none of the keys is stored, and only if no commit moved
        # it since the snapshot (a guard, should the statement ever run without the lock);
        # otherwise nothing is written and write() decides again in a transaction of its own.
        # Both inserts write a group's rows execution by execution (their seq values stay in
        # arrival order): the table is in insertion order, and an execution's page then reads
        # a heap page for each few of its events instead of one for each (see At scale).
        append_if_new=f"""
WITH input AS (
    SELECT * FROM {unnest}
),
stored AS (
    SELECT 1 FROM events e JOIN input i USING (execution_id, event_id) LIMIT 1
),
seen AS (
    SELECT last_seq FROM eventlog_head WHERE id = 1
),
head AS (
    UPDATE eventlog_head SET last_seq = last_seq + (SELECT count(*) FROM input)
    WHERE id = 1 AND NOT EXISTS (SELECT 1 FROM stored)
      AND last_seq = (SELECT last_seq FROM seen)
    RETURNING last_seq - (SELECT count(*) FROM input) AS base, clock_timestamp() AS at
),
ins AS (
    {insert_into}
    SELECT head.base + i.ord, {values}, head.at
    FROM input i, head
    ORDER BY i.execution_id, i.ord
),
executions_up AS (
    INSERT INTO executions (execution_id, event_count, first_event_at, last_event_at,
                            last_event_type, last_seq, status)
    SELECT d.execution_id, d.count, d.first_at, d.last_at, d.last_type, head.base + d.last_index,
           d.status
    FROM unnest({deltas})
         AS d(execution_id, count, first_at, last_at, last_type, last_index, status), head
    ON CONFLICT (execution_id) DO UPDATE SET {_EXECUTION_UPDATE}
)
SELECT base, at,
       pg_notify('eventlog', (base + (SELECT count(*) FROM input))::text || ' ' || current_schema())
FROM head
""",
        # The general case, with the head's row already locked by this transaction (see
        # _write()): seq values follow ${n + 1}, ingested_at is ${n + 2}, the head moves to ${n + 3}.
        insert=f"""
WITH ins AS (
    {insert_into}
    SELECT ${n + 1} + i.ord, {values}, ${n + 2}
    FROM {unnest}
    ORDER BY i.execution_id, i.ord
)
UPDATE eventlog_head SET last_seq = ${n + 3} WHERE id = 1
""",
        find=(
            f"SELECT {columns} FROM events WHERE (execution_id, event_id) IN "
            "(SELECT * FROM unnest($1::bigint[], $2::bigint[]))"
        ),
        arrays=table.arrays({}),
        event=table.decoder({}),
        stored=table.stored(),
    )


def page_query(page: Page, columns: str) -> tuple[str, list[Any]]:
    """The statement and arguments that read ``page``; the planner chooses among the filters'
    indexes from its statistics."""
    conditions = page.conditions()
    where = " AND ".join(f"{c} {op} ${i}" for i, (c, op, _) in enumerate(conditions, 1))
    order = "DESC" if page.descending else "ASC"
    return (
        f"SELECT {columns} FROM events WHERE {where or 'true'} ORDER BY seq {order} "
        f"LIMIT ${len(conditions) + 1}",
        [*(value for _, _, value in conditions), page.limit],
    )


class PostgresStore(EventStore):
    """Events in PostgreSQL through an asyncpg pool."""

    backend = "postgres"
    events_table: ClassVar[EventTable] = EVENTS

    def __init__(
        self,
        dsn: str,
        *,
        pool_min: int = 1,
        pool_max: int = 10,
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
        read_only: bool = False,
        read_dsn: str | None = None,
        partition_days: int = 7,
    ) -> None:
        self.dsn = dsn
        self.read_dsn = read_dsn
        self.partition_interval = timedelta(days=partition_days)
        self._sql = _event_sql(self.events_table)
        self._read_only = read_only
        self._pool_min = pool_min
        self._pool_max = pool_max
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None
        self._read_pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._on_notify: Callable[[int | None], None] | None = None
        self._relisten: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> PostgresStore:
        return cls(
            settings.dsn,
            pool_min=settings.pg_pool_min,
            pool_max=settings.pg_pool_max,
            connect_timeout=settings.db_connect_timeout,
            command_timeout=settings.db_command_timeout,
            read_dsn=settings.read_dsn,
            partition_days=settings.pg_partition_days,
            **options,
        )

    async def open(self) -> None:
        logging.getLogger("asyncpg.pool").addFilter(_quiet_pool_floor)
        with _translated():
            self._pool = await self._create_pool(self.dsn, self._pool_min, self._read_only)
            if self.read_dsn is not None:
                # No connection at start (min 0, grown on demand): a standby that is down
                # makes reads answer 503, it does not keep the writer from starting.
                self._read_pool = await self._create_pool(self.read_dsn, 0, True)

    async def _create_pool(self, dsn: str, min_size: int, read_only: bool) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=self._pool_max,
            timeout=self._connect_timeout,
            command_timeout=self._command_timeout,
            # asyncpg prepares every statement; after five runs PostgreSQL may switch to a
            # generic plan made while the table was small (a sequential scan), and keep
            # it as the table grows: measured, appends fell from 6.3k/s to 2.8k/s within
            # seconds of starting on an empty database. Planning each time costs less.
            server_settings={
                "plan_cache_mode": "force_custom_plan",
                # An acknowledged event must survive a crash, whatever the server's default.
                "synchronous_commit": "on",
                # Every statement here is short, but a purge step's summary correction is
                # estimated costly (subqueries per execution that mostly never run): with
                # JIT on, compiling it took ~400 ms of a step's ~425, under the head lock.
                "jit": "off",
                # A reader (eventlog export) cannot change the database, even by mistake.
                **({"default_transaction_read_only": "on"} if read_only else {}),
            },
        )

    async def close(self) -> None:
        if self._relisten is not None:
            self._relisten.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relisten
            self._relisten = None
        if self._listener is not None:
            listener, self._listener = self._listener, None
            with contextlib.suppress(*_UNAVAILABLE):
                await listener.close()
        if self._read_pool is not None:
            read_pool, self._read_pool = self._read_pool, None
            await read_pool.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def _listener_lost(self, conn: asyncpg.Connection) -> None:
        """The LISTEN connection closed: unless we closed it, reopen it in the background."""
        if conn is not self._listener or self._pool is None:
            return
        self._listener = None
        if self._relisten is None:  # else a reopening is under way and tries again
            log.warning("the LISTEN connection to PostgreSQL closed; reopening it")
            self._relisten = asyncio.get_running_loop().create_task(self._reopen_listener())

    async def _reopen_listener(self) -> None:
        """Reconnect with backoff; then wake the callback for what was committed meanwhile."""
        assert self._on_notify is not None
        lost, delay = time.monotonic(), 0.05
        while True:
            try:
                await self.listen(self._on_notify)
            except StoreError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RELISTEN_MAX_DELAY)
                continue
            log.info("the LISTEN connection is open again after %.1f s", time.monotonic() - lost)
            self._relisten = None
            self._on_notify(None)
            return

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailable("the store is not open")
        return self._pool

    @property
    def reads(self) -> asyncpg.Pool:
        """The pool reads go to: the standby's when read_dsn is set, else the primary's."""
        if self.read_dsn is None:
            return self.pool
        if self._read_pool is None:
            raise StoreUnavailable("the store is not open")
        return self._read_pool

    @property
    def replicated(self) -> bool:
        return self.read_dsn is not None

    async def written_head(self) -> int:
        with _translated():
            head: int = await self.pool.fetchval(_HEAD)
        return head

    async def replica_lag(self) -> ReplicaLag | None:
        if self.read_dsn is None:
            return None
        try:
            with _translated():
                # The standby first: its head can only be behind a primary head read after it.
                row = await self.reads.fetchrow(
                    f"SELECT ({_HEAD}) AS head, "
                    "extract(epoch FROM now() - pg_last_xact_replay_timestamp()) AS behind"
                )
        except StoreError:
            return ReplicaLag(reachable=False)
        primary = await self.written_head()
        seqs = max(0, primary - row["head"])
        # The time since the newest replayed commit is the lag only while something is
        # missing: an idle primary commits nothing, and the standby is then up to date.
        seconds = float(row["behind"] or 0.0) if seqs else 0.0
        return ReplicaLag(True, max(0.0, seconds), seqs)

    async def migrate(self, progress: Callable[[str], None] | None = None) -> list[str]:
        done = []
        with _translated():
            async with self.pool.acquire() as conn:
                # Instances starting together take turns; the second finds nothing to do.
                await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
                try:
                    applied = await self._applied(conn, create=True)
                    for m in load_migrations(self.backend):
                        if m.version in applied:
                            continue
                        async with conn.transaction():
                            await conn.execute(m.sql)
                            await conn.execute(
                                "INSERT INTO eventlog_migrations (version, name) VALUES ($1, $2)",
                                m.version,
                                m.name,
                            )
                        done.append(m.label)
                    if await partitions.partitioned(conn):
                        await self._copy_unpartitioned(conn, progress or log.info)
                        await partitions.ahead(conn, datetime.now(UTC), self.partition_interval)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        return done

    async def _copy_unpartitioned(
        self, conn: asyncpg.Connection, progress: Callable[[str], None]
    ) -> None:
        """Copy the events of a database older than migration 0006 into the partitioned table,
        a chunk per transaction in seq order, then drop the old table. Resumable: an
        interrupted copy goes on after the last seq it committed (the service does not start
        meanwhile, as the schema is not current)."""
        if await conn.fetchval("SELECT to_regclass('events_unpartitioned')") is None:
            return
        total, first, last, top = await conn.fetchrow(
            "SELECT count(*), min(ingested_at), max(ingested_at), COALESCE(max(seq), 0) "
            "FROM events_unpartitioned"
        )
        if total:
            await partitions.cover(conn, first, last, self.partition_interval)
        # Old events are those up to the old table's last seq: whatever an instance that was not
        # stopped appended since (above it) is neither the resume point nor counted as copied.
        copied, after = await conn.fetchrow(
            "SELECT count(*), COALESCE(max(seq), 0) FROM events WHERE seq <= $1", top
        )
        started = time.monotonic()
        progress(f"copying {total - copied} of {total} events into partitions")
        while copied < total:
            async with conn.transaction():
                count, after = await conn.fetchrow(_COPY_CHUNK, after, _COPY_CHUNK_EVENTS)
            if not count:
                break
            copied += count
            elapsed = time.monotonic() - started
            progress(f"copied {copied} of {total} events ({elapsed:.0f} s)")
        if copied != total:  # never drop what was not copied
            raise StoreError(
                f"copied {copied} of the {total} events of events_unpartitioned; it is kept"
            )
        await conn.execute("DROP TABLE events_unpartitioned")
        progress(f"copied {total} events; the old table is dropped")

    @staticmethod
    async def _applied(conn: asyncpg.Connection, *, create: bool) -> set[int]:
        if create:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS eventlog_migrations (version integer PRIMARY KEY, "
                "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
        elif await conn.fetchval("SELECT to_regclass('eventlog_migrations')") is None:
            return set()
        return {r[0] for r in await conn.fetch("SELECT version FROM eventlog_migrations")}

    async def pending_migrations(self) -> list[str]:
        # Bounded as a whole, as a write is: /ready asks this, and must answer within the
        # configured timeouts however many statements it takes.
        with _translated():
            async with (
                asyncio.timeout(self._connect_timeout + self._command_timeout),
                self.pool.acquire() as conn,
            ):
                applied = await self._applied(conn, create=False)
                copying = await conn.fetchval("SELECT to_regclass('events_unpartitioned')")
        # An interrupted copy of old events (migration 0006) is still to finish: named in its
        # place among the versions, before any later migration.
        labels = pending(self.backend, applied)
        if copying:
            later = [i for i, label in enumerate(labels) if int(label[:4]) > 6]
            labels.insert(later[0] if later else len(labels), "0006_partitions (copy)")
        return labels

    async def list_partitions(self) -> list[partitions.Partition]:
        """The events table's partitions, oldest first (empty before migration 0006)."""
        with _translated():
            async with self.pool.acquire() as conn:
                return await partitions.partitions(conn)

    async def maintain(self, now: datetime) -> None:
        with _translated():
            async with self.pool.acquire() as conn:
                if await partitions.partitioned(conn):
                    for name in await partitions.ahead(conn, now, self.partition_interval):
                        log.info("created partition %s", name)

    async def purge_whole(self, before: datetime) -> int:
        with _translated():
            async with self.pool.acquire() as conn:
                if not await partitions.partitioned(conn):
                    return 0
                whole = [p for p in await partitions.partitions(conn) if p.upper <= before]
                if whole:
                    # The horizon first, under the head's lock: a reader resuming inside what
                    # is about to go is told so (expired) rather than finding it silently gone.
                    highest = " UNION ALL ".join(
                        f"SELECT max(seq) AS seq FROM {p.name}" for p in whole
                    )
                    async with conn.transaction():
                        await conn.execute(_LOCK)
                        await conn.execute(
                            "UPDATE eventlog_head SET purged_seq = GREATEST(purged_seq, "
                            f"(SELECT COALESCE(max(seq), 0) FROM ({highest}) s)) WHERE id = 1"
                        )
                # With none whole, still called: it finishes a removal interrupted after its
                # detach (whose events the horizon already covers).
                removed = await partitions.drop_before(conn, before)
        return removed.events

    async def ping(self) -> None:
        with _translated():
            await self.pool.fetchval("SELECT 1")

    async def write(
        self, keys: Sequence[Key], idempotency_keys: Sequence[str], now: datetime, decide: Decide
    ) -> list[Event]:
        try:
            return await self._write_once(keys, idempotency_keys, now, decide)
        except StoreError as e:
            cause = e.__cause__
            if not (isinstance(cause, asyncpg.CheckViolationError) and _NO_PARTITION in str(cause)):
                raise
        # No partition holds this instant: the upkeep is behind (the service was stopped, or
        # the clock jumped). Nothing was written; make it, for the database's clock and ours
        # (each stamps ingested_at on one path), and write again.
        with _translated():
            async with self.pool.acquire() as conn:
                at = await conn.fetchval("SELECT clock_timestamp()")
                ours = datetime.now(UTC)
                created = await partitions.cover(
                    conn,
                    min(at, ours),
                    max(at, ours) + self.partition_interval,
                    self.partition_interval,
                )
        log.warning("no partition held the time of a write; created %s", ", ".join(created))
        return await self._write_once(keys, idempotency_keys, now, decide)

    async def _write_once(
        self, keys: Sequence[Key], idempotency_keys: Sequence[str], now: datetime, decide: Decide
    ) -> list[Event]:
        # Bounded as a whole, so the writer answers within the configured timeouts whatever
        # hangs: the connection, a statement, or the pool's clean-up of a broken connection
        # (which goes on in the background; acquire() gets no timeout of its own, as it would
        # become the clean-up's, which then fails with nobody to hear it).
        with _translated():
            async with (
                asyncio.timeout(self._connect_timeout + self._command_timeout),
                self.pool.acquire() as conn,
            ):
                if not idempotency_keys:
                    # Optimistic: decide as if nothing were stored, and append only if so.
                    plan = decide({}, {})
                    if plan.events and not plan.records:
                        # The lock first, then the statement: its snapshot, taken with the
                        # lock held, holds every commit that could have stored one of its keys.
                        async with _dropped_if_failed(conn):
                            await conn.execute(_LOCK)
                            row = await conn.fetchrow(
                                self._sql.append_if_new,
                                *self._sql.arrays(plan.events),
                                *_delta_args(plan.events, 0),
                            )
                        if row is not None and row["base"] is not None:
                            # at: the clock once the lock was held
                            base, at = row["base"], row["at"]
                            stored = self._sql.stored
                            return [stored(e, base + i, at) for i, e in enumerate(plan.events, 1)]
                return await self._write(conn, keys, idempotency_keys, now, decide)

    async def _write(
        self,
        conn: asyncpg.Connection,
        keys: Sequence[Key],
        idempotency_keys: Sequence[str],
        now: datetime,
        decide: Decide,
    ) -> list[Event]:
        """The general case: lock, look up (a fresh snapshot), decide, write, commit."""
        executions, event_ids = [k[0] for k in keys], [k[1] for k in keys]
        async with _dropped_if_failed(conn):
            head = await conn.fetchval(_LOCK)
            sql = self._sql
            found = await conn.fetch(sql.find, executions, event_ids) if keys else []
            existing = {(r["execution_id"], r["event_id"]): sql.event(r) for r in found}
            records: dict[str, IdempotencyRecord] = {}
            if idempotency_keys:
                found = await conn.fetch(_FIND_KEYS, list(idempotency_keys), now)
                records = {r["key"]: record_from_row(r, _same) for r in found}
            plan = decide(existing, records)
            at = datetime.now(UTC)  # ingested_at: the lock is held, the commit follows
            stored = [sql.stored(e, head + i, at) for i, e in enumerate(plan.events, 1)]
            if stored:
                await conn.execute(
                    sql.insert, *sql.arrays(plan.events), head, at, head + len(stored)
                )
                await conn.execute(_UPSERT_EXECUTIONS, *_delta_args(plan.events, head))
                await conn.execute(
                    "SELECT pg_notify('eventlog', $1 || ' ' || current_schema())",
                    str(head + len(stored)),
                )
            if plan.records:
                await conn.execute(
                    _SAVE_KEYS,
                    [r.key for r in plan.records],
                    [r.fingerprint for r in plan.records],
                    [r.outcome_json for r in plan.records],
                    [r.created_at for r in plan.records],
                    [r.expires_at for r in plan.records],
                )
        return stored

    async def purge_keys(self, now: datetime) -> int:
        with _translated():
            status = await self.pool.execute(
                "DELETE FROM idempotency_keys WHERE expires_at <= $1", now
            )
        return int(status.split()[-1])

    async def idempotency_record(self, key: str, now: datetime) -> IdempotencyRecord | None:
        with _translated():
            row = await self.pool.fetchrow(_FIND_KEYS, [key], now)
        return None if row is None else record_from_row(row, _same)

    async def get(self, event_id: int, execution_id: int | None = None) -> Event | None:
        sql = f"SELECT {self._sql.columns} FROM events WHERE event_id = $1"
        args: tuple[int, ...] = (event_id,)
        if execution_id is not None:
            sql += " AND execution_id = $2"
            args += (execution_id,)
        with _translated():
            row = await self.reads.fetchrow(sql + " ORDER BY seq LIMIT 1", *args)
        return None if row is None else read_events([row], self._sql.event)[0]

    async def page(self, page: Page) -> list[Event]:
        with _translated():
            sql, args = page_query(page, self._sql.columns)
            rows = await self.reads.fetch(sql, *args)
        return read_events(rows, self._sql.event)

    async def head(self) -> int:
        with _translated():
            head: int = await self.reads.fetchval(_HEAD)
        return head

    async def purged_through(self) -> int:
        with _translated():
            horizon: int = await self.pool.fetchval(
                "SELECT purged_seq FROM eventlog_head WHERE id = 1"
            )
        return horizon

    async def purge_cut(self, before: datetime) -> int:
        # The primary key walks the oldest events first and stops at the first kept one: no
        # index on ingested_at is needed (ingested_at grows with seq: one lock assigns both).
        with _translated():
            cut: int = await self.pool.fetchval(
                "SELECT GREATEST(COALESCE((SELECT seq - 1 FROM events WHERE ingested_at >= $1 "
                "ORDER BY seq LIMIT 1), last_seq), purged_seq) FROM eventlog_head WHERE id = 1",
                before,
            )
        return cut

    async def count_through(self, through: int) -> int:
        with _translated():
            count: int = await self.pool.fetchval(
                "SELECT count(*) FROM events WHERE seq <= $1", through
            )
        return count

    async def purge_chunk(self, through: int, limit: int) -> PurgeStep:
        with _translated():
            async with (
                asyncio.timeout(self._connect_timeout + self._command_timeout),
                self.pool.acquire() as conn,
            ):
                # The step's rows read first, without the lock: in a log larger than memory
                # they are on disk, and the step would read them under it (with the caches
                # emptied, one step's DELETE of 1,000 rows took 207 ms holding the lock, the
                # summaries' update of another 337 ms).
                horizon = await conn.fetchval("SELECT purged_seq FROM eventlog_head WHERE id = 1")
                if horizon < through:
                    await conn.fetchrow(_PURGE_READ_AHEAD, horizon, min(horizon + limit, through))
                async with conn.transaction():
                    locked, removed = await self._purge_locked(conn, through, limit)
                # The writes' lock, from the head's row lock to the commit's end.
                return PurgeStep(removed, time.perf_counter() - locked)

    async def _purge_locked(
        self, conn: asyncpg.Connection, through: int, limit: int
    ) -> tuple[float, int]:
        """One step's work in the caller's transaction: when it had the head's lock, and how
        many events it removed."""
        # Committed without waiting for the WAL's flush, so the head's lock is held for the
        # step's work alone (a flush behind a checkpoint's sync took 100 ms, measured at 10
        # million events). A later durable commit flushes it too; a crash before that loses
        # steps the next purge does again.
        await conn.execute("SET LOCAL synchronous_commit = off")
        # The head's row lock first, as every write takes it: purges and writes take turns,
        # and the summaries they both change are never locked in two orders.
        horizon: int = await conn.fetchval(
            "SELECT purged_seq FROM eventlog_head WHERE id = 1 FOR UPDATE"
        )
        locked = time.perf_counter()
        high = min(horizon + limit, through)
        if high <= horizon:
            return locked, 0
        gone = await conn.fetch(_PURGE_GONE, horizon, high, _TERMINAL)
        await conn.execute(
            _PURGE_SUMMARIES,
            [r["execution_id"] for r in gone],
            [r["n"] for r in gone],
            [r["first_at"] for r in gone],
            [r["last_at"] for r in gone],
            [r["terminal"] for r in gone],
            _TERMINAL,
            through,
        )
        await conn.execute(
            "DELETE FROM executions WHERE execution_id = ANY($1::bigint[]) AND event_count <= 0",
            [r["execution_id"] for r in gone],
        )
        await conn.execute("UPDATE eventlog_head SET purged_seq = $1 WHERE id = 1", high)
        return locked, sum(r["n"] for r in gone)

    async def vacuum(self) -> None:
        # Autovacuum reuses the space in time; this does it now and refreshes the statistics.
        with _translated():
            async with self.pool.acquire() as conn:
                await conn.execute("VACUUM (ANALYZE) events, executions")

    async def execution(self, execution_id: int) -> Execution | None:
        with _translated():
            row = await self.reads.fetchrow(
                f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE execution_id = $1",
                execution_id,
            )
        return None if row is None else read_executions([row], _execution)[0]

    async def executions(
        self, before: int | None, limit: int, status: str | None = None
    ) -> list[Execution]:
        chosen = "" if status is None else " AND status = $3"
        args = () if status is None else (status,)
        with _translated():
            rows = await self.reads.fetch(
                f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE last_seq < $1{chosen} "
                "ORDER BY last_seq DESC LIMIT $2",
                MAX_ID if before is None else before,
                limit,
                *args,
            )
        return read_executions(rows, _execution)

    async def listen(self, callback: Callable[[int | None], None]) -> None:
        self._on_notify = callback
        with _translated():
            self._listener = await asyncpg.connect(self.dsn, timeout=self._connect_timeout)
            self._listener.add_termination_listener(self._listener_lost)
            schema = await self._listener.fetchval("SELECT current_schema()")
            await self._listener.add_listener(
                "eventlog", lambda _conn, _pid, _channel, payload: callback(_seq(payload, schema))
            )

    # --- node id claims (appended) ---------------------------------------------------------

    async def claim_node(
        self, holder: NodeHolder, node_id: int | None, lease: float, wall_ms: int
    ) -> Claim:
        with _translated():
            async with self.pool.acquire() as conn, conn.transaction():
                # Claimants take turns (the mode conflicts with itself, not with readers); a
                # renewal's UPDATE waits for the claim's commit.
                await conn.execute("LOCK TABLE node_claims IN SHARE ROW EXCLUSIVE MODE")
                now = await conn.fetchval("SELECT clock_timestamp()")
                rows = await conn.fetch(f"SELECT {CLAIM_COLUMNS} FROM node_claims")
                chosen, floor = choose_node(
                    [NodeClaim.from_row(r, _same) for r in rows], holder, node_id, now, wall_ms
                )
                expires = now + timedelta(seconds=lease)
                ceiling = claim_ceiling(wall_ms, floor, lease)
                await conn.execute(
                    "INSERT INTO node_claims (node_id, host, pid, token, claimed_at, renewed_at, "
                    "expires_at, ceiling_ms) VALUES ($1, $2, $3, $4, $5, $5, $6, $7) "
                    "ON CONFLICT (node_id) DO UPDATE SET host = EXCLUDED.host, "
                    "pid = EXCLUDED.pid, token = EXCLUDED.token, "
                    "claimed_at = EXCLUDED.claimed_at, renewed_at = EXCLUDED.renewed_at, "
                    "expires_at = EXCLUDED.expires_at, ceiling_ms = EXCLUDED.ceiling_ms",
                    chosen,
                    holder.host,
                    holder.pid,
                    holder.token,
                    now,
                    expires,
                    ceiling,
                )
        return Claim(chosen, floor, ceiling, expires)

    async def renew_node(
        self, holder: NodeHolder, node_id: int, lease: float, ceiling_ms: int
    ) -> datetime:
        with _translated():
            async with self.pool.acquire() as conn:
                # The server's clock decides expiry, the same clock every claimant reads.
                expires: datetime | None = await conn.fetchval(
                    "UPDATE node_claims SET renewed_at = clock_timestamp(), "
                    "expires_at = clock_timestamp() + make_interval(secs => $1), "
                    "ceiling_ms = GREATEST(ceiling_ms, $2) "
                    "WHERE node_id = $3 AND token = $4 RETURNING expires_at",
                    lease,
                    ceiling_ms,
                    node_id,
                    holder.token,
                )
                if expires is None:
                    row = await conn.fetchrow(
                        f"SELECT {CLAIM_COLUMNS} FROM node_claims WHERE node_id = $1", node_id
                    )
                    raise NodeClaimLost(
                        lost_claim_message(
                            node_id, None if row is None else NodeClaim.from_row(row, _same)
                        )
                    )
        return expires

    async def release_node(self, holder: NodeHolder, node_id: int, last_ms: int) -> None:
        with _translated():
            await self.pool.execute(
                "UPDATE node_claims SET host = NULL, pid = NULL, token = NULL, "
                "claimed_at = NULL, renewed_at = NULL, expires_at = NULL, ceiling_ms = $1 "
                "WHERE node_id = $2 AND token = $3",
                last_ms,
                node_id,
                holder.token,
            )
