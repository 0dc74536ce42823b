"""The embedded library API (EventLog.open and its methods), on both backends."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

import orjson
import pytest

from eventlog.codec import converter
from eventlog.config import ConfigError
from eventlog.envelope import Envelope
from eventlog.log import EventLog
from eventlog.problems import EventConflict, InvalidEnvelope, NotFound
from eventlog.web import create_app

from .api.helpers import CONTRACT_BODIES, assert_reads_back


def event(execution_id: int, n: int, **extra: object) -> dict[str, object]:
    """A small envelope with a fixed id, so a test can name it again."""
    return {
        "execution_id": execution_id,
        "event_id": execution_id * 1000 + n,
        "event_type": "step.enter",
        "step": f"s{n}",
        **extra,
    }


@pytest.fixture
async def log(dsn):
    """EventLog.open on the test's store."""
    async with EventLog.open(dsn, stream_queue_events=5) as log:
        yield log


async def test_open_takes_settings_as_keywords_and_refuses_unknown_ones(dsn):
    """Every setting is a keyword of open(); an unknown one or a bad value is a ConfigError."""
    async with EventLog.open(dsn, writer_max_batch=7) as log:
        assert log.settings.writer_max_batch == 7 and log.settings.dsn == dsn
    with pytest.raises(ConfigError, match="no_such_setting"):
        EventLog.open(dsn, no_such_setting=1)
    with pytest.raises(ConfigError, match="writer_max_batch"):
        EventLog.open(dsn, writer_max_batch=0)


@pytest.mark.parametrize("dialect", sorted(CONTRACT_BODIES))
async def test_a_dict_in_each_dialect_reads_back_as_http_serves_it(log, dialect):
    """Each producer dialect is accepted as a dict; get() returns every sent field equal."""
    body = CONTRACT_BODIES[dialect]
    appended = await log.append(body)
    assert not appended.duplicate
    stored = await log.get(appended.event.event_id, appended.event.execution_id)
    assert stored == appended.event
    assert_reads_back(body, orjson.loads(orjson.dumps(converter.unstructure(stored))))
    assert stored.payload == body.get("payload", body.get("context"))


async def test_an_envelope_object_is_validated_like_a_dict(log):
    """The package's Envelope class is accepted, and checked by the same rules."""
    at = datetime(2026, 5, 31, 10, 0, tzinfo=UTC)
    appended = await log.append(
        Envelope(execution_id=9, step="fetch", event_type="call.done", created_at=at)
    )
    assert appended.event.created_at == at and appended.event.step == "fetch"
    with pytest.raises(InvalidEnvelope) as caught:
        await log.append(Envelope(execution_id=9, step="", event_type="call.done"))
    assert [e.path for e in caught.value.errors or []] == ["$.step"]
    with pytest.raises(InvalidEnvelope):  # a naive time is refused, not guessed
        await log.append(
            Envelope(execution_id=9, step="a", event_type="b", created_at=datetime(2026, 1, 1))
        )


async def test_a_bad_envelope_raises_the_problem_http_would_reply(log, aiohttp_client, settings):
    """InvalidEnvelope carries the same code, status and field errors as the HTTP reply."""
    bad = {"execution_id": "0x1", "name": "step.enter", "status": 7}
    with pytest.raises(InvalidEnvelope) as caught:
        await log.append(bad)
    client = await aiohttp_client(create_app(settings))
    reply = await client.post("/api/events", json=bad)
    assert reply.status == caught.value.status == 422
    assert await reply.json() == caught.value.to_dict()
    assert caught.value.code == "invalid_envelope"
    assert {e.path for e in caught.value.errors or []} == {"$.execution_id", "$.step", "$.status"}


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, (1, 2), {1: "x"}, datetime(2026, 1, 1, tzinfo=UTC), {1, 2}, b"x"],
    ids=["nan", "inf", "tuple", "int-key", "datetime", "set", "bytes"],
)
async def test_a_python_value_json_cannot_hold_is_refused_not_changed(log, value):
    """What could not arrive over HTTP is an InvalidEnvelope naming where it is."""
    with pytest.raises(InvalidEnvelope) as caught:
        await log.append(event(3, 1, payload={"ok": 1, "bad": [value]}))
    assert [e.path for e in caught.value.errors or []][0].startswith("$.payload.bad[0]")
    with pytest.raises(NotFound):
        await log.get(3001)


async def test_a_retry_is_a_duplicate_and_other_content_under_the_id_a_conflict(log):
    """The same event twice is stored once; different content under its key raises."""
    first = await log.append(event(4, 1))
    again = await log.append(event(4, 1))
    assert again.duplicate and again.event.seq == first.event.seq
    with pytest.raises(EventConflict):
        await log.append(event(4, 1, step="other"))
    assert [e.seq async for e in log.events(4)] == [first.event.seq]


async def test_append_batch_is_all_or_none_and_replays_under_its_key(log):
    """One bad item stores nothing and names the item; a key makes a retry a replay."""
    with pytest.raises(InvalidEnvelope) as caught:
        await log.append_batch([event(5, 1), {"execution_id": 5, "step": "x"}])
    assert [e.path for e in caught.value.errors or []] == ["$[1].event_type"]
    assert [e async for e in log.events(5)] == []
    batch = [event(5, 1), Envelope(execution_id=5, step="s2", event_type="step.exit")]
    receipt, appended = await log.append_batch(batch, idempotency_key="k-5")
    assert [a.duplicate for a in appended] == [False, False] and not receipt.replayed
    replay, _ = await log.append_batch(batch, idempotency_key="k-5")
    assert replay.replayed and replay.event_ids == receipt.event_ids
    assert len([e async for e in log.events(5)]) == 2


