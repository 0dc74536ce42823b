"""POST /api/events and the reads, through HTTP, on both backends (CONTRACT §1, §2, §4, §6, §8)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from eventlog.ids import decode

from .helpers import CONTRACT_BODIES, assert_canonical, assert_reads_back, instant

BIG = 2**63 - 1


async def post(client, body, **kwargs):
    """POST one event; the reply and its JSON."""
    reply = await client.post("/api/events", json=body, **kwargs)
    return reply, await reply.json(content_type=None)


async def read(client, event_id, execution_id=None):
    """GET one event by id."""
    query = {} if execution_id is None else {"execution_id": str(execution_id)}
    reply = await client.get(f"/api/events/{event_id}", params=query)
    assert reply.status == 200, await reply.text()
    return await reply.json()


async def execution_events(client, execution_id, **query):
    """Every event of an execution, following next_cursor."""
    events, params = [], {k: str(v) for k, v in query.items()}
    while True:
        reply = await client.get(f"/api/executions/{execution_id}/events", params=params)
        assert reply.status == 200, await reply.text()
        page = await reply.json()
        assert page["execution_id"] == str(execution_id)
        events += page["events"]
        if page["next_cursor"] is None:
            return events
        params["after"] = page["next_cursor"]


# --- §1 bodies and §8 reply ---------------------------------------------------------------


@pytest.mark.parametrize("producer", sorted(CONTRACT_BODIES))
async def test_contract_body_is_accepted_and_reads_back_equal(client, producer):
    """Each real producer body answers the NoETL reply and reads back by id and by execution."""
    body = CONTRACT_BODIES[producer]
    reply, data = await post(client, body)
    assert reply.status == 200, data
    assert data == {
        "status": "ok",
        "event_id": data["event_id"],
        "commands_generated": 0,
        "duplicate": False,
    }
    assert isinstance(data["event_id"], str) and int(data["event_id"]) > 0
    if "event_id" in body:
        assert data["event_id"] == str(body["event_id"])
    by_id = await read(client, data["event_id"])
    assert_canonical(by_id)
    assert_reads_back(body, by_id)
    (listed,) = await execution_events(client, body["execution_id"])
    assert listed == by_id


async def test_defaults_fill_what_the_producer_left_out(client):
    """Absent fields take the server defaults; the minted id decodes to now on this node."""
    before = datetime.now(UTC)
    _, data = await post(client, CONTRACT_BODIES["minimal"])
    event = await read(client, data["event_id"])
    assert event["payload"] is None and event["meta"] is None and event["worker_id"] is None
    assert event["result_kind"] == "data" and event["result_uri"] is None
    assert event["event_ids"] is None
    assert event["actionable"] is True and event["informative"] is True
    assert event["status"] == "RUNNING"
    created = instant(event["created_at"])
    assert before - timedelta(seconds=1) <= created <= datetime.now(UTC)
    parts = decode(int(event["event_id"]))
    assert parts.node_id == 0
    assert abs(parts.timestamp - created) < timedelta(seconds=2)
    assert instant(event["ingested_at"]) >= created


async def test_every_optional_field_reads_back_as_sent(client):
    """A body with every field set comes back with each one equal."""
    body = {
        "execution_id": str(BIG),
        "event_id": BIG,
        "step": "läuft ✓",
        "event_type": "result.stored",
        "status": "waiting_io",
        "payload": [1, -2, 2**63 - 1, -(2**63), 18446744073709551615, 1.5, "x", None, {"a": []}],
        "meta": {"nested": {"deep": [True, False, None]}, "n": 12345678901234567890123},
        "worker_id": "w-9",
        "result_kind": "refs",
        "result_uri": "s3://bucket/key",
        "event_ids": [1, "2", str(BIG)],
        "actionable": False,
        "informative": False,
        "created_at": "2026-05-31T12:00:00.123456+02:00",
    }
    reply, data = await post(client, body)
    assert reply.status == 200, data
    event = await read(client, data["event_id"])
    assert_reads_back(body, event)
    assert event["status"] == "WAITING_IO"
    assert event["created_at"] == "2026-05-31T10:00:00.123456Z"
    assert event["event_ids"] == ["1", "2", str(BIG)]


async def test_nul_and_odd_unicode_in_payload_are_stored_faithfully(client):
    """PostgreSQL text cannot hold NUL; payload JSON still keeps it, and every other code point."""
    payload = {"nul": "a\x00b", "bidi": "\u202eabc", "astral": "𝄞😀", "bom": "\ufeff", "key\x00": 1}
    reply, data = await post(client, {**CONTRACT_BODIES["minimal"], "payload": payload})
    assert reply.status == 200, data
    assert (await read(client, data["event_id"]))["payload"] == payload


async def test_nul_in_a_text_field_is_refused_with_422(client):
    """Text fields are columns; a NUL there is refused on every backend rather than mangled."""
    reply, data = await post(client, {**CONTRACT_BODIES["minimal"], "step": "a\x00b"})
    assert reply.status == 422
    assert data["errors"] == [
        {"path": "$.step", "message": "must not contain a NUL character or a lone surrogate"}
    ]


async def test_unknown_and_server_owned_fields_are_ignored(client):
    """Unknown top-level fields are not stored; seq and ingested_at are never taken from a client."""
    body = {
        **CONTRACT_BODIES["minimal"],
        "extra": 1,
        "seq": "999",
        "ingested_at": "2000-01-01T00:00:00Z",
    }
    _, data = await post(client, body)
    event = await read(client, data["event_id"])
    assert "extra" not in event
    assert event["seq"] != "999"
    assert not event["ingested_at"].startswith("2000")


async def test_timestamp_with_nanoseconds_keeps_microseconds(client):
    """Producers that print nanoseconds are accepted; precision is microseconds."""
    body = {**CONTRACT_BODIES["minimal"], "created_at": "2026-05-31T10:00:00.123456789-01:30"}
    _, data = await post(client, body)
    assert (await read(client, data["event_id"]))["created_at"] == "2026-05-31T11:30:00.123456Z"


# --- §1 rules -----------------------------------------------------------------------------

MINIMAL = CONTRACT_BODIES["minimal"]


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("execution_id", 1.5, "$.execution_id"),
        ("execution_id", True, "$.execution_id"),
        ("execution_id", [1], "$.execution_id"),
        ("execution_id", {}, "$.execution_id"),
        ("execution_id", "12a", "$.execution_id"),
        ("execution_id", " 12", "$.execution_id"),
        ("execution_id", "-5", "$.execution_id"),
        ("execution_id", 0, "$.execution_id"),
        ("execution_id", -1, "$.execution_id"),
        ("execution_id", 2**63, "$.execution_id"),
        ("execution_id", str(2**63), "$.execution_id"),
        ("execution_id", None, "$.execution_id"),
        ("event_id", 1.0, "$.event_id"),
        ("event_id", "0x10", "$.event_id"),
        ("event_id", 2**64, "$.event_id"),
        ("step", 5, "$.step"),
        ("step", "", "$.step"),
        ("step", None, "$.step"),
        ("event_type", ["a"], "$.event_type"),
        ("event_type", "", "$.event_type"),
        ("actionable", "yes", "$.actionable"),
        ("actionable", 1, "$.actionable"),
        ("informative", "true", "$.informative"),
        ("created_at", "2026-05-31T10:00:00", "$.created_at"),
        ("created_at", "2026-05-31", "$.created_at"),
        ("created_at", "2026-02-30T10:00:00Z", "$.created_at"),
        ("created_at", 1717000000, "$.created_at"),
        ("status", "running now", "$.status"),
        ("status", "1UP", "$.status"),
        ("status", "A" * 33, "$.status"),
        ("status", 3, "$.status"),
        ("result_kind", "blob", "$.result_kind"),
        ("result_uri", 7, "$.result_uri"),
        ("event_ids", "1,2", "$.event_ids"),
        ("event_ids", [1, 2.5], "$.event_ids[1]"),
        ("meta", [1], "$.meta"),
        ("meta", "x", "$.meta"),
        ("worker_id", 12, "$.worker_id"),
    ],
)
async def test_wrong_type_is_422_naming_the_field(client, field, value, path):
    """Strict types: no silent coercion, and the error names the field."""
    reply, data = await post(client, {**MINIMAL, field: value})
    assert reply.status == 422, data
    assert reply.content_type == "application/problem+json"
    assert data["code"] == "invalid_envelope"
    assert path in [e["path"] for e in data["errors"]], data


@pytest.mark.parametrize("missing", ["execution_id", "step", "event_type"])
async def test_missing_required_field_is_422(client, missing):
    """The three required fields are named when absent."""
    body = {k: v for k, v in MINIMAL.items() if k != missing}
    reply, data = await post(client, body)
    assert reply.status == 422
    assert data["errors"] == [{"path": f"$.{missing}", "message": "is required"}]


@pytest.mark.parametrize(("alias", "field"), [("name", "event_type"), ("node_name", "step")])
async def test_error_path_uses_the_alias_the_client_sent(client, alias, field):
    """A client that sent `name` reads `$.name` in the error, not `$.event_type`."""
    body = {k: v for k, v in MINIMAL.items() if k != field} | {alias: 42}
    reply, data = await post(client, body)
    assert reply.status == 422
    assert [e["path"] for e in data["errors"]] == [f"$.{alias}"]


@pytest.mark.parametrize(
    ("alias", "field", "value"),
    [
        ("name", "event_type", "call.done"),
        ("node_name", "step", "s"),
        ("context", "payload", {"a": [1]}),
    ],
)
async def test_alias_and_canonical_with_equal_values_are_accepted(client, alias, field, value):
    """Both names for one field, with the same value, is one field."""
    reply, data = await post(client, {**MINIMAL, field: value, alias: value})
    assert reply.status == 200, data
    assert (await read(client, data["event_id"]))[field] == value


@pytest.mark.parametrize(
    ("alias", "field", "canonical_value", "alias_value"),
    [
        ("name", "event_type", "a", "b"),
        ("node_name", "step", "s", "t"),
        ("context", "payload", {"n": 1}, {"n": 1.0}),
        ("context", "payload", 1, True),
    ],
)
async def test_alias_and_canonical_with_different_values_are_422(
    client, alias, field, canonical_value, alias_value
):
    """Two names for one field that disagree: conflicting fields, nothing stored."""
    body = {**MINIMAL, field: canonical_value, alias: alias_value}
    reply, data = await post(client, body)
    assert reply.status == 422
    assert data["errors"][0]["path"] == f"$.{alias}"
    assert "conflicting fields" in data["errors"][0]["message"]
    assert await execution_events(client, MINIMAL["execution_id"]) == []


async def test_event_id_null_means_absent(client):
    """event_id: null lets the server mint one."""
    reply, data = await post(client, {**MINIMAL, "event_id": None})
    assert reply.status == 200
    assert int(data["event_id"]) > 0


async def test_every_error_is_listed_at_once(client):
    """One reply names every bad field."""
    reply, data = await post(client, {"execution_id": "x", "name": 1, "step": "", "meta": 3})
    assert reply.status == 422
    assert {e["path"] for e in data["errors"]} == {"$.execution_id", "$.name", "$.step", "$.meta"}


# --- §4 status ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "status"),
    [
        ("step.enter", "RUNNING"),
        ("call.done", "COMPLETED"),
        ("command.failed", "FAILED"),
        ("playbook.cancelled", "CANCELLED"),
        ("frame.abandoned", "RUNNING"),
        ("Task_Errored", "FAILED"),
    ],
)
async def test_status_is_derived_from_event_type_when_absent(client, event_type, status):
    """Without a status, the rules of CONTRACT §4 decide it."""
    _, data = await post(client, {**MINIMAL, "event_type": event_type})
    assert (await read(client, data["event_id"]))["status"] == status


async def test_given_status_wins_over_derivation(client):
    """A producer's status is kept, upper-cased."""
    _, data = await post(client, {**MINIMAL, "event_type": "call.done", "status": "failed"})
    assert (await read(client, data["event_id"]))["status"] == "FAILED"


