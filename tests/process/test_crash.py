"""Crash safety of real server processes: an acknowledged event survives SIGKILL (CONTRACT §5).

Each test posts the four real producer bodies of CONTRACT §1 concurrently to a real
`eventlog serve` process, kills it with SIGKILL (no graceful shutdown, nothing flushed on the
way out), starts a new process on the same store and reads everything back.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from .conftest import stored_keys

pytestmark = pytest.mark.slow

WORKERS = 8
EVENTS = 200
PAGE = 7  # small, so every execution spans several pages
TIMEOUT = aiohttp.ClientTimeout(total=20)

Key = tuple[str, str]  # (execution_id, event_id), both as the strings the server returns


def _body(i: int, *, always_id: bool) -> dict[str, Any]:
    """Event number i: one of the four real bodies of CONTRACT §1, made distinct by i."""
    shape, variant = i % 4, (i // 4) % 3
    if shape == 0:  # Rust executor / worker: every field, ids as a number and as a string
        return {
            "execution_id": 638758527854445253 + variant,
            "event_type": "command.completed",
            "step": "fetch",
            "status": "COMPLETED",
            "created_at": "2026-05-31T10:00:00Z",
            "context": {"items": i, "nested": [1, 2.5, None, True, "x"]},
            "event_id": str(640000000000000000 + i),
            "worker_id": "w-1",
            "meta": {"attempts": 2, "i": i},
        }
    if shape == 1:  # legacy Python worker: no event_id, the server mints one
        body: dict[str, Any] = {
            "execution_id": str(478775660589088776 + variant),
            "name": "call.done",
            "step": "fetch",
            "payload": {"result": "ok", "i": i},
            "worker_id": "w-2",
        }
        if always_id:
            body["event_id"] = str(650000000000000000 + i)
        return body
    if shape == 2:  # Python model shape
        body = {
            "execution_id": str(1 + variant),
            "name": "step.exit",
            "node_name": "fetch",
            "context": {"foo": "bar", "i": i},
        }
        if always_id or variant != 0:
            body["event_id"] = 660000000000000000 + i  # a JSON number this time
        return body
    body = {  # minimal
        "execution_id": str(12345 + variant),
        "event_type": "step.enter",
        "step": f"start-{i}",
    }
    if always_id or i % 8 == 3:
        body["event_id"] = 670000000000000000 + i
    return body


def _bodies(*, always_id: bool) -> list[dict[str, Any]]:
    return [_body(i, always_id=always_id) for i in range(EVENTS)]


def _expected(body: dict[str, Any]) -> dict[str, Any]:
    """The canonical fields a read must return for what this body sent."""
    expected = {
        "execution_id": str(body["execution_id"]),
        "step": body.get("step", body.get("node_name")),
        "event_type": body.get("event_type", body.get("name")),
        "payload": body.get("payload", body.get("context")),
    }
    for field in ("worker_id", "meta", "status"):
        if field in body:
            expected[field] = body[field]
    if "event_id" in body:
        expected["event_id"] = str(body["event_id"])
    if "created_at" in body:
        expected["created_at"] = body["created_at"].replace("Z", ".000000Z")
    return expected


class Posted:
    """What became of each request: the reply when acknowledged (2xx), else why not."""

    def __init__(self) -> None:
        self.acked: dict[int, dict[str, Any]] = {}
        self.failed: dict[int, str] = {}


async def _post_all(
    session: aiohttp.ClientSession,
    url: str,
    bodies: list[dict[str, Any]],
    on_ack: Callable[[int], None] | None = None,
) -> Posted:
    """POST every body from WORKERS concurrent workers; never raise for a failed request."""
    posted = Posted()
    todo = iter(enumerate(bodies))

    async def worker() -> None:
        for i, body in todo:
            try:
                async with session.post(f"{url}/api/events", json=body) as r:
                    if 200 <= r.status < 300:
                        posted.acked[i] = await r.json()
                        if on_ack is not None:
                            on_ack(len(posted.acked))
                    else:
                        posted.failed[i] = f"{r.status}: {await r.text()}"
            except (aiohttp.ClientError, TimeoutError) as e:
                posted.failed[i] = repr(e)

    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return posted


async def _get_event(
    session: aiohttp.ClientSession, url: str, execution_id: str, event_id: str
) -> Any:
    async with session.get(
        f"{url}/api/events/{event_id}", params={"execution_id": execution_id}
    ) as r:
        assert r.status == 200, (
            f"acknowledged event {execution_id}/{event_id}: {r.status} {await r.text()}"
        )
        return await r.json()


async def _all_stored(
    session: aiohttp.ClientSession, url: str, bodies: list[dict[str, Any]]
) -> list[Key]:
    executions = sorted({str(b["execution_id"]) for b in bodies})
    pages = await asyncio.gather(*(stored_keys(session, url, x, PAGE) for x in executions))
    return [key for keys in pages for key in keys]


def _duplicates(keys: list[Key]) -> list[Key]:
    seen: set[Key] = set()
    return sorted({k for k in keys if k in seen or seen.add(k)})  # type: ignore[func-returns-value]


def _acked_keys(bodies: list[dict[str, Any]], posted: Posted) -> dict[Key, dict[str, Any]]:
    """Acknowledged events by key, checking each reply names the event_id that was sent."""
    keys = {}
    for i, reply in posted.acked.items():
        body = bodies[i]
        assert reply["status"] == "ok"
        if "event_id" in body:
            assert reply["event_id"] == str(body["event_id"])
        keys[(str(body["execution_id"]), reply["event_id"])] = body
    return keys


async def test_every_acknowledged_event_survives_sigkill_right_after_the_last_reply(
    dsn: str, start_server
) -> None:
    """Events acknowledged before a SIGKILL all read back equal, each stored once, after restart."""
    bodies = _bodies(always_id=False)
    server = start_server(dsn, node_id=1)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        posted = await _post_all(session, server.url, bodies)
        server.kill()
        assert not posted.failed, f"requests failed while the server was up: {posted.failed}"
        acked = _acked_keys(bodies, posted)
        assert len(acked) == EVENTS, "two acknowledged requests got the same event id"

        restarted, stored = await _restart_and_read(session, start_server, dsn, acked, bodies)
    assert _duplicates(stored) == []
    assert sorted(stored) == sorted(acked)


async def _restart_and_read(
    session: aiohttp.ClientSession,
    start_server: Any,
    dsn: str,
    acked: dict[Key, dict[str, Any]],
    bodies: list[dict[str, Any]],
) -> tuple[Any, list[Key]]:
    """A new server on the store: every acknowledged event reads back as sent; all keys stored."""
    restarted = start_server(dsn, node_id=2)
    for (execution_id, event_id), body in acked.items():
        event = await _get_event(session, restarted.url, execution_id, event_id)
        assert {k: event[k] for k in _expected(body)} == _expected(body), body
    return restarted, await _all_stored(session, restarted.url, bodies)


async def test_sigkill_with_requests_in_flight_loses_no_ack_and_retries_store_each_event_once(
    dsn: str, start_server
) -> None:
    """SIGKILL mid-load: acked events survive once each; re-posting everything stores each once."""
    bodies = _bodies(always_id=True)  # a retry can only be idempotent with the client's event_id
    sent_keys = {(str(b["execution_id"]), str(b["event_id"])) for b in bodies}
    kill_after = EVENTS // 3
    server = start_server(dsn, node_id=1)

    def kill_on_nth_ack(count: int) -> None:
        if count == kill_after:
            server.proc.send_signal(signal.SIGKILL)  # workers keep posting into the crash

    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        posted = await _post_all(session, server.url, bodies, on_ack=kill_on_nth_ack)
        server.kill()  # reap it
        assert server.proc.returncode == -signal.SIGKILL
        assert len(posted.acked) >= kill_after
        assert posted.failed, "the kill interrupted nothing: every request was acknowledged"
        acked = _acked_keys(bodies, posted)

        restarted, stored = await _restart_and_read(session, start_server, dsn, acked, bodies)
        assert _duplicates(stored) == []
        assert set(acked) <= set(stored), "an acknowledged event was lost"
        assert set(stored) <= sent_keys, "an event nobody sent was stored"

        retried = await _post_all(session, restarted.url, bodies)
        assert not retried.failed, f"retries failed: {retried.failed}"
        for i, reply in retried.acked.items():
            assert reply["event_id"] == str(bodies[i]["event_id"])
            if i in posted.acked:
                assert reply["duplicate"] is True, f"acknowledged event {i} was stored again"
        stored = await _all_stored(session, restarted.url, bodies)
    assert _duplicates(stored) == []
    assert sorted(stored) == sorted(sent_keys)


async def test_sigterm_stops_the_server_gracefully_with_exit_status_0(
    dsn: str, start_server
) -> None:
    """SIGTERM: the server finishes, logs "stopped" and exits 0; its events are kept."""
    server = start_server(dsn, node_id=3)
    body = _body(0, always_id=True)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        async with session.post(f"{server.url}/api/events", json=body) as r:
            assert r.status == 200, await r.text()
        assert server.terminate() == 0, server.log()
        assert "stopped" in server.log()

        restarted = start_server(dsn, node_id=3)
        event = await _get_event(
            session, restarted.url, str(body["execution_id"]), body["event_id"]
        )
    assert {k: event[k] for k in _expected(body)} == _expected(body)
