"""POST /api/events/batch, Idempotency-Key, limits and group commit, on both backends."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime, timedelta

import attrs
import pytest

from eventlog import EventConflict
from eventlog.log import EventLog
from eventlog.storage.registry import store_from_settings
from eventlog.web import create_app

from .test_errors import problem, slowed

NOETL_BATCH = {
    "execution_id": "771290770346082466",
    "worker_id": "worker-76ee0990",
    "events": [
        {
            "step": "start",
            "name": "step.exit",
            "payload": {"status": "COMPLETED"},
            "actionable": False,
            "informative": True,
            "meta": {"command_id": 771290770522243237},
        },
        {
            "step": "start",
            "name": "command.completed",
            "payload": {"command_id": 771290770522243237},
            "actionable": False,
            "informative": True,
        },
    ],
}
NDJSON = {"Content-Type": "application/x-ndjson"}


def envelope(i: int, **extra) -> dict:
    """A full envelope for item i."""
    return {
        "execution_id": 900,
        "event_id": 1000 + i,
        "name": "step.enter",
        "step": f"s{i}",
        **extra,
    }


def ndjson(items) -> bytes:
    """Items as NDJSON lines."""
    return b"".join(json.dumps(i).encode() + b"\n" for i in items)


async def post_in_form(client, form: str, items: list):
    """POST the items as a batch in one form: NoETL's object (execution 900), array, NDJSON."""
    if form == "noetl":
        return await client.post("/api/events/batch", json={"execution_id": 900, "events": items})
    if form == "array":
        return await client.post("/api/events/batch", json=items)
    return await client.post("/api/events/batch", data=ndjson(items), headers=NDJSON)


async def events_of(client, execution_id) -> list[dict]:
    """Every event of one execution (they fit one page here)."""
    reply = await client.get(f"/api/executions/{execution_id}/events", params={"limit": "1000"})
    return (await reply.json())["events"]


async def test_noetl_batch_items_inherit_execution_and_worker(client):
    """NoETL's batch object: items take the batch's execution_id and worker_id, in order."""
    reply = await client.post("/api/events/batch", json=NOETL_BATCH)
    assert reply.status == 200, await reply.text()
    data = await reply.json()
    assert set(data) == {
        "status",
        "request_id",
        "event_ids",
        "duplicates",
        "commands_generated",
        "duplicate",
    }
    assert data["status"] == "ok" and data["duplicates"] == [] and data["duplicate"] is False
    assert data["commands_generated"] == 0 and data["request_id"]
    events = await events_of(client, NOETL_BATCH["execution_id"])
    assert [e["event_id"] for e in events] == data["event_ids"]
    assert [e["event_type"] for e in events] == ["step.exit", "command.completed"]
    assert {e["worker_id"] for e in events} == {"worker-76ee0990"}
    assert events[0]["meta"] == {"command_id": 771290770522243237}
    assert events[1]["payload"] == {"command_id": 771290770522243237}


async def test_item_fields_win_over_the_batch_fields(client):
    """An item's own execution_id and worker_id are kept."""
    batch = {
        "execution_id": 1,
        "worker_id": "w",
        "events": [{"execution_id": 2, "worker_id": "x", "name": "a", "step": "s"}],
    }
    reply = await client.post("/api/events/batch", json=batch)
    assert reply.status == 200
    (event,) = await events_of(client, 2)
    assert event["worker_id"] == "x"


async def test_batch_items_default_to_not_actionable(client):
    """Batch items default actionable to false, as both NoETL servers do."""
    reply = await client.post("/api/events/batch", json=[envelope(1), envelope(2, actionable=True)])
    assert reply.status == 200
    assert [e["actionable"] for e in await events_of(client, 900)] == [False, True]


