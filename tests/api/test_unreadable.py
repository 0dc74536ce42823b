"""A stored row that cannot be rendered (written behind eventlog's back, or by a version that
took what it should not have): reads that need it answer a 502 problem naming it and log one
error line; streams, the hub and exports say so and go on past it. Never a 500, never a stall."""

from __future__ import annotations

import asyncio
import io
import logging
import sqlite3

import asyncpg
import attrs
import orjson
import pytest

from eventlog import tools
from eventlog.log import EventLog
from eventlog.storage.base import StoreError
from eventlog.tools import read_sse
from eventlog.web import create_app

from .test_errors import problem
from .test_read import ev, post_all


@pytest.fixture
async def sclient(aiohttp_client, settings):
    """A client for a service with quick stream timers."""
    quick = attrs.evolve(settings, stream_heartbeat=0.2, stream_poll_interval=0.05)
    return await aiohttp_client(create_app(quick))


_SPOIL_SUMMARY = (
    "UPDATE executions SET first_event_at = $1 "
    "WHERE execution_id = (SELECT execution_id FROM events WHERE seq = $2)"
)


async def spoil(dsn: str, seq: int, *, summary: bool = False) -> None:
    """Write a timestamp no reader can render into the event at ``seq`` (and its execution's
    summary), as a direct write to the database could: -infinity on PostgreSQL, an instant
    before year 1 on SQLite."""
    if dsn.startswith("sqlite"):
        with sqlite3.connect(dsn.removeprefix("sqlite:///")) as db:
            db.execute("UPDATE events SET created_at = ? WHERE seq = ?", (-(2**62), seq))
            if summary:
                db.execute(_SPOIL_SUMMARY.replace("$1", "?").replace("$2", "?"), (-(2**62), seq))
        return
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("UPDATE events SET created_at = '-infinity' WHERE seq = $1", seq)
        if summary:
            await conn.execute(_SPOIL_SUMMARY.replace("$1", "'-infinity'").replace("$2", "$1"), seq)
    finally:
        await conn.close()


NAMED = "the event at seq 2 (execution 5, event 12)"


async def test_reads_that_meet_an_unreadable_row_are_a_502_naming_it(client, dsn, caplog):
    """By id, the feed and the execution's page: 502 unreadable_row naming seq, execution and
    event, with one error line in the log; a page past it reads fine."""
    await post_all(client, [ev(5, 11), ev(5, 12), ev(5, 13)])
    await spoil(dsn, 2)
    for path, params in [
        ("/api/events/12", {}),
        ("/api/events", {}),
        ("/api/events", {"order": "desc"}),
        ("/api/executions/5/events", {}),
    ]:
        caplog.clear()
        with caplog.at_level(logging.ERROR, "eventlog"):
            doc = await problem(await client.get(path, params=params), 502, "unreadable_row")
        assert NAMED in doc["detail"], path
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and NAMED in errors[0].getMessage()
    page = await (await client.get("/api/events", params={"after": "2"})).json()
    assert [e["seq"] for e in page["events"]] == ["3"]
    assert (await client.get("/api/events/11")).status == 200


async def test_an_unreadable_summary_is_a_502_naming_the_execution(client, dsn):
    """The executions list and the summary name the execution whose summary cannot be read,
    and its last seq, past which the list pages on."""
    await post_all(client, [ev(4, 10), ev(5, 11)])
    await spoil(dsn, 2, summary=True)
    for path in ("/api/executions", "/api/executions/5"):
        doc = await problem(await client.get(path), 502, "unreadable_row")
        assert "the summary of execution 5 (last seq 2)" in doc["detail"]
    assert (await client.get("/api/executions/4")).status == 200
    page = await (await client.get("/api/executions", params={"after": "2"})).json()
    assert [x["execution_id"] for x in page["executions"]] == ["4"]


