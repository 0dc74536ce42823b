"""What an operator relies on: probes, metrics, request ids, access control paths, redaction."""

from __future__ import annotations

import asyncio
import sqlite3

import asyncpg
import attrs
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from eventlog.codec import MAX_DEPTH
from eventlog.web import create_app

from .test_errors import problem

BODY = {"execution_id": "51", "event_type": "step.enter", "step": "a"}


async def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:  # type: ignore[no-untyped-def]
    """GET /metrics, parsed: {(sample name, sorted labels): value}."""
    reply = await client.get("/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(await reply.text()):
        for s in family.samples:
            samples[s.name, tuple(sorted(s.labels.items()))] = s.value
    return samples


def delta(after, before, name, **labels):  # type: ignore[no-untyped-def]
    """How much one sample grew between two scrapes (0 where it did not exist yet)."""
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_metrics_follow_accepted_duplicate_rejected_and_latency(client):
    """Counters, the commit histograms and the per-route latency move as events flow."""
    before = await scrape(client)
    for n in range(3):
        assert (
            await client.post("/api/events", json={**BODY, "event_id": str(n + 1)})
        ).status == 200
    batch = [{**BODY, "event_id": "1"}, {**BODY, "event_id": "9"}]
    assert (await client.post("/api/events/batch", json=batch)).status == 200
    await problem(
        await client.post("/api/events", json={"execution_id": "1"}), 422, "invalid_envelope"
    )
    await problem(
        await client.post("/api/events", data=b"{", headers={"Content-Type": "application/json"}),
        400,
        "invalid_json",
    )
    await problem(
        await client.post("/api/events", json={**BODY, "event_id": "1", "step": "x"}),
        409,
        "event_conflict",
    )
    headers = {"Idempotency-Key": "k1"}
    for _ in range(2):
        assert (
            await client.post("/api/events", json={**BODY, "event_id": "20"}, headers=headers)
        ).status == 200
    after = await scrape(client)
    assert delta(after, before, "eventlog_events_accepted_total") == 5  # 1, 2, 3, 9, 20
    assert delta(after, before, "eventlog_events_duplicate_total") == 1  # 1 again, in the batch
    assert delta(after, before, "eventlog_requests_replayed_total") == 1
    assert delta(after, before, "eventlog_rejections_total", code="invalid_envelope") == 1
    assert delta(after, before, "eventlog_rejections_total", code="invalid_json") == 1
    assert delta(after, before, "eventlog_rejections_total", code="event_conflict") == 1
    route = {"route": "/api/events", "method": "POST"}
    assert delta(after, before, "eventlog_http_request_duration_seconds_count", **route) == 8
    assert delta(after, before, "eventlog_commit_batch_events_sum") == 8  # each event committed
    assert delta(after, before, "eventlog_commit_duration_seconds_count") >= 1
    assert after["eventlog_writer_queue_events", ()] == 0
    assert after["eventlog_head_seq", ()] >= 5


async def test_subscriber_gauge_counts_open_streams(client):
    """eventlog_stream_subscribers is 1 while a stream is open and 0 once it is closed."""
    before = await scrape(client)
    assert before["eventlog_stream_subscribers", ()] == 0
    async with client.get("/api/events/stream") as stream:
        assert await stream.content.readline() == b": stream open\n"
        assert (await scrape(client))["eventlog_stream_subscribers", ()] == 1
    for _ in range(100):
        if (await scrape(client))["eventlog_stream_subscribers", ()] == 0:
            break
        await asyncio.sleep(0.02)
    assert (await scrape(client))["eventlog_stream_subscribers", ()] == 0


async def test_request_id_is_echoed_or_minted_and_sent_on_problems_too(client):
    """A sane X-Request-ID comes back unchanged; a missing or unusable one is replaced by a
    fresh id per request; problem replies and streams carry it as well."""
    reply = await client.post("/api/events", json=BODY, headers={"X-Request-ID": "abc-123"})
    assert reply.headers["X-Request-ID"] == "abc-123"
    reply = await client.post("/api/events", json={}, headers={"X-Request-ID": "r-422"})
    assert reply.status == 422 and reply.headers["X-Request-ID"] == "r-422"
    minted = {(await client.get("/health")).headers["X-Request-ID"] for _ in range(3)}
    assert len(minted) == 3 and all(len(m) == 16 for m in minted)
    reply = await client.get("/health", headers={"X-Request-ID": "x" * 129})
    assert reply.headers["X-Request-ID"] != "x" * 129
    async with client.get("/api/events/stream", headers={"X-Request-ID": "s-1"}) as stream:
        assert stream.headers["X-Request-ID"] == "s-1"
    reply = await client.get("/no/such/route", headers={"X-Request-ID": "nf"})
    assert reply.status == 404 and reply.headers["X-Request-ID"] == "nf"


async def _forget_last_migration(dsn: str) -> None:
    if dsn.startswith("sqlite:"):
        with sqlite3.connect(dsn.removeprefix("sqlite:///")) as db:
            db.execute(
                "DELETE FROM eventlog_migrations WHERE version = (SELECT max(version) FROM eventlog_migrations)"
            )
        return
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "DELETE FROM eventlog_migrations WHERE version = (SELECT max(version) FROM eventlog_migrations)"
        )
    finally:
        await conn.close()


async def test_ready_is_503_while_the_schema_is_behind_and_health_stays_200(client, dsn):
    """/ready checks the schema, not only the connection: a missing migration makes it 503
    (naming what to run); /health, the liveness probe, is unaffected."""
    assert (await client.get("/ready")).status == 200
    await _forget_last_migration(dsn)
    doc = await problem(await client.get("/ready"), 503, "db_unavailable")
    assert "eventlog migrate" in doc["detail"]
    assert (await client.get("/health")).status == 200