async def test_get_raises_not_found_for_an_unknown_id(log):
    """An id nobody stored is NotFound, with the HTTP problem's code."""
    with pytest.raises(NotFound) as caught:
        await log.get(123456789)
    assert caught.value.code == "not_found" and caught.value.status == 404


async def test_events_pages_through_the_log_with_cursors_filters_and_limits(log):
    """events() reads page by page in seq order; after, limit, descending and filters apply."""
    await log.append_batch([event(6, n, worker_id=f"w{n % 2}") for n in range(1, 12)])
    await log.append(event(7, 1))
    all6 = [e async for e in log.events(6, page_size=3)]
    assert [e.step for e in all6] == [f"s{n}" for n in range(1, 12)]
    seqs = [e.seq for e in all6]
    assert seqs == sorted(seqs) and len(set(seqs)) == 11
    pages = [len(p) async for p in log.pages(6, page_size=4)]
    assert pages == [4, 4, 3]
    assert [e.seq async for e in log.events(6, after=seqs[7])] == seqs[8:]
    assert [e.seq async for e in log.events(6, limit=2)] == seqs[:2]
    assert [e.seq async for e in log.events(6, descending=True, page_size=5)] == seqs[::-1]
    odd = [e.step async for e in log.events(worker_id="w1", page_size=2)]
    assert odd == [f"s{n}" for n in range(1, 12, 2)]
    assert len([e async for e in log.events()]) == 12


async def test_subscribe_sees_every_event_once_in_commit_order_while_writers_race(log):
    """Stored events first, then live ones from several writers: no gap, no repeat."""
    await log.append_batch([event(8, n) for n in range(1, 4)])
    live = log.subscribe(after=0, execution_id=8)

    async def writer(w: int) -> None:
        for n in range(20):
            await log.append(event(8, 100 + w * 20 + n))

    writers = asyncio.gather(*(writer(w) for w in range(4)))
    seen = []
    async with asyncio.timeout(30):
        async for e in live:
            seen.append(e)
            if len(seen) == 83:
                break
    await writers
    await live.aclose()
    stored = [e async for e in log.events(8)]
    assert [e.seq for e in seen] == [e.seq for e in stored]  # same events, same order, once


async def test_a_subscriber_too_slow_for_its_queue_carries_on_from_the_store(log):
    """A burst far past stream_queue_events (5 here) still arrives whole and in order."""
    async with log.subscribe(execution_id=9) as live:
        await log.append_batch([event(9, n) for n in range(1, 60)])
        for n in range(60, 80):
            await log.append(event(9, n))
        got = []
        async with asyncio.timeout(30):
            async for e in live:
                got.append(e.step)
                if len(got) == 79:
                    break
    assert got == [f"s{n}" for n in range(1, 80)]


async def test_subscribe_from_now_skips_the_past_and_filters(log):
    """With no ``after`` only events committed after the call arrive; filters apply."""
    await log.append(event(10, 1, event_type="old"))
    live = log.subscribe(event_type="new")
    await log.append(event(10, 2, event_type="other"))
    await log.append(event(10, 3, event_type="new"))
    async with asyncio.timeout(10):
        first = await anext(live)
    assert first.step == "s3"
    await live.aclose()


async def test_a_subscription_ends_when_the_log_closes(dsn):
    """Closing the log ends every live iteration instead of leaving it waiting."""
    log = EventLog.open(dsn)
    await log.start()
    live = log.subscribe()
    reader = asyncio.create_task(anext(live, None))
    await asyncio.sleep(0.05)
    await log.close()
    async with asyncio.timeout(5):
        assert await reader is None


async def test_execution_and_executions_summarise_the_log(log):
    """execution(id) sums up one execution; executions() lists them newest activity first."""
    await log.append(event(11, 1))
    await log.append(event(12, 1))
    await log.append(event(11, 2, event_type="playbook.completed"))
    summary = await log.execution(11)
    assert summary.event_count == 2 and summary.status == "COMPLETED"
    assert [x.execution_id for x in await log.executions()] == [11, 12]
    assert [x.execution_id for x in await log.executions(limit=1)] == [11]
    with pytest.raises(NotFound):
        await log.execution(99)


async def test_breaking_out_of_a_subscription_releases_it(log):
    """A reader that breaks out of the loop, or never iterates, does not stay subscribed."""
    await log.append(event(13, 1))
    for _ in range(5):
        async for _ in log.subscribe(after=0):
            break
    log.subscribe(execution_id=13)  # never iterated, dropped at once
    await asyncio.sleep(0)
    assert log.hub.subscriber_count == 0
    async with log.subscribe() as live:
        assert log.hub.subscriber_count == 1
        assert live is not None
    assert log.hub.subscriber_count == 0


async def test_subscribing_to_a_closed_log_ends_at_once(dsn):
    """After close, a new subscription ends instead of waiting for ever."""
    log = EventLog.open(dsn)
    await log.start()
    await log.append(event(14, 1))
    await log.close()
    async with asyncio.timeout(5):
        assert [e async for e in log.subscribe(after=0)] == []


async def test_a_batch_with_a_key_refuses_a_non_json_value_like_one_without(log):
    """Validation comes before the idempotency fingerprint: the same InvalidEnvelope."""
    bad = [event(15, 1, payload={(1, 2): "x"})]
    for key in (None, "k-15"):
        with pytest.raises(InvalidEnvelope):
            await log.append_batch(bad, idempotency_key=key)


async def test_a_payload_nested_past_the_recursion_limit_is_refused_not_a_crash(log):
    """Python values nested deeper than the interpreter can walk are an InvalidEnvelope."""
    deep: object = 1
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(InvalidEnvelope):
        await log.append(event(16, 1, payload=deep))
