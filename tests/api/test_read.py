"""The read side on both backends: the feed, live streams (SSE), executions at a glance."""

from __future__ import annotations

import asyncio

import attrs
import pytest

from eventlog.tools import read_sse
from eventlog.web import create_app

from .helpers import assert_canonical
from .test_errors import problem


def ev(execution_id: int, event_id: int, event_type: str = "step.enter", **extra) -> dict:
    """A full envelope."""
    return {
        "execution_id": execution_id,
        "event_id": event_id,
        "event_type": event_type,
        "step": "s",
        **extra,
    }


async def post_all(client, bodies) -> list[dict]:
    """POST each body as one event; the stored events, in order."""
    out = []
    for body in bodies:
        reply = await client.post("/api/events", json=body)
        assert reply.status == 200, await reply.text()
        out.append(
            await (
                await client.get(
                    f"/api/events/{body['event_id']}",
                    params={"execution_id": str(body["execution_id"])},
                )
            ).json()
        )
    return out


async def feed(client, **query) -> list[dict]:
    """Every event of the feed, following next_cursor."""
    events, params = [], {k: str(v) for k, v in query.items()}
    while True:
        page = await (await client.get("/api/events", params=params)).json()
        assert set(page) == {"events", "next_cursor"}
        events += page["events"]
        if page["next_cursor"] is None:
            return events
        params["after"] = page["next_cursor"]


# --- the feed -----------------------------------------------------------------------------


async def test_feed_pages_every_event_once_in_seq_order(client):
    """Small pages over the whole log: each event once, seq strictly increasing."""
    stored = await post_all(client, [ev(1 + i % 3, i) for i in range(1, 24)])
    got = await feed(client, limit=4)
    assert [e["event_id"] for e in got] == [e["event_id"] for e in stored]
    seqs = [int(e["seq"]) for e in got]
    assert seqs == sorted(set(seqs))
    for event in got:
        assert_canonical(event)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"execution_id": 2}, [2, 5]),
        ({"event_type": "call.done"}, [3, 5]),
        ({"step": "fetch"}, [4, 5]),
        ({"status": "FAILED"}, [6]),
        ({"worker_id": "w-9"}, [1, 5]),
        ({"execution_id": 2, "event_type": "call.done", "step": "fetch", "worker_id": "w-9"}, [5]),
        ({"event_type": "nothing.like.this"}, []),
    ],
)
async def test_feed_filters_combine(client, query, expected):
    """Each filter narrows the feed; several at once must all hold."""
    await post_all(
        client,
        [
            ev(1, 1, worker_id="w-9"),
            ev(2, 2),
            ev(1, 3, "call.done"),
            ev(1, 4, step="fetch"),
            ev(2, 5, "call.done", step="fetch", worker_id="w-9"),
            ev(3, 6, "command.failed"),
        ],
    )
    assert [int(e["event_id"]) for e in await feed(client, limit=2, **query)] == expected


async def test_feed_after_cursor_skips_what_was_read(client):
    """?after=<seq> starts just past that seq."""
    stored = await post_all(client, [ev(1, i) for i in range(1, 6)])
    got = await feed(client, after=stored[1]["seq"])
    assert [e["event_id"] for e in got] == [e["event_id"] for e in stored[2:]]


@pytest.mark.parametrize("query", [{"limit": "0"}, {"after": "x"}, {"execution_id": "0"}])
async def test_feed_bad_parameters_are_400(client, query):
    """Bad feed parameters are problems."""
    await problem(await client.get("/api/events", params=query), 400, "invalid_parameter")


# --- executions ---------------------------------------------------------------------------

TERMINAL = [
    ("playbook.completed", "COMPLETED"),
    ("playbook.failed", "FAILED"),
    ("playbook.cancelled", "CANCELLED"),
    ("workflow.completed", "COMPLETED"),
    ("workflow.failed", "FAILED"),
    ("execution.cancelled", "CANCELLED"),
    ("playbook_completed", "COMPLETED"),
    ("playbook_failed", "FAILED"),
    ("playbook_cancelled", "CANCELLED"),
]


@pytest.mark.parametrize(("terminal", "status"), TERMINAL)
async def test_execution_summary_turns_terminal(client, terminal, status):
    """RUNNING until a terminal event, then its status; counts and times follow the events."""
    await post_all(
        client,
        [
            ev(7, 1, "playbook.started", created_at="2026-05-31T10:00:00Z"),
            ev(7, 2, "step.exit", created_at="2026-05-31T10:00:05Z"),
        ],
    )
    summary = await (await client.get("/api/executions/7")).json()
    assert summary["status"] == "RUNNING" and summary["event_count"] == 2
    await post_all(client, [ev(7, 3, terminal, created_at="2026-05-31T10:00:09Z")])
    summary = await (await client.get("/api/executions/7")).json()
    assert summary == {
        "execution_id": "7",
        "status": status,
        "event_count": 3,
        "first_event_at": "2026-05-31T10:00:00.000000Z",
        "last_event_at": "2026-05-31T10:00:09.000000Z",
        "last_event_type": terminal,
        "last_seq": summary["last_seq"],
    }


async def test_execution_summary_counts_batches_and_ignores_duplicates(client):
    """A batch updates the summary once per event; a retried event does not count twice."""
    batch = {
        "execution_id": 8,
        "events": [{"event_id": i, "name": "step.enter", "step": "s"} for i in range(1, 6)],
    }
    assert (await client.post("/api/events/batch", json=batch)).status == 200
    assert (await client.post("/api/events/batch", json=batch)).status == 200
    assert (await (await client.get("/api/executions/8")).json())["event_count"] == 5