@pytest.fixture
def auth_settings(settings):  # type: ignore[no-untyped-def]
    """Settings with one write token and one read token."""
    return attrs.evolve(settings, write_tokens=["w-secret"], read_tokens=["r-secret"])


async def test_probes_and_metrics_stay_open_and_the_list_is_configurable(
    aiohttp_client, auth_settings
):
    """With tokens required, /health, /ready, /metrics and the OpenAPI document answer without
    one by default; a shorter open_paths closes the others; a read token opens them again."""
    client = await aiohttp_client(create_app(auth_settings))
    for path in ("/health", "/ready", "/metrics", "/api/openapi.json"):
        assert (await client.get(path)).status == 200, path
    await problem(await client.get("/api/events"), 401, "unauthorized")
    closed = await aiohttp_client(create_app(attrs.evolve(auth_settings, open_paths=["/health"])))
    assert (await closed.get("/health")).status == 200
    await problem(await closed.get("/metrics"), 401, "unauthorized")
    await problem(await closed.get("/ready"), 401, "unauthorized")
    await problem(await closed.get("/api/openapi.json"), 401, "unauthorized")
    reader = {"Authorization": "Bearer r-secret"}
    assert (await closed.get("/metrics", headers=reader)).status == 200


async def test_open_paths_hold_under_a_mount_prefix_and_nothing_else_opens(
    aiohttp_client, auth_settings
):
    """Mounted at /events, /events/health is open; /events/api/... still needs a token."""
    host = web.Application()
    host.add_subapp("/events", create_app(auth_settings))
    client = await aiohttp_client(host)
    assert (await client.get("/events/health")).status == 200
    assert (await client.get("/events/api/openapi.json")).status == 200
    await problem(await client.get("/events/api/events"), 401, "unauthorized")
    await problem(await client.post("/events/api/events", json=BODY), 401, "unauthorized")


async def test_redacted_keys_are_never_stored_at_any_depth(aiohttp_client, settings):
    """Configured keys (any case, any depth, payload and meta) are stored as "[REDACTED]";
    other keys and the unredacted default are untouched; a retry is still a duplicate."""
    redacting = attrs.evolve(settings, redact_keys=["password", "API_KEY"])
    client = await aiohttp_client(create_app(redacting))
    body = {
        **BODY,
        "event_id": "77",
        "payload": {"user": "u", "Password": "p", "nested": [{"api_key": {"x": 1}, "n": 2}]},
        "meta": {"password": "m", "keep": True},
    }
    for _ in range(2):
        reply = await client.post("/api/events", json=body)
        assert reply.status == 200
    assert (await reply.json())["duplicate"] is True
    stored = await (await client.get("/api/events/77")).json()
    assert stored["payload"] == {
        "user": "u",
        "Password": "[REDACTED]",
        "nested": [{"api_key": "[REDACTED]", "n": 2}],
    }
    assert stored["meta"] == {"password": "[REDACTED]", "keep": True}
    plain = await aiohttp_client(create_app(attrs.evolve(settings, dsn=settings.dsn)))
    reply = await plain.post("/api/events", json={**body, "event_id": "78", "execution_id": "52"})
    assert reply.status == 200
    stored = await (await plain.get("/api/events/78")).json()
    assert stored["payload"]["Password"] == "p"


async def test_deep_payloads_under_redaction_and_on_retry_are_never_a_500(aiohttp_client, settings):
    """A payload nested as deep as allowed is redacted and stored, one level more is a 422, and
    a retry with the keys in another order (compared value by value) is a duplicate."""
    redacting = attrs.evolve(settings, redact_keys=["password"])
    client = await aiohttp_client(create_app(redacting))
    # The payload object is one level; "b" holds the rest.
    for depth, status in ((MAX_DEPTH - 1, 200), (MAX_DEPTH, 422), (900, 422)):
        nested = "[" * depth + "1" + "]" * depth
        body = (
            f'{{"execution_id": "61", "event_id": "{depth}", "event_type": "x", "step": "s", '
            f'"payload": {{"a": 1, "b": {nested}}}}}'
        )
        reply = await client.post(
            "/api/events", data=body, headers={"Content-Type": "application/json"}
        )
        assert reply.status == status, await reply.text()
    plain = await aiohttp_client(create_app(settings))
    nested = "[" * (MAX_DEPTH - 1) + "1" + "]" * (MAX_DEPTH - 1)
    first = f'{{"a": 1, "b": {nested}}}'
    swapped = f'{{"b": {nested}, "a": 1}}'
    for payload in (first, swapped):
        body = (
            '{"execution_id": "62", "event_id": "5", "event_type": "x", "step": "s", '
            f'"payload": {payload}}}'
        )
        reply = await plain.post(
            "/api/events", data=body, headers={"Content-Type": "application/json"}
        )
        assert reply.status == 200, await reply.text()
    assert (await reply.json())["duplicate"] is True


async def test_a_token_that_is_not_utf8_is_403_not_a_500(aiohttp_client, auth_settings):
    """Header bytes that are not UTF-8 make no valid token: 403, never a crash."""
    client = await aiohttp_client(create_app(auth_settings))
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"GET /api/executions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
        b"Connection: close\r\n\r\n"
    )
    await writer.drain()
    head = await reader.readline()
    writer.close()
    assert head.startswith(b"HTTP/1.1 403"), head
