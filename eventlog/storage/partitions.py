"""PostgreSQL's events partitions: list them, create them ahead, remove those wholly before a
cut-off (migration 0006 partitions the table by range of ingested_at).

Partitions are contiguous: each new one starts where the last ends (or ends where the first
starts), ``interval`` wide, so instances configured with different widths never overlap; the
first starts at the UTC midnight before the first instant it must hold. Creating one is a
CREATE TABLE and an ATTACH, which locks the parent in SHARE UPDATE EXCLUSIVE mode: reads and
writes go on. Removing one is DETACH ... CONCURRENTLY and a DROP, which neither blocks them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import attrs

# Taken (transaction-scoped) by every change to the set of partitions: instances creating the
# same partition at once take turns, and the second finds it made.
_LOCK = 0x6576656E74706172  # "eventpar" in ASCII
AHEAD = 2  # partitions kept beyond the one holding now

_LIST = r"""
SELECT c.relname AS name,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz
           AS lower,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz
           AS upper,
       COALESCE(s.n_live_tup, GREATEST(c.reltuples, 0))::bigint AS rows,
       pg_total_relation_size(c.oid) AS bytes,
       i.inhdetachpending AS detaching
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE i.inhparent = to_regclass('events')
  AND pg_get_expr(c.relpartbound, c.oid) IS NOT NULL  -- not dropped while this reads
ORDER BY lower
"""


@attrs.frozen
class Partition:
    """One partition: the events ingested in [lower, upper)."""

    name: str
    lower: datetime
    upper: datetime
    rows: int  # the statistics' estimate: exact after ANALYZE, close otherwise
    bytes: int  # heap, indexes and TOAST
    detaching: bool = False  # a DETACH ... CONCURRENTLY was interrupted: it must be finished


async def partitioned(conn: asyncpg.Connection) -> bool:
    """Whether the events table is partitioned (migration 0006 is applied)."""
    kind = await conn.fetchval(
        "SELECT relkind::text FROM pg_class WHERE oid = to_regclass('events')"
    )
    return bool(kind == "p")


async def partitions(conn: asyncpg.Connection) -> list[Partition]:
    """Every partition of events, oldest first."""
    # The bounds are read back as text in the session's time zone: UTC, whatever it was.
    async with conn.transaction():
        await conn.execute("SET LOCAL TimeZone = 'UTC'")
        rows = await conn.fetch(_LIST)
    return [Partition(**dict(r)) for r in rows]


def _midnight(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _name(lower: datetime) -> str:
    return "events_p" + lower.astimezone(UTC).strftime("%Y%m%d_%H%M%S").removesuffix("_000000")


async def _create(conn: asyncpg.Connection, lower: datetime, upper: datetime) -> None:
    # A table of the parent's shape, then attached: an ATTACH of an empty table checks nothing
    # and creates the partition's indexes at once, under a lock that readers and writers pass.
    name = _name(lower)
    await conn.execute(
        f"CREATE TABLE {name} (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
    )
    await conn.execute(
        f"ALTER TABLE events ATTACH PARTITION {name} "
        f"FOR VALUES FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')"
    )


async def cover(
    conn: asyncpg.Connection, since: datetime, until: datetime, interval: timedelta
) -> list[str]:
    """Create the partitions that [``since``, ``until``] needs beyond those that exist, each
    ``interval`` wide, contiguous with them; returns the names created."""
    created = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
        held = await partitions(conn)
        if held:
            first, last = held[0].lower, held[-1].upper
        else:
            first = last = _midnight(since)
        while first > since:
            await _create(conn, first - interval, first)
            first -= interval
            created.append(_name(first))
        while last <= until:
            await _create(conn, last, last + interval)
            created.append(_name(last))
            last += interval
    return created


async def ahead(conn: asyncpg.Connection, now: datetime, interval: timedelta) -> list[str]:
    """Keep AHEAD partitions beyond the one holding ``now`` (the service's periodic upkeep)."""
    return await cover(conn, now, now + AHEAD * interval, interval)


@attrs.frozen
class Removed:
    """What drop_before did: the partitions dropped and how many events they held."""

    names: list[str]
    events: int


async def drop_before(conn: asyncpg.Connection, cutoff: datetime) -> Removed:
    """Remove every partition whose events were all ingested before ``cutoff`` (its upper
    bound is at or before it): detach it concurrently, count it, take it out of the summaries
    (correct_summaries), drop it. The partition that straddles the cut-off is left: delete its
    rows before the cut-off in chunks (straddling() names it). A partition detached by a
    removal that was interrupted is finished too. ``conn`` must not be inside a transaction
    (DETACH ... CONCURRENTLY cannot be)."""
    # A removal interrupted after its detach left a table of the same name outside the log:
    # its events are already unreadable, so it is finished first, whatever the cut-off.
    detached = [r[0] for r in await conn.fetch(_DETACHED)]
    for p in await partitions(conn):
        if p.upper > cutoff:
            break
        # Waits for the transactions that use the partition, blocking none that start meanwhile.
        how = "FINALIZE" if p.detaching else "CONCURRENTLY"
        await conn.execute(f"ALTER TABLE events DETACH PARTITION {p.name} {how}")
        detached.append(p.name)
    events = 0
    for name in detached:
        events += await conn.fetchval(f"SELECT count(*) FROM {name}")
        await correct_summaries(conn, name)
        await conn.execute(f"DROP TABLE {name}")
    return Removed(detached, events)


# Tables named as partitions, in the events table's schema, that are not partitions.
_DETACHED = r"""
SELECT c.relname FROM pg_class c
WHERE c.relkind = 'r' AND NOT c.relispartition AND c.relname LIKE 'events\_p%'
  AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = to_regclass('events'))
ORDER BY c.relname
"""


def straddling(held: list[Partition], cutoff: datetime) -> Partition | None:
    """The partition holding events both before and after ``cutoff``, if any."""
    return next((p for p in held if p.lower < cutoff < p.upper), None)


_SUMMARY_CHUNK = 1000  # executions corrected per transaction, under the log's write lock


async def correct_summaries(conn: asyncpg.Connection, removed: str) -> None:
    """Take the events of table ``removed`` out of their executions' summaries: counts fall
    by them, the first event's time is read again from what is left, and an execution with no
    event left loses its summary. A chunk of executions per transaction, each under the log's
    write lock, so that appends wait for one chunk at a time."""
    gone = await conn.fetch(
        f"SELECT execution_id, count(*) AS n FROM {removed} GROUP BY execution_id "
        "ORDER BY execution_id"
    )
    for start in range(0, len(gone), _SUMMARY_CHUNK):
        chunk = gone[start : start + _SUMMARY_CHUNK]
        ids, counts = [r["execution_id"] for r in chunk], [r["n"] for r in chunk]
        async with conn.transaction():
            await conn.execute("SELECT 1 FROM eventlog_head WHERE id = 1 FOR UPDATE")
            await conn.execute(
                """
                UPDATE executions x
                SET event_count = x.event_count - g.n,
                    first_event_at = COALESCE(
                        (SELECT min(e.created_at) FROM events e
                         WHERE e.execution_id = x.execution_id), x.first_event_at)
                FROM unnest($1::bigint[], $2::bigint[]) AS g(execution_id, n)
                WHERE x.execution_id = g.execution_id
                """,
                ids,
                counts,
            )
            await conn.execute(
                "DELETE FROM executions WHERE execution_id = ANY($1::bigint[]) "
                "AND event_count <= 0",
                ids,
            )
