"""What each field may hold: the edges of every range are stored and read back equal on every
read path, on both stores; one step past an edge is a 422 naming the field, and stores nothing."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from eventlog.codec import MAX_DEPTH, MAX_INT_DIGITS
from eventlog.log import EventLog
from eventlog.problems import InvalidEnvelope

from .helpers import assert_reads_agree, assert_reads_back, every_read

_executions = itertools.count(900_000)
NDJSON = {"Content-Type": "application/x-ndjson"}
JSON = {"Content-Type": "application/json"}


def envelope(**fields: Any) -> dict[str, Any]:
    """A minimal envelope of an execution of its own, with ``fields``."""
    return {"execution_id": next(_executions), "event_type": "t", "step": "s", **fields}


def nested(depth: int) -> Any:
    """Arrays and objects ``depth`` levels deep."""
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


async def stored_and_read(client: Any, dsn: str, body: dict[str, Any]) -> dict[str, Any]:
    """Post ``body``; assert it reads back equal, the same on every read path."""
    reply = await client.post("/api/events", json=body)
    assert reply.status == 200, await reply.text()
    event_id = (await reply.json())["event_id"]
    reads = await every_read(client, dsn, event_id, str(body["execution_id"]))
    assert_reads_agree(reads)
    assert_reads_back(body, reads["by id"])
    return reads["by id"]


EDGE_TIMES = {
    "earliest": "0001-01-02T00:00:00Z",
    "earliest, at an offset": "0001-01-02T01:30:00+01:30",
    "latest": "9999-12-30T23:59:59.999999Z",
    "latest, at an offset": "9999-12-30T18:59:59.999999-05:00",
    "nanoseconds": "2026-05-31T10:00:00.123456789Z",
}


@pytest.mark.parametrize("created_at", EDGE_TIMES.values(), ids=EDGE_TIMES.keys())
async def test_created_at_at_the_edges_reads_back_on_every_path(client, dsn, created_at):
    """The first and last instants accepted, in any offset, read back as the same instant."""
    await stored_and_read(client, dsn, envelope(created_at=created_at))


PAST_THE_EDGES = {
    "year 1, stored as -infinity by PostgreSQL": "0001-01-01T00:00:00Z",
    "year 1, last microsecond of the margin": "0001-01-01T23:59:59.999999Z",
    "earliest written with an offset, which moves it earlier": "0001-01-02T00:30:00+01:00",
    "before year 1 once the offset is applied": "0001-01-01T00:30:00+01:00",
    "year 0": "0000-06-01T00:00:00Z",
    "last day": "9999-12-31T00:00:00Z",
    "the instant PostgreSQL stores as infinity": "9999-12-31T23:59:59.999999Z",
    "past year 9999 once the offset is applied": "9999-12-31T20:00:00-05:00",
}


@pytest.mark.parametrize("created_at", PAST_THE_EDGES.values(), ids=PAST_THE_EDGES.keys())
async def test_created_at_past_the_edges_is_422_and_stores_nothing(client, created_at):
    """Instants no store reads back faithfully are refused by name, single or in a batch."""
    body = envelope(created_at=created_at)
    reply = await client.post("/api/events", json=body)
    assert reply.status == 422, await reply.text()
    assert [e["path"] for e in (await reply.json())["errors"]] == ["$.created_at"]
    reply = await client.post("/api/events/batch", json={"events": [envelope(), body]})
    assert reply.status == 422
    assert [e["path"] for e in (await reply.json())["errors"]] == ["$.events[1].created_at"]
    assert (await (await client.get("/api/events")).json())["events"] == []


async def test_ids_at_the_edges_read_back_on_every_path(client, dsn):
    """execution_id 1 and 2^63-1, event_id 0 and 2^63-1, event_ids at both ends."""
    await stored_and_read(
        client, dsn, {**envelope(event_id=0, event_ids=[0, 2**63 - 1]), "execution_id": 1}
    )
    await stored_and_read(
        client, dsn, {**envelope(event_id=str(2**63 - 1)), "execution_id": str(2**63 - 1)}
    )


PAYLOADS = {
    "integers past 64 bits": [2**64, -(2**63) - 1, 10**40],
    "the longest integer": int("9" * MAX_INT_DIGITS),
    "the longest negative integer": -int("9" * MAX_INT_DIGITS),
    "float edges": [1.7976931348623157e308, 5e-324, -0.0, 2.5e-308],
    "NUL and friends": {"a\x00b": "\x00", "\u2028": "\ufeff\u202e", "𝄞": "\x7f"},
    "a long string": "x" * 600_000,
    "the deepest nesting": nested(MAX_DEPTH),
    "deepest, in meta too": None,
}


@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
async def test_payloads_at_the_edges_read_back_on_every_path(client, dsn, payload):
    """Numbers, text and nesting at the edge of what is kept read back equal everywhere."""
    fields: dict[str, Any] = {"payload": payload}
    if payload is None:
        fields = {"meta": {"m": nested(MAX_DEPTH - 1)}, "payload": nested(MAX_DEPTH)}
    await stored_and_read(client, dsn, envelope(**fields))


TOO_DEEP = f"nests deeper than {MAX_DEPTH} levels of arrays and objects"


def _deep_body(depth: int) -> bytes:
    return b'{"execution_id": 7, "event_type": "t", "step": "s", "payload": %s}' % (
        b"[" * depth + b"1" + b"]" * depth
    )


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 975, 1023, 1024, 1025, 5000])
async def test_one_nesting_limit_one_code_on_every_way_in(client, depth):
    """Past MAX_DEPTH levels a payload is a 422 naming it, however deep and however sent:
    single, batch array, batch object, NDJSON line."""
    body = _deep_body(depth)
    cases = [
        ("/api/events", body, JSON, "$.payload"),
        ("/api/events/batch", b"[" + body + b"]", JSON, "$[0].payload"),
        ("/api/events/batch", b'{"events": [' + body + b"]}", JSON, "$.events[0].payload"),
        ("/api/events/batch", b"{}\n" + body, NDJSON, "line 2: $.payload"),
    ]
    for path, data, headers, where in cases:
        reply = await client.post(path, data=data, headers=headers)
        assert reply.status == 422, (path, where, await reply.text())
        problem = await reply.json()
        assert problem["code"] == "invalid_envelope"
        assert {"path": where, "message": TOO_DEEP} in problem["errors"], problem


async def test_the_same_limits_through_the_library(event_log: EventLog):
    """The library API refuses the same payloads, with the same messages."""
    for depth in (MAX_DEPTH + 1, 5000):
        with pytest.raises(InvalidEnvelope, match=f"deeper than {MAX_DEPTH} levels"):
            await event_log.append(envelope(payload=nested(depth)))
    appended = await event_log.append(envelope(payload=nested(MAX_DEPTH)))
    assert appended.event.payload == nested(MAX_DEPTH)
    with pytest.raises(InvalidEnvelope, match=f"more than {MAX_INT_DIGITS} digits"):
        await event_log.append(envelope(payload=[10**MAX_INT_DIGITS]))
    appended = await event_log.append(envelope(payload=[10**MAX_INT_DIGITS - 1]))
    assert appended.event.payload == [10**MAX_INT_DIGITS - 1]


async def test_unbalanced_deep_body_is_still_not_json(client):
    """A deep body whose brackets never close is broken JSON (400), not a deep payload."""
    reply = await client.post("/api/events", data=b"[" * 5000, headers=JSON)
    assert reply.status == 400 and (await reply.json())["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"1e400", "1e400"),
        (b'{"a": [-1e400]}', "-1e400"),
        (b"9" * (MAX_INT_DIGITS + 1), "digits"),
        (b'"\\ud800"', "surrogate"),
        (b'{"k": "\\udfff", "n": 123456789012345678901234}', "surrogate"),
    ],
)
async def test_values_no_store_keeps_are_422_naming_the_field(client, payload, why):
    """Valid JSON holding a number or a string no store gives back as sent: 422 at the field,
    whichever parser read it."""
    data = b'{"execution_id": 7, "event_type": "t", "step": "s", "payload": %s}' % payload
    reply = await client.post("/api/events", data=data, headers=JSON)
    assert reply.status == 422, await reply.text()
    problem = await reply.json()
    assert [e["path"] for e in problem["errors"]] == ["$.payload"] and why in problem["detail"]
