"""Logging: text or JSON lines on stderr, a request id on every line written while handling a
request, and one access-log line per request."""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import itertools
import logging
import re
import secrets
import sys
import time as _time
from datetime import UTC, datetime
from typing import IO, Any

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
    global _ACCESS
    _ACCESS = _AccessLines(sys.stderr, fmt)
    handler = _Handler(sys.stderr, _ACCESS)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class _AccessLines:
    """Access lines formatted straight from the request, and written together once per turn
    of the event loop: a LogRecord, a formatter and a write per request cost about a third of
    the service's throughput (measured). The lines read exactly as the formatters write them."""

    def __init__(self, stream: IO[str], fmt: str) -> None:
        self._stream = stream
        self.json = fmt == "json"
        self._lines: list[str] = []
        self._second = -1  # the second the cached time prefix is for
        self._prefix = ""
        atexit.register(self.flush)

    def time(self, now: float) -> str:
        """The moment as the formatter writes it (local text time, or ISO 8601 UTC in JSON)."""
        second = int(now)
        if second != self._second:
            self._second = second
            if self.json:
                self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            else:
                self._prefix = _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(second))
        millis = _MILLIS[int((now - second) * 1000)]
        if self.json:
            return self._prefix + "." + millis + "+00:00"
        return self._prefix + "," + millis

    def add(self, line: str) -> None:
        """Queue one line; the lines of one turn of the loop go out in one write."""
        if not self._lines:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop: write now
                self._stream.write(line)
                return
        self._lines.append(line)

    def flush(self) -> None:
        """Write what is queued."""
        if self._lines:
            text = "".join(self._lines)
            self._lines.clear()
            self._stream.write(text)
            self._stream.flush()


_ACCESS: _AccessLines | None = None
_MILLIS = [f"{n:03d}" for n in range(1000)]  # formatting "%03d" per line costs microseconds


class _Handler(logging.StreamHandler[IO[str]]):
    """stderr, with the access lines queued before a line written now, so the order holds."""

    def __init__(self, stream: IO[str], access: _AccessLines) -> None:
        super().__init__(stream)
        self.access = access

    def emit(self, record: logging.LogRecord) -> None:
        self.access.flush()
        super().emit(record)


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, path, status, size, duration and request id, as fields
    in JSON and as a compact line in text. Headers are never logged (they carry tokens)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        """Called by aiohttp once the reply is sent."""
        access = _ACCESS
        logger = self.logger
        root = logging.root
        if (
            access is None
            or logger.handlers
            or not root.handlers
            or type(root.handlers[0]) is not _Handler
            or root.handlers[0].access is not access
        ):
            self._log_record(request, response, time)
        elif logger.isEnabledFor(logging.INFO):
            self._write(access, request, response, time)

    def _write(
        self, access: _AccessLines, request: BaseRequest, response: StreamResponse, time: float
    ) -> None:
        remote = request.remote
        user_agent = request.headers.get("User-Agent")
        rid = request.get(REQUEST_ID_KEY)
        # The line _log_record writes, without float formatting (a third of this method's time).
        tenths = int(time * 10_000 + 0.5)
        message = (
            f'{remote} "{request.method} {request.path_qs}" {response.status} '
            f'{response.body_length}B {tenths // 10}.{tenths % 10}ms "{user_agent or "-"}"'
        )
        now = _time.time()
        if access.json:
            line: dict[str, Any] = {
                "ts": access.time(now),
                "level": "info",
                "logger": self.logger.name,
                "message": message,
            }
            if rid:
                line["request_id"] = rid
            line["remote"] = remote
            line["method"] = request.method
            line["path"] = request.path
            line["status"] = response.status
            line["bytes"] = response.body_length
            line["duration_ms"] = round(time * 1000, 2)
            line["user_agent"] = user_agent
            access.add(orjson.dumps(line, default=str).decode() + "\n")
        else:
            text = f"{access.time(now)} INFO {self.logger.name}: {message}"
            access.add(f"{text} [request_id={rid}]\n" if rid else text + "\n")

    def _log_record(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        """Through the logging machinery, when it is set up otherwise than by configure()."""
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
