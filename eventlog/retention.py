"""Retention: remove the events ingested before a cut-off, a short transaction at a time,
optionally writing them to an archive first."""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
import os
import re
from datetime import datetime, timedelta
from pathlib import Path

import attrs
import orjson

from .codec import converter
from .envelope import Event
from .storage.base import EventStore, Page, StoreUnavailable

log = logging.getLogger("eventlog.retention")

_DURATION = re.compile(r"([0-9]+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}

# A purge step should hold the write lock for about this long; the step size follows how long
# the last ones held it (as the store measured), so a slow disk or a busy database gets smaller
# steps. What a step does without the lock (reading ahead, checkpoints) does not count.
STEP_SECONDS = 0.015
FIRST_STEP, MIN_STEP, MAX_STEP = 500, 50, 50_000
# SQLite pages a step of incremental vacuum frees, paced the same way (a step that moves pages
# the disk must read first takes longer: 500 pages took up to 100 ms at 10 million events).
FIRST_RECLAIM, MIN_RECLAIM, MAX_RECLAIM = 100, 10, 5000
ARCHIVE_PAGE = 1000


def parse_duration(text: str) -> timedelta:
    """'90d', '12h', '30m', '45s', '2w', or several together ('1d12h'); ValueError otherwise."""
    parts = _DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(
            f"{text!r} is not a duration: a number and a unit (s, m, h, d, w), like 90d or 12h"
        )
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return timedelta(seconds=seconds)


@attrs.frozen
class PurgeResult:
    """What a purge removed (or, dry, would remove): events at or below seq ``through``."""

    through: int
    removed: int
    archived: int | None = None  # events written to the archive, when there was one
    steps: int = 0  # the short transactions that removed the events
    # The longest any of them, or of the space-returning steps after them, held the write
    # lock, in seconds.
    longest_hold: float = 0.0

    @property
    def steps_said(self) -> str:
        """The steps as logs say them (scripts read the figure back from there)."""
        return (
            f"in {self.steps} steps; the write lock was held at most "
            f"{self.longest_hold * 1000:.1f} ms at a time"
        )


async def purge(
    store: EventStore,
    before: datetime,
    *,
    dry_run: bool = False,
    archive: str | Path | None = None,
) -> PurgeResult:
    """Remove every event ingested before ``before`` (see EventStore.purge_cut), in steps of
    about STEP_SECONDS each, while writes go on between them. With ``archive``, the events to
    remove are first written to that file as canonical NDJSON (gzip when its name ends in .gz),
    and nothing is removed until it is complete and on disk. ``dry_run`` counts, removes nothing."""
    through = await store.purge_cut(before)
    if dry_run:
        return PurgeResult(through, await store.count_through(through))
    archived = None
    if archive is not None:
        archived = await write_archive(store, through, Path(archive))
        if archived < (held := await store.count_through(through)):
            # Read from a replica that is behind: the archive lacks events the purge would
            # remove, so nothing is removed.
            raise StoreUnavailable(
                f"the archive holds {archived} of the {held} events to remove (the reads lag "
                "behind the database written to): nothing was removed; try again"
            )
    # What the database keeps apart goes whole; what is left, a short step at a time.
    # Between two steps, the writes that waited for the lock get at least as long as it was held.
    removed, step = await store.purge_whole(before), _Pace(FIRST_STEP, MIN_STEP, MAX_STEP)
    steps, longest = 0, 0.0
    while True:
        done = await store.purge_chunk(through, step.size)
        step.held(done.held)
        steps, longest = steps + 1, max(longest, done.held)
        if done.removed == 0 and await store.purged_through() >= through:
            break
        removed += done.removed
        await asyncio.sleep(max(store.purge_pause, done.held))
    reclaim = _Pace(FIRST_RECLAIM, MIN_RECLAIM, MAX_RECLAIM)
    while True:
        given = await store.reclaim(reclaim.size)
        reclaim.held(given.held)
        longest = max(longest, given.held)
        if not given.more:
            break
        await asyncio.sleep(max(store.purge_pause, given.held))
    return PurgeResult(through, removed, archived, steps, longest)


class _Pace:
    """The size of a purge's steps, aimed at holding the lock STEP_SECONDS each from how long
    the last one held it: down at once, up by half at most (a step's time is not proportional
    to its size: it also waits for the disk)."""

    def __init__(self, first: int, low: int, high: int) -> None:
        self.size, self.low, self.high = first, low, high

    def held(self, seconds: float) -> None:
        wanted = self.size * STEP_SECONDS / max(seconds, 1e-4)
        self.size = int(min(max(wanted, self.low), self.size * 1.5, self.high))


def ndjson(events: list[Event]) -> bytes:
    """Events as canonical NDJSON lines, as every read renders them."""
    return b"".join(orjson.dumps(converter.unstructure(e)) + b"\n" for e in events)


async def write_archive(store: EventStore, through: int, path: Path) -> int:
    """Write the held events at or below seq ``through`` to ``path`` as canonical NDJSON (the
    form `eventlog export` writes), flushed and synced; returns how many."""
    count, after = 0, 0
    out: io.BufferedIOBase
    with open(path, "wb") as raw:
        out = gzip.GzipFile(fileobj=raw, mode="wb") if path.name.endswith(".gz") else raw
        try:
            while True:
                events = await store.page(Page(after=after, until=through, limit=ARCHIVE_PAGE))
                out.write(ndjson(events))
                count += len(events)
                if len(events) < ARCHIVE_PAGE:
                    break
                after = events[-1].seq
        finally:
            if out is not raw:
                out.close()  # the gzip trailer; the file itself stays open
        raw.flush()
        os.fsync(raw.fileno())
    return count
