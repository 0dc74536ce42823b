"""The writer's decision (a pure function of what is stored) and its injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest

from eventlog.envelope import Envelope, Event, NewEvent
from eventlog.ids import SnowflakeGenerator
from eventlog.ingest import Idempotency, Job, Receipt, Writer, decide, normalise
from eventlog.problems import EventConflict, IdempotencyConflict
from eventlog.storage.base import IdempotencyRecord
from eventlog.storage.sqlite import SqliteStore

MOMENT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TTL = timedelta(hours=1)
IDS = SnowflakeGenerator(1)


def new(event_id: int, step: str = "a", execution_id: int = 5) -> NewEvent:
    """An event as the writer receives it."""
    envelope = Envelope(execution_id=execution_id, step=step, event_type="step.enter")
    return normalise(attrs.evolve(envelope, event_id=event_id), IDS, MOMENT)


def stored(event: NewEvent, seq: int) -> dict[tuple[int, int], Event]:
    """``event`` as already in the store."""
    return {event.key: Event.stored(event, seq, MOMENT)}


def test_new_events_are_written_in_order_with_a_receipt():
    """Nothing stored: every event is written, none is a duplicate."""
    jobs = [Job([new(1), new(2)], "r1"), Job([new(3)], "r2")]
    decision = decide(jobs, {}, {}, MOMENT, TTL)
    assert [e.event_id for e in decision.writes.events] == [1, 2, 3]
    assert decision.outcomes == [
        (Receipt("r1", (1, 2), ()), [((5, 1), False), ((5, 2), False)]),
        (Receipt("r2", (3,), ()), [((5, 3), False)]),
    ]
    assert decision.writes.records == []


def test_a_stored_event_sent_again_is_a_duplicate_and_not_written():
    """Same content as stored: acknowledged as a duplicate; the request's new events go in."""
    decision = decide([Job([new(1), new(2)], "r")], stored(new(1), 10), {}, MOMENT, TTL)
    assert [e.event_id for e in decision.writes.events] == [2]
    assert decision.outcomes == [(Receipt("r", (1, 2), (0,)), [((5, 1), True), ((5, 2), False)])]


def test_an_event_sent_twice_in_one_group_is_written_once():
    """Two requests of one transaction carry the same event: the second is the duplicate."""
    decision = decide([Job([new(1)], "r1"), Job([new(1)], "r2")], {}, {}, MOMENT, TTL)
    assert [e.event_id for e in decision.writes.events] == [1]
    assert decision.outcomes[1] == (Receipt("r2", (1,), (0,)), [((5, 1), True)])


def test_other_content_under_a_stored_key_refuses_the_whole_request():
    """A conflict refuses the request with all its events; other requests go on."""
    jobs = [Job([new(2), new(1, step="other")], "r1"), Job([new(3)], "r2")]
    decision = decide(jobs, stored(new(1), 10), {}, MOMENT, TTL)
    assert isinstance(decision.outcomes[0], EventConflict)
    assert [e.event_id for e in decision.writes.events] == [3]


def test_an_idempotency_key_is_saved_replayed_or_refused():
    """A new key saves the receipt until moment + ttl; the same key and fingerprint replays
    it; the same key with another fingerprint is a conflict, and nothing of it is written."""
    first = decide([Job([new(1)], "r1", Idempotency("k", "f1"))], {}, {}, MOMENT, TTL)
    (record,) = first.writes.records
    assert (record.key, record.fingerprint) == ("k", "f1")
    assert (record.created_at, record.expires_at) == (MOMENT, MOMENT + TTL)
    records = {"k": record}
    again = decide([Job([new(1)], "r2", Idempotency("k", "f1"))], {}, records, MOMENT, TTL)
    assert again.outcomes == [(Receipt("r1", (1,), (), replayed=True), [])]
    assert again.writes.events == [] and again.writes.records == []
    other = decide([Job([new(2)], "r3", Idempotency("k", "f2"))], {}, records, MOMENT, TTL)
    assert isinstance(other.outcomes[0], IdempotencyConflict)
    assert other.writes.events == []


def test_a_key_used_twice_in_one_group_replays_the_first_request():
    """Two requests under one key in one transaction: the second replays the first."""
    jobs = [Job([new(1)], "r1", Idempotency("k", "f")), Job([new(1)], "r2", Idempotency("k", "f"))]
    decision = decide(jobs, {}, {}, MOMENT, TTL)
    assert decision.outcomes[1] == (Receipt("r1", (1,), (), replayed=True), [])
    assert len(decision.writes.records) == 1


async def test_the_writer_judges_idempotency_keys_by_its_clock(tmp_path: Path):
    """Records are stamped and expired by the injected clock: once it passes the TTL, the key
    may be used for another request, with no waiting in real time."""
    now = [MOMENT]
    store = SqliteStore(f"sqlite:///{tmp_path}/w.db")
    await store.open()
    await store.migrate()
    writer = Writer(
        store, queue_events=100, max_batch=100, idempotency_ttl=60, clock=lambda: now[0]
    )
    writer.start()
    try:
        await writer.submit([new(1)], request_id="r1", idempotency=Idempotency("k", "f1"))
        record = await store.idempotency_record("k", MOMENT)
        assert isinstance(record, IdempotencyRecord)
        assert record.expires_at == MOMENT + timedelta(seconds=60)
        now[0] = MOMENT + timedelta(seconds=30)
        with pytest.raises(IdempotencyConflict):
            await writer.submit([new(2)], request_id="r2", idempotency=Idempotency("k", "f2"))
        now[0] = MOMENT + timedelta(seconds=61)
        receipt, appended = await writer.submit(
            [new(2)], request_id="r3", idempotency=Idempotency("k", "f2")
        )
        assert not receipt.replayed and receipt.request_id == "r3"
        assert [a.duplicate for a in appended] == [False]
    finally:
        await writer.stop()
        await store.close()
