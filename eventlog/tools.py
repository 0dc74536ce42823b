"""The CLI's working commands: tail a live stream, export a log, import one."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from typing import IO, Any

import aiohttp
import attrs
import orjson

from .codec import converter, loads, structure_batch
from .config import Settings
from .log import EventLog
from .problems import Problem
from .storage.base import Page, open_store

log = logging.getLogger("eventlog")

CHUNK = 1000


# --- tail ---------------------------------------------------------------------------------


@attrs.frozen
class Message:
    """One Server-Sent Events message."""

    id: str | None
    event: str
    data: str


async def read_sse(content: aiohttp.StreamReader) -> AsyncIterator[Message]:
    """Messages from an event stream; comment lines (heartbeats) are skipped."""
    fields: dict[str, list[str]] = {}
    async for raw in content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if "data" in fields or "event" in fields:
                ids = fields.get("id")
                yield Message(
                    ids[-1] if ids else None,
                    fields.get("event", ["message"])[-1],
                    "\n".join(fields.get("data", [])),
                )
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value.removeprefix(" "))


async def tail(
    url: str,
    *,
    execution_id: int | None,
    filters: dict[str, str],
    after: int | None,
    out: IO[str],
    retry_delay: float = 1.0,
    max_reconnects: int | None = None,
) -> int:
    """Print the live stream as JSON lines, resuming after a dropped connection."""
    base = url.rstrip("/")
    path = (
        f"{base}/api/executions/{execution_id}/events/stream"
        if execution_id is not None
        else f"{base}/api/events/stream"
    )
    last = after
    reconnects = 0
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    # Lines as long as the largest event the service accepts (a line per SSE data field).
    async with aiohttp.ClientSession(timeout=timeout, read_bufsize=16 * 2**20) as session:
        while True:
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            try:
                async with session.get(path, params=filters, headers=headers) as response:
                    if 400 <= response.status < 500:
                        print(
                            f"eventlog: {response.status}: {await response.text()}", file=sys.stderr
                        )
                        return 1
                    if response.status == 200:
                        async for message in read_sse(response.content):
                            if message.event == "cutoff":
                                log.warning("the server cut the stream off; resuming")
                            elif message.data:
                                out.write(message.data + "\n")
                                out.flush()
                            if message.id is not None:
                                last = int(message.id)
            except (aiohttp.ClientError, ConnectionError, TimeoutError, ValueError) as e:
                log.warning("stream lost (%s); resuming after seq %s", e, last)
            reconnects += 1
            if max_reconnects is not None and reconnects > max_reconnects:
                return 0
            await asyncio.sleep(retry_delay)


# --- export / import ----------------------------------------------------------------------


async def export(settings: Settings, execution_id: int | None, out: IO[bytes]) -> int:
    """Write every event (of one execution, or all) as canonical NDJSON, in seq order."""
    count, after = 0, 0
    async with open_store(settings.dsn, **settings.store_options()) as store:
        while True:
            events = await store.page(Page(execution_id=execution_id, after=after, limit=CHUNK))
            out.write(b"".join(orjson.dumps(converter.unstructure(e)) + b"\n" for e in events))
            count += len(events)
            if len(events) < CHUNK:
                break
            after = events[-1].seq
    out.flush()
    print(f"exported {count} events", file=sys.stderr)
    return count


def _lines(stream: IO[bytes]) -> list[tuple[int, bytes]]:
    return [(n, line) for n, line in enumerate(stream, 1) if line.strip()]


async def import_file(settings: Settings, path: str, *, progress: bool) -> tuple[int, int]:
    """Append an NDJSON file through the batch path, a thousand lines per transaction.

    Idempotent: events already stored (same key, same content) are counted, not stored again.
    Returns (new, already stored)."""
    with open(path, "rb") as f:
        lines = _lines(f)
    new = duplicates = 0
    async with EventLog(settings) as event_log:
        for start in range(0, len(lines), CHUNK):
            chunk = lines[start : start + CHUNK]
            values: list[Any] = []
            for number, line in chunk:
                try:
                    values.append(loads(line))
                except Problem as e:
                    raise Problem(f"line {number}: {e.detail}") from None
            envelopes = structure_batch(values, lines=[n for n, _ in chunk])
            receipt, _ = await event_log.ingest(envelopes, batch=True)
            duplicates += len(receipt.duplicates)
            new += len(chunk) - len(receipt.duplicates)
            if progress:
                done = start + len(chunk)
                bar = "#" * (30 * done // len(lines))
                print(
                    f"\r[{bar:<30}] {done}/{len(lines)} lines, {new} new, {duplicates} already stored",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
    if progress:
        print(file=sys.stderr)
    print(f"imported {new} new events, {duplicates} already stored", file=sys.stderr)
    return new, duplicates
