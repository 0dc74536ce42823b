"""Log lines of a real server: JSON or text, one access line per request with its request id,
and no secret in any line."""

from __future__ import annotations

import json

import aiohttp
import pytest

pytestmark = pytest.mark.slow


async def test_json_logs_carry_request_ids_and_never_a_token(start_server, tmp_path):
    """--log-format json: every line is a JSON object; the access line names method, path,
    status, duration and the request id the client sent; the bearer token appears nowhere."""
    server = start_server(
        f"sqlite:///{tmp_path}/events.db",
        args=("--port", "0", "--log-format", "json"),
        env={"EVENTLOG_WRITE_TOKENS": "tok-SECRET-1"},
    )
    body = {"execution_id": "5", "event_type": "step.enter", "step": "a"}
    headers = {"Authorization": "Bearer tok-SECRET-1", "X-Request-ID": "req-json-1"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/api/events", json=body, headers=headers) as r:
            assert r.status == 200 and r.headers["X-Request-ID"] == "req-json-1"
        bad = {"Authorization": "Bearer tok-WRONG-2", "X-Request-ID": "req-json-2"}
        async with session.post(f"{server.url}/api/events", json=body, headers=bad) as r:
            assert r.status == 403
    assert server.terminate() == 0
    text = server.log()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    access = [line for line in lines if line.get("request_id") == "req-json-1"]
    assert len(access) == 1
    assert access[0]["method"] == "POST" and access[0]["path"] == "/api/events"
    assert access[0]["status"] == 200 and access[0]["duration_ms"] >= 0
    assert [line["status"] for line in lines if line.get("request_id") == "req-json-2"] == [403]
    assert "SECRET" not in text and "WRONG" not in text


async def test_text_logs_end_access_lines_with_the_request_id(start_server, tmp_path):
    """The default text format: a readable access line ending in [request_id=…]."""
    server = start_server(f"sqlite:///{tmp_path}/events.db")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/health", headers={"X-Request-ID": "t-1"}) as r:
            assert r.status == 200
    assert server.terminate() == 0
    (line,) = [x for x in server.log().splitlines() if "[request_id=t-1]" in x]
    assert '"GET /health" 200' in line and " INFO aiohttp.access: " in line
