"""The storage interface every backend implements, and the store's own exceptions."""

from __future__ import annotations

import abc
import asyncio
import os
import secrets
import socket
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any, ClassVar, Self

import attrs

from ..envelope import Event, Execution, NewEvent
from ..ids import NODE_ID_MAX
from ..status import TERMINAL_EVENTS
from .columns import Row

if TYPE_CHECKING:
    from ..config import Settings

Key = tuple[int, int]  # (execution_id, event_id)


class StoreError(Exception):
    """The store failed in a way the caller cannot fix by changing its request."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or refused the work; retrying later may succeed."""


class UnreadableRow(StoreError):
    """A stored row this version cannot render (written by something else, or by a version
    that accepted what it should not have): it names the row and carries the rows of the same
    read that came before it, so a reader that follows the log can go on past it."""

    def __init__(
        self,
        row: Row,
        reason: str,
        readable: list[Any],
        *,
        execution: bool = False,
    ) -> None:
        def number(value: Any) -> int | None:
            return value if type(value) is int else None

        # Read by name: the listing's cursor for a summary is its last seq.
        seq = row["last_seq" if execution else "seq"]
        execution_id = row["execution_id"]
        event_id = None if execution else row["event_id"]
        self.seq, self.execution_id, self.event_id = (
            number(seq),
            number(execution_id),
            number(event_id),
        )
        if execution:
            what = f"the summary of execution {execution_id!r} (last seq {seq!r})"
        else:
            what = f"the event at seq {seq!r} (execution {execution_id!r}, event {event_id!r})"
        super().__init__(f"{what} is stored in a form that cannot be read: {reason}")
        self.readable = readable


class ValueNotStorable(StoreError):
    """A value cannot be held by this database (a client error, not an outage)."""


def _upper(status: str | None) -> str | None:
    # Stored statuses are upper-cased on the way in, so a filter on them ignores case.
    return None if status is None else status.upper()


@attrs.frozen
class Filter:
    """Which events a reader wants: the feed's filters (this class is their one definition:
    FILTERS, the query parameters, the client's and the CLI's options derive from it)."""

    execution_id: int | None = None
    event_type: str | None = None
    step: str | None = None
    status: str | None = attrs.field(default=None, converter=_upper, metadata={"any_case": True})
    worker_id: str | None = None

    def matches(self, e: Event) -> bool:
        """Whether ``e`` passes every set field."""
        for name in _FILTER_FIELDS:
            value = getattr(self, name)
            if value is not None and getattr(e, name) != value:
                return False
        return True

    def page(self, **bounds: int | bool | None) -> Page:
        """A store page with these filters and bounds."""
        chosen = {name: getattr(self, name) for name in _FILTER_FIELDS}
        return Page(**chosen, **bounds)  # type: ignore[arg-type]

    def leading(self) -> str | None:
        """The set filter whose index a query should walk when the database cannot judge
        selectivity itself: see _SELECTIVITY."""
        return next((name for name in _SELECTIVITY if getattr(self, name) is not None), None)

    def conditions(self) -> list[tuple[str, str, object]]:
        """(column, operator, value) for every set filter, in a fixed order."""
        return [
            (name, "=", getattr(self, name))
            for name in _FILTER_FIELDS
            if getattr(self, name) is not None
        ]


_FILTER_FIELDS = tuple(f.name for f in attrs.fields(Filter))
# The filters, most selective first, as a rule rather than a statistic: an execution is bounded
# (its own events however long the log), event types and steps name one kind of work, a worker
# runs many kinds, and a status has a handful of values shared by most of the log.
_SELECTIVITY = ("execution_id", "event_type", "step", "worker_id", "status")
assert sorted(_SELECTIVITY) == sorted(_FILTER_FIELDS)
# The filters beyond the execution: what the feed, the streams and their clients take by name.
FILTERS = _FILTER_FIELDS[1:]


@attrs.frozen
class Page(Filter):
    """Which slice of the log to read: events in seq order, past a cursor, matching filters."""

    after: int | None = None  # a seq; the page starts just past it in the chosen order
    limit: int = 100
    descending: bool = False
    until: int | None = None  # a seq; nothing past it

    def conditions(self) -> list[tuple[str, str, object]]:
        """(column, operator, value) for every bound of this page, in a fixed order."""
        out = super().conditions()
        if self.after is not None:
            out.append(("seq", "<" if self.descending else ">", self.after))
        if self.until is not None:
            out.append(("seq", "<=", self.until))
        return out


