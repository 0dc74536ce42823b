"""Live subscriptions: one reader follows the log by seq and fans new events out.

Why this never skips: seq is assigned under the log's write lock and grows in commit order
(storage/base.py), so when an event with seq N is visible, every event below N is visible too.
The hub reads "seq > last seen" from the store — one query per wake-up, shared by every
subscriber — rather than trusting what any one writer pushed, so events written by other
processes arrive the same way as our own. Wake-ups come from our writer after each commit,
from PostgreSQL's LISTEN/NOTIFY for other instances, and from a poll timer, so a lost
notification only delays.

With a read replica (read_dsn) the hub reads the standby, which replays the primary's commits
in commit order, so what it sees is still a prefix of the log. The wake-ups still come from
the primary (our writer, LISTEN there), and carry the seq committed up to: while the standby
has not replayed that far, the hub reads it again after a short, growing delay. The mark new
subscribers start from is only ever what the standby showed, never a seq it may not hold yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import attrs

from .envelope import Event
from .problems import ResumeExpired
from .storage.base import EventStore, Filter, Page, StoreError, StoreUnavailable, UnreadableRow

log = logging.getLogger("eventlog.stream")

READ_PAGE = 1000
COALESCE = 0.02  # seconds a wake-up waits for more commits before reading
CHASE_FIRST, CHASE_MAX = 0.005, 0.1  # seconds between reads of a replica that is behind


class CutOff(Exception):
    """The subscriber fell too far behind; it should resume from ``last_seq``."""

    def __init__(self, last_seq: int) -> None:
        super().__init__(f"too far behind; resume after seq {last_seq}")
        self.last_seq = last_seq


@attrs.frozen
class Expired:
    """In a subscription's chunks, before anything else: the reader resumes after seq ``after``
    but retention has removed the events through ``purged_through``; the chunks go on from
    there."""

    after: int
    purged_through: int


async def overtaken(store: EventStore, after: int, events: list[Event]) -> int | None:
    """The purge horizon, when retention removed events past ``after`` that ``events`` (read
    just past ``after``, in seq order) may lack; None when nothing can be missing. The horizon
    is read after the events: it only grows, so a purge that overtook the read is seen."""
    if events and events[0].seq == after + 1:
        return None  # it starts just past the cursor
    horizon = await store.purged_through()
    return horizon if after < horizon else None


@attrs.define(eq=False)
class _Subscriber:
    filter: Filter
    limit: int  # most events waiting; past it, the subscriber is cut off
    queue: asyncio.Queue[list[Event] | UnreadableRow | Expired] = attrs.Factory(asyncio.Queue)
    waiting: int = 0
    overflowed: bool = False
    ended: bool = False

    def end(self) -> None:
        """The reader gets what is queued, then the end of its stream."""
        self.ended = True
        self.queue.put_nowait([])  # wake it, so it notices


class Hub:
    """Follows the store's head and hands new events to subscribers."""

    def __init__(
        self, store: EventStore, *, poll_interval: float = 1.0, queue_events: int = 1000
    ) -> None:
        self._store = store
        self._poll_interval = poll_interval
        self._queue_events = queue_events
        self._subscribers: set[_Subscriber] = set()
        self._wake = asyncio.Event()
        self._last = 0
        self._stopping = False
        self.closed = False  # stopped: a new subscription ends at once
        self._task: asyncio.Task[None] | None = None
        self._failing = False  # the last read failed (logged once, not once per poll)
        # A replica shows the log up to its own point: the mark moves only by reading it.
        self._replicated = store.replicated
        self._marked = False  # the mark was read from the store (not so while it was down)
        self._target = 0  # the highest seq known to be committed (from the wake-ups)

    @property
    def last_seq(self) -> int:
        """The highest seq handed out so far."""
        return self._last

    @property
    def subscriber_count(self) -> int:
        """Live subscribers."""
        return len(self._subscribers)

    async def start(self) -> None:
        """Start following from the store's current head (a replica that does not answer yet
        is read again by the follower; subscriptions wait for it)."""
        try:
            self._last = await self._store.head()
            self._marked = True
        except StoreError:
            if not self._replicated:
                raise
            log.warning("stream hub cannot read the replica yet; streams open once it answers")
        with contextlib.suppress(StoreError):
            await self._store.listen(self.notify)
        self._task = asyncio.create_task(self._run(), name="eventlog-hub")

    def end_streams(self) -> None:
        """End every subscription (at shutdown): each sees the end of its stream."""
        for sub in self._subscribers:
            sub.end()
        self._subscribers.clear()

    async def stop(self) -> None:
        """Stop following; subscribers see the end of their stream."""
        self.closed = True
        self.end_streams()
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            await self._task
            self._task = None

    def notify(self, committed: int | None = None) -> None:
        """Something was committed (up to seq ``committed``, when the caller knows): read the
        store soon. With nobody subscribed, a known seq just moves the mark, no read needed
        (unless reads go to a replica, which may not hold that seq yet)."""
        if committed is not None:
            self._target = max(self._target, committed)
            if not self._subscribers and not self._replicated:
                self._last = max(self._last, committed)
                return
        self._wake.set()

    def _next_wait(self, chase: float) -> float:
        """Seconds until the next read: soon while a replica is behind what was committed."""
        if self._replicated and self._last < self._target:
            return min(chase, self._poll_interval)
        return self._poll_interval

    async def _run(self) -> None:
        chase = CHASE_FIRST
        while not self._stopping:
            wait = self._next_wait(chase)
            chase = min(chase * 2, CHASE_MAX) if wait < self._poll_interval else CHASE_FIRST
            # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            if self._subscribers or self._replicated:
                # Let commits close together share one read (a replica's head is read even
                # with nobody subscribed: the mark moves only by reading it).
                await asyncio.sleep(COALESCE)
            self._wake.clear()
            if self._stopping:
                return
            try:
                await self._catch_up()
            except StoreError as e:
                if not self._failing:
                    log.warning("stream hub cannot read the store, live streams wait: %s", e)
                self._failing = True
            except Exception:  # the hub must outlive any one bad read
                log.exception("stream hub failed to read the store")
            else:
                if self._failing:
                    log.info("stream hub reads the store again")
                self._failing = False

    async def _catch_up(self) -> None:
        if not self._subscribers:
            # Nobody to hand events to: only move the mark new subscribers start from.
            head = await self._store.head()
            if not self._subscribers:  # (nobody subscribed while we read the head)
                self._last = max(self._last, head)
                self._marked = True
                return
        while not self._stopping:
            try:
                events = await self._store.page(Page(after=self._last, limit=READ_PAGE))
            except UnreadableRow as e:
                # One bad row must not stall every stream: hand out what came before it, tell
                # the subscribers it might concern, and go on past it.
                if e.seq is None:
                    raise
                log.error("streams skip a stored row: %s", e)
                if e.readable:
                    self._fan_out(e.readable)
                for sub in list(self._subscribers):
                    if sub.filter.execution_id in (None, e.execution_id):
                        sub.queue.put_nowait(e)
                self._last = max(self._last, e.seq)
                continue
            read = len(events)
            # Past a gap: a purge overtook the hub (it fell behind, say while the store
            # failed). The subscribers are told, not handed the jump in silence.
            if events and (horizon := await overtaken(self._store, self._last, events)):
                for sub in list(self._subscribers):
                    sub.queue.put_nowait(Expired(self._last, horizon))
                self._last = horizon
                events = [e for e in events if e.seq > horizon]
            if events:
                self._fan_out(events)
                self._last = max(self._last, events[-1].seq)
            if read < READ_PAGE:
                return

    def _fan_out(self, events: list[Event]) -> None:
        # One queue item per subscriber per read, not per event: a hundred subscribers cost a
        # hundred wake-ups per read, however many events it brought.
        for sub in list(self._subscribers):
            matching = [e for e in events if sub.filter.matches(e)]
            if not matching:
                continue
            if sub.waiting + len(matching) > sub.limit:
                # Memory stays bounded: this subscriber gets no more and is told to resume.
                sub.overflowed = True
                self._subscribers.discard(sub)
                sub.queue.put_nowait([])  # wake it, so it notices
                continue
            sub.waiting += len(matching)
            sub.queue.put_nowait(matching)

    def subscribe(
        self, filter: Filter, after: int | None, *, heartbeat: float | None
    ) -> Subscription:
        """A subscription to events matching ``filter`` with seq > ``after`` (from now when
        None); see Subscription. StoreUnavailable while the store was never read (a replica
        down since the start): "now" is not known yet."""
        if not self._marked:
            self._wake.set()
            raise StoreUnavailable("the replica has not answered since the start")
        return Subscription(self, filter, after, heartbeat)


