"""EventLogClient: the producer and reader library for the eventlog HTTP API (aiohttp).

    async with EventLogClient("http://127.0.0.1:8080", token="…") as client:
        receipt = await client.emit({"execution_id": 7, "name": "call.done", "step": "fetch"})
        batch = await client.emit_batch([{...}, {...}])
        async for event in client.events(execution_id=7):  # every stored event, page by page
            ...
        async for event in client.tail(after=0):  # all stored events, then live ones
            ...

The client owns its aiohttp session unless one is passed (it is then left open, and must not
set raise_for_status); requests carry `Authorization: Bearer <token>` when a token is given.
`emit` takes a dict in any producer dialect (CONTRACT §1) or an `eventlog.envelope.Envelope`.

Ids. An envelope without an `event_id` (absent or null; the contract gives the field no alias)
gets one minted here, before the first attempt, so every retry of the call carries the same id
and the server stores it once: a retry whose first attempt was stored (the reply was lost) is
answered `duplicate: true`. The caller's dict is copied, never changed. Ids use the service's
snowflake layout (`eventlog.ids.SnowflakeGenerator`), under `node_id`: by default a random
0-1023 per client. The server's key is (execution_id, event_id), so two ids can only clash
when they fall in the same execution, the same millisecond and the same sequence number under
the same node id. What protects: ids of one generator strictly increase, and every client in
one process with the same node id shares one generator, so clients in one process never clash.
What does not: two processes (or a process and the server, whose own node id mints ids for
envelopes sent without one) that share a node id, random or configured, can mint the same id
in the same millisecond; with random node ids that is a 1-in-1024 chance for each pair of
producers, and it matters only if they write the same execution in the same millisecond. A
clash with other content is a 409 (`ConflictError`), never a silent overwrite; a clash of two
identical events (same fields, `created_at` left to the server or equal) is reported as a
duplicate and the second is not stored. Producers that write one execution from several
processes at high rates should be given distinct `node_id`s.

Retries (defaults: timeout 10 s per attempt, max_attempts 8, backoff 0.1 s, max_backoff 5 s,
deadline 30 s). A connection error (refused, reset, a server that hangs up before replying), a
timeout of one attempt, a 503, or a 502 or 504 from a proxy in front of the service (not the
service's own 502 `unreadable_row`) is retried, at most `max_attempts` attempts in all and
never past `deadline` seconds from the call: the wait before attempt n+1 is
`backoff * 2**(n-1)` (at most `max_backoff`), jittered down to half of that, or, on a reply
with `Retry-After`, that many seconds plus up to `backoff` of jitter (a Retry-After that would
overrun the deadline ends the call at once). Retrying a write is safe because its body, ids
and `Idempotency-Key` are fixed before the first attempt. Every other error reply raises at once,
4xx included: `EventLogError` carrying the status, the problem's `code`, the whole problem
document and its field errors; `ConflictError` for a 409 (`event_conflict`,
`idempotency_conflict`: a conflict is an error, not a success); `UnavailableError` when the
retries ran out (status 502, 503 or 504, or None with code `unreachable` when no reply came at
all).

Batches. `emit_batch` mints ids for items without one and sends one `Idempotency-Key`, minted
once per call, so a retried batch is replayed by the server (`replayed` in the receipt), not
applied again.

Reading. `events()` pages through the feed (`/api/events`) or, for one execution without
other filters, `/api/executions/{id}/events`, following `next_cursor` until the last page.
`tail()` follows the SSE stream; it remembers the seq of the last event it yielded and, when
the connection drops, the stream ends or the server cuts it off (`event: cutoff`), reconnects
with `Last-Event-ID` so it continues with no gap and no repeat. Heartbeat comments are skipped.
Without `after`, the stream starts from the log's head, read when the service first answers
(so even a drop before the first event loses nothing). `idle_timeout` (60 s) without a byte,
not even a heartbeat, counts as a drop. Reconnection gives up after `max_attempts` failed
connections in a row (raising `UnavailableError`); with `forever=True` it never does, waiting
at most `max_backoff` between attempts, unless `max_wait` bounds how long the service may stay
unreachable (at the start or later). The log gets one line when the stream is lost and one
when it is back, not one per attempt; 4xx replies raise at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import secrets
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
import attrs

from .codec import dumps, loads, wire_form
from .envelope import Envelope
from .ids import NODE_ID_MAX, SnowflakeGenerator
from .problems import FieldError, Problem
from .storage.base import FILTERS

__all__ = [
    "BatchReceipt",
    "ConflictError",
    "EventLogClient",
    "EventLogError",
    "ExpiredError",
    "Message",
    "Receipt",
    "UnavailableError",
    "read_sse",
]

log = logging.getLogger("eventlog.client")

# 503 is the service's own "later"; 502 and 504 come from a proxy in front of it whose
# upstream is down or slow: the same condition, seen from one hop further out. The service's
# own 502 (a stored row it cannot render) is no such thing, and is not retried.
GATEWAY = frozenset({502, 504})
OWN_PROBLEM = "urn:eventlog:problem:"


# --- errors and results -------------------------------------------------------------------


class EventLogError(Exception):
    """An error reply (or no reply) from the service, with its problem document."""

    def __init__(self, status: int | None, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.code = str(problem.get("code") or "http_error")
        self.title = str(problem.get("title") or "")
        self.detail = str(problem.get("detail") or self.title)
        self.errors = _field_errors(problem.get("errors"))
        super().__init__(f"{status if status is not None else '-'} {self.code}: {self.detail}")


class ConflictError(EventLogError):
    """409: another event under this key, or an Idempotency-Key used for another body."""


class ExpiredError(EventLogError):
    """410 ``expired``, or a stream's ``event: expired``: retention removed events past the
    resume point. ``resume_after`` goes on from the oldest seq still held."""

    @property
    def resume_after(self) -> int:
        """The cursor that goes on from the oldest event still held."""
        return int(self.problem["resume_after"])


class UnavailableError(EventLogError):
    """The retries ran out: the service (or a proxy) kept answering 502/503/504, or did not
    answer at all."""


def _field_errors(raw: Any) -> tuple[FieldError, ...]:
    """The problem's field errors; malformed entries are dropped rather than failing the error."""
    if not isinstance(raw, list):
        return ()
    return tuple(
        FieldError(str(e["path"]), str(e["message"]))
        for e in raw
        if isinstance(e, dict) and "path" in e and "message" in e
    )