EXECUTION_COLUMNS = (
    "execution_id, event_count, first_event_at, last_event_at, last_event_type, last_seq, status"
)


def execution_from_row(row: Row, moment: Callable[[Any], datetime]) -> Execution:
    """An execution's summary from a row of EXECUTION_COLUMNS; ``moment`` reads the backend's
    timestamps."""
    return Execution(
        execution_id=row["execution_id"],
        event_count=row["event_count"],
        first_event_at=moment(row["first_event_at"]),
        last_event_at=moment(row["last_event_at"]),
        last_event_type=row["last_event_type"],
        last_seq=row["last_seq"],
        status=row["status"],
    )


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
    acc: dict[int, list[Any]] = {}
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


def record_from_row(row: Row, moment: Callable[[Any], datetime]) -> IdempotencyRecord:
    """A record from a row of its table (outcome as JSON text); ``moment`` reads the backend's
    timestamps."""
    return IdempotencyRecord(
        key=row["key"],
        fingerprint=row["fingerprint"],
        outcome_json=row["outcome"],
        created_at=moment(row["created_at"]),
        expires_at=moment(row["expires_at"]),
    )


@attrs.frozen
class ReplicaLag:
    """How far a read replica is behind: seqs committed but not yet replayed, and the age of
    the newest commit replayed while any is missing (0 when caught up); both None when the
    replica does not answer."""

    reachable: bool
    seconds: float | None = None
    seqs: int | None = None


@attrs.frozen
class PurgeStep:
    """What one purge step did: how many events it removed, and for how many seconds it held
    the write lock (from taking it to its commit's end: the time writes wait at most)."""

    removed: int
    held: float


@attrs.frozen
class ReclaimStep:
    """What one step of giving space back did: whether more free space remains, and for how
    many seconds it held the write lock."""

    more: bool
    held: float


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


def _finite(moment: datetime, name: str) -> None:
    # asyncpg reads PostgreSQL's -infinity and infinity as naive datetimes.
    if moment.tzinfo is None:
        raise ValueError(f"{name} is not a finite instant")


def _read_rows(
    rows: Iterable[Row], make: Callable[[Row], Any], instants: tuple[str, str], execution: bool
) -> list[Any]:
    """Rows made into models, each of whose ``instants`` must be finite; UnreadableRow at the
    first row that cannot be rendered, carrying the ones read before it."""
    made: list[Any] = []
    for row in rows:
        try:
            item = make(row)
            for name in instants:
                _finite(getattr(item, name), name)
        except (ValueError, TypeError, OverflowError) as e:
            raise UnreadableRow(row, str(e) or type(e).__name__, made, execution=execution) from e
        made.append(item)
    return made


def read_events(rows: Iterable[Row], decode: Callable[[Row], Event]) -> list[Event]:
    """Events from rows (``decode`` is the backend's row mapping); UnreadableRow at the first
    one that cannot be rendered."""
    return _read_rows(rows, decode, ("created_at", "ingested_at"), execution=False)


def read_executions(rows: Iterable[Row], make: Callable[[Row], Execution]) -> list[Execution]:
    """Execution summaries from rows; UnreadableRow at the first that cannot be rendered."""
    return _read_rows(rows, make, ("first_event_at", "last_event_at"), execution=True)


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


def settle(future: asyncio.Future[Any] | None, outcome: Any) -> None:
    """Answer a waiting caller with ``outcome`` (raised, if an exception), unless it has gone."""
    if future is None or future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class NodeIdUnavailable(Exception):
    """No node id can be claimed: the one asked for is held by a live instance, or every one is."""


class NodeClaimLost(Exception):
    """The claim being renewed is gone: its lease ran out and another instance took the node id."""


@attrs.frozen
class NodeHolder:
    """One running instance: its host, its process id and a random token of its own."""

    host: str
    pid: int
    token: str

    @classmethod
    def this_process(cls) -> NodeHolder:
        """A holder for this process, with a fresh token (two logs in one process differ)."""
        return cls(socket.gethostname(), os.getpid(), secrets.token_hex(8))

    def __str__(self) -> str:
        return f"host {self.host} pid {self.pid}"


