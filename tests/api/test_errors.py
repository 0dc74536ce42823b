"""Every row of CONTRACT §7: each error is problem+json with a stable code, never a 500."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import secrets
import sqlite3
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import attrs
import pytest

from eventlog.config import Settings
from eventlog.log import EventLog
from eventlog.problems import DB_UNAVAILABLE_DETAIL
from eventlog.storage.registry import store_from_settings
from eventlog.storage.sqlite import SqliteStore
from eventlog.web import create_app

from .helpers import CONTRACT_BODIES

MINIMAL = CONTRACT_BODIES["minimal"]
JSON = {"Content-Type": "application/json"}


async def problem(reply, status, code):
    """Assert the reply is a problem document with this status and code; return it."""
    assert reply.status == status, await reply.text()
    assert reply.content_type == "application/problem+json"
    doc = await reply.json(content_type=None)
    assert doc["status"] == status and doc["code"] == code
    assert {"type", "title", "detail"} <= set(doc)
    return doc


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{", "invalid_json"),
        (b"{'a': 1}", "invalid_json"),
        (b"NaN", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"", "empty_body"),
        (b"  \n", "empty_body"),
    ],
)
async def test_body_that_is_not_json_is_400(client, body, code):
    """Not JSON, or nothing at all: 400."""
    reply = await client.post(
        "/api/events", data=body, headers={"Content-Type": "application/json"}
    )
    await problem(reply, 400, code)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
async def test_other_media_type_is_415(client, content_type):
    """A body declared as something other than JSON is refused."""
    reply = await client.post(
        "/api/events", data=b'{"execution_id": 1}', headers={"Content-Type": content_type}
    )
    await problem(reply, 415, "unsupported_media_type")


async def test_missing_content_type_is_read_as_json(client):
    """No Content-Type header at all: the body is read as JSON."""
    reply = await client.post(
        "/api/events",
        data=b'{"execution_id": "12345", "event_type": "step.enter", "step": "start"}',
        skip_auto_headers={"Content-Type"},
    )
    assert reply.status == 200, await reply.text()


async def test_json_with_charset_parameter_is_accepted(client):
    """application/json; charset=utf-8 is JSON."""
    reply = await client.post(
        "/api/events",
        data=b'{"execution_id": "12345", "event_type": "step.enter", "step": "start"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert reply.status == 200


async def test_body_over_the_limit_is_413(client):
    """A body past max_body_bytes (1 MiB by default) is refused before it is parsed."""
    body = json.dumps({**MINIMAL, "payload": "x" * (1024 * 1024)}).encode()
    reply = await client.post("/api/events", data=io.BytesIO(body), headers=JSON)
    doc = await problem(reply, 413, "body_too_large")
    assert "1048576" in doc["detail"]


async def test_valid_json_invalid_envelope_is_422(client):
    """Valid JSON that is not an envelope: 422 with the fields listed."""
    for body in ([1, 2], "text", 3, None, {}):
        reply = await client.post("/api/events", data=json.dumps(body), headers=JSON)
        doc = await problem(reply, 422, "invalid_envelope")
        assert doc["errors"]


async def test_idempotency_conflict_is_409(client):
    """The same key with other content."""
    body = {**MINIMAL, "event_id": 5}
    await client.post("/api/events", json=body)
    reply = await client.post("/api/events", json={**body, "step": "other"})
    await problem(reply, 409, "event_conflict")


@pytest.mark.parametrize("path", ["/api/events/123", "/api/events/9223372036854775807"])
async def test_unknown_event_id_is_404(client, path):
    """A well-formed id that is not stored."""
    await problem(await client.get(path), 404, "not_found")


@pytest.mark.parametrize("path", ["/api/events/abc", "/api/events/99999999999999999999"])
async def test_malformed_event_id_is_400(client, path):
    """An id that cannot exist is a bad parameter, not a missing event."""
    await problem(await client.get(path), 400, "invalid_parameter")


async def test_unknown_route_is_404_and_wrong_method_405(client):
    """aiohttp's own errors come out as problems too."""
    await problem(await client.get("/nowhere"), 404, "not_found")
    reply = await client.delete("/api/events")
    await problem(reply, 405, "method_not_allowed")
    assert "POST" in reply.headers["Allow"]


@pytest.fixture
def auth_settings(settings: Settings) -> Settings:
    """Settings with one write token and one read token."""
    return attrs.evolve(settings, write_tokens=["w-secret"], read_tokens=["r-secret"])


