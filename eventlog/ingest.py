"""From envelope to committed event: defaults, idempotency, and the writer that owns all writes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
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
    settle,
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


@attrs.define(eq=False)
class Job:
    """One request waiting for the writer: its events, its id and its Idempotency-Key."""

    events: Sequence[NewEvent]
    request_id: str
    idempotency: Idempotency | None = None
    future: asyncio.Future[tuple[Receipt, list[Appended]]] | None = None


# What one transaction does for one request: refuse it (an exception), or answer it with a
# receipt and, for each of its events in order, the event's key and whether it was stored before.
Outcome = Exception | tuple[Receipt, list[tuple[Key, bool]]]


@attrs.frozen
class Decision:
    """What one transaction does for each request, and what it writes."""

    outcomes: list[Outcome]  # one per request, in order
    writes: WritePlan


def decide(
    jobs: Sequence[Job],
    existing: dict[Key, Event],
    records: dict[str, IdempotencyRecord],
    moment: datetime,
    ttl: timedelta,
) -> Decision:
    """Given what is stored (events among the jobs' keys, live idempotency records among their
    keys), what each job does, in order: a replay or a conflict for a known Idempotency-Key, an
    EventConflict when an event's key is stored (or sent earlier) with other content, else its
    new events are written and its receipt saved under its key (kept ``ttl`` from ``moment``)."""
    outcomes: list[Outcome] = []
    pending: dict[Key, NewEvent] = {}  # to insert in this transaction, in order
    new_records: dict[str, IdempotencyRecord] = {}
    for job in jobs:
        if job.idempotency is not None:
            idem_key = job.idempotency.key
            record = new_records.get(idem_key) or records.get(idem_key)
            if record is not None:
                if record.fingerprint == job.idempotency.fingerprint:
                    outcomes.append((Receipt.replay(record.outcome_json), []))
                else:
                    outcomes.append(
                        IdempotencyConflict(
                            f"Idempotency-Key {idem_key!r} was used for a different request"
                        )
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
            outcomes.append(
                EventConflict(
                    f"event {conflict.event_id} of execution {conflict.execution_id} is "
                    "already stored with different content"
                )
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
                moment + ttl,
            )
        outcomes.append((receipt, plan))
    return Decision(outcomes, WritePlan(list(pending.values()), list(new_records.values())))


class Writer:
    """The one owner of write transactions.

    Requests queue here; a committer takes whatever is waiting (up to ``max_batch`` events, and
    never less than one whole request) and commits it in one transaction (group commit), then
    answers each request. A request is answered only after its events are committed. The queue
    is bounded by the number of events waiting: past ``queue_events`` (unless the queue is
    empty), ``submit`` fails at once with Overloaded rather than letting memory grow.

    ``clock`` is the time idempotency records are judged by (their creation and expiry).
    """

    def __init__(
        self,
        store: EventStore,
        *,
        queue_events: int,
        max_batch: int,
        idempotency_ttl: float = 86_400.0,
        purge_interval: float = 300.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._store = store
        # A plain deque and one future per idle committer: a request costs an append, and
        # wakes a committer only when one is waiting (asyncio.Queue made a future per get and,
        # with the purge timeout around it, a timer per group).
        self._jobs: deque[Job] = deque()
        self._idle: list[asyncio.Future[None]] = []
        self._queued_events = 0
        self._queue_events = queue_events
        self._max_batch = max_batch
        self._ttl = timedelta(seconds=idempotency_ttl)
        self._purge_interval = purge_interval
        self._clock = clock or now
        self._purge_due = False
        self._purge_timer: asyncio.TimerHandle | None = None
        # Transactions handed to the store at once (one per committer): with more than one, the
        # store starts the next group the moment the previous one commits, without waiting for
        # a turn of the event loop. The store still commits them one after the other (seq
        # order stays commit order).
        self._committers = store.write_concurrency
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._in_flight = 0
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
        """Start the committers (and the first purge of expired idempotency keys)."""
        self._closing = False
        self._purge_due = True
        self._tasks = [
            asyncio.create_task(self._run(), name="eventlog-writer")
            for _ in range(self._committers)
        ]
        self._running = True
        for task in self._tasks:
            task.add_done_callback(self._stopped)

    async def stop(self) -> None:
        """Commit everything already queued, then stop."""
        if not self._tasks:
            return
        self._closing = True
        self._running = False  # submit() refuses from now on
        self._wake_all()
        await asyncio.gather(*self._tasks)
        self._tasks = []
        if self._purge_timer is not None:
            self._purge_timer.cancel()
            self._purge_timer = None

    def _stopped(self, task: asyncio.Task[None]) -> None:
        self._running = False  # a committer ended (stopped, or failed): no request may queue

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
        if not self._running:
            raise database_unavailable(RuntimeError("the writer is not running"))
        if self._queued_events and self._queued_events + len(events) > self._queue_events:
            raise Overloaded(
                "too many writes are waiting; retry after the delay given in Retry-After",
                headers={"Retry-After": "1"},
            )
        future: asyncio.Future[tuple[Receipt, list[Appended]]]
        future = asyncio.get_running_loop().create_future()
        self._queued_events += len(events)
        self._jobs.append(Job(events, request_id, idempotency, future))
        if self._idle:
            waiter = self._idle.pop()
            if not waiter.done():
                waiter.set_result(None)
        # If the caller goes away, the job stays queued and may still be committed (its future
        # is then cancelled and ignored): a retry is idempotent.
        return await future

    def _wake_all(self) -> None:
        idle, self._idle = self._idle, []
        for waiter in idle:
            if not waiter.done():
                waiter.set_result(None)

    def _purge_soon(self) -> None:
        self._purge_timer = None
        self._purge_due = True
        self._wake_all()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._purge_due:
                self._purge_due = False
                await self._purge()
                self._purge_timer = loop.call_later(self._purge_interval, self._purge_soon)
                continue
            if not self._jobs:
                if self._closing:
                    return
                waiter = loop.create_future()
                self._idle.append(waiter)
                await waiter
                continue
            first = self._jobs.popleft()
            jobs, count = [first], len(first.events)
            while self._jobs and count < self._max_batch:
                job = self._jobs.popleft()
                jobs.append(job)
                count += len(job.events)
            if self._down_since is not None and self._in_flight:
                # The database is failing and a transaction under way is finding out whether
                # it is back: the others are refused now rather than queued behind it, so a
                # request waits for one attempt at most, and a struggling database sees one.
                self._refuse(jobs, count)
                continue
            await self._commit_group(jobs, count)

    async def _commit_group(self, jobs: list[Job], count: int) -> None:
        started = time.perf_counter()
        self._in_flight += 1
        try:
            await self._commit(jobs)
        finally:
            self._in_flight -= 1
            self._queued_events -= count
            if self.on_commit is not None:
                self.on_commit(self._committed)
            if self.on_group is not None:
                self.on_group(count, time.perf_counter() - started)

    async def _purge(self) -> None:
        try:
            purged = await self._store.purge_keys(self._clock())
        except StoreError as e:
            log.warning("purging expired idempotency keys failed: %s", e)
            return
        if purged:
            log.info("purged %d expired idempotency keys", purged)

    async def _commit(self, jobs: list[Job]) -> None:
        try:
            results = await self._transaction(jobs)
        except StoreError as e:
            if isinstance(e, ValueNotStorable):
                return await self._commit_apart(jobs, e)
            self._failing(e, len(jobs))
            results = [database_unavailable(e) for _ in jobs]
        except Exception as e:  # never leave a request waiting forever
            return await self._commit_apart(jobs, e)
        else:
            self._working()
        _answer(jobs, results)

    async def _commit_apart(self, jobs: list[Job], e: Exception) -> None:
        """A value one request carried broke the write: the others must not fail with it, so
        each is committed alone."""
        if len(jobs) > 1:
            for job in jobs:
                await self._commit([job])
            return
        _answer(jobs, [_failure(e) for _ in jobs])

    def _failing(self, e: StoreError, requests: int) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._refused = 0
            kind = "unavailable" if isinstance(e, StoreUnavailable) else "failing"
            log.error("database %s, writes answer 503 until it works again: %s", kind, e)
        self._down_reason = e
        self._refused += requests

    def _refuse(self, jobs: list[Job], count: int) -> None:
        self._queued_events -= count
        self._refused += len(jobs)
        _answer(
            jobs,
            [database_unavailable(self._down_reason) for _ in jobs],
        )

    def _working(self) -> None:
        if self._down_since is not None:
            log.info(
                "database available again after %.1f s; %d write requests were refused meanwhile",
                time.monotonic() - self._down_since,
                self._refused,
            )
            self._down_since = None

    async def _transaction(self, jobs: list[Job]) -> list[Any]:
        moment = self._clock()
        decision: Decision | None = None
        seen: dict[Key, Event] = {}

        def under_lock(
            existing: dict[Key, Event], records: dict[str, IdempotencyRecord]
        ) -> WritePlan:
            # Runs under the store's write lock. It may run twice (a store may retry its
            # transaction); the last decision is the one committed.
            nonlocal decision
            decision = decide(jobs, existing, records, moment, self._ttl)
            seen.update(existing)
            return decision.writes

        keys = list({e.key: None for job in jobs for e in job.events})
        idempotency_keys = [job.idempotency.key for job in jobs if job.idempotency]
        for event in await self._store.write(keys, idempotency_keys, moment, under_lock):
            seen[event.key] = event
            if event.seq > self._committed:
                self._committed = event.seq
        assert decision is not None
        return [
            outcome
            if isinstance(outcome, Exception)
            else (outcome[0], [Appended(seen[k], dup) for k, dup in outcome[1]])
            for outcome in decision.outcomes
        ]


def _answer(jobs: list[Job], results: list[Any]) -> None:
    for job, outcome in zip(jobs, results, strict=True):
        settle(job.future, outcome)


def _failure(e: Exception) -> Exception:
    """What a request is told when its transaction failed with ``e`` (not an outage)."""
    if isinstance(e, ValueNotStorable):
        return InvalidEnvelope(f"the database refused a value: {e}")
    log.exception("write failed unexpectedly", exc_info=e)
    return e


def now() -> datetime:
    """The server's clock, in UTC."""
    return datetime.now(UTC)
