"""PostgreSQL only: a key committed by another instance while a writer waited for the lock;
commit notifications shared by the logs of one database."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg
import pytest

from eventlog.log import EventLog
from eventlog.storage.base import Filter, WritePlan
from eventlog.storage.registry import open_store

from .test_contract import NOW, new_event


@pytest.fixture
def backend() -> str:
    """These tests are about PostgreSQL's snapshots; the run's database must exist."""
    return "postgres"


async def test_key_committed_while_waiting_for_the_lock_is_seen_on_retry(dsn):
    """The lookup that shares a statement with the lock may miss a concurrent commit; the unique
    index catches it and write() retries with a fresh lookup, so nothing is stored twice."""
    async with open_store(dsn) as store:
        await store.migrate()
        other = await asyncpg.connect(dsn)
        try:
            # Another instance: takes the lock and inserts (1, 7), not yet committed.
            tx = other.transaction()
            await tx.start()
            head = await other.fetchval(
                "SELECT last_seq FROM eventlog_head WHERE id = 1 FOR UPDATE"
            )
            await other.execute(
                "INSERT INTO events (seq, execution_id, event_id, step, event_type, status, payload, "
                "result_kind, actionable, informative, created_at, ingested_at, defaulted) "
                "VALUES ($1, 1, 7, 's', 'step.enter', 'RUNNING', 'null', 'data', true, true, now(), now(), 0)",
                head + 1,
            )
            await other.execute("UPDATE eventlog_head SET last_seq = $1 WHERE id = 1", head + 1)
            decisions = []

            def decide(existing, records):
                decisions.append(set(existing))
                return WritePlan([e for e in [new_event(1, 7)] if e.key not in existing])

            write = asyncio.create_task(store.write([(1, 7)], [], NOW, decide))
            await asyncio.sleep(0.3)  # the write is now blocked on the head row
            assert not write.done()
            await tx.commit()
            assert await asyncio.wait_for(write, 10) == []
            assert decisions == [set(), {(1, 7)}]
        finally:
            await other.close()
        assert (await store.get(7)).seq == head + 1


async def test_a_log_in_another_schema_of_the_database_never_moves_this_ones_stream_mark(dsn):
    """Commit notifications travel on one channel per database: the seqs announced by a log
    in another schema wake this log's hub but are not taken as its own, so a subscriber that
    starts later still gets this log's events from seq 1 (read the other way, it started past
    them and never saw them)."""
    other = f"t_other_{secrets.token_hex(4)}"
    base, _, _ = dsn.partition("?")
    admin = await asyncpg.connect(base)
    await admin.execute(f"CREATE SCHEMA {other}")
    try:
        async with (
            EventLog.open(dsn) as ours,
            EventLog.open(f"{base}?search_path={other}") as theirs,
        ):
            for n in range(5):
                await theirs.append({"execution_id": 1, "event_type": "x", "step": str(n)})
            await asyncio.sleep(0.3)  # their notifications reach our hub meanwhile
            assert ours.hub.last_seq == 0
            async with ours.follow(Filter(), heartbeat=None) as subscription:
                chunks = subscription.chunks()
                appended = await ours.append({"execution_id": 2, "event_type": "y", "step": "s"})
                async with asyncio.timeout(10):
                    assert [e.seq for e in await anext(chunks)] == [appended.event.seq] == [1]
    finally:
        await admin.execute(f"DROP SCHEMA {other} CASCADE")
        await admin.close()