@attrs.frozen
class NodeClaim:
    """A row of the claims table as the choice of a node id sees it."""

    node_id: int
    holder: NodeHolder | None  # None once released
    claimed_at: datetime | None
    expires_at: datetime | None
    ceiling_ms: int  # Unix ms: no id minted under this node id, or mintable before expiry, is later

    @classmethod
    def from_row(cls, row: Row, moment: Callable[[Any], datetime]) -> NodeClaim:
        """A claim from a row of CLAIM_COLUMNS; ``moment`` reads the backend's timestamps."""
        holder = None
        if row["token"] is not None:
            holder = NodeHolder(row["host"], row["pid"], row["token"])
        claimed_at, expires_at = row["claimed_at"], row["expires_at"]
        return cls(
            row["node_id"],
            holder,
            None if claimed_at is None else moment(claimed_at),
            None if expires_at is None else moment(expires_at),
            row["ceiling_ms"],
        )


CLAIM_COLUMNS = "node_id, host, pid, token, claimed_at, expires_at, ceiling_ms"


def claim_ceiling(wall_ms: int, floor_ms: int, lease: float) -> int:
    """The ceiling a new claim records: past the floor and the claimant's clock, by the lease."""
    return max(wall_ms, floor_ms + 1) + round(lease * 1000)


@attrs.frozen
class Claim:
    """A node id now held: mint only ids later than ``floor_ms``, none later than ``ceiling_ms``
    (Unix ms) unless a renewal raises it, and renew before ``expires_at``."""

    node_id: int
    floor_ms: int
    ceiling_ms: int
    expires_at: datetime


def choose_node(
    claims: Sequence[NodeClaim],
    holder: NodeHolder,
    wanted: int | None,
    now: datetime,
    wall_ms: int,
) -> tuple[int, int]:
    """The node id to take and its floor (the latest Unix ms minted under it before).

    ``wanted``, if free; else the lowest free id, preferring one whose floor is already behind
    ``wall_ms`` (the claimant's clock) so that it need not wait. A claim is free when released,
    expired at ``now`` (the clock leases are judged by), or ``holder``'s own."""
    rows = {c.node_id: c for c in claims}

    def free(claim: NodeClaim | None) -> bool:
        return (
            claim is None
            or claim.holder is None
            or claim.holder.token == holder.token
            or claim.expires_at is None
            or claim.expires_at <= now
        )

    def floor(node_id: int) -> int:
        claim = rows.get(node_id)
        return 0 if claim is None else claim.ceiling_ms

    if wanted is not None:
        claim = rows.get(wanted)
        if not free(claim):
            assert claim is not None and claim.expires_at is not None
            raise NodeIdUnavailable(
                f"node id {wanted} is held by {claim.holder} (claimed {_iso(claim.claimed_at)}, "
                f"lease until {_iso(claim.expires_at)}): stop that instance, or wait for its "
                'lease to run out, or configure another node_id (or "auto")'
            )
        return wanted, floor(wanted)
    candidates = [(floor(n) >= wall_ms, n) for n in range(NODE_ID_MAX + 1) if free(rows.get(n))]
    if not candidates:
        raise NodeIdUnavailable(f"all {NODE_ID_MAX + 1} node ids are held by live instances")
    _, chosen = min(candidates)
    return chosen, floor(chosen)


def lost_claim_message(node_id: int, now_held: NodeClaim | None) -> str:
    """Why a renewal failed: who holds the node id now, if anyone."""
    if now_held is None or now_held.holder is None:
        return f"the claim on node id {node_id} was released"
    return (
        f"node id {node_id} is now held by {now_held.holder} (claimed "
        f"{_iso(now_held.claimed_at)}): this instance's lease ran out before it was renewed"
    )