@pytest.mark.parametrize("form", ["array", "ndjson"])
async def test_array_and_ndjson_batches_are_stored_in_order(client, form):
    """A JSON array of envelopes and NDJSON lines store every item, ids in item order."""
    items = [envelope(i) for i in range(5)]
    if form == "array":
        reply = await client.post("/api/events/batch", json=items)
    else:
        reply = await client.post("/api/events/batch", data=ndjson(items), headers=NDJSON)
    assert reply.status == 200, await reply.text()
    data = await reply.json()
    assert data["event_ids"] == [str(1000 + i) for i in range(5)]
    assert [e["event_id"] for e in await events_of(client, 900)] == data["event_ids"]


async def test_ndjson_skips_blank_lines(client):
    """Blank lines between NDJSON documents are allowed."""
    body = b"\n" + ndjson([envelope(1)]) + b"\n\r\n" + ndjson([envelope(2)])
    reply = await client.post("/api/events/batch", data=body, headers=NDJSON)
    assert reply.status == 200
    assert len((await reply.json())["event_ids"]) == 2


@pytest.mark.parametrize(
    ("form", "paths"),
    [
        ("noetl", ["$.events[1].step", "$.events[3].name", "$.events[4]"]),
        ("array", ["$[1].step", "$[3].name", "$[4]"]),
        ("ndjson", ["line 2: $.step", "line 4: $.name", "line 5: $"]),
    ],
)
async def test_bad_items_are_all_named_and_nothing_is_stored(client, form, paths):
    """One or more bad items: 422 naming every one of them; not even the good items are stored."""
    items = [
        envelope(0),
        envelope(1, step=7),
        envelope(2),
        envelope(3, name=""),
        "junk",
        envelope(5),
    ]
    reply = await post_in_form(client, form, items)
    doc = await problem(reply, 422, "invalid_envelope")
    assert [e["path"] for e in doc["errors"]] == paths
    assert await events_of(client, 900) == []


async def test_ndjson_line_that_is_not_json_is_named(client):
    """A broken NDJSON line is a 400 naming its line number."""
    body = ndjson([envelope(1)]) + b"{broken\n" + ndjson([envelope(2)])
    doc = await problem(
        await client.post("/api/events/batch", data=body, headers=NDJSON), 400, "invalid_json"
    )
    assert [e["path"] for e in doc["errors"]] == ["line 2"]


@pytest.mark.parametrize("body", [{"execution_id": 1}, {"events": "x"}, 5])
async def test_malformed_batch_shapes_are_422(client, body):
    """Shapes that are no batch at all are refused."""
    await problem(await client.post("/api/events/batch", json=body), 422, "invalid_envelope")


async def test_items_already_stored_are_reported_as_duplicates(client):
    """Items stored before are not stored again; their indexes come back in duplicates."""
    await client.post("/api/events", json=envelope(1))
    await client.post("/api/events/batch", json=[envelope(3)])
    reply = await client.post("/api/events/batch", json=[envelope(i) for i in range(5)])
    data = await reply.json()
    assert reply.status == 200 and data["duplicates"] == [1, 3] and data["duplicate"] is False
    assert len(await events_of(client, 900)) == 5


async def test_batch_with_a_conflicting_item_is_409_and_stores_nothing(client):
    """One item that conflicts with a stored event refuses the whole batch."""
    await client.post("/api/events", json=envelope(2))
    reply = await client.post(
        "/api/events/batch", json=[envelope(1), envelope(2, step="other"), envelope(3)]
    )
    await problem(reply, 409, "event_conflict")
    assert [e["event_id"] for e in await events_of(client, 900)] == ["1002"]


