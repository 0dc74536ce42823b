"""The HTTP app's typed keys and the state the process running it shares with it."""

from __future__ import annotations

import attrs
from aiohttp import web

from .config import Settings
from .log import EventLog
from .stream import Subscription


@attrs.define
class ServiceState:
    """What the process running the app tells it (see eventlog serve's shutdown)."""

    draining: bool = False  # every reply from now on closes its connection


SETTINGS = web.AppKey("settings", Settings)
EVENT_LOG = web.AppKey("event_log", EventLog)
SERVICE = web.AppKey("service", ServiceState)
# Each event's SSE message by seq, rendered once however many streams send it.
SSE_CACHE = web.AppKey("sse_cache", dict[int, bytes])
# The live streams being served, to end at shutdown.
STREAMS = web.AppKey("streams", set[Subscription])
# Each route's query parameters (as the OpenAPI document lists them): any other is refused.
QUERY_NAMES = web.AppKey("query_names", dict[web.AbstractRoute, frozenset[str]])
