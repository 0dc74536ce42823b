"""SQLite's writer thread: write calls that wait together share a transaction, each deciding
as if the ones before it had committed alone."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from eventlog.envelope import Envelope, Event
from eventlog.ids import SnowflakeGenerator
from eventlog.ingest import normalise
from eventlog.storage.base import IdempotencyRecord, Key, WritePlan
from eventlog.storage.sqlite import SqliteStore

NOW = datetime.now(UTC)
IDS = SnowflakeGenerator(3)


def event(event_id: int):  # type: ignore[no-untyped-def]
    """A new event of execution 1."""
    envelope = Envelope(execution_id=1, step="s", event_type="step.enter", event_id=event_id)
    return normalise(envelope, IDS, NOW)


async def test_waiting_writes_see_what_the_ones_before_them_wrote(tmp_path: Path):
    """Three writes queue while the thread is busy: the second sees the first's event as
    stored, a failing decide writes nothing and fails alone, seqs follow the call order."""
    store = SqliteStore(f"sqlite:///{tmp_path}/w.db")
    await store.open()
    await store.migrate()
    entered, gate = threading.Event(), threading.Event()
    seen: dict[str, dict[Key, Event]] = {}

    def blocking(existing: dict[Key, Event], records: dict[str, IdempotencyRecord]) -> WritePlan:
        entered.set()
        gate.wait(10)
        return WritePlan([event(1)])

    def deciding(name: str, events: list, fail: bool = False):  # type: ignore[no-untyped-def]
        def decide(existing: dict[Key, Event], records: dict[str, IdempotencyRecord]) -> WritePlan:
            seen[name] = existing
            if fail:
                raise ValueError(name)
            return WritePlan(events)

        return decide

    try:
        first = asyncio.create_task(store.write([(1, 1)], [], NOW, blocking))
        await asyncio.get_running_loop().run_in_executor(None, entered.wait, 10)
        second = asyncio.create_task(store.write([(1, 2)], [], NOW, deciding("b", [event(2)])))
        failing = asyncio.create_task(
            store.write([(1, 3)], [], NOW, deciding("c", [event(3)], fail=True))
        )
        again = asyncio.create_task(store.write([(1, 2)], [], NOW, deciding("d", [])))
        await asyncio.sleep(0.05)  # all three are queued behind the blocked transaction
        gate.set()
        (one,), (two,) = await first, await second
        with pytest.raises(ValueError, match="c"):
            await failing
        assert await again == []
        assert two.seq == one.seq + 1
        assert seen["d"] == {(1, 2): two}
        assert await store.get(3, 1) is None
        assert await store.head() == two.seq
    finally:
        gate.set()
        await store.close()
