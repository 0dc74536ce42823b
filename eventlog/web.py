"""The HTTP skin: create_app(settings), the routes, and thin views over EventLog."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from . import browser
from .codec import (
    IDEMPOTENCY_KEY,
    MAX_PAGE,
    NDJSON,
    converter,
    loads,
    loads_ndjson,
    structure_batch,
    structure_envelope,
    valid_text,
)
from .config import Settings
from .envelope import Event
from .ids import MAX_ID
from .ingest import Appended, Idempotency, Receipt
from .log import EventLog
from .logs import REQUEST_ID, REQUEST_ID_KEY, request_id
from .metrics import CONTENT_TYPE
from .middlewares import PROBLEM_CODE, bearer_auth_middleware, error_response
from .openapi import DOCUMENT_PATH, DOCUMENT_ROUTE, document, query_parameters
from .problems import (
    BodyTooLarge,
    FieldError,
    InvalidParameter,
    Problem,
    TooManyEvents,
    UnsupportedMediaType,
)
from .storage.base import FILTERS, Filter, Page, StoreError, UnreadableRow
from .stream import CutOff, Expired
from .typedefs import (
    EVENT_LOG,
    QUERY_NAMES,
    SERVICE,
    SETTINGS,
    SSE_CACHE,
    STREAMS,
    ServiceState,
)

log = logging.getLogger("eventlog")

SSE_CACHE_SIZE = 4096
# The seq a write reached: a reader passes it back as ?min_seq= to see that write.
SEQ_HEADER = "Eventlog-Seq"

_DIGITS = re.compile(r"[0-9]{1,19}")


def create_app(settings: Settings, *, event_log: EventLog | None = None) -> web.Application:
    """The aiohttp application; the store is opened on startup and closed on cleanup.

    It may be mounted in another application (``parent.add_subapp("/events", app)``): aiohttp
    runs its startup and cleanup with the parent's. An ``event_log`` the caller already started
    is shared, not started or closed here; one not yet started is run with the app.
    """
    middlewares = [edge_middleware]
    # Open routes are known by their resource, not their path: mounted under a prefix, the
    # paths change but the resources stay the same objects.
    open_resources: set[web.AbstractResource] = set()
    if settings.auth_enabled:
        middlewares.append(
            bearer_auth_middleware(
                settings.write_tokens,
                settings.read_tokens,
                lambda request: request.match_info.route.resource in open_resources,
            )
        )
    # aiohttp's own cap is the larger limit; each route enforces its own (read_body).
    app = web.Application(
        middlewares=middlewares,
        client_max_size=max(settings.max_body_bytes, settings.max_batch_body_bytes),
    )
    app[SETTINGS] = settings
    app[SSE_CACHE] = {}
    app[STREAMS] = set()
    app[SERVICE] = ServiceState()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        log = event_log or EventLog(settings)
        owned = not log.running
        if owned:
            await log.start()
        app[EVENT_LOG] = log
        yield
        if owned:
            await log.close()

    async def end_streams(app: web.Application) -> None:
        # Streams never finish by themselves; at shutdown they must, or the server waits its
        # whole shutdown_timeout for them. Only this app's: a shared log may have other readers.
        streams = app[STREAMS]
        for subscription in list(streams):
            subscription.end()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(end_streams)
    app.router.add_post("/api/events", post_event)
    app.router.add_post("/api/events/batch", post_batch)
    app.router.add_get("/api/events", get_feed)
    app.router.add_get("/api/events/stream", stream_events)  # before /api/events/{event_id}
    # Not "batch" or "stream": a GET of those is a 405, not a request for an event so named.
    app.router.add_get(r"/api/events/{event_id:(?!(?:batch|stream)$)[^{}/]+}", get_event)
    app.router.add_get("/api/executions", get_executions)
    app.router.add_get(DOCUMENT_PATH, openapi_document, name=DOCUMENT_ROUTE)
    app.router.add_get("/api/executions/{execution_id}", get_execution)
    app.router.add_get("/api/executions/{execution_id}/events", get_execution_events)
    app.router.add_get("/api/executions/{execution_id}/events/stream", stream_execution_events)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    open_resources.update(browser.add_routes(app))  # pages hold no data; /api/ asks the token
    open_resources.update(r for r in app.router.resources() if r.canonical in settings.open_paths)
    # What each route takes is what the OpenAPI document says it takes: the two cannot part.
    app[QUERY_NAMES] = {
        route: query_parameters(route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    return app


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Around every request: its id (X-Request-ID, sent back on the reply and on every log line
    it causes), every error as problem+json, and its count and time in the metrics."""
    rid = request_id(request.headers.get("X-Request-ID"))
    request[REQUEST_ID_KEY] = rid
    token = REQUEST_ID.set(rid)
    started = time.perf_counter()
    response = None
    try:
        try:
            if request.query_string:
                _check_query(request)
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = error_response(request, exc)
        except Exception as exc:
            response = error_response(request, exc)
        if not response.prepared:  # (a stream sets its headers itself)
            response.headers["X-Request-ID"] = rid
            if request.app[SERVICE].draining:
                # The client sends its next request on a new connection, not onto this one,
                # which the server is about to close.
                response.force_close()
                response.headers["Connection"] = "close"
        return response
    finally:
        REQUEST_ID.reset(token)
        if EVENT_LOG in request.app:
            _count(request, response, time.perf_counter() - started)