def _error(status: int, reason: str | None, body: bytes) -> EventLogError:
    """The typed error for an error reply (a non-problem body, from a proxy say, is wrapped)."""
    problem: Any = None
    try:
        problem = loads(body)
    except Problem:
        pass
    if not isinstance(problem, dict):
        reason = reason or "error"
        problem = {
            "type": "about:blank",
            "title": reason,
            "status": status,
            "detail": body[:500].decode("utf-8", "replace") or reason,
            "code": reason.lower().replace(" ", "_").replace("-", "_"),
        }
    transient = status == 503 or (
        status in GATEWAY and not str(problem.get("type")).startswith(OWN_PROBLEM)
    )
    kind = ConflictError if status == 409 else UnavailableError if transient else EventLogError
    if status == 410 and problem.get("code") == "expired":
        kind = ExpiredError
    return kind(status, problem)


def _unreachable(e: BaseException) -> UnavailableError:
    """The error for an attempt that got no reply."""
    error = UnavailableError(
        None,
        {"title": "No reply", "detail": f"{type(e).__name__}: {e}", "code": "unreachable"},
    )
    error.__cause__ = e
    return error


def _until(forever: bool, max_wait: float | None) -> str:
    """How long tail goes on trying, for its log line."""
    if not forever:
        return ""
    return " until it is back" if max_wait is None else f" for up to {max_wait:g} s"


def _invalid_reply(detail: str) -> EventLogError:
    """A 2xx whose body is not what the API promises (a proxy, or the wrong URL)."""
    return EventLogError(
        None, {"title": "Invalid reply", "detail": detail, "code": "invalid_reply"}
    )


@attrs.frozen
class Receipt:
    """What `emit` got back: the event's id, whether the server already had it, and its seq
    (the reply's Eventlog-Seq: pass it as ``min_seq`` to a read to see this write)."""

    event_id: int
    duplicate: bool
    seq: int | None = None


@attrs.frozen
class BatchReceipt:
    """What `emit_batch` got back: ids in item order, indexes already stored, and whether the
    whole request was a replay of an earlier attempt (same Idempotency-Key)."""

    event_ids: tuple[int, ...]
    duplicates: tuple[int, ...]
    replayed: bool
    request_id: str
    seq: int | None = None  # as Receipt.seq: the highest seq among the events


# --- Server-Sent Events -------------------------------------------------------------------


@attrs.frozen
class Message:
    """One Server-Sent Events message."""

    id: str | None
    event: str
    data: str