async def test_unknown_execution_is_404(client):
    """No events, no execution."""
    await problem(await client.get("/api/executions/424242"), 404, "not_found")


async def test_executions_list_newest_activity_first_and_pages(client):
    """Listing orders by latest activity; next_cursor walks every execution once."""
    await post_all(client, [ev(1, 1), ev(2, 2), ev(3, 3), ev(1, 4)])
    first = await (await client.get("/api/executions", params={"limit": "2"})).json()
    assert [x["execution_id"] for x in first["executions"]] == ["1", "3"]
    rest = await (
        await client.get("/api/executions", params={"limit": "2", "after": first["next_cursor"]})
    ).json()
    assert [x["execution_id"] for x in rest["executions"]] == ["2"]
    assert rest["next_cursor"] is None


# --- live streams -------------------------------------------------------------------------


@pytest.fixture
def stream_settings(settings):
    """Quick heartbeats and polls, so the tests do not wait."""
    return attrs.evolve(settings, stream_heartbeat=0.2, stream_poll_interval=0.05)


@pytest.fixture
async def sclient(aiohttp_client, stream_settings):
    """A client for a service with quick stream timers."""
    return await aiohttp_client(create_app(stream_settings))


async def take(messages, count: int, timeout: float = 5.0) -> list:
    """The next ``count`` messages of a stream."""
    out = []
    async with asyncio.timeout(timeout):
        async for message in messages:
            out.append(message)
            if len(out) == count:
                return out
    return out


async def test_stream_delivers_new_events_with_seq_as_id(sclient):
    """A subscriber from now receives each new event once, id = seq, data = canonical event."""
    reply = await sclient.get("/api/events/stream")
    assert reply.status == 200 and reply.content_type == "text/event-stream"
    messages = read_sse(reply.content)
    stored = await post_all(sclient, [ev(1, i) for i in range(1, 4)])
    got = await take(messages, 3)
    assert [m.id for m in got] == [e["seq"] for e in stored]
    import json

    assert [json.loads(m.data) for m in got] == stored
    reply.close()


@pytest.mark.parametrize("how", ["header", "query"])
async def test_resume_sends_what_was_missed_then_live_without_gap_or_repeat(sclient, how):
    """Last-Event-ID (or ?after=) replays the missed events, then the live ones follow."""
    stored = await post_all(sclient, [ev(1, i) for i in range(1, 6)])
    cursor = stored[1]["seq"]
    kwargs = (
        {"headers": {"Last-Event-ID": cursor}} if how == "header" else {"params": {"after": cursor}}
    )
    reply = await sclient.get("/api/events/stream", **kwargs)
    messages = read_sse(reply.content)
    backlog = await take(messages, 3)
    live_events = await post_all(sclient, [ev(1, i) for i in range(6, 9)])
    live = await take(messages, 3)
    assert [m.id for m in backlog + live] == [e["seq"] for e in stored[2:] + live_events]
    reply.close()


async def test_execution_stream_sees_only_its_execution(sclient):
    """The per-execution stream filters by execution; other streams' events never appear."""
    reply = await sclient.get("/api/executions/2/events/stream", params={"after": "0"})
    messages = read_sse(reply.content)
    await post_all(sclient, [ev(1, 1), ev(2, 2), ev(3, 3), ev(2, 4)])
    import json

    got = await take(messages, 2)
    assert [json.loads(m.data)["event_id"] for m in got] == ["2", "4"]
    reply.close()


async def test_idle_stream_sends_heartbeat_comments(sclient):
    """A comment line arrives during quiet periods (every stream_heartbeat seconds)."""
    reply = await sclient.get("/api/events/stream")
    lines = []
    async with asyncio.timeout(3):
        while len([line for line in lines if line.startswith(b": keep-alive")]) < 2:
            lines.append(await reply.content.readline())
    reply.close()


async def test_subscriber_too_far_behind_is_cut_off_and_resumes(aiohttp_client, stream_settings):
    """A burst larger than a subscriber's queue ends its stream with a cutoff message naming its
    last seq; resuming from there delivers the rest, with no gap."""
    client = await aiohttp_client(create_app(attrs.evolve(stream_settings, stream_queue_events=5)))
    reply = await client.get("/api/events/stream")
    messages = read_sse(reply.content)
    assert await reply.content.readline() == b": stream open\n"  # subscribed
    batch = [ev(1, i) for i in range(1, 41)]
    assert (await client.post("/api/events/batch", json=batch)).status == 200
    got = []
    async with asyncio.timeout(5):
        async for message in messages:
            got.append(message)
            if message.event == "cutoff":
                break
    assert got[-1].event == "cutoff"
    delivered = [m for m in got if m.event == "message"]
    assert got[-1].id == (delivered[-1].id if delivered else got[-1].id)
    reply.close()
    resumed = await client.get("/api/events/stream", headers={"Last-Event-ID": got[-1].id})
    rest = await take(read_sse(resumed.content), 40 - len(delivered))
    ids = [int(m.id) for m in delivered + rest]
    assert ids == sorted(set(ids)) and len(ids) == 40
    resumed.close()


async def test_bad_last_event_id_is_400(sclient):
    """A Last-Event-ID that is not a seq is refused before the stream opens."""
    reply = await sclient.get("/api/events/stream", headers={"Last-Event-ID": "abc"})
    await problem(reply, 400, "invalid_parameter")


async def test_filter_with_a_nul_is_400(client):
    """A filter no text column can hold is a bad parameter, not a database outage."""
    await problem(
        await client.get("/api/events", params={"step": "a\x00b"}), 400, "invalid_parameter"
    )