def _check_query(request: web.Request) -> None:
    """A query parameter the route does not take is a 400 naming it, never ignored."""
    known = request.app[QUERY_NAMES].get(request.match_info.route)
    if known is None:
        return  # no route matched: the 404 or 405 says more
    unknown = sorted(set(request.query) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "no query parameters"
        raise InvalidParameter(
            f"unknown query parameter {', '.join(unknown)}; this route takes {takes}",
            errors=[
                FieldError(f"$query.{name}", "is not a parameter of this route") for name in unknown
            ],
        )


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _count(request: web.Request, response: web.StreamResponse | None, seconds: float) -> None:
    metrics = request.app[EVENT_LOG].metrics
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    method = request.method if request.method in _METHODS else "OTHER"  # bounded labels
    metrics.request(route, method, seconds)
    if response is None:
        return  # the client went away, or the server is stopping
    code = response.get(PROBLEM_CODE)
    if code is not None:
        metrics.rejections.inc(code)


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON reply serialised by orjson (events carry their payload as stored JSON text)."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def media_type(request: web.Request, *, ndjson: bool = False) -> str:
    """ "json" or "ndjson"; 415 for anything else (a missing Content-Type is read as JSON)."""
    sent = request.headers.get("Content-Type")
    if sent is None or sent == "application/json":  # the common cases, without parsing
        return "json"
    mime = request.content_type
    if mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json")):
        return "json"
    if ndjson and mime in NDJSON:
        return "ndjson"
    allowed = "application/json or application/x-ndjson" if ndjson else "application/json"
    raise UnsupportedMediaType(f"send {allowed}, not {mime}")


async def read_body(request: web.Request, limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes (before reading it, when declared)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(f"the body is {declared} bytes; the limit here is {limit}")
    body = await request.read()
    if len(body) > limit:
        raise BodyTooLarge(f"the body is {len(body)} bytes; the limit here is {limit}")
    return body


def idempotency(request: web.Request, body: bytes) -> Idempotency | None:
    """The request's Idempotency-Key, with a fingerprint of what it asks for."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidParameter(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
            errors=[
                FieldError("$header.Idempotency-Key", "must be 1-255 visible ASCII characters")
            ],
        )
    digest = hashlib.sha256(request.path.encode() + b"\n" + body).hexdigest()
    return Idempotency(key, digest)


def _id(text: str, where: str, *, low: int = 0) -> int:
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= MAX_ID:
        raise InvalidParameter(
            f"{where} must be a decimal id between {low} and 2^63-1",
            errors=[FieldError(where, "must be a decimal id")],
        )
    return int(text)


def _query_int(request: web.Request, name: str, default: int | None, low: int, high: int) -> Any:
    text = request.query.get(name)
    if text is None:
        return default
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise InvalidParameter(
            f"query parameter {name} must be an integer from {low} to {high}",
            errors=[FieldError(f"$query.{name}", f"must be an integer from {low} to {high}")],
        )
    return int(text)


async def post_event(request: web.Request) -> web.Response:
    """Append one event in any producer dialect (CONTRACT §1, §8)."""
    media_type(request)
    body = await read_body(request, request.app[SETTINGS].max_body_bytes)
    envelope = structure_envelope(loads(body))
    receipt, appended = await request.app[EVENT_LOG].ingest(
        [envelope], idempotency=idempotency(request, body)
    )
    response = json_response(
        {
            "status": "ok",
            "event_id": str(receipt.event_ids[0]),
            "commands_generated": 0,
            "duplicate": receipt.replayed or appended[0].duplicate,
        }
    )
    await _tell_seq(request, response, receipt, appended)
    return response


async def _tell_seq(
    request: web.Request, response: web.Response, receipt: Receipt, appended: list[Appended]
) -> None:
    """Eventlog-Seq: the highest seq among the request's events (stored now or before). A
    replay's events were committed before its first reply; the primary's head bounds them."""
    if appended:
        response.headers[SEQ_HEADER] = str(max(a.event.seq for a in appended))
    elif receipt.replayed and receipt.event_ids:
        with contextlib.suppress(StoreError):  # the reply stands without the header
            head = await request.app[EVENT_LOG].store.written_head()
            response.headers[SEQ_HEADER] = str(head)


def _item_paths(data: Any, lines: list[int] | None, count: int) -> list[str]:
    """Where each item of a batch was, as the client sent it (for a conflict between two)."""
    if lines is not None:
        return [f"line {n}" for n in lines]
    prefix = "$.events" if type(data) is dict else "$"
    return [f"{prefix}[{i}]" for i in range(count)]


async def post_batch(request: web.Request) -> web.Response:
    """Append a batch atomically: NoETL's batch object, a JSON array, or NDJSON lines."""
    settings = request.app[SETTINGS]
    kind = media_type(request, ndjson=True)
    body = await read_body(request, settings.max_batch_body_bytes)
    lines = None
    data: Any
    if kind == "ndjson":
        data, lines = loads_ndjson(body)
    else:
        data = loads(body)
    items = data.get("events") if type(data) is dict else data
    if type(items) is list and len(items) > settings.max_batch_events:
        raise TooManyEvents(
            f"the batch holds {len(items)} events; the limit is {settings.max_batch_events}"
        )
    envelopes = structure_batch(data, lines=lines)
    receipt, appended = await request.app[EVENT_LOG].ingest(
        envelopes,
        batch=True,
        idempotency=idempotency(request, body),
        paths=_item_paths(data, lines, len(envelopes)),
    )
    response = json_response(
        {
            "status": "ok",
            "request_id": receipt.request_id,
            "event_ids": [str(i) for i in receipt.event_ids],
            "duplicates": list(receipt.duplicates),
            "commands_generated": 0,
            "duplicate": receipt.replayed,
        }
    )
    await _tell_seq(request, response, receipt, appended)
    return response


async def _read_at(request: web.Request) -> EventLog:
    """The event log, once its reads hold ?min_seq= (read-your-writes; 503 after the wait)."""
    event_log = request.app[EVENT_LOG]
    await event_log.reach(_query_int(request, "min_seq", None, 0, MAX_ID))
    return event_log


async def get_event(request: web.Request) -> web.Response:
    """One event by id (optionally ?execution_id= when several executions reuse an id)."""
    event_id = _id(request.match_info["event_id"], "$path.event_id")
    execution_id = request.query.get("execution_id")
    execution = None if execution_id is None else _id(execution_id, "$query.execution_id", low=1)
    event = await (await _read_at(request)).get(event_id, execution)
    return json_response(converter.unstructure(event))


def _page_reply(events: list[Event], limit: int, **extra: Any) -> web.Response:
    """The shared page shape: events, and the cursor of the next page (null on the last)."""
    more = len(events) > limit
    events = events[:limit]
    return json_response(
        {
            **extra,
            "events": [converter.unstructure(e) for e in events],
            "next_cursor": str(events[-1].seq) if more else None,
        }
    )


def _filter(request: web.Request, execution_id: int | None = None) -> Filter:
    """The feed and stream filters from the query string."""
    if execution_id is None and "execution_id" in request.query:
        execution_id = _id(request.query["execution_id"], "$query.execution_id", low=1)
    return Filter(execution_id, **{name: _text_query(request, name) for name in FILTERS})


def _text_query(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is not None and not valid_text(value):
        raise InvalidParameter(
            f"query parameter {name} must not hold a NUL or a lone surrogate",
            errors=[FieldError(f"$query.{name}", "must not hold a NUL or a lone surrogate")],
        )
    return value


async def get_execution_events(request: web.Request) -> web.Response:
    """One execution's events, a page at a time, in commit order."""
    execution_id = _id(request.match_info["execution_id"], "$path.execution_id", low=1)
    limit = _query_int(request, "limit", 100, 1, MAX_PAGE)
    after = _query_int(request, "after", None, 0, MAX_ID)
    page = Page(execution_id, after=after, limit=limit + 1, descending=_descending(request))
    events = await (await _read_at(request)).page(page)
    return _page_reply(events, limit, execution_id=str(execution_id))


async def get_feed(request: web.Request) -> web.Response:
    """The whole log in commit order, filtered, a page at a time: a reader that follows
    next_cursor sees every event once."""
    limit = _query_int(request, "limit", 100, 1, MAX_PAGE)
    after = _query_int(request, "after", None, 0, MAX_ID)
    page = _filter(request).page(after=after, limit=limit + 1, descending=_descending(request))
    return _page_reply(await (await _read_at(request)).page(page), limit)


def _descending(request: web.Request) -> bool:
    order = request.query.get("order", "asc")
    if order not in ("asc", "desc"):
        raise InvalidParameter(
            "query parameter order must be asc or desc",
            errors=[FieldError("$query.order", "must be asc or desc")],
        )
    return order == "desc"


async def get_executions(request: web.Request) -> web.Response:
    """Executions by newest activity first; next_cursor pages on."""
    limit = _query_int(request, "limit", 100, 1, MAX_PAGE)
    before = _query_int(request, "after", None, 0, MAX_ID)
    status = _text_query(request, "status")
    found = await (await _read_at(request)).executions(before, limit + 1, status=status)
    more = len(found) > limit
    found = found[:limit]
    return json_response(
        {
            "executions": [converter.unstructure(x) for x in found],
            "next_cursor": str(found[-1].last_seq) if more else None,
        }
    )


async def get_execution(request: web.Request) -> web.Response:
    """One execution at a glance; 404 when it has no events."""
    execution_id = _id(request.match_info["execution_id"], "$path.execution_id", low=1)
    return json_response(
        converter.unstructure(await (await _read_at(request)).execution(execution_id))
    )


async def openapi_document(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this app's routes (built by eventlog.openapi)."""
    return json_response(document(request.app))


async def stream_events(request: web.Request) -> web.StreamResponse:
    """The log as Server-Sent Events (filters as for the feed)."""
    return await _stream(request, _filter(request))


async def stream_execution_events(request: web.Request) -> web.StreamResponse:
    """One execution's events as Server-Sent Events."""
    execution_id = _id(request.match_info["execution_id"], "$path.execution_id", low=1)
    return await _stream(request, _filter(request, execution_id))


def _sse(app: web.Application, event: Event) -> bytes:
    """An event as one SSE message, rendered once however many streams send it."""
    cache = app[SSE_CACHE]
    message = cache.get(event.seq)
    if message is None:
        data = orjson.dumps(converter.unstructure(event))
        message = cache[event.seq] = b"id: %d\ndata: %s\n\n" % (event.seq, data)
        if len(cache) > SSE_CACHE_SIZE:
            del cache[next(iter(cache))]  # the oldest
    return message


async def _stream(request: web.Request, filter: Filter) -> web.StreamResponse:
    """Each event is a message whose id is its seq; Last-Event-ID (or ?after=) resumes."""
    resume = request.headers.get("Last-Event-ID")
    if resume is not None:
        after: int | None = _id(resume.strip(), "$header.Last-Event-ID")
    else:
        after = _query_int(request, "after", None, 0, MAX_ID)
    event_log = await _read_at(request)
    # Once the headers are sent a failing store can only end the stream: ask it first, so a
    # database (or replica) that is down is a 503 the client can act on.
    await event_log.head()
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Request-ID": request[REQUEST_ID_KEY],
        }
    )
    subscription = event_log.follow(filter, after)
    try:
        async with subscription:
            request.app[STREAMS].add(subscription)
            await response.prepare(request)
            await response.write(b": stream open\n\n")  # subscribed: live events are kept
            async for chunk in subscription.chunks():
                if chunk is None:
                    await response.write(b": keep-alive\n\n")
                elif isinstance(chunk, UnreadableRow):
                    await response.write(_unreadable(chunk))
                elif isinstance(chunk, Expired):
                    await response.write(_expired(chunk))
                else:
                    await response.write(b"".join(_sse(request.app, e) for e in chunk))
            # The log is closing: say so, and where to resume, rather than just hanging up.
            await response.write(
                _final("end", "the server is shutting down", subscription.position)
            )
    except CutOff as e:
        with contextlib.suppress(ConnectionResetError):
            await response.write(_final("cutoff", "too far behind", e.last_seq))
    except ConnectionResetError:
        pass  # the client went away
    except StoreError as e:
        # The headers are sent: end the stream; the client resumes with Last-Event-ID.
        log.warning("stream ended, the store failed: %s", e)
    finally:
        request.app[STREAMS].discard(subscription)
    return response


def _unreadable(row: UnreadableRow) -> bytes:
    """A stored row the stream cannot send: said, not skipped in silence; its id moves a
    resuming reader past it."""
    data = {
        "reason": str(row),
        "seq": str(row.seq),
        "execution_id": None if row.execution_id is None else str(row.execution_id),
        "event_id": None if row.event_id is None else str(row.event_id),
    }
    return b"event: unreadable\nid: %d\ndata: %s\n\n" % (row.seq or 0, orjson.dumps(data))


def _expired(gap: Expired) -> bytes:
    """The events after the resume point are gone: said before anything else. Its id is the
    horizon, so that a reconnecting EventSource goes on from the oldest held, told once."""
    data = {
        "reason": "the events after the resume point were removed by retention",
        "oldest_seq": str(gap.purged_through + 1),
        "after": str(gap.after),
        "resume_after": str(gap.purged_through),
    }
    return b"event: expired\nid: %d\ndata: %s\n\n" % (gap.purged_through, orjson.dumps(data))


def _final(kind: str, reason: str, resume_after: int) -> bytes:
    """The last message of a stream the server ends: why, and the seq to resume after."""
    data = orjson.dumps({"reason": reason, "resume_after": str(resume_after)})
    return b"event: %s\nid: %d\ndata: %s\n\n" % (kind.encode(), resume_after, data)


async def health(request: web.Request) -> web.Response:
    """Liveness: 200 while the process serves requests (the store is not consulted)."""
    return json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of this event log's metrics (a replica's lag read now)."""
    event_log = request.app[EVENT_LOG]
    if event_log.store.replicated:
        with contextlib.suppress(Problem):  # the primary is down: the other metrics still count
            await event_log.replica()
    body = event_log.metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def ready(request: web.Request) -> web.Response:
    """Readiness: 200 when the store answers and its schema is current; 503 problem otherwise.
    With a read replica: its lag, and "degraded" (still 200) while it does not answer, since
    the writes, which go to the primary, still work (the reads answer 503 meanwhile)."""
    event_log = request.app[EVENT_LOG]
    await event_log.ready()
    if not event_log.store.replicated:
        return json_response({"status": "ready"})
    lag = await event_log.replica()
    assert lag is not None
    if not lag.reachable:
        return json_response({"status": "degraded", "replica": {"reachable": False}})
    return json_response(
        {
            "status": "ready",
            "replica": {"reachable": True, "lag_seconds": lag.seconds, "lag_seq": str(lag.seqs)},
        }
    )
