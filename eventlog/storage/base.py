"""The storage interface every backend implements, and the store's own exceptions."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from datetime import datetime
from importlib import resources
from typing import Any, ClassVar

import attrs
import orjson

from ..envelope import Event, NewEvent

Key = tuple[int, int]  # (execution_id, event_id)


class StoreError(Exception):
    """The store failed in a way the caller cannot fix by changing its request."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or refused the work; retrying later may succeed."""


class ValueNotStorable(StoreError):
    """A value cannot be held by this database (a client error, not an outage)."""


@attrs.frozen
class Page:
    """Which slice of the log to read: events in seq order, past a cursor, matching filters."""

    execution_id: int | None = None
    after: int | None = None  # a seq; the page starts just past it in the chosen order
    limit: int = 100
    descending: bool = False
    until: int | None = None  # a seq; nothing past it
    event_type: str | None = None
    step: str | None = None
    status: str | None = None
    worker_id: str | None = None

    def conditions(self) -> list[tuple[str, str, object]]:
        """(column, operator, value) for every bound of this page, in a fixed order."""
        out: list[tuple[str, str, object]] = []
        for column in ("execution_id", "event_type", "step", "status", "worker_id"):
            value = getattr(self, column)
            if value is not None:
                out.append((column, "=", value))
        if self.after is not None:
            out.append(("seq", "<" if self.descending else ">", self.after))
        if self.until is not None:
            out.append(("seq", "<=", self.until))
        return out


@attrs.frozen
class Execution:
    """One execution at a glance, kept up to date by every write."""

    execution_id: int
    event_count: int
    first_event_at: datetime
    last_event_at: datetime
    last_event_type: str
    last_seq: int
    status: str


# Event types that end an execution, and the status each one sets.
TERMINAL_EVENTS = {
    "playbook.completed": "COMPLETED",
    "playbook.failed": "FAILED",
    "playbook.cancelled": "CANCELLED",
    "playbook_completed": "COMPLETED",
    "playbook_failed": "FAILED",
    "playbook_cancelled": "CANCELLED",
    "workflow.completed": "COMPLETED",
    "workflow.failed": "FAILED",
    "execution.cancelled": "CANCELLED",
}


@attrs.frozen
class ExecutionDelta:
    """What one transaction adds to one execution's summary."""

    execution_id: int
    count: int
    first_event_at: datetime
    last_event_at: datetime
    last_event_type: str
    last_index: int  # position (1-based) of its newest event in the transaction
    terminal: str | None  # the status its newest terminal event sets, if it has one


def execution_deltas(events: Sequence[NewEvent]) -> list[ExecutionDelta]:
    """Fold a transaction's events (in seq order) into one delta per execution."""
    acc: dict[int, list] = {}
    for index, e in enumerate(events, 1):
        terminal = TERMINAL_EVENTS.get(e.event_type.lower())
        a = acc.get(e.execution_id)
        if a is None:
            acc[e.execution_id] = [1, e.created_at, e.created_at, e.event_type, index, terminal]
            continue
        a[0] += 1
        a[1] = min(a[1], e.created_at)
        a[2] = max(a[2], e.created_at)
        a[3], a[4] = e.event_type, index
        a[5] = terminal or a[5]
    return [ExecutionDelta(x, *a) for x, a in acc.items()]


@attrs.frozen
class IdempotencyRecord:
    """What a request with an Idempotency-Key did, kept until ``expires_at``."""

    key: str
    fingerprint: str
    outcome_json: str
    created_at: datetime
    expires_at: datetime


@attrs.frozen
class Migration:
    """One versioned schema change, read from ``migrations/<backend>/NNNN_name.sql``."""

    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        """How it is named to people: 0001_events."""
        return f"{self.version:04d}_{self.name}"


def pending(backend: str, applied: set[int]) -> list[str]:
    """The labels of the backend's migrations not in ``applied``, in order."""
    return [m.label for m in load_migrations(backend) if m.version not in applied]


