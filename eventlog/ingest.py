"""From envelope to committed event: defaults, idempotency, and the writer that owns all writes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import attrs
import orjson

from .codec import dumps, loads, same_json
from .envelope import Defaulted, Envelope, Event, NewEvent
from .problems import (
    EventConflict,
    IdempotencyConflict,
    InvalidEnvelope,
    Overloaded,
    database_unavailable,
)
from .status import derive_status
from .storage.base import (
    EventStore,
    IdempotencyRecord,
    Key,
    StoreError,
    StoreUnavailable,
    ValueNotStorable,
    WritePlan,
)

log = logging.getLogger("eventlog.writer")


class IdSource(Protocol):
    """What mints ids for events sent without one (eventlog.nodes.NodeIds, or a generator)."""

    def next_id(self) -> int:
        """A new id, greater than every id this source gave before."""
        ...


def normalise(
    envelope: Envelope, ids: IdSource, received_at: datetime, *, in_batch: bool = False
) -> NewEvent:
    """Fill the server's defaults into an envelope and mark which ones it filled."""
    defaulted = Defaulted.NONE
    event_id: int | None = envelope.event_id
    if event_id is None:
        event_id = ids.next_id()
        defaulted |= Defaulted.EVENT_ID
    status: str | None = envelope.status
    if status is None:
        status = derive_status(envelope.event_type)
        defaulted |= Defaulted.STATUS
    created_at: datetime | None = envelope.created_at
    if created_at is None:
        created_at = received_at
        defaulted |= Defaulted.CREATED_AT
    actionable = envelope.actionable
    if actionable is None:
        actionable = not in_batch  # both NoETL servers default batch items to false
        defaulted |= Defaulted.ACTIONABLE
    return NewEvent(
        execution_id=envelope.execution_id,
        event_id=event_id,
        step=envelope.step,
        event_type=envelope.event_type,
        status=status,
        payload_json=dumps(envelope.payload).decode(),
        meta_json=None if envelope.meta is None else dumps(envelope.meta).decode(),
        worker_id=envelope.worker_id,
        result_kind=envelope.result_kind or "data",
        result_uri=envelope.result_uri,
        event_ids=None if envelope.event_ids is None else tuple(envelope.event_ids),
        actionable=actionable,
        informative=True if envelope.informative is None else envelope.informative,
        created_at=created_at,
        defaulted=defaulted,
    )


def _same_json_text(a: str | None, b: str | None) -> bool:
    if a == b:
        return True
    if a is None or b is None:
        return False
    return same_json(loads(a.encode()), loads(b.encode()))


def same_content(new: NewEvent, stored: NewEvent) -> bool:
    """Whether a retried event carries what the stored one carries (CONTRACT §6).

    Every field is compared with its default filled in, except ``created_at`` and
    ``actionable`` when either side left them to the server (its clock; the route's default):
    a retry without a timestamp, or sent again in a batch, is still the same event.
    """
    if (
        new.step != stored.step
        or new.event_type != stored.event_type
        or new.status != stored.status
        or new.worker_id != stored.worker_id
        or new.result_kind != stored.result_kind
        or new.result_uri != stored.result_uri
        or new.event_ids != stored.event_ids
        or new.informative != stored.informative
    ):
        return False
    either = new.defaulted | stored.defaulted
    if not either & Defaulted.CREATED_AT and new.created_at != stored.created_at:
        return False
    if not either & Defaulted.ACTIONABLE and new.actionable != stored.actionable:
        return False
    return _same_json_text(new.payload_json, stored.payload_json) and _same_json_text(
        new.meta_json, stored.meta_json
    )


@attrs.define
class Appended:
    """What became of one event: the stored event, and whether it was stored before."""

    event: Event
    duplicate: bool


@attrs.frozen
class Idempotency:
    """A request's Idempotency-Key and the fingerprint of what it asked for."""

    key: str
    fingerprint: str


@attrs.frozen
class Receipt:
    """What one request did; with an Idempotency-Key it is kept and replayed."""

    request_id: str
    event_ids: tuple[int, ...]
    duplicates: tuple[int, ...]  # indexes of the request's events that were already stored
    replayed: bool = False  # this is the receipt of an earlier request with the same key

    def to_json(self) -> str:
        """The receipt as stored."""
        return orjson.dumps(
            {
                "request_id": self.request_id,
                "event_ids": self.event_ids,
                "duplicates": self.duplicates,
            }
        ).decode()

    @classmethod
    def replay(cls, stored_json: str) -> Receipt:
        """A stored receipt, marked as replayed."""
        data = orjson.loads(stored_json)
        return cls(data["request_id"], tuple(data["event_ids"]), tuple(data["duplicates"]), True)


@attrs.define
class _Job:
    events: Sequence[NewEvent]
    request_id: str
    idempotency: Idempotency | None
    future: asyncio.Future[tuple[Receipt, list[Appended]]]


