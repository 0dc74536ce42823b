"""PostgreSQL only: a key committed by another instance while a writer waited for the lock."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from eventlog.storage.base import WritePlan
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
