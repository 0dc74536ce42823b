"""Shared checks for the HTTP tests."""

from __future__ import annotations

import asyncio
import io
import re
from datetime import UTC, datetime
from typing import Any

from eventlog import tools
from eventlog.client import read_sse
from eventlog.codec import ALIASES, loads, same_json
from eventlog.config import Settings
from eventlog.openapi import CONTRACT_EXAMPLES

CANONICAL_KEYS = {
    "event_id",
    "execution_id",
    "seq",
    "step",
    "event_type",
    "status",
    "payload",
    "meta",
    "worker_id",
    "result_kind",
    "result_uri",
    "event_ids",
    "actionable",
    "informative",
    "created_at",
    "ingested_at",
}
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")

# The four bodies of CONTRACT §1, as today's producers send them: the document's examples, so
# every example the API description shows is also proven to work.
CONTRACT_BODIES = {name: example["value"] for name, example in CONTRACT_EXAMPLES.items()}

_ID_FIELDS = {"execution_id", "event_id"}


def instant(text: str) -> datetime:
    """An RFC 3339 timestamp as an aware datetime."""
    return datetime.fromisoformat(text.upper()).astimezone(UTC)


def assert_reads_back(sent: dict[str, Any], event: dict[str, Any]) -> None:
    """Every field the producer sent reads back equal (CONTRACT §2), under its canonical name."""
    assert set(event) == CANONICAL_KEYS
    for key, value in sent.items():
        field = ALIASES.get(key, key)
        if field not in CANONICAL_KEYS or field in ("seq", "ingested_at"):
            continue  # unknown fields are ignored, server-owned ones never taken from a client
        if value is None and field == "event_id":
            continue  # null means absent
        got = event[field]
        if field in _ID_FIELDS:
            assert got == str(int(value)), field
        elif field == "event_ids":
            assert got == (None if value is None else [str(int(v)) for v in value])
        elif field == "created_at":
            assert instant(got) == instant(value), field
        elif field == "status":
            assert got == value.upper()
        elif value is None and field in ("result_kind", "actionable", "informative"):
            continue  # null means absent: the default applies
        else:
            assert same_json(got, value), (field, got, value)


def assert_canonical(event: dict[str, Any]) -> None:
    """The output shape of CONTRACT §2: ids as decimal strings, UTC microsecond timestamps."""
    assert set(event) == CANONICAL_KEYS
    for key in ("event_id", "execution_id", "seq"):
        assert isinstance(event[key], str) and event[key].isdigit(), key
    assert event["event_ids"] is None or all(isinstance(i, str) for i in event["event_ids"])
    assert TIMESTAMP.fullmatch(event["created_at"])
    assert TIMESTAMP.fullmatch(event["ingested_at"])
    assert isinstance(event["actionable"], bool) and isinstance(event["informative"], bool)
    assert event["result_kind"] in ("data", "ref", "refs")


async def first_message(client: Any, path: str, after: int) -> dict[str, Any]:
    """The data of the first message of a stream read from just past ``after``."""
    reply = await client.get(path, params={"after": str(after)})
    assert reply.status == 200, await reply.text()
    try:
        async with asyncio.timeout(10):
            async for message in read_sse(reply.content):
                assert message.event == "message", message
                return loads(message.data.encode())
    finally:
        reply.close()
    raise AssertionError(f"{path} ended without a message")


async def every_read(client: Any, dsn: str, event_id: str, execution_id: str) -> dict[str, Any]:
    """One stored event as every read path renders it (each answering 200): by id, its
    execution's page, the feed, both streams and an export; and its execution as the summary
    and the executions list show it. The event must be its execution's newest."""

    async def get(path: str, **params: str) -> Any:
        reply = await client.get(path, params=params)
        assert reply.status == 200, (path, await reply.text())
        return await reply.json()

    by_id = await get(f"/api/events/{event_id}", execution_id=execution_id)
    seq = int(by_id["seq"])
    page = await get(f"/api/executions/{execution_id}/events", after=str(seq - 1), limit="1")
    newest = await get(f"/api/executions/{execution_id}/events", order="desc", limit="1")
    feed = await get("/api/events", after=str(seq - 1), limit="1")
    summary = await get(f"/api/executions/{execution_id}")
    listing = await get("/api/executions", after=str(seq + 1), limit="1")
    out = io.BytesIO()
    await tools.export(Settings(dsn=dsn), int(execution_id), out)
    exported = [loads(line) for line in out.getvalue().splitlines()]
    return {
        "by id": by_id,
        "execution page": page["events"][0],
        "execution page, newest first": newest["events"][0],
        "feed": feed["events"][0],
        "stream": await first_message(client, "/api/events/stream", seq - 1),
        "execution stream": await first_message(
            client, f"/api/executions/{execution_id}/events/stream", seq - 1
        ),
        "export": exported[-1],
        "summary": summary,
        "listing": listing["executions"][0],
    }


def assert_reads_agree(reads: dict[str, Any]) -> None:
    """Every path gives the same event, and the summaries agree with it."""
    event = reads["by id"]
    for path in EVENT_PATHS:
        assert reads[path] == event, path
    for path in ("summary", "listing"):
        execution = reads[path]
        assert execution["execution_id"] == event["execution_id"], path
        assert execution["last_seq"] == event["seq"], path
        # (same-width UTC timestamps: text order is time order)
        assert execution["first_event_at"] <= event["created_at"], path
        assert event["created_at"] <= execution["last_event_at"], path
        if execution["event_count"] == 1:
            assert execution["first_event_at"] == execution["last_event_at"], path


EVENT_PATHS = (
    "execution page",
    "execution page, newest first",
    "feed",
    "stream",
    "execution stream",
    "export",
)