@pytest.mark.parametrize(
    ("form", "first", "second"),
    [
        ("noetl", "$.events[0]", "$.events[2]"),
        ("array", "$[0]", "$[2]"),
        ("ndjson", "line 1", "line 3"),
    ],
)
async def test_two_items_with_one_key_and_other_content_are_named_in_the_409(
    client, form, first, second
):
    """Items 0 and 2 share a key but not a step: 409 naming both at their wire paths, saying
    nothing was stored (not that an event is already stored), and nothing is stored."""
    items = [envelope(1), envelope(2), envelope(1, step="other")]
    reply = await post_in_form(client, form, items)
    doc = await problem(reply, 409, "event_conflict")
    assert doc["detail"].startswith(f"{first} and {second} carry the same execution_id and")
    assert "nothing was stored" in doc["detail"]
    assert "already stored" not in doc["detail"]
    assert doc["errors"] == [
        {"path": second, "message": f"has the execution_id and event_id of {first}, other content"}
    ]
    assert await events_of(client, 900) == []


async def test_a_library_batch_with_one_key_twice_names_both_items(event_log):
    """append_batch: the same rule, the items named by their index in the list."""
    with pytest.raises(EventConflict) as raised:
        await event_log.append_batch([envelope(5), envelope(5, payload={"x": 1})])
    assert raised.value.detail.startswith("$[0] and $[1] carry the same")
    assert [e.path for e in raised.value.errors or []] == ["$[1]"]


async def test_repeated_item_within_one_batch_is_stored_once(client):
    """The same event twice in one batch: stored once, the second reported as a duplicate."""
    reply = await client.post("/api/events/batch", json=[envelope(1), envelope(1)])
    assert (await reply.json())["duplicates"] == [1]
    assert len(await events_of(client, 900)) == 1


# --- Idempotency-Key ----------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/api/events", "/api/events/batch"])
async def test_idempotency_key_replays_the_first_reply(client, route):
    """Same key and body again: the first reply, marked duplicate, and nothing stored twice."""
    body = (
        {**NOETL_BATCH, "events": NOETL_BATCH["events"][:1]}
        if route.endswith("batch")
        else {"execution_id": "771290770346082466", "name": "step.enter", "step": "s"}
    )
    headers = {"Idempotency-Key": "req-1"}
    first = await (await client.post(route, json=body, headers=headers)).json()
    reply = await client.post(route, json=body, headers=headers)
    assert reply.status == 200
    assert await reply.json() == {**first, "duplicate": True}
    assert len(await events_of(client, "771290770346082466")) == 1


@pytest.mark.parametrize("route", ["/api/events", "/api/events/batch"])
async def test_idempotency_key_with_another_body_is_409(client, route):
    """Same key, different request: 409 idempotency_conflict, nothing stored."""
    headers = {"Idempotency-Key": "req-2"}
    one = envelope(1) if route == "/api/events" else [envelope(1)]
    two = envelope(2) if route == "/api/events" else [envelope(2)]
    assert (await client.post(route, json=one, headers=headers)).status == 200
    await problem(await client.post(route, json=two, headers=headers), 409, "idempotency_conflict")
    assert [e["event_id"] for e in await events_of(client, 900)] == ["1001"]


async def test_idempotency_key_is_not_shared_between_routes(client):
    """The same key on the single and the batch route is two different requests: 409."""
    headers = {"Idempotency-Key": "req-3"}
    assert (await client.post("/api/events", json=envelope(1), headers=headers)).status == 200
    reply = await client.post("/api/events/batch", json=[envelope(1)], headers=headers)
    await problem(reply, 409, "idempotency_conflict")


async def test_concurrent_requests_with_one_key_apply_once(client):
    """Ten copies at once under one key: one applied, nine replays with the same request_id."""
    headers = {"Idempotency-Key": "burst"}
    replies = await asyncio.gather(
        *(
            client.post("/api/events/batch", json=[envelope(1), envelope(2)], headers=headers)
            for _ in range(10)
        )
    )
    data = [await r.json() for r in replies]
    assert sorted(d["duplicate"] for d in data) == [False] + [True] * 9
    assert len({d["request_id"] for d in data}) == 1
    assert len(await events_of(client, 900)) == 2