# --- §6 idempotency -----------------------------------------------------------------------


async def test_retry_with_same_content_is_a_duplicate_and_changes_nothing(client):
    """The same (execution_id, event_id) and content again: 200, duplicate, stored unchanged."""
    body = CONTRACT_BODIES["rust_executor"]
    _, first = await post(client, body)
    stored = await read(client, first["event_id"])
    reply, again = await post(client, body)
    assert reply.status == 200
    assert again == {**first, "duplicate": True}
    assert await read(client, first["event_id"]) == stored
    assert len(await execution_events(client, body["execution_id"])) == 1


async def test_retry_in_another_dialect_is_still_a_duplicate(client):
    """Content is compared after alias normalisation: name/context equal event_type/payload."""
    body = {
        "execution_id": 5,
        "event_id": 77,
        "event_type": "call.done",
        "step": "s",
        "payload": {"a": 1},
    }
    legacy = {
        "execution_id": "5",
        "event_id": "77",
        "name": "call.done",
        "node_name": "s",
        "context": {"a": 1},
    }
    await post(client, body)
    reply, data = await post(client, legacy)
    assert reply.status == 200 and data["duplicate"] is True


async def test_retry_without_timestamp_is_a_duplicate(client):
    """The server's clock is not content: a retry that again omits created_at is the same event."""
    body = {**MINIMAL, "event_id": "123"}
    await post(client, body)
    await asyncio.sleep(0.01)
    reply, data = await post(client, body)
    assert reply.status == 200 and data["duplicate"] is True


