"""Problem details (RFC 9457): the error type and its stable codes, shared by the library API
and HTTP (middlewares.py turns them into replies)."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

PROBLEM_JSON = "application/problem+json"


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
# 503, not 404: the seq was committed (a write reply named it), the store reads come from has
# not replayed it yet, and a retry after Retry-After will likely find it.
NotYetReplicated = _problem(
    503, "not_yet_replicated", "The reads have not yet caught up with the requested seq"
)
InternalError = _problem(500, "internal_error", "Internal error")

_Expired = _problem(410, "expired", "The resume point is older than the events kept")


class ResumeExpired(_Expired):  # type: ignore[misc,valid-type]
    """A reader asked for the events after a seq that retention has since removed: it is
    told so, with where the kept events start, rather than handed a page with a gap."""

    def __init__(self, after: int, purged_through: int) -> None:
        super().__init__(
            f"the events after seq {after} up to seq {purged_through} were removed by "
            f"retention; the oldest seq still held is {purged_through + 1} (resume with after="
            f"{purged_through} to go on from there, knowing that the others are gone)"
        )
        self.after = after
        self.purged_through = purged_through

    def to_dict(self) -> dict[str, Any]:
        """The problem document, with the oldest seq held, the seq asked for, and the cursor
        that goes on from the oldest (ids as strings, as everywhere)."""
        return {
            **super().to_dict(),
            "oldest_seq": str(self.purged_through + 1),
            "after": str(self.after),
            "resume_after": str(self.purged_through),
        }


PROBLEMS["expired"] = ResumeExpired

DB_UNAVAILABLE_DETAIL = "the database is unavailable; retry after the delay given in Retry-After"


def database_unavailable(cause: BaseException) -> Problem:
    """The 503 for a store that failed: one fixed sentence for clients. The cause names hosts,
    ports and files, so it goes to the log (by the caller) and to ``__cause__``, never out."""
    problem = DatabaseUnavailable(DB_UNAVAILABLE_DETAIL, headers={"Retry-After": "1"})
    problem.__cause__ = cause
    return problem
