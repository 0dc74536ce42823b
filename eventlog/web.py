"""The HTTP skin: create_app(settings), the routes, and thin views over EventLog."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from .codec import MAX_ID, converter, loads, structure_envelope
from .config import Settings
from .log import EventLog
from .problems import (
    FieldError,
    InvalidParameter,
    UnsupportedMediaType,
    bearer_auth_middleware,
    problem_middleware,
)
from .storage.base import Page

SETTINGS = web.AppKey("settings", Settings)
EVENT_LOG = web.AppKey("event_log", EventLog)

MAX_PAGE = 1000
_DIGITS = re.compile(r"[0-9]{1,19}")


def create_app(settings: Settings, *, event_log: EventLog | None = None) -> web.Application:
    """The aiohttp application; the store is opened on startup and closed on cleanup."""
    middlewares = [problem_middleware]
    if settings.auth_enabled:
        middlewares.append(
            bearer_auth_middleware(settings.write_tokens, settings.read_tokens, settings.open_paths)
        )
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        log = event_log or EventLog(settings)
        await log.start()
        app[EVENT_LOG] = log
        yield
        await log.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/api/events", post_event)
    app.router.add_get("/api/events/{event_id}", get_event)
    app.router.add_get("/api/executions/{execution_id}/events", get_execution_events)
    app.router.add_get("/health", health)
    return app


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON reply serialised by orjson (events carry their payload as stored JSON text)."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def read_json(request: web.Request) -> Any:
    """The request body as JSON; 415 for another media type (none given is read as JSON)."""
    if "Content-Type" in request.headers:
        mime = request.content_type
        if mime != "application/json" and not (
            mime.startswith("application/") and mime.endswith("+json")
        ):
            raise UnsupportedMediaType(f"send application/json, not {mime}")
    return loads(await request.read())


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
    envelope = structure_envelope(await read_json(request))
    appended = await request.app[EVENT_LOG].append(envelope)
    return json_response(
        {
            "status": "ok",
            "event_id": str(appended.event.event_id),
            "commands_generated": 0,
            "duplicate": appended.duplicate,
        }
    )


async def get_event(request: web.Request) -> web.Response:
    """One event by id (optionally ?execution_id= when several executions reuse an id)."""
    event_id = _id(request.match_info["event_id"], "$path.event_id")
    execution_id = request.query.get("execution_id")
    execution = None if execution_id is None else _id(execution_id, "$query.execution_id", low=1)
    event = await request.app[EVENT_LOG].get(event_id, execution)
    return json_response(converter.unstructure(event))


async def get_execution_events(request: web.Request) -> web.Response:
    """One execution's events, a page at a time, in commit order."""
    execution_id = _id(request.match_info["execution_id"], "$path.execution_id", low=1)
    limit = _query_int(request, "limit", 100, 1, MAX_PAGE)
    after = _query_int(request, "after", None, 0, MAX_ID)
    order = request.query.get("order", "asc")
    if order not in ("asc", "desc"):
        raise InvalidParameter(
            "query parameter order must be asc or desc",
            errors=[FieldError("$query.order", "must be asc or desc")],
        )
    page = Page(execution_id, after=after, limit=limit + 1, descending=order == "desc")
    events = await request.app[EVENT_LOG].page(page)
    more = len(events) > limit
    events = events[:limit]
    return json_response(
        {
            "execution_id": str(execution_id),
            "events": [converter.unstructure(e) for e in events],
            "next_cursor": str(events[-1].seq) if more else None,
        }
    )


async def health(request: web.Request) -> web.Response:
    """200 while the store answers; 503 problem otherwise."""
    await request.app[EVENT_LOG].ping()
    return json_response({"status": "ok"})