async def test_streams_say_so_and_go_on_past_an_unreadable_row(sclient, dsn):
    """From after=0 the stream sends the events before it, an `event: unreadable` message
    whose id is its seq, then the rest and live events: no stall."""
    await post_all(sclient, [ev(5, 11), ev(5, 12), ev(5, 13)])
    await spoil(dsn, 2)
    reply = await sclient.get("/api/events/stream", params={"after": "0"})
    messages = read_sse(reply.content)
    got = []
    async with asyncio.timeout(10):
        async for message in messages:
            got.append(message)
            if len(got) == 3:
                await post_all(sclient, [ev(5, 14)])
            if len(got) == 4:
                break
    reply.close()
    assert [(m.event, m.id) for m in got] == [
        ("message", "1"),
        ("unreadable", "2"),
        ("message", "3"),
        ("message", "4"),
    ]
    notice = orjson.loads(got[1].data)
    assert notice["seq"] == "2" and notice["execution_id"] == "5" and notice["event_id"] == "12"
    assert NAMED in notice["reason"]


_COPY = (
    "INSERT INTO events SELECT {seq}, execution_id, {event_id}, step, event_type, status, "
    "payload, meta, worker_id, result_kind, result_uri, event_ids, actionable, informative, "
    "{created_at}, ingested_at, defaulted FROM events WHERE seq = 1"
)


async def insert_spoiled(dsn: str, seq: int, event_id: int) -> None:
    """Append, behind the service's back, a copy of the first event with an unreadable
    timestamp at ``seq``, and wake the service's readers as another instance would."""
    if dsn.startswith("sqlite"):
        with sqlite3.connect(dsn.removeprefix("sqlite:///")) as db:
            db.execute(_COPY.format(seq=seq, event_id=event_id, created_at=-(2**62)))
        return
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            sql = _COPY.format(seq=seq, event_id=event_id, created_at="'-infinity'")
            await conn.execute(sql)
            await conn.execute("UPDATE eventlog_head SET last_seq = $1", seq)
            await conn.execute("SELECT pg_notify('eventlog', $1)", str(seq))
    finally:
        await conn.close()


async def test_live_streams_go_on_past_an_unreadable_row(sclient, dsn, caplog):
    """A row the hub cannot read arrives while streams are live: every subscriber it may
    concern is told, the hub logs it, and the events after it still arrive."""
    replies = [
        await sclient.get("/api/executions/5/events/stream"),
        await sclient.get("/api/events/stream"),
    ]
    streams = [read_sse(reply.content) for reply in replies]
    await post_all(sclient, [ev(5, 11)])
    with caplog.at_level(logging.ERROR, "eventlog"):
        await insert_spoiled(dsn, 2, 12)
        await asyncio.sleep(0.3)  # the hub meets it (a poll, or the notification)
        await post_all(sclient, [ev(5, 13)])
        for reply, messages in zip(replies, streams, strict=True):
            got = []
            async with asyncio.timeout(10):
                async for message in messages:
                    got.append((message.event, message.id))
                    if len(got) == 3:
                        break
            reply.close()
            assert got == [("message", "1"), ("unreadable", "2"), ("message", "3")]
    assert any(NAMED in r.getMessage() for r in caplog.records)


async def test_the_library_and_export_go_on_past_an_unreadable_row(settings, dsn, caplog):
    """subscribe() skips it with an error line; export writes the rest, then fails naming it."""
    async with EventLog(settings) as log:
        for i in (11, 12, 13):
            await log.append(ev(5, i))
        await spoil(dsn, 2)
        with caplog.at_level(logging.ERROR, "eventlog"):
            seen = []
            async with log.subscribe(after=0) as events:
                async for event in events:
                    seen.append(event.seq)
                    if event.seq == 3:
                        break
        assert seen == [1, 3]
        assert any(NAMED in r.getMessage() for r in caplog.records)
    out = io.BytesIO()
    with pytest.raises(StoreError, match="seq 2"):
        await tools.export(settings, None, out)
    assert [orjson.loads(line)["seq"] for line in out.getvalue().splitlines()] == ["1", "3"]