class Subscription:
    """``async with hub.subscribe(...) as events: async for event in events``.

    Yields the matching events, first those already stored, then live ones, with no gap and
    no repeat; None after each quiet ``heartbeat`` (never, when it is None). Raises CutOff when the subscriber falls too
    far behind, ResumeExpired when retention removed events past ``after``; ends when the log
    closes. Live events are collected from the moment the block
    is entered.
    """

    def __init__(
        self, hub: Hub, filter: Filter, after: int | None, heartbeat: float | None
    ) -> None:
        self._hub = hub
        self._sub = _Subscriber(filter, hub._queue_events)
        self._after = after
        self._heartbeat = heartbeat
        self._start = 0
        self.position = 0  # the seq the reader has been given everything up to

    def open(self) -> None:
        """Start collecting live events (``async with`` does this)."""
        self._start = self._hub.last_seq  # from here on the queue has every match
        if self._hub.closed:
            self._sub.ended = True
            return
        self._hub._subscribers.add(self._sub)

    def close(self) -> None:
        """Stop collecting (``async with`` does this)."""
        self._hub._subscribers.discard(self._sub)

    def end(self) -> None:
        """End the stream: the reader gets what is queued, then the end."""
        self._sub.end()
        self.close()

    async def __aenter__(self) -> Subscription:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def __aiter__(self) -> AsyncIterator[Event | None]:
        async for chunk in self.chunks():
            if chunk is None:
                yield None
            elif isinstance(chunk, Expired):
                raise ResumeExpired(chunk.after, chunk.purged_through)
            elif not isinstance(chunk, UnreadableRow):  # (logged where it was met)
                for event in chunk:
                    yield event

    async def chunks(self) -> AsyncIterator[list[Event] | UnreadableRow | Expired | None]:
        """The same events, in lists of those that arrived together (for writers that can send
        several at once); an UnreadableRow in place of a stored row that cannot be read (the
        stream goes on past it); an Expired when the events after the resume point have been
        removed (the stream goes on from the oldest held)."""
        sub, start, store = self._sub, self._start, self._hub._store
        self.position = start if self._after is None else self._after
        if self._hub.closed:
            return  # the log is closing or closed: its store may be gone
        if self._after is not None and (horizon := await overtaken(store, self.position, [])):
            yield Expired(self.position, horizon)
            self.position = horizon
        # What was missed, read from the store up to where the queue takes over.
        while self.position < start:
            page = sub.filter.page(after=self.position, until=start, limit=READ_PAGE)
            try:
                events = await store.page(page)
                read = len(events)
                # A purge may have overtaken this reader since it started.
                if horizon := await overtaken(store, self.position, events):
                    yield Expired(self.position, horizon)
                    self.position = horizon
                    events = [e for e in events if e.seq > horizon]
            except UnreadableRow as e:
                if e.seq is None:
                    raise
                log.error("a stream skips a stored row: %s", e)
                if e.readable:
                    yield e.readable
                yield e
                self.position = max(self.position, e.seq)
                continue
            if events:
                yield events
                self.position = events[-1].seq
            if read < READ_PAGE:
                break
        self.position = max(self.position, start)
        while not (sub.ended and sub.queue.empty()):
            if sub.overflowed and sub.queue.empty():
                raise CutOff(self.position)
            try:
                async with asyncio.timeout(self._heartbeat):
                    chunk = await sub.queue.get()
            except TimeoutError:
                yield None
                continue
            if isinstance(chunk, Expired):
                if chunk.purged_through > self.position:
                    yield Expired(self.position, chunk.purged_through)
                    self.position = chunk.purged_through
                continue
            if isinstance(chunk, UnreadableRow):
                if chunk.seq is not None and chunk.seq > self.position:
                    yield chunk
                    self.position = chunk.seq
                continue
            sub.waiting -= len(chunk)
            fresh = [e for e in chunk if e.seq > self.position]  # not already sent from the store
            if fresh:
                yield fresh
                self.position = fresh[-1].seq
