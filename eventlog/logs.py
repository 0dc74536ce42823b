"""Logging: text or JSON lines on stderr, a request id on every line written while handling a
request, and one access-log line per request."""

from __future__ import annotations

import contextvars
import itertools
import logging
import re
import secrets
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, RequestKey, StreamResponse

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
REQUEST_ID_KEY = RequestKey("request_id", str)
_CLIENT_ID = re.compile(r"[\x21-\x7e]{1,128}")

# Attributes every LogRecord has; anything else on a record was passed as ``extra``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}


# Ids made here: a random prefix per process and a counter. Unique without a system call per
# request (secrets.token_hex costs a getrandom() each time, a measurable share of a request).
_PREFIX = secrets.token_hex(4)
_COUNTER = itertools.count(1)


def request_id(sent: str | None) -> str:
    """The id of a request: the client's X-Request-ID when it is sane (1-128 visible ASCII
    characters), else a new one, unique across processes and restarts."""
    if sent is not None and _CLIENT_ID.fullmatch(sent):
        return sent
    return f"{_PREFIX}{next(_COUNTER):08x}"


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, and any extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            line["request_id"] = rid
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """A readable line; the request id, when there is one, at the end."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rid = getattr(record, "request_id", None)
        return f"{text} [request_id={rid}]" if rid else text


def configure(level: str, fmt: str) -> None:
    """Send every eventlog log line to stderr in ``fmt`` ("text" or "json") from ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, path, status, size, duration and request id, as fields
    in JSON and as a compact line in text. Headers are never logged (they carry tokens)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        """Called by aiohttp once the reply is sent."""
        fields = {
            "remote": request.remote,
            "method": request.method,
            "path": request.path,
            "status": response.status,
            "bytes": response.body_length,
            "duration_ms": round(time * 1000, 2),
            "user_agent": request.headers.get("User-Agent"),
        }
        token = REQUEST_ID.set(request.get(REQUEST_ID_KEY))
        try:
            self.logger.info(
                '%s "%s %s" %d %dB %.1fms "%s"',
                request.remote,
                request.method,
                request.path_qs,
                response.status,
                response.body_length,
                time * 1000,
                fields["user_agent"] or "-",
                extra=fields,
            )
        finally:
            REQUEST_ID.reset(token)