@pytest.mark.parametrize("key", ["", "a" * 256, "has space", "ünïcode"])
async def test_malformed_idempotency_key_is_400(client, key):
    """Keys are 1-255 visible ASCII characters."""
    reply = await client.post("/api/events", json=envelope(1), headers={"Idempotency-Key": key})
    await problem(reply, 400, "invalid_parameter")


async def test_expired_keys_are_forgotten_and_purged(aiohttp_client, settings):
    """After the configured time a key may be reused, and the writer purges the old record."""
    short = attrs.evolve(settings, idempotency_ttl=1.0, idempotency_purge_interval=0.2)
    log = EventLog(short)
    client = await aiohttp_client(create_app(short, event_log=log))
    headers = {"Idempotency-Key": "short-lived"}
    assert (await client.post("/api/events", json=envelope(1), headers=headers)).status == 200
    await asyncio.sleep(1.5)
    reply = await client.post("/api/events", json=envelope(2), headers=headers)
    assert reply.status == 200 and (await reply.json())["duplicate"] is False
    await asyncio.sleep(1.5)  # the second record expires too; the idle writer purges it
    long_ago = datetime.now(UTC) - timedelta(days=1)
    assert await log.store.idempotency_record("short-lived", long_ago) is None


# --- limits -------------------------------------------------------------------------------


async def test_batch_body_over_its_limit_is_413(aiohttp_client, settings):
    """The batch route has its own body limit."""
    small = attrs.evolve(settings, max_batch_body_bytes=4096)
    client = await aiohttp_client(create_app(small))
    body = json.dumps([envelope(i) for i in range(100)]).encode()
    reply = await client.post(
        "/api/events/batch", data=io.BytesIO(body), headers={"Content-Type": "application/json"}
    )
    await problem(reply, 413, "body_too_large")


async def test_single_event_limit_is_smaller_than_the_batch_limit(client):
    """A 2 MiB body passes the batch limit (16 MiB) but not the single-event one (1 MiB)."""
    body = json.dumps({**envelope(1), "payload": "x" * (2 * 1024 * 1024)}).encode()
    headers = {"Content-Type": "application/json"}
    reply = await client.post("/api/events", data=io.BytesIO(body), headers=headers)
    await problem(reply, 413, "body_too_large")
    reply = await client.post(
        "/api/events/batch", data=io.BytesIO(b"[" + body + b"]"), headers=headers
    )
    assert reply.status == 200, await reply.text()


async def test_too_many_events_is_413(aiohttp_client, settings):
    """More items than max_batch_events: 413 too_many_events, in every form."""
    small = attrs.evolve(settings, max_batch_events=3)
    client = await aiohttp_client(create_app(small))
    items = [envelope(i) for i in range(4)]
    await problem(await client.post("/api/events/batch", json=items), 413, "too_many_events")
    await problem(
        await client.post("/api/events/batch", json={"execution_id": 1, "events": items}),
        413,
        "too_many_events",
    )
    reply = await client.post("/api/events/batch", data=ndjson(items), headers=NDJSON)
    await problem(reply, 413, "too_many_events")
    assert (await client.post("/api/events/batch", json=items[:3])).status == 200


async def test_ndjson_is_refused_on_the_single_event_route(client):
    """Only the batch route reads NDJSON."""
    reply = await client.post("/api/events", data=ndjson([envelope(1)]), headers=NDJSON)
    await problem(reply, 415, "unsupported_media_type")


# --- group commit -------------------------------------------------------------------------


async def test_concurrent_requests_share_transactions(aiohttp_client, settings):
    """Forty concurrent requests before a slow store are committed in far fewer transactions."""
    count: list[int] = []
    store = slowed(store_from_settings(settings), 0.02, count)
    client = await aiohttp_client(create_app(settings, event_log=EventLog(settings, store=store)))
    count.clear()  # migrations and start-up purge
    replies = await asyncio.gather(
        *(client.post("/api/events", json=envelope(i)) for i in range(40))
    )
    assert all(r.status == 200 for r in replies)
    assert len(count) <= 10, len(count)
    assert len(await events_of(client, 900)) == 40


