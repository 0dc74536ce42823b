"""Retention over HTTP: a page or stream resumed from a removed seq is told so (410 `expired`,
`event: expired`), never handed a silent jump; summaries follow what is left; the service
removes old events by itself when `retention` is set."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import attrs
import pytest

from eventlog.config import Settings
from eventlog.log import EventLog
from eventlog.retention import purge
from eventlog.tools import read_sse
from eventlog.web import create_app

from .helpers import instant
from .test_errors import problem
from .test_read import ev, post_all, take


@pytest.fixture
async def event_log(settings: Settings) -> AsyncIterator[EventLog]:
    """A started log with quick stream timers, shared with the app."""
    quick = attrs.evolve(settings, stream_heartbeat=0.2, stream_poll_interval=0.05)
    async with EventLog(quick) as log:
        yield log


@pytest.fixture
async def purged(aiohttp_client, event_log: EventLog):
    """A client, and a log of two executions whose first five events (execution 1's three,
    execution 2's first two) were purged: the horizon is seq 5 and seq 6 … 8 are held."""
    client = await aiohttp_client(create_app(event_log.settings, event_log=event_log))
    stored = await post_all(client, [ev(1, 1), ev(1, 2), ev(2, 3), ev(1, 4), ev(2, 5)])
    await asyncio.sleep(0.002)
    kept = await post_all(client, [ev(2, 6), ev(2, 7), ev(3, 8)])
    result = await purge(event_log.store, instant(kept[0]["ingested_at"]))
    assert result.removed == 5 and result.through == int(stored[-1]["seq"])
    return client, result.through, kept


def expired_fields(doc: dict, after: int, horizon: int) -> None:
    """The fields that say what is gone and where to go on from."""
    assert doc["oldest_seq"] == str(horizon + 1)
    assert doc["after"] == str(after)
    assert doc["resume_after"] == str(horizon)


@pytest.mark.parametrize("path", ["/api/events", "/api/executions/2/events"])
async def test_a_page_after_a_removed_seq_is_410_expired(purged, path):
    """A page that would go on from below the horizon is a 410 naming the oldest held seq;
    from the horizon itself it goes on; a first page (no cursor) starts at the oldest held."""
    client, horizon, kept = purged
    for after in (0, horizon - 1):
        doc = await problem(await client.get(path, params={"after": str(after)}), 410, "expired")
        expired_fields(doc, after, horizon)
    mine = [e for e in kept if path == "/api/events" or e["execution_id"] == "2"]
    for params in ({"after": str(horizon)}, {}):
        reply = await client.get(path, params=params)
        assert reply.status == 200
        assert (await reply.json())["events"] == mine


async def test_a_descending_page_is_not_expired(purged):
    """Newest first, a cursor moves away from the removed events: the page just ends."""
    client, horizon, kept = purged
    reply = await client.get("/api/events", params={"after": str(horizon), "order": "desc"})
    assert reply.status == 200 and (await reply.json())["events"] == []


@pytest.mark.parametrize(
    ("path", "how"),
    [
        ("/api/events/stream", "header"),
        ("/api/events/stream", "query"),
        ("/api/executions/2/events/stream", "header"),
        ("/api/executions/2/events/stream", "query"),
    ],
)
async def test_a_stream_resumed_from_a_removed_seq_hears_expired_first(purged, path, how):
    """Both streams, resumed below the horizon, send `event: expired` (id: the horizon) before
    anything else, then the held events after it, then live ones."""
    client, horizon, kept = purged
    after = "2"
    kwargs = (
        {"headers": {"Last-Event-ID": after}} if how == "header" else {"params": {"after": after}}
    )
    reply = await client.get(path, **kwargs)
    messages = read_sse(reply.content)
    mine = [e for e in kept if path == "/api/events/stream" or e["execution_id"] == "2"]
    first, *backlog = await take(messages, 1 + len(mine))
    assert first.event == "expired" and first.id == str(horizon)
    expired_fields(json.loads(first.data), 2, horizon)
    assert [json.loads(m.data) for m in backlog] == mine
    (live,) = await post_all(client, [ev(2, 9)])
    (message,) = await take(messages, 1)
    assert json.loads(message.data) == live
    reply.close()


async def test_a_stream_resumed_at_the_horizon_is_not_expired(purged):
    """Resuming from the id of the expired message (the horizon) goes on, told nothing more."""
    client, horizon, kept = purged
    reply = await client.get("/api/events/stream", headers={"Last-Event-ID": str(horizon)})
    got = await take(read_sse(reply.content), len(kept))
    assert [m.event for m in got] == ["message"] * len(kept)
    reply.close()


async def test_summaries_count_only_what_is_left(purged):
    """An execution with no events left has no summary (404); one with some counts them."""
    client, horizon, kept = purged
    await problem(await client.get("/api/executions/1"), 404, "not_found")
    summary = await (await client.get("/api/executions/2")).json()
    assert summary["event_count"] == 2
    assert summary["last_seq"] == kept[1]["seq"]
    listed = await (await client.get("/api/executions")).json()
    assert [x["execution_id"] for x in listed["executions"]] == ["3", "2"]


async def test_the_service_removes_events_older_than_its_retention(aiohttp_client, settings):
    """With `retention` set, a running service removes old events by itself, in the
    background, and their execution's summary with them."""
    quick = attrs.evolve(settings, retention="1s", retention_interval=0.05)
    client = await aiohttp_client(create_app(quick))
    (old,) = await post_all(client, [ev(7, 1)])
    async with asyncio.timeout(30):
        while (await client.get("/api/executions/7")).status != 404:
            await asyncio.sleep(0.05)
    doc = await problem(await client.get("/api/events", params={"after": "0"}), 410, "expired")
    assert int(doc["resume_after"]) >= int(old["seq"])
    (new,) = await post_all(client, [ev(7, 2)])
    assert int(new["seq"]) > int(old["seq"])
