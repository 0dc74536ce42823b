"""Problem details (RFC 9457): the error type, its stable codes, and the one error middleware."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any, ClassVar

import attrs
import orjson
from aiohttp import web

log = logging.getLogger("eventlog")

PROBLEM_JSON = "application/problem+json"
PROBLEM_CODE = web.ResponseKey("problem_code", str)


@attrs.frozen
class FieldError:
    """One invalid field: where it is (wire names, JSONPath-like) and what is wrong with it."""

    path: str
    message: str


class Problem(Exception):
    """An error a client can act on; the same object travels through the library API and HTTP."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        """The problem document."""
        doc: dict[str, Any] = {
            "type": f"urn:eventlog:problem:{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if self.errors is not None:
            doc["errors"] = [{"path": e.path, "message": e.message} for e in self.errors]
        return doc


# Every problem the service can reply with, by code (the OpenAPI document lists them all).
PROBLEMS: dict[str, type[Problem]] = {}


def _problem(status: int, code: str, title: str) -> type[Problem]:
    if code in PROBLEMS:
        raise ValueError(f"problem code {code!r} is defined twice")
    PROBLEMS[code] = type(
        "".join(w.title() for w in code.split("_")),
        (Problem,),
        {"status": status, "code": code, "title": title, "__doc__": title + "."},
    )
    return PROBLEMS[code]


InvalidJson = _problem(400, "invalid_json", "The body is not valid JSON")
EmptyBody = _problem(400, "empty_body", "The body is empty")
InvalidParameter = _problem(400, "invalid_parameter", "A query or path parameter is invalid")
Unauthorized = _problem(401, "unauthorized", "Credentials are required")
Forbidden = _problem(403, "forbidden", "These credentials do not allow this request")
NotFound = _problem(404, "not_found", "No such resource")
MethodNotAllowed = _problem(405, "method_not_allowed", "Method not allowed")
EventConflict = _problem(409, "event_conflict", "Another event is stored under this key")
IdempotencyConflict = _problem(
    409, "idempotency_conflict", "This Idempotency-Key was used for another request"
)
BodyTooLarge = _problem(413, "body_too_large", "The body is larger than allowed")
TooManyEvents = _problem(413, "too_many_events", "The batch holds more events than allowed")
UnsupportedMediaType = _problem(415, "unsupported_media_type", "Unsupported media type")
InvalidEnvelope = _problem(422, "invalid_envelope", "The event envelope is invalid")
# 502: the database handed back a row this version cannot render. Not a 503 (retrying will
# not help) and not a 500 (nothing crashed): the detail names the row for an operator.
UnreadableStoredRow = _problem(502, "unreadable_row", "A stored row cannot be read")
Overloaded = _problem(503, "overloaded", "The service is overloaded")
DatabaseUnavailable = _problem(503, "db_unavailable", "The database is unavailable")
InternalError = _problem(500, "internal_error", "Internal error")

DB_UNAVAILABLE_DETAIL = "the database is unavailable; retry after the delay given in Retry-After"


def database_unavailable(cause: BaseException) -> Problem:
    """The 503 for a store that failed: one fixed sentence for clients. The cause names hosts,
    ports and files, so it goes to the log (by the caller) and to ``__cause__``, never out."""
    problem = DatabaseUnavailable(DB_UNAVAILABLE_DETAIL, headers={"Retry-After": "1"})
    problem.__cause__ = cause
    return problem


def problem_response(problem: Problem) -> web.Response:
    """The HTTP reply for ``problem``."""
    headers = dict(problem.headers)
    if problem.status == 503:
        headers.setdefault("Retry-After", "1")
    response = web.Response(
        body=orjson.dumps(problem.to_dict()),
        status=problem.status,
        content_type=PROBLEM_JSON,
        headers=headers,
    )
    response[PROBLEM_CODE] = problem.code  # for the metrics
    return response


def _from_http_exception(exc: web.HTTPException) -> Problem:
    """aiohttp raises these itself (unknown route, wrong method, oversized body)."""
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return BodyTooLarge(exc.text or "request body too large")
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("no route matches this path")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return MethodNotAllowed(f"allowed: {allowed}", headers={"Allow": allowed})
    problem = Problem(exc.reason)
    problem.status = exc.status  # type: ignore[misc]
    problem.code = exc.reason.lower().replace(" ", "_").replace("-", "_")  # type: ignore[misc]
    problem.title = exc.reason  # type: ignore[misc]
    return problem


def bearer_auth_middleware(
    write_tokens: list[str], read_tokens: list[str], is_open: Callable[[web.Request], bool]
) -> Any:
    """Require a bearer token: a write token for POST, a read or write token for the rest."""
    writers = [t.encode() for t in write_tokens]
    readers = writers + [t.encode() for t in read_tokens]

    def known(token: bytes, tokens: list[bytes]) -> bool:
        # Compare against every token, in constant time, so timing tells nothing.
        return sum(hmac.compare_digest(token, t) for t in tokens) > 0

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        if is_open(request):
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(
                "send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": 'Bearer realm="eventlog"'},
            )
        allowed = writers if request.method not in ("GET", "HEAD", "OPTIONS") else readers
        try:
            raw = token.strip().encode()
        except UnicodeEncodeError:  # bytes that were not UTF-8: no token looks like that
            raw = b""
        if not raw or not known(raw, allowed):
            raise Forbidden("this token may not make this request")
        return await handler(request)

    return auth


def error_response(request: web.Request, exc: Exception) -> web.Response:
    """The problem+json reply for an error a handler raised (an HTTPException of status 400 or
    more, or any other exception); an unexpected one is logged and becomes a 500."""
    if isinstance(exc, Problem):
        return problem_response(exc)
    if isinstance(exc, web.HTTPException):
        return problem_response(_from_http_exception(exc))
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return problem_response(InternalError("an unexpected error occurred; it has been logged"))