def event_from_row(row: Sequence[Any], moment: Callable[[Any], datetime]) -> Event:
    """An Event from a row in the columns' shared order (seq first); ``moment`` turns the
    backend's timestamp into an aware datetime. event_ids is stored as JSON text."""
    return Event(
        seq=row[0],
        execution_id=row[1],
        event_id=row[2],
        step=row[3],
        event_type=row[4],
        status=row[5],
        payload_json=row[6],
        meta_json=row[7],
        worker_id=row[8],
        result_kind=row[9],
        result_uri=row[10],
        event_ids=None if row[11] is None else tuple(orjson.loads(row[11])),
        actionable=bool(row[12]),
        informative=bool(row[13]),
        created_at=moment(row[14]),
        ingested_at=moment(row[15]),
        defaulted=row[16],
    )


def load_migrations(backend: str) -> list[Migration]:
    """The backend's migrations in version order."""
    folder = resources.files("eventlog.storage").joinpath("migrations", backend)
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append(Migration(int(version), name, entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


@attrs.frozen
class WritePlan:
    """What one write transaction appends: new events (no key stored, none twice) and records."""

    events: Sequence[NewEvent] = ()
    records: Sequence[IdempotencyRecord] = ()


# Given the stored events among the keys asked about and the live idempotency records among the
# keys asked about, decide what to write. Called with the write lock held: it must not block.
Decide = Callable[[dict[Key, Event], dict[str, IdempotencyRecord]], WritePlan]


class EventStore(abc.ABC):
    """An append-only event log in one database.

    Only the writer calls ``write``; reads may run concurrently with it and see committed
    events only. ``seq`` is assigned inside the committing transaction, so it grows in commit
    order across every process that writes to the same database.
    """

    backend: ClassVar[str]
    # How many write() calls the writer may have under way at once. The store still commits
    # them one after another; the overlap hides the time between one commit and the next call.
    write_concurrency: ClassVar[int] = 2

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect; safe to call twice."""

    @abc.abstractmethod
    async def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names applied."""

    @abc.abstractmethod
    async def pending_migrations(self) -> list[str]:
        """Migrations not yet applied; empty when the schema is current."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""

    @abc.abstractmethod
    async def write(
        self, keys: Sequence[Key], idempotency_keys: Sequence[str], now: datetime, decide: Decide
    ) -> list[Event]:
        """One write transaction: under the log's write lock, look up what is stored among
        ``keys`` and ``idempotency_keys`` (records live at ``now``), let ``decide`` choose what
        to write, append it with the next seq values and commit. Returns the appended events.
        If ``decide`` raises, nothing is written."""

    @abc.abstractmethod
    async def idempotency_record(self, key: str, now: datetime) -> IdempotencyRecord | None:
        """The live record under ``key``, if any."""

    @abc.abstractmethod
    async def purge_keys(self, now: datetime) -> int:
        """Delete idempotency records expired at ``now``; returns how many."""

    @abc.abstractmethod
    async def get(self, event_id: int, execution_id: int | None = None) -> Event | None:
        """The event with this id (the first stored, if several executions share it)."""

    @abc.abstractmethod
    async def page(self, page: Page) -> list[Event]:
        """Up to ``page.limit`` events matching the page, in seq order."""

    @abc.abstractmethod
    async def head(self) -> int:
        """The highest seq committed so far (0 for an empty log)."""

    @abc.abstractmethod
    async def execution(self, execution_id: int) -> Execution | None:
        """One execution's summary."""

    @abc.abstractmethod
    async def executions(self, before: int | None, limit: int) -> list[Execution]:
        """Executions by newest activity first (their last seq), those with last seq < before."""

    async def listen(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when another process commits events (where the database can tell;
        readers poll as well, so a missed call only delays)."""

    async def __aenter__(self) -> EventStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def open_store(dsn: str, **options: object) -> EventStore:
    """The backend the DSN's scheme names (``sqlite:///path`` or ``postgresql://…``)."""
    scheme = dsn.partition(":")[0].lower()
    if scheme == "sqlite":
        from .sqlite import SqliteStore

        return SqliteStore(dsn, **options)  # type: ignore[arg-type]
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore

        return PostgresStore(dsn, **options)  # type: ignore[arg-type]
    raise ValueError(f"unsupported DSN scheme {scheme!r}: use sqlite:///path or postgresql://…")