@pytest.mark.parametrize(
    "change",
    [
        {"context": {"result": "other"}},
        {"step": "other"},
        {"status": "FAILED"},
        {"created_at": "2026-05-31T10:00:01Z"},
        {"meta": None},
        {"actionable": False},
    ],
)
async def test_same_key_with_other_content_is_409_and_changes_nothing(client, change):
    """A different event under a stored key is a conflict; the stored one stays."""
    body = {**CONTRACT_BODIES["rust_executor"], "actionable": True}
    _, first = await post(client, body)
    stored = await read(client, first["event_id"])
    reply, data = await post(client, {**body, **change})
    assert reply.status == 409
    assert reply.content_type == "application/problem+json"
    assert data["code"] == "event_conflict"
    assert await read(client, first["event_id"]) == stored


async def test_same_event_id_in_two_executions_is_two_events(client):
    """The key is (execution_id, event_id); ?execution_id= picks one."""
    _, a = await post(client, {**MINIMAL, "execution_id": 1, "event_id": 9})
    _, b = await post(client, {**MINIMAL, "execution_id": 2, "event_id": 9})
    assert a["duplicate"] is False and b["duplicate"] is False
    assert (await read(client, 9, execution_id=2))["execution_id"] == "2"
    assert (await read(client, 9))["execution_id"] == "1"  # the first stored


