"""From envelope to committed event: defaults, idempotency, and the writer that owns all writes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import attrs

from .codec import dumps, loads, same_json
from .envelope import Defaulted, Envelope, Event, NewEvent
from .ids import SnowflakeGenerator
from .problems import DatabaseUnavailable, EventConflict, InvalidEnvelope, Overloaded, Problem
from .status import derive_status
from .storage.base import EventStore, Key, StoreError, StoreUnavailable, ValueNotStorable

log = logging.getLogger("eventlog.writer")


def normalise(
    envelope: Envelope, ids: SnowflakeGenerator, received_at: datetime, *, in_batch: bool = False
) -> NewEvent:
    """Fill the server's defaults into an envelope and mark which ones it filled."""
    defaulted = Defaulted.NONE
    event_id = envelope.event_id
    if event_id is None:
        event_id = ids.next_id()
        defaulted |= Defaulted.EVENT_ID
    status = envelope.status
    if status is None:
        status = derive_status(envelope.event_type)
        defaulted |= Defaulted.STATUS
    created_at = envelope.created_at
    if created_at is None:
        created_at = received_at
        defaulted |= Defaulted.CREATED_AT
    actionable = envelope.actionable
    if actionable is None:
        actionable = not in_batch  # both NoETL servers default batch items to false
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

    Every field is compared with its default filled in, except ``created_at`` when either side
    took the server's clock: a retry without a timestamp is still the same event.
    """
    if (
        new.step != stored.step
        or new.event_type != stored.event_type
        or new.status != stored.status
        or new.worker_id != stored.worker_id
        or new.result_kind != stored.result_kind
        or new.result_uri != stored.result_uri
        or new.event_ids != stored.event_ids
        or new.actionable != stored.actionable
        or new.informative != stored.informative
    ):
        return False
    either = new.defaulted | stored.defaulted
    if not either & Defaulted.CREATED_AT and new.created_at != stored.created_at:
        return False
    return _same_json_text(new.payload_json, stored.payload_json) and _same_json_text(
        new.meta_json, stored.meta_json
    )


@attrs.frozen
class Appended:
    """What became of one event: the stored event, and whether it was stored before."""

    event: Event
    duplicate: bool


@attrs.define
class _Job:
    events: Sequence[NewEvent]
    future: asyncio.Future[list[Appended]]


class Writer:
    """The one owner of write transactions.

    Requests queue here; the writer takes whatever is waiting (up to ``max_batch`` events) and
    commits it in one transaction (group commit), then answers each request. A request is
    answered only after its events are committed. The queue is bounded: when it is full,
    ``submit`` fails at once with Overloaded rather than letting memory grow.
    """

    def __init__(self, store: EventStore, *, queue_size: int, max_batch: int) -> None:
        self._store = store
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue(maxsize=queue_size)
        self._max_batch = max_batch
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the writer task."""
        self._task = asyncio.create_task(self._run(), name="eventlog-writer")

    async def stop(self) -> None:
        """Commit everything already queued, then stop."""
        if self._task is None:
            return
        await self._queue.put(None)
        await self._task
        self._task = None

    async def submit(self, events: Sequence[NewEvent]) -> list[Appended]:
        """Append ``events`` atomically; raises EventConflict, Overloaded or DatabaseUnavailable."""
        if self._task is None or self._task.done():
            raise DatabaseUnavailable("the writer is not running")
        job = _Job(events, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise Overloaded(
                "too many writes are waiting; retry after the delay given in Retry-After",
                headers={"Retry-After": "1"},
            ) from None
        # If the caller goes away, its events may still be committed: a retry is idempotent.
        return await asyncio.shield(job.future)

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            job = await self._queue.get()
            if job is None:
                break
            jobs, count = [job], len(job.events)
            while count < self._max_batch and not self._queue.empty():
                more = self._queue.get_nowait()
                if more is None:
                    stopping = True
                    break
                jobs.append(more)
                count += len(more.events)
            await self._commit(jobs)

    async def _commit(self, jobs: list[_Job]) -> None:
        try:
            results = await self._transaction(jobs)
        except ValueNotStorable as e:
            if len(jobs) > 1:  # find the job the database refused; commit the others
                for job in jobs:
                    await self._commit([job])
                return
            results = {id(jobs[0]): InvalidEnvelope(f"the database refused a value: {e}")}
        except StoreUnavailable as e:
            log.warning("write failed, database unavailable: %s", e)
            problem = DatabaseUnavailable(str(e), headers={"Retry-After": "1"})
            results = {id(job): problem for job in jobs}
        except StoreError as e:
            log.error("write failed: %s", e)
            problem = DatabaseUnavailable(f"the store failed: {e}", headers={"Retry-After": "1"})
            results = {id(job): problem for job in jobs}
        except Exception as e:  # never leave a request waiting forever
            log.exception("write failed unexpectedly")
            results = {id(job): e for job in jobs}
        for job in jobs:
            outcome = results[id(job)]
            if job.future.done():
                continue
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)

    async def _transaction(self, jobs: list[_Job]) -> dict[int, list[Appended] | Problem]:
        results: dict[int, list[Appended] | Problem] = {}
        async with self._store.transaction() as tx:
            existing = await tx.find(list({e.key for job in jobs for e in job.events}))
            pending: dict[Key, NewEvent] = {}  # to insert in this transaction, in order
            plans: list[tuple[_Job, list[tuple[Key, bool]]]] = []
            for job in jobs:
                plan, own, conflict = [], {}, None
                for event in job.events:
                    prior = existing.get(event.key) or own.get(event.key) or pending.get(event.key)
                    if prior is None:
                        own[event.key] = event
                        plan.append((event.key, False))
                    elif same_content(event, prior):
                        plan.append((event.key, True))
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
                plans.append((job, plan))
            stored = {e.key: e for e in await tx.insert(list(pending.values()))}
        stored.update(existing)
        for job, plan in plans:
            results[id(job)] = [Appended(stored[key], duplicate) for key, duplicate in plan]
        return results


def now() -> datetime:
    """The server's clock, in UTC."""
    return datetime.now(UTC)
