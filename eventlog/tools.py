"""The CLI's working commands: tail a live stream, export a log, import one."""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

import orjson

from .client import EventLogClient, EventLogError, Message, read_sse
from .codec import converter, dumps, loads, structure_batch
from .config import Settings
from .envelope import Event
from .log import EventLog
from .problems import Problem
from .storage.base import Page, StoreError, UnreadableRow, open_store

log = logging.getLogger("eventlog")

# Message and read_sse live in the client (one SSE reader); the HTTP tests read streams with them.
__all__ = ["Message", "export", "import_file", "read_sse", "tail"]

CHUNK = 1000


# --- tail ---------------------------------------------------------------------------------


async def tail(
    url: str,
    *,
    execution_id: int | None,
    filters: dict[str, str],
    after: int | None,
    out: IO[str],
    token: str | None = None,
) -> int:
    """Print the live stream as JSON lines, resuming after every dropped connection."""
    async with EventLogClient(url, token=token) as client:
        try:
            chosen: dict[str, Any] = dict(filters)
            async for event in client.tail(after, execution_id, forever=True, **chosen):
                out.write(dumps(event).decode() + "\n")
                out.flush()
        except EventLogError as e:
            print(f"eventlog: {e}", file=sys.stderr)
            for error in e.errors:
                print(f"  {error.path}: {error.message}", file=sys.stderr)
            return 1
    return 0


# --- export / import ----------------------------------------------------------------------


async def export(settings: Settings, execution_id: int | None, out: IO[bytes]) -> int:
    """Write every event (of one execution, or all) as canonical NDJSON, in seq order."""
    count, after, skipped = 0, 0, []
    async with open_store(settings.dsn, **settings.store_options()) as store:
        while True:
            page = Page(execution_id=execution_id, after=after, limit=CHUNK)
            try:
                events = await store.page(page)
            except UnreadableRow as e:
                if e.seq is None:
                    raise
                # The rest of the log is still exported; the command fails at the end.
                print(f"eventlog: left out: {e}", file=sys.stderr)
                skipped.append(e.seq)
                events, after = e.readable, e.seq
                count += _write_events(out, events)
                continue
            count += _write_events(out, events)
            if len(events) < CHUNK:
                break
            after = events[-1].seq
    out.flush()
    print(f"exported {count} events", file=sys.stderr)
    if skipped:
        raise StoreError(
            f"{len(skipped)} stored event(s) could not be read and were left out (seq "
            f"{', '.join(map(str, skipped))}); the export is otherwise complete"
        )
    return count


def _write_events(out: IO[bytes], events: list[Event]) -> int:
    out.write(b"".join(orjson.dumps(converter.unstructure(e)) + b"\n" for e in events))
    return len(events)


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
