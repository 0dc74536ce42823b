"""EventLog: the one in-process API for ingest and reads; the HTTP views are a skin over it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import attrs

from .codec import dumps, redact, structure_python, wire_form
from .config import Settings, make_settings
from .envelope import Envelope, Event, Execution, NewEvent
from .ingest import Appended, Idempotency, Receipt, Writer, normalise, now, same_content
from .metrics import Metrics
from .nodes import NodeIds
from .problems import (
    DatabaseUnavailable,
    EventConflict,
    FieldError,
    InvalidEnvelope,
    InvalidParameter,
    NotFound,
    NotYetReplicated,
    Problem,
    ResumeExpired,
    UnreadableStoredRow,
    database_unavailable,
)
from .retention import purge
from .storage import base as storage
from .storage.base import EventStore, Filter, Key, Page, ReplicaLag, StoreError
from .storage.registry import store_from_settings
from .stream import CutOff, Expired, Hub, Subscription, overtaken

log = logging.getLogger("eventlog")

T = TypeVar("T")

# Seconds between runs of the store's upkeep (partitions made ahead: two of at least a day
# each, so an hour is far more often than needed, and a missed run costs nothing).
UPKEEP_INTERVAL = 3600.0


class SchemaNotCurrent(Exception):
    """The database lacks migrations and migrate_on_start is off."""


class EventLog:
    """An event log on one store: append events, read them back, follow them live.

    ``async with EventLog.open("sqlite:///var/events.db") as log:`` (or ``EventLog(settings)``
    with ``start``/``close``). The HTTP service is a thin skin over this class.
    """

    @classmethod
    def open(cls, dsn: str | None = None, **settings: Any) -> EventLog:
        """An EventLog on ``dsn`` (default: the service's SQLite file) with any setting of
        config/eventlog.toml as a keyword; use it as an async context manager. Raises
        ConfigError for an unknown setting or a bad value."""
        return cls(make_settings(dsn=dsn, **settings))

    def __init__(self, settings: Settings, *, store: EventStore | None = None) -> None:
        self.settings = settings
        self.store = store or store_from_settings(settings)
        self.ids = NodeIds(self.store, settings.node_id, lease=settings.node_lease)
        self.hub = Hub(
            self.store,
            poll_interval=settings.stream_poll_interval,
            queue_events=settings.stream_queue_events,
        )
        self.writer = Writer(
            self.store,
            queue_events=settings.writer_queue_events,
            max_batch=settings.writer_max_batch,
            idempotency_ttl=settings.idempotency_ttl,
            purge_interval=settings.idempotency_purge_interval,
        )
        self.running = False  # between start and close
        self._upkeep: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None
        self._redact = frozenset(k.lower() for k in settings.redact_keys)
        self.metrics = Metrics()
        self._reads_failing = False
        self.writer.on_group = self.metrics.committed
        self.metrics.follow(
            lambda: self.writer.queued_events,
            lambda: self.hub.subscriber_count,
            lambda: self.hub.last_seq,
        )

    async def start(self) -> None:
        """Open the store, bring its schema up to date (unless configured off), start the writer."""
        await self.store.open()
        try:
            if self.settings.migrate_on_start:
                for name in await self.store.migrate():
                    log.info("applied migration %s", name)
            elif pending := await self.store.pending_migrations():
                raise SchemaNotCurrent(
                    f"the database needs migrations {', '.join(pending)}: run `eventlog migrate`"
                )
            await self.ids.claim()
            await self.hub.start()
        except BaseException:
            await self.ids.release()
            await self.store.close()
            raise
        self.writer.on_commit = self.hub.notify
        self.writer.start()
        self._upkeep = asyncio.create_task(self._keep_up(), name="eventlog-upkeep")
        if self.settings.retention_period is not None:
            self._retention = asyncio.create_task(self._retain(), name="eventlog-retention")
        self.running = True

    async def _keep_up(self) -> None:
        """Run the store's upkeep now and then every UPKEEP_INTERVAL seconds until closed."""
        while True:
            try:
                await self.store.maintain(now())
            except StoreError as e:
                log.warning("the store's upkeep failed (it is tried again later): %s", e)
            except Exception:  # the service runs on without it; writes make what they need
                log.exception("the store's upkeep failed (it is tried again later)")
            await asyncio.sleep(UPKEEP_INTERVAL)

    async def _retain(self) -> None:
        """Every retention_interval: remove what is older than the retention period."""
        period = self.settings.retention_period
        assert period is not None
        while True:
            try:
                result = await purge(self.store, now() - period)
            except StoreError as e:
                log.warning("retention could not remove old events (trying again later): %s", e)
            except Exception:  # the loop must outlive any one failed purge
                log.exception("retention failed (trying again later)")
            else:
                if result.removed:
                    log.info(
                        "retention removed %d events (through seq %d) %s",
                        result.removed,
                        result.through,
                        result.steps_said,
                    )
            await asyncio.sleep(self.settings.retention_interval)

    async def close(self) -> None:
        """Commit what is queued, then close the store."""
        # The writer first: what is queued is committed (and reaches the streams) before they end.
        self.running = False
        # A purge is cancelled between two steps or within one: a step is one transaction,
        # whole or not at all.
        background, self._upkeep, self._retention = [self._upkeep, self._retention], None, None
        for task in background:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            await self.writer.stop()
        finally:
            try:
                await self.hub.stop()
            finally:
                await self.ids.release()  # never raises
                await self.store.close()

    @property
    def node_id(self) -> int | None:
        """The snowflake node id this log mints ids under (claimed at start)."""
        return self.ids.node_id

    async def __aenter__(self) -> EventLog:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def append(self, envelope: Envelope | dict[str, Any]) -> Appended:
        """Validate, normalise and durably append one event (a dict in any producer dialect,
        or an Envelope); a retry is reported as duplicate. Raises InvalidEnvelope (with the
        field errors HTTP would report), EventConflict, DatabaseUnavailable."""
        _, (appended,) = await self.ingest(structure_python([envelope], single=True))
        return appended

    async def append_batch(
        self,
        envelopes: Iterable[Envelope | dict[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> tuple[Receipt, list[Appended]]:
        """Append several events atomically (all or none), as POST /api/events/batch does.
        With ``idempotency_key``, calling again with the same events is a replay, not a
        second append (see ``ingest``)."""
        items = list(envelopes)
        checked = structure_python(items)  # first: the fingerprint needs JSON-able items
        idempotency = None
        if idempotency_key is not None:
            idempotency = Idempotency(idempotency_key, _fingerprint(items))
        return await self.ingest(checked, batch=True, idempotency=idempotency)

    async def ingest(
        self,
        envelopes: Sequence[Envelope],
        *,
        batch: bool = False,
        idempotency: Idempotency | None = None,
        paths: Sequence[str] | None = None,
    ) -> tuple[Receipt, list[Appended]]:
        """Append validated envelopes in one transaction (all or none).

        With ``idempotency``, a request seen before under the same key is not applied again: its
        first receipt comes back marked ``replayed`` (and no events); another request under the
        key raises IdempotencyConflict. Two envelopes of the request with one key and other
        content raise EventConflict naming both by ``paths`` (their wire paths; ``$[i]``
        when not given).
        """
        if not envelopes and idempotency is None:
            # An empty batch (producers flush empty buffers): nothing to write, nothing to keep.
            return Receipt(str(self.ids.next_id()), (), ()), []
        if self._redact:
            envelopes = [self._redacted(e) for e in envelopes]
        received_at = now()
        events = [normalise(e, self.ids, received_at, in_batch=batch) for e in envelopes]
        _refuse_conflicts_within(events, paths or [f"$[{i}]" for i in range(len(events))])
        try:
            receipt, appended = await self.writer.submit(
                events, request_id=str(self.ids.next_id()), idempotency=idempotency
            )
        except DatabaseUnavailable:
            self.metrics.store_errors.inc("write")
            raise
        if receipt.replayed:
            self.metrics.requests_replayed += 1
        else:
            duplicates = len(receipt.duplicates)
            self.metrics.events_duplicate += duplicates
            self.metrics.events_accepted += len(events) - duplicates
        return receipt, appended

    def _redacted(self, envelope: Envelope) -> Envelope:
        try:
            return attrs.evolve(
                envelope,
                payload=redact(envelope.payload, self._redact),
                meta=None if envelope.meta is None else redact(envelope.meta, self._redact),
            )
        except RecursionError:
            raise InvalidEnvelope(
                "$.payload: nested too deeply to redact",
                errors=[FieldError("$.payload", "nested too deeply to redact")],
            ) from None

    async def get(self, event_id: int, execution_id: int | None = None) -> Event:
        """The event with this id; NotFound when there is none."""
        event = await self._reading(lambda: self.store.get(event_id, execution_id))
        if event is None:
            raise NotFound(f"no event with id {event_id}")
        return event

    async def page(self, page: Page) -> list[Event]:
        """One page of events in seq order. ResumeExpired when the page goes on from a seq
        (``after``, ascending) below the purge horizon: the events past it that it would have
        started with are gone, and a page that silently began later would hide that."""
        events = await self._reading(lambda: self.store.page(page))
        if page.after is not None and not page.descending:
            await self.check_resume(page, events)
        return events

    async def check_resume(self, page: Page, events: list[Event]) -> None:
        """Raise ResumeExpired if ``events``, read for ``page``, may have missed removed ones."""
        after = page.after
        assert after is not None
        if horizon := await self._reading(lambda: overtaken(self.store, after, events)):
            raise ResumeExpired(after, horizon)

    async def pages(
        self,
        execution_id: int | None = None,
        *,
        after: int | None = None,
        page_size: int = 500,
        descending: bool = False,
        **filters: str | None,
    ) -> AsyncIterator[list[Event]]:
        """Pages of matching events in seq order (newest first when ``descending``), each read
        when the previous one is done; ``after`` is a seq cursor. Filters: event_type, step,
        status, worker_id."""
        page = Filter(execution_id, **filters).page(
            after=after, limit=page_size, descending=descending
        )
        while True:
            events = await self.page(page)
            if events:
                yield events
            if len(events) < page_size:
                return
            page = attrs.evolve(page, after=events[-1].seq)

    async def events(
        self,
        execution_id: int | None = None,
        *,
        after: int | None = None,
        limit: int | None = None,
        page_size: int = 500,
        descending: bool = False,
        **filters: str | None,
    ) -> AsyncIterator[Event]:
        """Matching events one by one, read a page at a time (see ``pages``); at most
        ``limit`` of them when given."""
        if limit is not None:
            page_size = max(1, min(page_size, limit))
        count = 0
        async for events in self.pages(
            execution_id, after=after, page_size=page_size, descending=descending, **filters
        ):
            for event in events:
                if limit is not None and count >= limit:
                    return
                yield event
                count += 1

    def subscribe(
        self,
        after: int | None = None,
        *,
        execution_id: int | None = None,
        **filters: str | None,
    ) -> LiveEvents:
        """Matching events with seq > ``after`` (from this call when None): stored ones first,
        then live ones as they commit, with no gap and no repeat, until the log closes.
        ``async for event in log.subscribe(...)``, or ``async with`` it to end it early.
        Raises ResumeExpired when retention has removed events past ``after`` (resubscribe
        with its ``purged_through`` to go on from the oldest held)."""
        try:
            return LiveEvents(self.hub, Filter(execution_id, **filters), after)
        except StoreError as e:
            raise _unavailable(e) from e

    def follow(
        self, filter: Filter, after: int | None = None, *, heartbeat: float | None = None
    ) -> Subscription:
        """The stream as the HTTP service sends it: lists of events as they arrive together,
        None on each quiet ``heartbeat``, CutOff when the reader falls too far behind.
        Use ``async with log.follow(...) as subscription:``."""
        beat = self.settings.stream_heartbeat if heartbeat is None else heartbeat
        try:
            return self.hub.subscribe(filter, after, heartbeat=beat)
        except StoreError as e:
            raise _unavailable(e) from e

    async def head(self) -> int:
        """The highest seq the reads hold."""
        return await self._reading(self.store.head)

    async def reach(self, min_seq: int | None) -> None:
        """Return once reads see every event up to seq ``min_seq`` (read-your-writes: a write
        reply's Eventlog-Seq), waiting up to ``min_seq_wait`` seconds for a replica to replay
        it; NotYetReplicated (503) after that. InvalidParameter (400) for a seq not committed
        at all. None: return at once."""
        if min_seq is None or min_seq <= self.hub.last_seq:
            return  # the streams have already read past it from the same store
        head = await self.head()
        if head >= min_seq:
            return
        # A reply names a seq only once it is committed, so the primary holds every seq a
        # client was given: one past its head was never given, and waiting would not help.
        written = await self._reading(self.store.written_head)
        if min_seq > written:
            raise InvalidParameter(
                f"min_seq {min_seq} is past the last seq committed ({written}); pass the "
                "Eventlog-Seq of a write reply",
                errors=[FieldError("$query.min_seq", "is past the last seq committed")],
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.min_seq_wait
        delay = 0.002
        while True:
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, 0.05)
            head = await self.head()
            if head >= min_seq:
                return
            if loop.time() >= deadline:
                raise NotYetReplicated(
                    f"reads have reached seq {head}, not min_seq {min_seq}, within "
                    f"{self.settings.min_seq_wait:g} s; retry after the delay in Retry-After",
                    headers={"Retry-After": "1"},
                )

    async def replica(self) -> ReplicaLag | None:
        """How far the read replica lags behind the writes, or that it does not answer (None
        without one; kept for the metrics); DatabaseUnavailable when the primary does not."""
        try:  # (not through _reading: a probe must not mark the reads as working again)
            lag = await self.store.replica_lag()
        except StoreError as e:
            raise _unavailable(e) from e
        self.metrics.replica = lag
        return lag

    async def execution(self, execution_id: int) -> Execution:
        """One execution's summary; NotFound when it has no events."""
        found = await self._reading(lambda: self.store.execution(execution_id))
        if found is None:
            raise NotFound(f"no execution with id {execution_id}")
        return found

    async def executions(
        self, before: int | None = None, limit: int = 100, *, status: str | None = None
    ) -> list[Execution]:
        """Executions by newest activity first, older than the ``before`` cursor; only those
        with ``status`` (in any case) when given."""
        wanted = None if status is None else status.upper()
        return await self._reading(lambda: self.store.executions(before, limit, wanted))

    async def ready(self) -> None:
        """Raise DatabaseUnavailable unless the store answers, needs no migration, and this
        instance holds a live node id."""
        pending = await self._reading(self.store.pending_migrations)
        if not self.ids.live:
            raise DatabaseUnavailable(
                "this instance holds no live claim on a node id (see the log)",
                headers={"Retry-After": "1"},
            )
        if pending:
            # A fixed sentence, like every 503; `eventlog migrate` names what it applies.
            raise DatabaseUnavailable(
                "the database schema is older than this version: run `eventlog migrate`",
                headers={"Retry-After": "5"},
            )

    async def _reading(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            result = await call()
        except storage.UnreadableRow as e:
            self.metrics.store_errors.inc("read")
            log.error("%s", e)
            raise UnreadableStoredRow(str(e)) from e
        except StoreError as e:
            self.metrics.store_errors.inc("read")
            # Once per outage, as the writer does for writes: the reply carries no cause.
            if not self._reads_failing:
                log.error("database unavailable, reads answer 503 until it works again: %s", e)
            self._reads_failing = True
            raise _unavailable(e) from e
        if self._reads_failing:
            log.info("database available again for reads")
            self._reads_failing = False
        return result


class LiveEvents:
    """The events of ``EventLog.subscribe``: an async iterator (and context manager).

    Unlike an HTTP stream it is never cut off: when the reader falls too far behind for the
    live queue, it carries on from the store, from where it was.
    """

    def __init__(self, hub: Hub, filter: Filter, after: int | None) -> None:
        # Entered now, so "from now" means from the subscribe call, not the first read.
        self._current = [_open(hub, filter, after)]
        # The generator does not refer back to this object, so dropping it (say, after a
        # break out of the loop) releases the subscription at once, not at the next GC.
        self._events = _follow(hub, filter, self._current)
        weakref.finalize(self, _close, self._current)

    def __aiter__(self) -> LiveEvents:
        return self

    async def __anext__(self) -> Event:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        """Stop following."""
        _close(self._current)
        await self._events.aclose()

    async def __aenter__(self) -> LiveEvents:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _open(hub: Hub, filter: Filter, after: int | None) -> Subscription:
    subscription = hub.subscribe(filter, after, heartbeat=None)
    subscription.open()
    return subscription


def _close(current: list[Subscription]) -> None:
    current[0].close()


async def _follow(
    hub: Hub, filter: Filter, current: list[Subscription]
) -> AsyncGenerator[Event, None]:
    try:
        while True:
            try:
                async for chunk in current[0].chunks():
                    if isinstance(chunk, list):  # (an unreadable row was logged where met)
                        for event in chunk:
                            yield event
                    elif isinstance(chunk, Expired):
                        raise ResumeExpired(chunk.after, chunk.purged_through)
                return  # the log closed
            except CutOff as e:
                current[0].close()
                current[0] = _open(hub, filter, e.last_seq)
            except StoreError as e:
                raise _unavailable(e) from e
    finally:
        _close(current)


def _refuse_conflicts_within(events: Sequence[NewEvent], paths: Sequence[str]) -> None:
    """EventConflict naming both items when two events of one request share a key but not
    their content: nothing is stored, so it must not read as a clash with the log."""
    first: dict[Key, int] = {}
    pairs = []
    for index, event in enumerate(events):
        earlier = first.setdefault(event.key, index)
        if earlier != index and not same_content(event, events[earlier]):
            pairs.append((paths[earlier], paths[index]))
    if pairs:
        raise EventConflict(
            f"{pairs[0][0]} and {pairs[0][1]} carry the same execution_id and event_id with "
            "different content; nothing was stored",
            errors=[
                FieldError(later, f"has the execution_id and event_id of {earlier}, other content")
                for earlier, later in pairs
            ],
        )


def _unavailable(e: StoreError) -> Problem:
    """What a reader is told when the store fails."""
    return database_unavailable(e)


def _fingerprint(items: list[Any]) -> str:
    """What a library batch asks for, for its idempotency key (events in their wire form)."""
    wire = [wire_form(e) if isinstance(e, Envelope) else e for e in items]
    return hashlib.sha256(b"library\n" + dumps(wire)).hexdigest()
