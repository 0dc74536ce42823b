"""The storage interface every backend implements, and the store's own exceptions."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Sequence
from datetime import datetime
from importlib import resources
from typing import ClassVar

import attrs

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
    """Which slice of one execution's events to read."""

    execution_id: int
    after: int | None = None  # a seq; the page starts just past it in the chosen order
    limit: int = 100
    descending: bool = False


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


def load_migrations(backend: str) -> list[Migration]:
    """The backend's migrations in version order."""
    folder = resources.files("eventlog.storage").joinpath("migrations", backend)
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append(Migration(int(version), name, entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


class WriteTransaction(abc.ABC):
    """One open write transaction; it holds the log's write lock until it ends."""

    @abc.abstractmethod
    async def find(self, keys: Sequence[Key]) -> dict[Key, Event]:
        """The stored events among ``keys``, as committed before this transaction began writing."""

    @abc.abstractmethod
    async def insert(self, events: Sequence[NewEvent]) -> list[Event]:
        """Append ``events`` (keys not yet stored, no key twice) with seq in list order."""

    @abc.abstractmethod
    async def find_keys(self, keys: Sequence[str], now: datetime) -> dict[str, IdempotencyRecord]:
        """The idempotency records among ``keys`` that have not expired at ``now``."""

    @abc.abstractmethod
    async def save_keys(self, records: Sequence[IdempotencyRecord]) -> None:
        """Store idempotency records, replacing expired ones under the same key."""

    @abc.abstractmethod
    async def purge_keys(self, now: datetime) -> int:
        """Delete idempotency records expired at ``now``; returns how many."""


class EventStore(abc.ABC):
    """An append-only event log in one database.

    Only the writer calls ``transaction``; reads may run concurrently with it and see committed
    events only. ``seq`` is assigned inside the committing transaction, so it grows in commit
    order across every process that writes to the same database.
    """

    backend: ClassVar[str]

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
    def transaction(self) -> contextlib.AbstractAsyncContextManager[WriteTransaction]:
        """A write transaction: committed when the block ends, rolled back if it raises."""

    @abc.abstractmethod
    async def get(self, event_id: int, execution_id: int | None = None) -> Event | None:
        """The event with this id (the first stored, if several executions share it)."""

    @abc.abstractmethod
    async def page(self, page: Page) -> list[Event]:
        """Up to ``page.limit`` events of one execution in seq order."""

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