async def test_concurrent_retries_store_one_event(client):
    """Twenty copies of one event at once: one stored, nineteen duplicates."""
    body = CONTRACT_BODIES["rust_executor"]
    results = await asyncio.gather(*(post(client, body) for _ in range(20)))
    assert sorted(d["duplicate"] for _, d in results) == [False] + [True] * 19
    assert len(await execution_events(client, body["execution_id"])) == 1


# --- reads and paging ---------------------------------------------------------------------


async def test_cursor_paging_returns_every_event_once_in_commit_order(client):
    """Pages of 7 over 25 events (interleaved with another execution): each once, seq ascending."""
    sent = []
    for i in range(25):
        _, data = await post(client, {**MINIMAL, "execution_id": 42, "step": f"s{i}"})
        sent.append(data["event_id"])
        await post(client, {**MINIMAL, "execution_id": 43})
    events = await execution_events(client, 42, limit=7)
    assert [e["event_id"] for e in events] == sent
    seqs = [int(e["seq"]) for e in events]
    assert seqs == sorted(set(seqs))
    descending = await execution_events(client, 42, limit=7, order="desc")
    assert [e["event_id"] for e in descending] == sent[::-1]


async def test_page_shape_and_last_page_cursor(client):
    """A full page has a next_cursor; the page that ends the execution has null."""
    for i in range(3):
        await post(client, {**MINIMAL, "step": f"s{i}"})
    reply = await client.get("/api/executions/12345/events", params={"limit": "2"})
    page = await reply.json()
    assert set(page) == {"execution_id", "events", "next_cursor"}
    assert len(page["events"]) == 2 and page["next_cursor"] == page["events"][-1]["seq"]
    reply = await client.get(
        "/api/executions/12345/events", params={"limit": "2", "after": page["next_cursor"]}
    )
    last = await reply.json()
    assert len(last["events"]) == 1 and last["next_cursor"] is None
    for event in page["events"] + last["events"]:
        assert_canonical(event)