async def read_sse(content: aiohttp.StreamReader) -> AsyncIterator[Message]:
    """Messages from an event stream; comment lines (heartbeats) are skipped."""
    # Lines are split here rather than by StreamReader.readline, whose limit follows the
    # session's read_bufsize (128 KiB by default) and would refuse large events.
    fields: dict[str, list[str]] = {}
    pending: list[bytes] = []
    async for chunk in content.iter_any():
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            raw = chunk[start:end]
            if pending:
                raw = b"".join([*pending, raw])
                pending.clear()
            start = end + 1
            line = raw.decode("utf-8").removesuffix("\r")
            if not line:
                if "data" in fields or "event" in fields:
                    ids = fields.get("id")
                    yield Message(
                        ids[-1] if ids else None,
                        fields.get("event", ["message"])[-1],
                        "\n".join(fields.get("data", [])),
                    )
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields.setdefault(name, []).append(value.removeprefix(" "))
        if start < len(chunk):
            pending.append(chunk[start:])


# --- the client ---------------------------------------------------------------------------

# One generator per node id in this process: clients sharing a node id never mint the same id.
_GENERATORS: dict[int, SnowflakeGenerator] = {}
_GENERATORS_LOCK = threading.Lock()


def _generator(node_id: int) -> SnowflakeGenerator:
    """The process's generator for ``node_id``."""
    with _GENERATORS_LOCK:
        generator = _GENERATORS.get(node_id)
        if generator is None:
            generator = _GENERATORS[node_id] = SnowflakeGenerator(node_id)
        return generator


def _seq(headers: Mapping[str, str]) -> int | None:
    """A write reply's Eventlog-Seq, when it carries one."""
    value = headers.get("Eventlog-Seq", "")
    return int(value) if value.isdigit() else None


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _envelope_dict(envelope: Mapping[str, Any] | Envelope) -> dict[str, Any]:
    """A fresh dict to send: a copy of the caller's mapping, or an Envelope's sent fields."""
    if isinstance(envelope, Envelope):
        return wire_form(envelope)
    if isinstance(envelope, Mapping):
        return dict(envelope)
    raise TypeError(f"an envelope is a mapping or an Envelope, not {type(envelope).__name__}")


def _filters(filters: dict[str, Any]) -> dict[str, str]:
    """Query parameters for the feed and stream filters; an unknown name is a TypeError."""
    unknown = set(filters) - set(FILTERS)
    if unknown:
        raise TypeError(f"unknown filter(s) {sorted(unknown)}; known: {', '.join(FILTERS)}")
    return {k: str(v) for k, v in filters.items() if v is not None}


@attrs.define
class _StreamPosition:
    """Where a tail is (the last seq it yielded; None: not pinned yet), how its latest
    connection ended, and how long the stream has been failing."""

    last: int | None
    cut_off: bool = False  # the server cut it off for falling behind
    skip_expired: bool = False  # go on past events removed by retention (with a warning)
    from_now: bool = False  # last is the head read at the start, nothing yielded since
    retry_after: float | None = None
    error: Exception = attrs.field(factory=lambda: ConnectionError("not connected"))
    failures: int = 0  # connections in a row that failed or ended
    down_since: float = 0.0  # loop time of the first of them


