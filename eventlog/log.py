"""EventLog: the one in-process API for ingest and reads; the HTTP views are a skin over it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from .codec import structure_envelope
from .config import Settings
from .envelope import Envelope, Event
from .ingest import Appended, Idempotency, Receipt, Writer, normalise, now
from .nodes import NodeIds
from .problems import DatabaseUnavailable, NotFound
from .storage.base import EventStore, Execution, Page, StoreError, open_store
from .stream import Filter, Hub, Subscription

log = logging.getLogger("eventlog")

T = TypeVar("T")


class SchemaNotCurrent(Exception):
    """The database lacks migrations and migrate_on_start is off."""


class EventLog:
    """An event log on one store: append events, read them back.

    Use ``async with EventLog(settings) as log`` (or ``start``/``close``).
    """

    def __init__(self, settings: Settings, *, store: EventStore | None = None) -> None:
        self.settings = settings
        self.store = store or open_store(settings.dsn, **settings.store_options())
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

    async def close(self) -> None:
        """Commit what is queued, then close the store."""
        # The writer first: what is queued is committed (and reaches the streams) before they end.
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
        """Validate, normalise and durably append one event; a retry is reported as duplicate."""
        if not isinstance(envelope, Envelope):
            envelope = structure_envelope(envelope)
        _, (appended,) = await self.ingest([envelope])
        return appended

    async def ingest(
        self,
        envelopes: Sequence[Envelope],
        *,
        batch: bool = False,
        idempotency: Idempotency | None = None,
    ) -> tuple[Receipt, list[Appended]]:
        """Append validated envelopes in one transaction (all or none).

        With ``idempotency``, a request seen before under the same key is not applied again: its
        first receipt comes back marked ``replayed`` (and no events); another request under the
        key raises IdempotencyConflict.
        """
        received_at = now()
        events = [normalise(e, self.ids, received_at, in_batch=batch) for e in envelopes]
        return await self.writer.submit(
            events, request_id=str(self.ids.next_id()), idempotency=idempotency
        )

    async def get(self, event_id: int, execution_id: int | None = None) -> Event:
        """The event with this id; NotFound when there is none."""
        event = await _reading(lambda: self.store.get(event_id, execution_id))
        if event is None:
            raise NotFound(f"no event with id {event_id}")
        return event

    async def page(self, page: Page) -> list[Event]:
        """One page of events in seq order."""
        return await _reading(lambda: self.store.page(page))

    def subscribe(
        self, filter: Filter, after: int | None = None, *, heartbeat: float | None = None
    ) -> Subscription:
        """Matching events with seq > ``after`` (from now when None), stored ones first, then
        live, with no gap and no repeat; None on each quiet ``heartbeat``. Raises CutOff when
        the subscriber falls too far behind. Use ``async with log.subscribe(...) as events:``."""
        beat = self.settings.stream_heartbeat if heartbeat is None else heartbeat
        return self.hub.subscribe(filter, after, heartbeat=beat)

    async def execution(self, execution_id: int) -> Execution:
        """One execution's summary; NotFound when it has no events."""
        found = await _reading(lambda: self.store.execution(execution_id))
        if found is None:
            raise NotFound(f"no execution with id {execution_id}")
        return found

    async def executions(self, before: int | None = None, limit: int = 100) -> list[Execution]:
        """Executions by newest activity first, older than the ``before`` cursor."""
        return await _reading(lambda: self.store.executions(before, limit))

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless the store answers."""
        await _reading(self.store.ping)

    async def ready(self) -> None:
        """Raise DatabaseUnavailable unless the store answers and needs no migration."""
        pending = await _reading(self.store.pending_migrations)
        if pending:
            raise DatabaseUnavailable(
                f"the database needs migrations {', '.join(pending)}: run `eventlog migrate`",
                headers={"Retry-After": "5"},
            )


async def _reading(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except StoreError as e:
        raise DatabaseUnavailable(str(e), headers={"Retry-After": "1"}) from e