async def test_unknown_execution_is_an_empty_page(client):
    """An execution with no events has an empty first page."""
    reply = await client.get("/api/executions/999/events")
    assert reply.status == 200
    assert await reply.json() == {"execution_id": "999", "events": [], "next_cursor": None}


@pytest.mark.parametrize(
    "query",
    [{"limit": "0"}, {"limit": "1001"}, {"limit": "x"}, {"after": "-1"}, {"order": "up"}],
)
async def test_bad_paging_parameters_are_400(client, query):
    """Query parameters out of range are a problem, never a 500."""
    reply = await client.get("/api/executions/1/events", params=query)
    assert reply.status == 400
    assert (await reply.json())["code"] == "invalid_parameter"


async def test_limit_bounds_are_inclusive(client):
    """limit=1 and limit=1000 are both accepted."""
    for limit in ("1", "1000"):
        reply = await client.get("/api/executions/1/events", params={"limit": limit})
        assert reply.status == 200


async def test_probes_answer_while_the_store_does(client):
    """GET /health and GET /ready are 200 with the store open and its schema current."""
    reply = await client.get("/health")
    assert reply.status == 200 and await reply.json() == {"status": "ok"}
    reply = await client.get("/ready")
    assert reply.status == 200 and await reply.json() == {"status": "ready"}


async def test_lone_surrogate_in_a_text_field_is_422_on_the_exact_integer_path(client):
    """A twenty-digit number sends the body through the standard library's parser, which reads
    "\\ud800"; a text column cannot hold it, so it is a 422, not a failed commit."""
    body = (
        b'{"execution_id": 1, "event_type": "x", "step": "\\ud800", '
        b'"payload": {"n": 123456789012345678901}}'
    )
    reply = await client.post(
        "/api/events", data=body, headers={"Content-Type": "application/json"}
    )
    assert reply.status == 422
    assert [e["path"] for e in (await reply.json())["errors"]] == ["$.step"]


async def test_null_canonical_field_does_not_conflict_with_its_alias(client):
    """null means absent: event_type null beside name "call.done" is just name."""
    reply, data = await post(
        client, {"execution_id": 1, "name": "call.done", "event_type": None, "step": "s"}
    )
    assert reply.status == 200, data
    assert (await read(client, data["event_id"]))["event_type"] == "call.done"


async def test_ingested_at_follows_seq(client):
    """ingested_at is taken with the write lock held, so it never goes back as seq grows."""
    bodies = [{**MINIMAL, "event_id": str(i)} for i in range(1, 30)]
    await asyncio.gather(*(post(client, b) for b in bodies))
    events = await execution_events(client, MINIMAL["execution_id"])
    stamps = [instant(e["ingested_at"]) for e in sorted(events, key=lambda e: int(e["seq"]))]
    assert stamps == sorted(stamps)
