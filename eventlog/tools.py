"""The CLI's working commands: tail a live stream, export a log, import one."""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

from .client import EventLogClient, EventLogError, Message, read_sse
from .codec import dumps, loads, structure_batch
from .config import Settings, describe_dsn
from .envelope import Event
from .log import EventLog
from .problems import Problem
from .retention import ndjson
from .storage.base import Page, StoreError, UnreadableRow, load_migrations
from .storage.registry import store_from_settings

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
    max_wait: float | None = None,
) -> int:
    """Print the live stream as JSON lines, resuming after every dropped connection and
    retrying for ever while the service is unreachable (``max_wait`` seconds at most)."""
    async with EventLogClient(url, token=token) as client:
        try:
            chosen: dict[str, Any] = dict(filters)
            # A person watching is told of removed events by a warning, and the tail goes on.
            stream = client.tail(
                after,
                execution_id,
                forever=True,
                max_wait=max_wait,
                skip_expired=True,
                **chosen,
            )
            async for event in stream:
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
    """Write every event (of one execution, or all) as canonical NDJSON, in seq order.

    The store is opened read-only: a SQLite file that does not exist is an error, not a new
    empty file, and a store without eventlog's schema is named as such."""
    count, after, skipped = 0, 0, []
    async with store_from_settings(settings, read_only=True) as store:
        if len(await store.pending_migrations()) == len(load_migrations(store.backend)):
            raise StoreError(
                f"{describe_dsn(settings.dsn)} holds no event log "
                "(`eventlog migrate` or `eventlog serve` creates one)"
            )
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
    out.write(ndjson(events))
    return len(events)


def _lines(stream: IO[bytes]) -> list[tuple[int, bytes]]:
    return [(n, line) for n, line in enumerate(stream, 1) if line.strip()]


class Progress:
    """A progress bar on one terminal line, redrawn in place with \\r. A log line written while
    the bar shows ends the bar's line first, so the two never overwrite each other."""

    def __init__(self, out: IO[str] | None, total: int) -> None:
        self._out = out
        self._total = total
        self._open = False  # the cursor sits at the end of the bar's line

    def show(self, done: int, new: int, duplicates: int) -> None:
        """Redraw the bar (nothing when there is no terminal)."""
        if self._out is None:
            return
        bar = "#" * (30 * done // max(self._total, 1))
        self._out.write(
            f"\r[{bar:<30}] {done}/{self._total} lines, {new} new, {duplicates} already stored"
        )
        self._out.flush()
        self._open = True

    def end_line(self) -> None:
        """Leave the bar's line, keeping the bar on screen."""
        if self._open and self._out is not None:
            self._out.write("\n")
            self._out.flush()
        self._open = False

    def filter(self, record: logging.LogRecord) -> bool:
        """A logging filter: end the bar's line before the record is written below it."""
        self.end_line()
        return True

    def __enter__(self) -> Progress:
        for handler in logging.getLogger().handlers:
            handler.addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.end_line()
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self)


async def import_file(
    settings: Settings, source: str, *, progress: IO[str] | None
) -> tuple[int, int]:
    """Append an NDJSON file (``-``: standard input) through the batch path, a thousand lines
    per transaction, drawing a bar on ``progress`` (a terminal) when given.

    Idempotent: events already stored (same key, same content) are counted, not stored again.
    Returns (new, already stored)."""
    if source == "-":
        lines = _lines(sys.stdin.buffer)
    else:
        with open(source, "rb") as f:
            lines = _lines(f)
    new = duplicates = 0
    async with EventLog(settings) as event_log:
        with Progress(progress, len(lines)) as bar:
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
                bar.show(start + len(chunk), new, duplicates)
    print(f"imported {new} new events, {duplicates} already stored", file=sys.stderr)
    return new, duplicates