class Writer:
    """The one owner of write transactions.

    Requests queue here; the writer takes whatever is waiting (up to ``max_batch`` events, and
    never less than one whole request) and commits it in one transaction (group commit), then
    answers each request. A request is answered only after its events are committed. The queue
    is bounded by the number of events waiting: past ``queue_events`` (unless the queue is
    empty), ``submit`` fails at once with Overloaded rather than letting memory grow.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        queue_events: int,
        max_batch: int,
        idempotency_ttl: float = 86_400.0,
        purge_interval: float = 300.0,
    ) -> None:
        self._store = store
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._queued_events = 0
        self._queue_events = queue_events
        self._max_batch = max_batch
        self._ttl = timedelta(seconds=idempotency_ttl)
        self._purge_interval = purge_interval
        self._next_purge = 0.0
        # Transactions handed to the store at once: with more than one, the store starts the
        # next group the moment the previous one commits, without waiting for a turn of the
        # event loop. The store still commits them one after the other (seq order stays commit
        # order).
        self._slots = asyncio.Semaphore(store.write_concurrency)
        self._task: asyncio.Task[None] | None = None
        # Called after every transaction with the highest seq this writer has committed.
        self.on_commit: Callable[[int], None] | None = None
        # Called after every group commit with its event count and duration (for metrics).
        self.on_group: Callable[[int, float], None] | None = None
        self._committed = 0
        self._closing = False
        # While the database is failing: since when, and how many requests were refused. The
        # log gets one line when writes start failing and one when they work again.
        self._down_since: float | None = None
        self._down_reason: StoreError = StoreUnavailable("the database is unavailable")
        self._refused = 0

    @property
    def queued_events(self) -> int:
        """Events waiting for the writer."""
        return self._queued_events

    def start(self) -> None:
        """Start the writer task."""
        self._task = asyncio.create_task(self._run(), name="eventlog-writer")

    async def stop(self) -> None:
        """Commit everything already queued, then stop."""
        if self._task is None:
            return
        self._closing = True  # submit() refuses from now on: nothing can queue behind the None
        self._queue.put_nowait(None)
        await self._task
        self._task = None

    async def submit(
        self,
        events: Sequence[NewEvent],
        *,
        request_id: str,
        idempotency: Idempotency | None = None,
    ) -> tuple[Receipt, list[Appended]]:
        """Append ``events`` atomically, or replay the receipt of an earlier request with the
        same Idempotency-Key. Raises EventConflict, IdempotencyConflict, Overloaded or
        DatabaseUnavailable."""
        if self._task is None or self._task.done() or self._closing:
            raise database_unavailable(RuntimeError("the writer is not running"))
        if self._queued_events and self._queued_events + len(events) > self._queue_events:
            raise Overloaded(
                "too many writes are waiting; retry after the delay given in Retry-After",
                headers={"Retry-After": "1"},
            )
        job = _Job(events, request_id, idempotency, asyncio.get_running_loop().create_future())
        self._queued_events += len(events)
        self._queue.put_nowait(job)
        # If the caller goes away, the job stays queued and may still be committed (its future
        # is then cancelled and ignored): a retry is idempotent.
        return await job.future

    async def _run(self) -> None:
        stopping = False
        in_flight: set[asyncio.Task[None]] = set()
        while not stopping:
            await self._slots.acquire()
            try:
                async with asyncio.timeout(self._purge_interval):
                    job = await self._queue.get()
            except TimeoutError:
                self._slots.release()
                await self._purge()
                continue
            if job is None:
                self._slots.release()
                break
            jobs, count = [job], len(job.events)
            while count < self._max_batch and not self._queue.empty():
                more = self._queue.get_nowait()
                if more is None:
                    stopping = True
                    break
                jobs.append(more)
                count += len(more.events)
            if self._down_since is not None and in_flight:
                # The database is failing and a transaction under way is finding out whether
                # it is back: the others are refused now rather than queued behind it, so a
                # request waits for one attempt at most, and a struggling database sees one.
                self._refuse(jobs, count)
                continue
            task = asyncio.create_task(self._commit_group(jobs, count))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            if time.monotonic() >= self._next_purge:
                await self._purge()
        await asyncio.gather(*in_flight)

    async def _commit_group(self, jobs: list[_Job], count: int) -> None:
        started = time.perf_counter()
        try:
            await self._commit(jobs)
        finally:
            self._queued_events -= count
            self._slots.release()
            if self.on_commit is not None:
                self.on_commit(self._committed)
            if self.on_group is not None:
                self.on_group(count, time.perf_counter() - started)

    async def _purge(self) -> None:
        self._next_purge = time.monotonic() + self._purge_interval
        try:
            purged = await self._store.purge_keys(now())
        except StoreError as e:
            log.warning("purging expired idempotency keys failed: %s", e)
            return
        if purged:
            log.info("purged %d expired idempotency keys", purged)

    async def _commit(self, jobs: list[_Job]) -> None:
        try:
            results = await self._transaction(jobs)
        except StoreError as e:
            if isinstance(e, ValueNotStorable):
                return await self._commit_apart(jobs, e)
            self._failing(e, len(jobs))
            results = {id(job): database_unavailable(e) for job in jobs}
        except Exception as e:  # never leave a request waiting forever
            return await self._commit_apart(jobs, e)
        else:
            self._working()
        self._answer(jobs, results)

    async def _commit_apart(self, jobs: list[_Job], e: Exception) -> None:
        """A value one request carried broke the write: the others must not fail with it, so
        each is committed alone."""
        if len(jobs) > 1:
            for job in jobs:
                await self._commit([job])
            return
        self._answer(jobs, {id(job): _failure(e) for job in jobs})

    def _failing(self, e: StoreError, requests: int) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._refused = 0
            kind = "unavailable" if isinstance(e, StoreUnavailable) else "failing"
            log.error("database %s, writes answer 503 until it works again: %s", kind, e)
        self._down_reason = e
        self._refused += requests

    def _refuse(self, jobs: list[_Job], count: int) -> None:
        self._queued_events -= count
        self._slots.release()
        self._refused += len(jobs)
        self._answer(
            jobs,
            {id(job): database_unavailable(self._down_reason) for job in jobs},
        )

    def _working(self) -> None:
        if self._down_since is not None:
            log.info(
                "database available again after %.1f s; %d write requests were refused meanwhile",
                time.monotonic() - self._down_since,
                self._refused,
            )
            self._down_since = None

    @staticmethod
    def _answer(jobs: list[_Job], results: dict[int, Any]) -> None:
        for job in jobs:
            outcome = results[id(job)]
            if job.future.done():
                continue
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)

    async def _transaction(self, jobs: list[_Job]) -> dict[int, Any]:
        results: dict[int, Any] = {}
        plans: list[tuple[_Job, Receipt, list[tuple[Key, bool]]]] = []
        seen: dict[Key, Event] = {}
        moment = now()

        def decide(existing: dict[Key, Event], records: dict[str, IdempotencyRecord]) -> WritePlan:
            # Runs under the store's write lock: what each job does given what is stored. It may
            # run twice (a store may retry its transaction), so it starts afresh each time.
            results.clear()
            plans.clear()
            seen.update(existing)
            pending: dict[Key, NewEvent] = {}  # to insert in this transaction, in order
            new_records: dict[str, IdempotencyRecord] = {}
            for job in jobs:
                if job.idempotency is not None:
                    idem_key = job.idempotency.key
                    record = new_records.get(idem_key) or records.get(idem_key)
                    if record is not None:
                        if record.fingerprint == job.idempotency.fingerprint:
                            results[id(job)] = (Receipt.replay(record.outcome_json), [])
                        else:
                            results[id(job)] = IdempotencyConflict(
                                f"Idempotency-Key {idem_key!r} was used for a different request"
                            )
                        continue
                plan: list[tuple[Key, bool]] = []
                own: dict[Key, NewEvent] = {}
                conflict = None
                for event in job.events:
                    key = event.key
                    prior = existing.get(key) or own.get(key) or pending.get(key)
                    if prior is None:
                        own[key] = event
                        plan.append((key, False))
                    elif same_content(event, prior):
                        plan.append((key, True))
                    else:
                        conflict = event
                        break
                if conflict is not None:
                    # The whole request is refused; nothing of it is written.
                    results[id(job)] = EventConflict(
                        f"event {conflict.event_id} of execution {conflict.execution_id} is "
                        "already stored with different content"
                    )
                    continue
                pending.update(own)
                receipt = Receipt(
                    job.request_id,
                    tuple(e.event_id for e in job.events),
                    tuple(i for i, (_, duplicate) in enumerate(plan) if duplicate),
                )
                if job.idempotency is not None:
                    new_records[job.idempotency.key] = IdempotencyRecord(
                        job.idempotency.key,
                        job.idempotency.fingerprint,
                        receipt.to_json(),
                        moment,
                        moment + self._ttl,
                    )
                plans.append((job, receipt, plan))
            return WritePlan(list(pending.values()), list(new_records.values()))

        keys = list({e.key: None for job in jobs for e in job.events})
        idempotency_keys = [job.idempotency.key for job in jobs if job.idempotency]
        for event in await self._store.write(keys, idempotency_keys, moment, decide):
            seen[event.key] = event
            self._committed = max(self._committed, event.seq)
        for job, receipt, plan in plans:
            results[id(job)] = (receipt, [Appended(seen[k], dup) for k, dup in plan])
        return results


def _failure(e: Exception) -> Exception:
    """What a request is told when its transaction failed with ``e`` (not an outage)."""
    if isinstance(e, ValueNotStorable):
        return InvalidEnvelope(f"the database refused a value: {e}")
    log.exception("write failed unexpectedly", exc_info=e)
    return e


def now() -> datetime:
    """The server's clock, in UTC."""
    return datetime.now(UTC)