class EventLogClient:
    """An eventlog producer and reader; see the module docstring for ids and retries."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        node_id: int | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 10.0,
        max_attempts: int = 8,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        deadline: float = 30.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if node_id is None:
            node_id = secrets.randbelow(NODE_ID_MAX + 1)
        self._ids = _generator(node_id)  # validates node_id
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._connect_timeout = timeout
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._deadline = deadline

    @property
    def node_id(self) -> int:
        """The node id in every event id this client mints."""
        return self._ids.node_id

    async def __aenter__(self) -> EventLogClient:
        self._http()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session, if the client opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        """The session, opened on first use when none was passed."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """How long to wait after failed attempt number ``attempt``."""
        if retry_after is not None:
            return retry_after + random.uniform(0, self._backoff)
        cap = min(self._max_backoff, self._backoff * 2 ** (attempt - 1))
        return random.uniform(cap / 2, cap)

    async def _call(self, method: str, path: str, **options: Any) -> Any:
        """One API call, retried as the module docstring says; the decoded JSON reply (the
        options are _exchange's)."""
        data, _ = await self._exchange(method, path, **options)
        return data

    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        attempts: int | None = None,
    ) -> tuple[Any, Mapping[str, str]]:
        """One API call, retried as the module docstring says (at most ``attempts`` times,
        when given); the decoded JSON reply and the reply's headers."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._deadline
        request_headers = {**self._headers, "Accept": "application/json", **(headers or {})}
        if body is not None:
            request_headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            attempt += 1
            retry_after = None
            try:
                async with self._http().request(
                    method,
                    self._base + path,
                    params=params,
                    data=body,
                    headers=request_headers,
                    timeout=self._timeout,
                ) as reply:
                    data = await reply.read()
                    if reply.status < 300:
                        try:
                            return loads(data), reply.headers
                        except Problem as e:
                            raise _invalid_reply(f"{method} {path}: {e.detail}") from None
                    error = _error(reply.status, reply.reason, data)
                    if not isinstance(error, UnavailableError):
                        raise error
                    retry_after = _retry_after(reply.headers.get("Retry-After"))
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as e:
                error = _unreachable(e)
            delay = self._delay(attempt, retry_after)
            if attempt >= (attempts or self._max_attempts) or loop.time() + delay > give_up_at:
                raise error
            log.info("%s %s: %s; attempt %d in %.2fs", method, path, error, attempt + 1, delay)
            await asyncio.sleep(delay)

    # --- writing ---

    async def emit(self, envelope: Mapping[str, Any] | Envelope) -> Receipt:
        """Append one event (any producer dialect), minting its event_id when it has none."""
        body = _envelope_dict(envelope)
        if body.get("event_id") is None:
            body["event_id"] = self._ids.next_id()
        reply, headers = await self._exchange("POST", "/api/events", body=dumps(body))
        try:
            return Receipt(int(reply["event_id"]), reply["duplicate"] is True, _seq(headers))
        except (KeyError, TypeError, ValueError):
            raise _invalid_reply(f"POST /api/events answered {reply!r:.200}") from None

    async def emit_batch(self, envelopes: Iterable[Mapping[str, Any] | Envelope]) -> BatchReceipt:
        """Append events in one transaction (all or none); a retry is replayed, not re-applied."""
        bodies = [_envelope_dict(e) for e in envelopes]
        missing = [b for b in bodies if b.get("event_id") is None]
        for body, event_id in zip(missing, self._ids.next_ids(len(missing)), strict=True):
            body["event_id"] = event_id
        key = secrets.token_urlsafe(24)
        reply, headers = await self._exchange(
            "POST", "/api/events/batch", body=dumps(bodies), headers={"Idempotency-Key": key}
        )
        try:
            return BatchReceipt(
                tuple(int(i) for i in reply["event_ids"]),
                tuple(int(i) for i in reply["duplicates"]),
                reply["duplicate"] is True,
                str(reply["request_id"]),
                _seq(headers),
            )
        except (KeyError, TypeError, ValueError):
            raise _invalid_reply(f"POST /api/events/batch answered {reply!r:.200}") from None

    # --- reading ---

    async def get(
        self, event_id: int, *, execution_id: int | None = None, min_seq: int | None = None
    ) -> dict[str, Any]:
        """One stored event in the canonical shape (ids as strings); with ``min_seq`` (a
        receipt's seq), once the service's reads hold that seq."""
        params = {} if execution_id is None else {"execution_id": str(execution_id)}
        if min_seq is not None:
            params["min_seq"] = str(int(min_seq))
        event: dict[str, Any] = await self._call(
            "GET", f"/api/events/{int(event_id)}", params=params
        )
        return event

    async def events(
        self,
        execution_id: int | None = None,
        after: int | None = None,
        limit: int = 100,
        *,
        min_seq: int | None = None,
        **filters: Any,
    ) -> AsyncIterator[dict[str, Any]]:
        """Stored events in seq order, after seq ``after``, fetched ``limit`` per page, until
        the last page; filters: event_type, step, status, worker_id. With ``min_seq`` (a
        receipt's seq), the first page is read once the service's reads hold that seq."""
        params = _filters(filters)
        if execution_id is not None and not params:
            path = f"/api/executions/{int(execution_id)}/events"
            params["order"] = "asc"
        else:
            path = "/api/events"
            if execution_id is not None:
                params["execution_id"] = str(int(execution_id))
        params["limit"] = str(limit)
        cursor = None if after is None else str(after)
        if min_seq is not None:
            params["min_seq"] = str(int(min_seq))  # (kept: later pages are already past it)
        while True:
            if cursor is not None:
                params["after"] = cursor
            page = await self._call("GET", path, params=params)
            for event in page["events"]:
                yield event
            cursor = page["next_cursor"]
            if cursor is None:
                return

    async def _head(self, attempts: int | None = None) -> int:
        """The log's newest seq (0 when empty): the newest execution's last_seq."""
        reply = await self._call("GET", "/api/executions", params={"limit": "1"}, attempts=attempts)
        executions = reply["executions"]
        return int(executions[0]["last_seq"]) if executions else 0

    async def tail(
        self,
        after: int | None = None,
        execution_id: int | None = None,
        *,
        forever: bool = False,
        max_wait: float | None = None,
        idle_timeout: float | None = 60.0,
        skip_expired: bool = False,
        **filters: Any,
    ) -> AsyncIterator[dict[str, Any]]:
        """Events from the live stream, after seq ``after`` (or from now), resuming after every
        drop with no gap and no repeat; ``idle_timeout`` seconds without even a heartbeat count
        as a drop. Gives up after ``max_attempts`` failures in a row, or with ``forever`` only
        once the service has been unreachable for ``max_wait`` seconds (None: never). When
        retention has removed events past the resume point, raises ExpiredError, or with
        ``skip_expired`` logs a warning and goes on from the oldest event still held."""
        params = _filters(filters)
        path = (
            f"/api/executions/{int(execution_id)}/events/stream"
            if execution_id is not None
            else "/api/events/stream"
        )
        at = _StreamPosition(None if after is None else int(after), skip_expired=skip_expired)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._connect_timeout, sock_read=idle_timeout
        )
        loop = asyncio.get_running_loop()
        while True:
            # aclosing: a caller that stops iterating closes the connection at once.
            async with contextlib.aclosing(self._stream_once(path, params, timeout, at)) as events:
                async for event in events:
                    yield event
            if at.cut_off:
                log.warning("the server cut the stream off; resuming after seq %d", at.last)
                continue
            at.failures += 1
            now = loop.time()
            if at.failures == 1:
                at.down_since = now
            waited = now - at.down_since
            if forever:
                if max_wait is not None and waited >= max_wait:
                    raise at.error
            elif at.failures >= self._max_attempts:
                raise at.error
            delay = self._delay(at.failures, at.retry_after)
            if max_wait is not None:
                delay = max(min(delay, max_wait - waited), 0.0)
            if at.failures == 1:
                log.warning("stream lost (%s); reconnecting%s", at.error, _until(forever, max_wait))
            else:
                log.debug("attempt %d failed (%s); next in %.2fs", at.failures, at.error, delay)
            await asyncio.sleep(delay)

    async def _stream_once(
        self, path: str, params: dict[str, str], timeout: aiohttp.ClientTimeout, at: _StreamPosition
    ) -> AsyncGenerator[dict[str, Any], None]:
        """One connection to the stream, resuming after ``at.last``: yields its events, keeping
        ``at`` up to date, and records in ``at`` how the connection ended."""
        at.cut_off, at.retry_after = False, None
        try:
            if at.last is None:  # "from now": pinned once the service first answers
                at.last = await self._head(attempts=1)
                at.from_now = True
            headers = {
                **self._headers,
                "Accept": "text/event-stream",
                "Last-Event-ID": str(at.last),
            }
            async with self._http().get(
                self._base + path, params=params, headers=headers, timeout=timeout
            ) as reply:
                if reply.status != 200:
                    at.error = _error(reply.status, reply.reason, await reply.read())
                    if not isinstance(at.error, UnavailableError):
                        raise at.error
                    at.retry_after = _retry_after(reply.headers.get("Retry-After"))
                    return
                if at.failures:
                    log.warning(
                        "stream back after %.1f s; resuming after seq %d",
                        asyncio.get_running_loop().time() - at.down_since,
                        at.last,
                    )
                at.failures = 0
                async for message in read_sse(reply.content):
                    seq = at.last if message.id is None else int(message.id)
                    if message.event == "cutoff":
                        at.cut_off = True
                        at.last = seq
                        return
                    if message.event == "expired":
                        gone = loads(message.data.encode())
                        if at.from_now:
                            # The head was read from the summaries, and every event went:
                            # "now" is past them, so nothing asked for is missing.
                            at.last = seq
                            continue
                        if not at.skip_expired:
                            raise ExpiredError(410, {"code": "expired", **gone})
                        log.warning(
                            "events after seq %s were removed by retention; going on from the "
                            "oldest held, seq %s",
                            gone.get("after"),
                            gone.get("oldest_seq"),
                        )
                        at.last = seq
                    if message.event == "unreadable":  # the server skips it
                        log.error("the stream skipped a stored row: %s", message.data)
                        at.last = seq
                    if message.event == "message" and message.data:
                        event = loads(message.data.encode())
                        at.last, at.from_now = seq, False
                        yield event
                at.error = _unreachable(ConnectionError("the server ended the stream"))
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as e:
            at.error = _unreachable(e)
        except UnavailableError as e:  # the one attempt at reading the head
            at.error = e
        except (Problem, ValueError) as e:
            detail = e.detail if isinstance(e, Problem) else str(e)
            raise _invalid_reply(f"GET {path}: a malformed stream message: {detail}") from None