def _iso(moment: datetime | None) -> str:
    return "?" if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds")


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
    # Seconds a purge waits between two of its steps, for the writers it kept waiting.
    purge_pause: ClassVar[float] = 0.01

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect; safe to call twice."""

    @abc.abstractmethod
    async def migrate(self, progress: Callable[[str], None] | None = None) -> list[str]:
        """Apply pending migrations; returns the names applied. ``progress`` is told, a line
        at a time, how a long one goes (default: the log)."""

    async def maintain(self, now: datetime) -> None:
        """The store's periodic upkeep, run by the service in the background (PostgreSQL:
        partitions created ahead of ``now``)."""

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
    async def executions(
        self, before: int | None, limit: int, status: str | None = None
    ) -> list[Execution]:
        """Executions by newest activity first (their last seq), those with last seq < before
        (and this status, when given)."""

    @property
    def replicated(self) -> bool:
        """Whether reads go to a replica that may lag behind the writes (head(), page(), get()
        and the execution reads), rather than to the database written to."""
        return False

    async def written_head(self) -> int:
        """The highest seq committed on the database written to (head() where no replica)."""
        return await self.head()

    async def replica_lag(self) -> ReplicaLag | None:
        """How far the replica reads lag behind the writes; None without a replica. Raises
        StoreUnavailable when the database written to does not answer."""
        return None

    # --- retention: a purge removes the oldest events, a short transaction at a time --------

    @abc.abstractmethod
    async def purged_through(self) -> int:
        """The purge horizon: every event at or below this seq has been removed (0: none)."""

    @abc.abstractmethod
    async def purge_cut(self, before: datetime) -> int:
        """The highest seq a purge of what was ingested before ``before`` removes through: the
        last one before the oldest event ingested at or after it (the head when there is
        none); never below the horizon."""

    @abc.abstractmethod
    async def count_through(self, through: int) -> int:
        """How many events are held at or below seq ``through``."""

    @abc.abstractmethod
    async def purge_chunk(self, through: int, limit: int) -> PurgeStep:
        """In one short transaction, serialised with the writer: remove the oldest held events,
        at most ``limit`` seq values of them and none past ``through``, correct the summaries
        of their executions (dropping those left without events) and move the horizon;
        returns how many events were removed and how long the write lock was held."""

    async def purge_whole(self, before: datetime) -> int:
        """Remove at once the events the database keeps apart by ingestion time, all of them
        ingested before ``before`` (PostgreSQL: whole partitions), moving the horizon past them
        first and correcting the summaries; returns how many went. The rest is purge_chunk's."""
        return 0

    async def reclaim(self, pages: int) -> ReclaimStep:
        """Give up to ``pages`` free pages back to the file system (where the database keeps
        them); says whether more remain."""
        return ReclaimStep(False, 0.0)

    @abc.abstractmethod
    async def vacuum(self) -> None:
        """Rewrite the storage so that the space of removed events is returned (long: an
        operator runs it, the service never does)."""

    async def listen(self, callback: Callable[[int | None], None]) -> None:
        """Call ``callback`` when another process commits events, with the seq committed up to
        when known (where the database can tell; readers poll as well, so a missed call only
        delays)."""

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: Settings, **options: Any) -> Self:
        """The store for ``settings.dsn``, with the settings that concern this backend and
        ``options``, keyword arguments of its constructor."""

    async def __aenter__(self) -> EventStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def claim_node(
        self, holder: NodeHolder, node_id: int | None, lease: float, wall_ms: int
    ) -> Claim:
        """In one transaction, across every process on the database: take ``node_id`` (None:
        the lowest free one, see choose_node) for ``holder`` for ``lease`` seconds, recording
        the claimant's ceiling as max(``wall_ms``, floor + 1) plus the lease. Raises
        NodeIdUnavailable, naming the holder, when the id is held by another live instance."""

    @abc.abstractmethod
    async def renew_node(
        self, holder: NodeHolder, node_id: int, lease: float, ceiling_ms: int
    ) -> datetime:
        """Extend ``holder``'s claim by ``lease`` seconds from now (even past its expiry, if no
        one took it meanwhile) and raise its ceiling to ``ceiling_ms``; returns the new expiry.
        Raises NodeClaimLost when another instance holds the id, or it was released."""

    @abc.abstractmethod
    async def release_node(self, holder: NodeHolder, node_id: int, last_ms: int) -> None:
        """Free ``holder``'s claim, leaving ``last_ms`` (the latest Unix ms of an id it minted)
        as the floor of the next holder; nothing happens when the claim is no longer its own."""
