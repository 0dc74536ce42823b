"""Read-your-writes on one store: every write reply carries the seq it reached (Eventlog-Seq),
and a read with ?min_seq= is answered once the reads hold that seq; a seq never committed is a
400. (The wait, and its 503, against a real hot standby: tests/process/test_replica.py.)"""

from __future__ import annotations

import pytest

from .test_errors import problem
from .test_read import ev

READ_PATHS = (
    "/api/events",
    "/api/executions",
    "/api/executions/{execution_id}",
    "/api/executions/{execution_id}/events",
    "/api/events/{event_id}",
)


async def test_single_and_batch_replies_carry_the_highest_seq_of_their_events(client):
    """Eventlog-Seq is the seq of the event (single) and of the last event (batch)."""
    one = await client.post("/api/events", json=ev(1, 1))
    assert one.status == 200
    batch = await client.post("/api/events/batch", json=[ev(1, 2), ev(2, 3), ev(1, 4)])
    assert batch.status == 200
    feed = await (await client.get("/api/events")).json()
    seqs = {e["event_id"]: e["seq"] for e in feed["events"]}
    assert one.headers["Eventlog-Seq"] == seqs["1"]
    assert batch.headers["Eventlog-Seq"] == seqs["4"] == max(seqs.values(), key=int)


async def test_a_duplicate_and_a_replay_carry_a_seq_at_least_that_of_their_events(client):
    """A retried event names its stored seq; a replayed Idempotency-Key request a seq at or
    past its events', so min_seq with it sees them."""
    first = await client.post("/api/events", json=ev(1, 1))
    await client.post("/api/events", json=ev(1, 2))
    again = await client.post("/api/events", json=ev(1, 1))
    assert (await again.json())["duplicate"] is True
    assert again.headers["Eventlog-Seq"] == first.headers["Eventlog-Seq"]
    key = {"Idempotency-Key": "ryw-1"}
    sent = await client.post("/api/events/batch", json=[ev(2, 3), ev(2, 4)], headers=key)
    replay = await client.post("/api/events/batch", json=[ev(2, 3), ev(2, 4)], headers=key)
    assert (await replay.json())["duplicate"] is True
    assert int(replay.headers["Eventlog-Seq"]) >= int(sent.headers["Eventlog-Seq"])


async def test_an_empty_batch_carries_no_seq(client):
    """Nothing written, nothing to wait for: no Eventlog-Seq."""
    reply = await client.post("/api/events/batch", json=[])
    assert reply.status == 200
    assert "Eventlog-Seq" not in reply.headers


@pytest.mark.parametrize("path", READ_PATHS)
async def test_read_with_min_seq_of_a_write_sees_the_write(client, path):
    """Every read route takes min_seq; with the seq of a write, the write is there."""
    reply = await client.post("/api/events", json=ev(5, 9))
    seq = reply.headers["Eventlog-Seq"]
    url = path.format(execution_id=5, event_id=9)
    read = await client.get(url, params={"min_seq": seq})
    assert read.status == 200, await read.text()
    assert '"execution_id":"5"' in (await read.text())


@pytest.mark.parametrize("path", [*READ_PATHS, "/api/events/stream"])
async def test_min_seq_past_the_last_committed_seq_is_400_at_once(client, path):
    """No reply ever named a seq past the log's head: a 400 naming min_seq, not a wait."""
    reply = await client.post("/api/events", json=ev(5, 9))
    beyond = int(reply.headers["Eventlog-Seq"]) + 1
    url = path.format(execution_id=5, event_id=9)
    read = await client.get(url, params={"min_seq": str(beyond)})
    doc = await problem(read, 400, "invalid_parameter")
    assert doc["errors"] == [
        {"path": "$query.min_seq", "message": "is past the last seq committed"}
    ]


async def test_min_seq_that_is_not_a_seq_is_400(client):
    """min_seq is a decimal seq, like after."""
    read = await client.get("/api/events", params={"min_seq": "-1"})
    doc = await problem(read, 400, "invalid_parameter")
    assert doc["errors"][0]["path"] == "$query.min_seq"