async def test_overloaded_batches_get_503_and_acknowledged_ones_are_stored(
    aiohttp_client, settings
):
    """A queue bound of 5 events before a slow store: batches beyond it get 503, none is lost."""
    tight = attrs.evolve(settings, writer_queue_events=5, writer_max_batch=5)
    store = slowed(store_from_settings(tight), 0.05)
    client = await aiohttp_client(create_app(tight, event_log=EventLog(tight, store=store)))
    batches = [[envelope(10 * b + i) for i in range(3)] for b in range(12)]
    replies = await asyncio.gather(*(client.post("/api/events/batch", json=b) for b in batches))
    statuses = [r.status for r in replies]
    assert 200 in statuses and 503 in statuses
    stored = {e["event_id"] for e in await events_of(client, 900)}
    for batch, reply in zip(batches, replies, strict=True):
        ids = {str(item["event_id"]) for item in batch}
        if reply.status == 200:
            assert ids <= stored
        else:
            await problem(reply, 503, "overloaded")
            assert reply.headers["Retry-After"] == "1"
            assert not ids & stored


async def test_batch_item_with_null_worker_inherits_the_batch_worker(client):
    """An item's null means absent, so it takes the batch's worker_id."""
    batch = {
        "execution_id": 5,
        "worker_id": "w-b",
        "events": [{"name": "a", "step": "s", "worker_id": None}],
    }
    assert (await client.post("/api/events/batch", json=batch)).status == 200
    (event,) = await events_of(client, 5)
    assert event["worker_id"] == "w-b"


@pytest.mark.parametrize(
    ("data", "headers"),
    [
        (b'{"events": []}', {"Content-Type": "application/json"}),
        (
            b'{"execution_id": 5, "worker_id": "w", "events": []}',
            {"Content-Type": "application/json"},
        ),
        (b"[]", {"Content-Type": "application/json"}),
        (b"", NDJSON),
        (b"\n \n", NDJSON),
    ],
    ids=["object", "object with header fields", "array", "empty ndjson", "blank ndjson"],
)
async def test_an_empty_batch_is_200_and_writes_nothing(client, data, headers):
    """Producers flush empty buffers: 200 with event_ids [], as NoETL's servers answer; nothing
    is written (the log's head stays where it was)."""
    await client.post("/api/events", json=envelope(1))
    before = await (await client.get("/api/executions")).json()
    reply = await client.post("/api/events/batch", data=data, headers=headers)
    assert reply.status == 200, await reply.text()
    body = await reply.json()
    assert body["event_ids"] == [] and body["duplicates"] == [] and body["status"] == "ok"
    assert await (await client.get("/api/executions")).json() == before
    assert len((await (await client.get("/api/events")).json())["events"]) == 1


async def test_an_empty_batch_with_an_idempotency_key_is_replayed_like_any(client):
    """With an Idempotency-Key the empty batch's reply is kept: the same again is a replay,
    another body under the key a 409."""
    key = {"Idempotency-Key": "empty-1"}
    first = await (await client.post("/api/events/batch", json=[], headers=key)).json()
    again = await client.post("/api/events/batch", json=[], headers=key)
    assert again.status == 200
    assert (await again.json()) == {**first, "duplicate": True}
    other = await client.post("/api/events/batch", json=[envelope(1)], headers=key)
    await problem(other, 409, "idempotency_conflict")


async def test_the_library_accepts_an_empty_batch(event_log: EventLog):
    """EventLog.append_batch([]) appends nothing and says so."""
    receipt, appended = await event_log.append_batch([])
    assert receipt.event_ids == () and appended == []
    assert await event_log.store.head() == 0
    receipt, _ = await event_log.append_batch([], idempotency_key="k")
    assert receipt.event_ids == () and await event_log.store.head() == 0