async def test_credentials_401_403_and_allowed(aiohttp_client, auth_settings):
    """Missing token 401, wrong or read-only token writing 403; right tokens pass; /health open."""
    client = await aiohttp_client(create_app(auth_settings))
    await problem(await client.post("/api/events", json=MINIMAL), 401, "unauthorized")
    await problem(await client.get("/api/events/1"), 401, "unauthorized")
    bad = {"Authorization": "Bearer nope"}
    await problem(await client.post("/api/events", json=MINIMAL, headers=bad), 403, "forbidden")
    read_only = {"Authorization": "Bearer r-secret"}
    await problem(
        await client.post("/api/events", json=MINIMAL, headers=read_only), 403, "forbidden"
    )
    write = {"Authorization": "Bearer w-secret"}
    reply = await client.post("/api/events", json=MINIMAL, headers=write)
    assert reply.status == 200
    event_id = (await reply.json())["event_id"]
    for token in (read_only, write):
        assert (await client.get(f"/api/events/{event_id}", headers=token)).status == 200
    assert (await client.get("/health")).status == 200


def slowed(store, delay, calls=None):
    """The store, each write transaction made slower (a real store, deliberately delayed)."""
    original = store.write

    async def slow_write(*args):
        if calls is not None:
            calls.append(1)
        await asyncio.sleep(delay)
        return await original(*args)

    store.write = slow_write
    return store


async def test_full_writer_queue_is_503_overloaded_and_loses_nothing(aiohttp_client, settings):
    """A tiny queue before a slow store: some writes get 503 + Retry-After; every 200 is stored."""
    tight = attrs.evolve(settings, writer_queue_events=2, writer_max_batch=1)
    store = slowed(store_from_settings(tight), 0.05)
    client = await aiohttp_client(create_app(tight, event_log=EventLog(tight, store=store)))
    bodies = [{**MINIMAL, "event_id": str(i + 1)} for i in range(30)]
    replies = await asyncio.gather(*(client.post("/api/events", json=b) for b in bodies))
    accepted = [b for b, r in zip(bodies, replies, strict=True) if r.status == 200]
    refused = [r for r in replies if r.status != 200]
    assert accepted and refused
    for reply in refused:
        await problem(reply, 503, "overloaded")
        assert int(reply.headers["Retry-After"]) >= 1
    for body in accepted:
        assert (await client.get(f"/api/events/{body['event_id']}")).status == 200


class _Proxy:
    """A TCP relay to the real PostgreSQL that the test can cut, to make the database vanish."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _relay(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]

        async def pipe(src, dst):
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


async def test_unreachable_database_is_503_with_retry_after(
    aiohttp_client, pg_database_dsn, caplog
):
    """PostgreSQL gone mid-run: writes and reads answer 503 db_unavailable quickly, never hang;
    the replies carry one fixed sentence, the driver's text (with host:port) goes to the log."""
    parts = urlsplit(pg_database_dsn)
    proxy = _Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    port = await proxy.start()
    netloc = f"{parts.username}@127.0.0.1:{port}" if parts.username else f"127.0.0.1:{port}"
    schema = f"t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(pg_database_dsn)
    await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.close()
    dsn = urlunsplit(parts._replace(netloc=netloc, query=f"search_path={schema}"))
    settings = Settings(dsn=dsn, db_connect_timeout=1.0, db_command_timeout=2.0)
    client = await aiohttp_client(create_app(settings))
    reply = await client.post("/api/events", json={**MINIMAL, "execution_id": "777001"})
    assert reply.status == 200
    await proxy.cut()
    reply = await asyncio.wait_for(client.post("/api/events", json=MINIMAL), timeout=10)
    write = await problem(reply, 503, "db_unavailable")
    assert int(reply.headers["Retry-After"]) >= 1
    reply = await asyncio.wait_for(client.get("/api/events/1"), timeout=10)
    read = await problem(reply, 503, "db_unavailable")
    assert write["detail"] == read["detail"] == DB_UNAVAILABLE_DETAIL
    causes = [r.getMessage() for r in caplog.records if "reads answer 503" in r.getMessage()]
    assert len(causes) == 1 and str(port) in causes[0]
    await problem(await client.get("/ready"), 503, "db_unavailable")
    assert (await client.get("/health")).status == 200  # alive, though not ready


async def test_a_locked_sqlite_file_is_503_without_its_path_in_the_reply(
    aiohttp_client, tmp_path, caplog
):
    """A SQLite file another process holds locked: the write is 503 with the fixed sentence;
    the file's path and SQLite's message are in the log only."""
    path = tmp_path / "locked-events.db"
    settings = Settings(dsn=f"sqlite:///{path}")
    event_log = EventLog(settings, store=SqliteStore(settings.dsn, busy_timeout_ms=50))
    async with event_log:
        client = await aiohttp_client(create_app(settings, event_log=event_log))
        assert (await client.post("/api/events", json=MINIMAL)).status == 200
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            doc = await problem(
                await client.post("/api/events", json=MINIMAL), 503, "db_unavailable"
            )
        finally:
            holder.close()
    assert doc["detail"] == DB_UNAVAILABLE_DETAIL
    assert str(path) not in json.dumps(doc) and "locked" not in json.dumps(doc)
    logged = [r.getMessage() for r in caplog.records if "writes answer 503" in r.getMessage()]
    assert len(logged) == 1 and str(path) in logged[0] and "locked" in logged[0]
