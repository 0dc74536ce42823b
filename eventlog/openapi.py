"""The OpenAPI 3.1 document, built from the code it describes.

The paths come from the routes the app registers (a route this module cannot describe is left
out, and tests/api/test_openapi.py fails); the problem codes from the registry in problems.py;
the envelope's fields, their aliases and their wire types from envelope.py and codec.py; the
limits and patterns from the modules that enforce them. Only the reply shapes and the prose are
written here, and the tests hold the replies of a running service against them.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Iterable
from typing import Any

import attrs
from aiohttp import web

from . import __version__, codec, status
from .envelope import (
    RESULT_KINDS,
    Envelope,
    ExecutionId,
    Id64,
    IdList,
    JsonObject,
    JsonValue,
    Name,
    ResultKind,
    Status,
    Text,
    Timestamp,
)
from .ids import MAX_ID
from .problems import (
    PROBLEM_JSON,
    PROBLEMS,
    BodyTooLarge,
    DatabaseUnavailable,
    EmptyBody,
    EventConflict,
    Forbidden,
    IdempotencyConflict,
    InvalidEnvelope,
    InvalidJson,
    InvalidParameter,
    NotFound,
    NotYetReplicated,
    Overloaded,
    Problem,
    ResumeExpired,
    TooManyEvents,
    Unauthorized,
    UnreadableStoredRow,
    UnsupportedMediaType,
)
from .storage.base import FILTERS, Filter
from .typedefs import SETTINGS

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
SSE = "text/event-stream"

_TIMESTAMP_OUT = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$"


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str) -> dict[str, str]:
    return _ref("schemas", name)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if not schema:
        return schema  # any JSON value already includes null
    return {"anyOf": [schema, {"type": "null"}]}


# --- the envelope: its wire types, read off the converter's rules -------------------------


def decimal_pattern(low: int, high: int) -> str:
    """A regex for the decimals from ``low`` (0 or 1) to ``high``, without leading zeros."""
    digits = str(high)
    alternatives = [f"[1-9][0-9]{{0,{len(digits) - 2}}}"] if len(digits) > 1 else []
    # As long as ``high``: equal to it up to some digit, then a smaller digit, then any.
    for i, digit in enumerate(digits):
        first = "1" if i == 0 else "0"
        if int(digit) > int(first):
            rest = len(digits) - i - 1
            alternatives.append(f"{digits[:i]}[{first}-{int(digit) - 1}][0-9]{{{rest}}}")
    alternatives.append(digits)
    if low == 0:
        alternatives.insert(0, "0")
    return "^(" + "|".join(alternatives) + ")$"


def _id_in(low: int) -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "integer", "minimum": low, "maximum": MAX_ID},
            {"type": "string", "pattern": decimal_pattern(low, MAX_ID)},
        ],
        "description": f"an integer from {low} to 2^63-1, as a JSON integer or a decimal string "
        "(leading zeros are tolerated)",
    }


# PostgreSQL text cannot hold NUL (a lone surrogate, refused too, has no JSON Schema form).
_NO_NUL = r"^[^\x00]*$"
_STATUS_IN = status.STATUS_PATTERN.pattern.replace("A-Z", "A-Za-z")

_JSON_LIMITS = (
    f"any JSON value nesting at most {codec.MAX_DEPTH} levels of arrays and objects; numbers "
    f"are finite 64-bit floats or integers of at most {codec.MAX_INT_DIGITS} digits"
)

# Every type an Envelope field may have, and what the codec's strict hook for it accepts.
_WIRE_TYPES: dict[Any, dict[str, Any]] = {
    ExecutionId: _id_in(1),
    Id64: _id_in(0),
    Text: {"type": "string", "pattern": _NO_NUL, "description": "text without NUL"},
    Name: {"type": "string", "minLength": 1, "pattern": _NO_NUL, "description": "non-empty text"},
    Status: {
        "type": "string",
        "pattern": _STATUS_IN,
        "description": f"upper-cased on the way in, then it matches {status.STATUS_PATTERN.pattern}",
    },
    Timestamp: {
        "type": "string",
        "format": "date-time",
        "pattern": f"^{codec.RFC3339.pattern}$",
        "description": "RFC 3339 with an offset (Z or +hh:mm); stored in UTC; the instant "
        f"must fall between {codec.format_timestamp(codec.EARLIEST)} and "
        f"{codec.format_timestamp(codec.LATEST)}",
    },
    ResultKind: {"enum": list(RESULT_KINDS)},
    JsonValue: {"description": _JSON_LIMITS},
    JsonObject: {"type": "object", "description": _JSON_LIMITS},
    IdList: {"type": "array", "items": _id_in(0)},
    bool: {"type": "boolean"},
}


def _wire_schema(kind: Any) -> dict[str, Any]:
    """The JSON Schema of one envelope field's type; KeyError for a type without one."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        (inner,) = [t for t in typing.get_args(kind) if t is not type(None)]
        return _nullable(_WIRE_TYPES[inner])
    return _WIRE_TYPES[kind]


def _fields_schema(cls: type, required: Iterable[str]) -> dict[str, Any]:
    """Properties for an attrs class's fields, each alias beside its canonical field."""
    hints = typing.get_type_hints(cls)
    canonical_aliases = {canonical: alias for alias, canonical in codec.ALIASES.items()}
    properties: dict[str, Any] = {}
    for field in attrs.fields(cls):
        properties[field.name] = _wire_schema(hints[field.name])
        alias = canonical_aliases.get(field.name)
        if alias is not None:
            properties[alias] = {
                **_wire_schema(hints[field.name]),
                "description": f"legacy name of {field.name}: send one of the two "
                "(both are accepted when they hold equal values)",
                "x-alias-of": field.name,
            }
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    # A required field may come under its alias instead.
    needs = [
        {"anyOf": [{"required": [name]}, {"required": [canonical_aliases[name]]}]}
        if name in canonical_aliases
        else {"required": [name]}
        for name in required
    ]
    # Both names with equal values are accepted too, but a schema cannot compare two values.
    exclusive = [
        {"not": {"required": [canonical, alias]}}
        for canonical, alias in canonical_aliases.items()
        if canonical in properties
    ]
    if needs or exclusive:
        schema["allOf"] = needs + exclusive
    return schema


def envelope_schema(*, in_batch_object: bool = False) -> dict[str, Any]:
    """One event as producers send it; the items of a batch object may leave out
    execution_id (they inherit the batch's)."""
    required = [f.name for f in attrs.fields(Envelope) if f.default is attrs.NOTHING]
    if in_batch_object:
        required = [name for name in required if name not in _batch_header_fields()]
    schema = _fields_schema(Envelope, required)
    schema["description"] = (
        "An event in any producer dialect; unknown fields are ignored and a null field counts "
        "as absent. Strict types: no value is coerced. Every bad field is named in one 422."
    )
    return schema


def _batch_header_fields() -> list[str]:
    return [f.name for f in attrs.fields(codec.BatchHeader)]


def _batch_object_schema() -> dict[str, Any]:
    schema = _fields_schema(codec.BatchHeader, [])
    schema["properties"]["events"] = {
        "type": "array",
        "items": _schema("BatchItem"),
    }
    schema.setdefault("allOf", []).insert(0, {"required": ["events"]})
    # Without the batch's execution_id, every item needs its own.
    schema["anyOf"] = [
        {"required": ["execution_id"], "properties": {"execution_id": _id_in(1)}},
        {"properties": {"events": {"items": _schema("Envelope")}}},
    ]
    schema["description"] = (
        "NoETL's batch object: items inherit execution_id and worker_id from it "
        "unless they carry their own."
    )
    return schema


# --- replies ------------------------------------------------------------------------------


def _object(properties: dict[str, Any], description: str) -> dict[str, Any]:
    """A reply object: exactly these properties, every one present."""
    return {
        "type": "object",
        "description": description,
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


# Ids on output: decimal strings (JavaScript would round numbers past 2^53).
_ID_OUT = {"type": "string", "pattern": decimal_pattern(0, MAX_ID)}
_TIME_OUT = {"type": "string", "format": "date-time", "pattern": _TIMESTAMP_OUT}
_STATUS_OUT = {"type": "string", "pattern": status.STATUS_PATTERN.pattern}
_CURSOR = {
    "anyOf": [_ID_OUT, {"type": "null"}],
    "description": "pass as ?after= for the next page; null on the last page",
}


def _event_schema() -> dict[str, Any]:
    return _object(
        {
            "event_id": _ID_OUT,
            "execution_id": _ID_OUT,
            "seq": {**_ID_OUT, "description": "position in commit order across the store"},
            "step": {"type": "string"},
            "event_type": {"type": "string"},
            "status": _STATUS_OUT,
            "payload": {"description": "any JSON value, as sent"},
            "meta": {"type": ["object", "null"]},
            "worker_id": {"type": ["string", "null"]},
            "result_kind": {"enum": list(RESULT_KINDS)},
            "result_uri": {"type": ["string", "null"]},
            "event_ids": {"anyOf": [{"type": "array", "items": _ID_OUT}, {"type": "null"}]},
            "actionable": {"type": "boolean"},
            "informative": {"type": "boolean"},
            "created_at": _TIME_OUT,
            "ingested_at": {**_TIME_OUT, "description": "the server's time of the commit"},
        },
        "An event as stored, in the one canonical shape every read returns (ids as strings).",
    )


def _execution_schema() -> dict[str, Any]:
    return _object(
        {
            "execution_id": _ID_OUT,
            "status": _STATUS_OUT,
            "event_count": {"type": "integer", "minimum": 1},
            "first_event_at": _TIME_OUT,
            "last_event_at": _TIME_OUT,
            "last_event_type": {"type": "string"},
            "last_seq": _ID_OUT,
        },
        "One execution at a glance; RUNNING until a terminal event arrives.",
    )


_ID_STRING = {"type": "string", "pattern": "^[0-9]{1,19}$"}


def _problem_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "RFC 9457 problem details with a stable code.",
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "code": _schema("ProblemCode"),
            "errors": {
                "type": "array",
                "description": "for validation: each bad field, at the name the client used",
                "items": {
                    "type": "object",
                    "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
                    "required": ["path", "message"],
                    "additionalProperties": False,
                },
            },
            # 410 expired: retention removed the events past the cursor.
            "oldest_seq": {
                **_ID_STRING,
                "description": "expired: the oldest seq still held",
            },
            "after": {**_ID_STRING, "description": "expired: the cursor asked for"},
            "resume_after": {
                **_ID_STRING,
                "description": "expired: the cursor that goes on from the oldest seq held "
                "(the events between are gone)",
            },
        },
        "required": ["type", "title", "status", "detail", "code"],
        "additionalProperties": False,
    }


def _components() -> dict[str, Any]:
    return {
        "schemas": _schemas(),
        "parameters": _parameters(),
        "headers": _headers(),
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "a write token for POST, a read or write token for the rest",
            }
        },
    }


def _schemas() -> dict[str, Any]:
    """Requests, replies and their parts."""
    page = {"events": {"type": "array", "items": _schema("Event")}, "next_cursor": _CURSOR}
    return {
        "Envelope": envelope_schema(),
        "BatchItem": envelope_schema(in_batch_object=True),
        "BatchObject": _batch_object_schema(),
        "Event": _event_schema(),
        "Execution": _execution_schema(),
        "EventPage": _object(page, "A page of the feed in commit order."),
        "ExecutionEventPage": _object(
            {"execution_id": _ID_OUT, **page}, "A page of one execution's events."
        ),
        "ExecutionPage": _object(
            {
                "executions": {"type": "array", "items": _schema("Execution")},
                "next_cursor": _CURSOR,
            },
            "Executions, newest activity first.",
        ),
        "EventAccepted": _object(
            {
                "status": {"const": "ok"},
                "event_id": _ID_OUT,
                "commands_generated": {"const": 0},
                "duplicate": {
                    "type": "boolean",
                    "description": "true when the event, or the request, was already stored",
                },
            },
            "The event is durable.",
        ),
        "BatchAccepted": _object(
            {
                "status": {"const": "ok"},
                "request_id": _ID_OUT,
                "event_ids": {"type": "array", "items": _ID_OUT, "description": "in item order"},
                "duplicates": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0},
                    "description": "indexes of the items that were already stored",
                },
                "commands_generated": {"const": 0},
                "duplicate": {
                    "type": "boolean",
                    "description": "true when this is the replayed reply of an Idempotency-Key",
                },
            },
            "Every item is durable, committed in one transaction.",
        ),
        "Health": _object({"status": {"const": "ok"}}, "The process serves requests."),
        "Ready": {
            "type": "object",
            "description": "The store answers; its schema is current. With a read replica "
            "(read_dsn): its lag, and status degraded while it does not answer (the writes "
            "work; the reads answer 503).",
            "properties": {
                "status": {"enum": ["ready", "degraded"]},
                "replica": {
                    "type": "object",
                    "properties": {
                        "reachable": {"type": "boolean"},
                        "lag_seconds": {"type": "number", "minimum": 0},
                        "lag_seq": _ID_OUT,
                    },
                    "required": ["reachable"],
                    "additionalProperties": False,
                },
            },
            "required": ["status"],
            "additionalProperties": False,
        },
        "Problem": _problem_schema(),
        "ProblemCode": {"enum": sorted(PROBLEMS)},
    }


def _parameters() -> dict[str, Any]:
    """Path, query and header parameters, shared by the operations."""
    limit = {"type": "integer", "minimum": 1, "maximum": codec.MAX_PAGE, "default": 100}
    after = {"type": "integer", "minimum": 0, "maximum": MAX_ID}
    text = {"type": "string", "description": "matches the field exactly"}
    return {
        "EventIdPath": _param(
            "event_id", "path", {"type": "integer", "minimum": 0, "maximum": MAX_ID}
        ),
        "AssetName": _param("name", "path", {"type": "string"}, "a file of the event browser"),
        "ExecutionIdPath": _param(
            "execution_id", "path", {"type": "integer", "minimum": 1, "maximum": MAX_ID}
        ),
        "ExecutionIdQuery": _param(
            "execution_id",
            "query",
            {"type": "integer", "minimum": 1, "maximum": MAX_ID},
            "only this execution's events",
        ),
        "Limit": _param("limit", "query", limit, "page size"),
        "After": _param(
            "after",
            "query",
            after,
            "a next_cursor: start just past it. Feed and event pages (ascending): a cursor "
            "below the seq retention removed through is a 410 `expired` naming the oldest seq "
            "held, never a page that silently starts later",
        ),
        "Order": _param("order", "query", {"enum": ["asc", "desc"], "default": "asc"}),
        "MinSeq": _param(
            "min_seq",
            "query",
            {"type": "integer", "minimum": 0, "maximum": MAX_ID},
            "read-your-writes: answer once the reads hold every event up to this seq (a write "
            "reply's Eventlog-Seq), waiting up to min_seq_wait seconds for a read replica; "
            "503 not_yet_replicated after that; 400 past the last seq committed",
        ),
        **{
            f"Filter_{f.name}": _param(
                f.name,
                "query",
                {"type": "string"} if f.metadata.get("any_case") else text,
                f"only events with this {f.name}"
                + (" (any case)" if f.metadata.get("any_case") else ""),
            )
            for f in attrs.fields(Filter)
            if f.name in FILTERS
        },
        "ExecutionStatus": _param(
            "status", "query", {"type": "string"}, "only executions with this status (any case)"
        ),
        "IdempotencyKey": _param(
            "Idempotency-Key",
            "header",
            {"type": "string", "pattern": f"^{codec.IDEMPOTENCY_KEY.pattern}$"},
            "makes the request replayable: the same key and body return the first reply "
            'with "duplicate": true; the same key with another body is a 409',
        ),
        "LastEventId": _param(
            "Last-Event-ID",
            "header",
            {"type": "integer", "minimum": 0, "maximum": MAX_ID},
            "resume after this seq (takes precedence over ?after=)",
        ),
        "RequestId": _param(
            "X-Request-ID",
            "header",
            {"type": "string"},
            "an id for this request, carried by the reply's X-Request-ID",
        ),
    }


def _headers() -> dict[str, Any]:
    """Reply headers."""
    return {
        "RequestId": {
            "description": "the request's id: the client's X-Request-ID when it is 1-128 "
            "visible ASCII characters, or a new one",
            "required": True,
            "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,128}$"},
        },
        "RetryAfter": {
            "description": "seconds to wait before retrying",
            "required": True,
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        },
        "WwwAuthenticate": {"required": True, "schema": {"type": "string"}},
        "EventlogSeq": {
            "description": "the highest seq among the request's events (stored now or before); "
            "pass it as ?min_seq= to a read to see this write. Absent when the request held "
            "no event.",
            "schema": {"type": "string", "pattern": decimal_pattern(1, MAX_ID)},
        },
    }


def _param(name: str, where: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": where, "schema": schema}
    if where == "path":
        param["required"] = True
    if description:
        param["description"] = description
    return param


# --- operations ---------------------------------------------------------------------------


def query_parameters(method: str, path: str) -> frozenset[str]:
    """The query parameters the operation at (method, path) takes (HEAD: those of GET)."""
    return _query_names().get(("GET" if method == "HEAD" else method, path), frozenset())


@functools.cache
def _query_names() -> dict[tuple[str, str], frozenset[str]]:
    parameters = _components()["parameters"]
    return {
        key: frozenset(
            parameters[p]["name"] for p in operation.parameters if parameters[p]["in"] == "query"
        )
        for key, operation in OPERATIONS.items()
    }


def operation_id(method: str, path: str) -> str:
    """A name for the operation: get_api_events_event_id."""
    words = path.replace("{", "").replace("}", "").replace(".", "_").strip("/").split("/")
    return "_".join([method.lower(), *(words if words != [""] else ["root"])])


@attrs.frozen
class _Operation:
    """What one (method, path) takes and replies; the auth problems are added per app."""

    summary: str
    replies: dict[int, dict[str, Any]]  # success status -> response object
    problems: tuple[type[Problem], ...] = ()
    parameters: tuple[str, ...] = ()
    body: dict[str, Any] | None = None
    public: bool = False  # answered without a token (the browser's pages hold no data)


def _reply(
    description: str, media: str = JSON, schema: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema or {}}}}


_READ = (InvalidParameter, UnreadableStoredRow, DatabaseUnavailable, NotYetReplicated)
_WRITE = (
    InvalidJson,
    EmptyBody,
    InvalidParameter,
    EventConflict,
    IdempotencyConflict,
    BodyTooLarge,
    UnsupportedMediaType,
    InvalidEnvelope,
    Overloaded,
    DatabaseUnavailable,
)
_FILTERS = tuple(f"Filter_{n}" for n in FILTERS)
_STREAM = _reply(
    "Server-Sent Events, never ending: each event is a message whose id is its seq and whose "
    "data is the Event; a comment line after each quiet heartbeat; a subscriber too far behind "
    "gets a final `event: cutoff` message and is disconnected; a stored row that cannot be "
    "read is an `event: unreadable` message naming it, whose id is its seq, and the stream "
    "goes on. Resumed (Last-Event-ID or ?after=) from a seq that retention has since removed, "
    "the stream first sends `event: expired`, whose id is the last removed seq and whose data "
    'is {"reason", "oldest_seq", "after", "resume_after"} (ids as strings), then goes on '
    "from the oldest event held.",
    SSE,
    {"type": "string"},
)

_PAGE = _reply(
    "An HTML page of the event browser; it holds no data and loads it from /api/ with the "
    "reader's token",
    "text/html",
    {"type": "string"},
)

# What today's producers send (CONTRACT §1); the tests send these same bodies.
CONTRACT_EXAMPLES = {
    "rust_executor": {
        "summary": "Rust executor and worker",
        "value": {
            "execution_id": 638758527854445253,
            "event_type": "command.completed",
            "step": "fetch",
            "status": "COMPLETED",
            "created_at": "2026-05-31T10:00:00Z",
            "context": {"items": 42},
            "event_id": "640000000000000001",
            "worker_id": "w-1",
            "meta": {"attempts": 2},
        },
    },
    "legacy_python_worker": {
        "summary": "Legacy Python worker",
        "value": {
            "execution_id": "478775660589088776",
            "name": "call.done",
            "step": "fetch",
            "payload": {"result": "ok"},
            "worker_id": "w-2",
        },
    },
    "python_model": {
        "summary": "Python model shape",
        "value": {
            "execution_id": "1",
            "name": "step.exit",
            "node_name": "fetch",
            "context": {"foo": "bar"},
        },
    },
    "minimal": {
        "summary": "The required fields only",
        "value": {"execution_id": "12345", "event_type": "step.enter", "step": "start"},
    },
}
_BATCH_EXAMPLES = {
    "batch_object": {
        "summary": "NoETL's batch object",
        "value": {
            "execution_id": "478775660589088776",
            "worker_id": "w-2",
            "events": [
                {"name": "step.enter", "node_name": "fetch"},
                {"event_type": "step.exit", "step": "fetch", "payload": {"rows": 3}},
            ],
        },
    },
    "array": {
        "summary": "An array of envelopes",
        "value": [
            {"execution_id": 12345, "event_type": "step.enter", "step": "start"},
            {"execution_id": 12346, "event_type": "step.enter", "step": "start"},
        ],
    },
}

OPERATIONS: dict[tuple[str, str], _Operation] = {
    ("POST", "/api/events"): _Operation(
        "Append one event in any producer dialect",
        {
            200: {
                **_reply("Stored (or already stored: duplicate)", schema=_schema("EventAccepted")),
                "links": {
                    "GetEvent": {
                        "operationId": operation_id("GET", "/api/events/{event_id}"),
                        "parameters": {"event_id": "$response.body#/event_id"},
                    },
                    "GetExecution": {
                        "operationId": operation_id("GET", "/api/executions/{execution_id}"),
                        "parameters": {"execution_id": "$request.body#/execution_id"},
                    },
                },
            }
        },
        _WRITE,
        ("IdempotencyKey",),
        {
            "required": True,
            "description": "a JSON object; a missing Content-Type is read as JSON",
            "content": {JSON: {"schema": _schema("Envelope"), "examples": CONTRACT_EXAMPLES}},
        },
    ),
    ("POST", "/api/events/batch"): _Operation(
        "Append a batch in one transaction, all or none",
        {200: _reply("Every item stored", schema=_schema("BatchAccepted"))},
        (*_WRITE, TooManyEvents),
        ("IdempotencyKey",),
        {
            "required": True,
            "description": "NoETL's batch object, a JSON array of envelopes, or NDJSON: "
            "one envelope per line (blank lines skipped), described here as the array of "
            "its lines. Batch items default actionable to false.",
            "content": {
                JSON: {
                    "schema": {
                        "oneOf": [
                            _schema("BatchObject"),
                            {"type": "array", "items": _schema("Envelope")},
                        ]
                    },
                    "examples": _BATCH_EXAMPLES,
                },
                **{
                    media: {"schema": {"type": "array", "items": _schema("Envelope")}}
                    for media in codec.NDJSON
                },
            },
        },
    ),
    ("GET", "/api/events"): _Operation(
        "The feed: the whole log in commit order, filtered, a page at a time",
        {200: _reply("A page", schema=_schema("EventPage"))},
        (*_READ, ResumeExpired),
        ("After", "Limit", "Order", "ExecutionIdQuery", *_FILTERS, "MinSeq"),
    ),
    ("GET", "/api/events/stream"): _Operation(
        "The log as Server-Sent Events (filters as for the feed)",
        {200: _STREAM},
        _READ,
        ("After", "LastEventId", "ExecutionIdQuery", *_FILTERS, "MinSeq"),
    ),
    ("GET", "/api/events/{event_id}"): _Operation(
        "One event by id",
        {200: _reply("The event", schema=_schema("Event"))},
        (*_READ, NotFound),
        ("EventIdPath", "ExecutionIdQuery", "MinSeq"),
    ),
    ("GET", "/api/executions"): _Operation(
        "Executions by newest activity first",
        {200: _reply("A page", schema=_schema("ExecutionPage"))},
        _READ,
        ("After", "Limit", "ExecutionStatus", "MinSeq"),
    ),
    ("GET", "/api/executions/{execution_id}"): _Operation(
        "One execution at a glance",
        {200: _reply("The execution", schema=_schema("Execution"))},
        (*_READ, NotFound),
        ("ExecutionIdPath", "MinSeq"),
    ),
    ("GET", "/api/executions/{execution_id}/events"): _Operation(
        "One execution's events in commit order, a page at a time",
        {
            200: _reply(
                "A page (empty for an unknown execution)", schema=_schema("ExecutionEventPage")
            )
        },
        (*_READ, ResumeExpired),
        ("ExecutionIdPath", "After", "Limit", "Order", "MinSeq"),
    ),
    ("GET", "/api/executions/{execution_id}/events/stream"): _Operation(
        "One execution's events as Server-Sent Events",
        {200: _STREAM},
        _READ,
        ("ExecutionIdPath", "After", "LastEventId", *_FILTERS, "MinSeq"),
    ),
    ("GET", "/health"): _Operation(
        "Liveness: the store is not consulted", {200: _reply("Alive", schema=_schema("Health"))}
    ),
    ("GET", "/ready"): _Operation(
        "Readiness: the store answers and its schema is current",
        {200: _reply("Ready", schema=_schema("Ready"))},
        (DatabaseUnavailable,),
    ),
    ("GET", "/metrics"): _Operation(
        "Prometheus metrics",
        {200: _reply("The Prometheus text exposition format", "text/plain", {"type": "string"})},
    ),
    ("GET", "/"): _Operation(
        "The event browser: executions", {200: _PAGE}, parameters=("After",), public=True
    ),
    ("GET", "/executions/{execution_id}"): _Operation(
        "The event browser: one execution (any id: it may not have begun)",
        {200: _PAGE},
        (NotFound,),
        ("ExecutionIdPath", *_FILTERS),  # the page's filters, read by its script
        public=True,
    ),
    ("GET", "/events"): _Operation(
        "The event browser: the live feed", {200: _PAGE}, parameters=_FILTERS, public=True
    ),
    ("GET", "/assets/{name}"): _Operation(
        "A script, style sheet or icon of the event browser",
        {200: {"description": "The file", "content": {"*/*": {"schema": {"type": "string"}}}}},
        (NotFound,),
        ("AssetName",),
        public=True,
    ),
    ("GET", "/api/openapi.json"): _Operation(
        "This document", {200: _reply("The OpenAPI 3.1 document", schema={"type": "object"})}
    ),
}


def _problem_replies(problems: Iterable[type[Problem]]) -> dict[str, Any]:
    """One response per status, allowing exactly the codes of ``problems`` with that status."""
    by_status: dict[int, list[type[Problem]]] = {}
    for problem in problems:
        by_status.setdefault(problem.status, []).append(problem)
    replies = {}
    for status_code, group in sorted(by_status.items()):
        headers = {"X-Request-ID": _ref("headers", "RequestId")}
        if status_code == 503:
            headers["Retry-After"] = _ref("headers", "RetryAfter")
        if status_code == 401:
            headers["WWW-Authenticate"] = _ref("headers", "WwwAuthenticate")
        replies[str(status_code)] = {
            "description": "; ".join(p.title for p in group),
            "headers": headers,
            "content": {
                PROBLEM_JSON: {
                    "schema": {
                        "allOf": [
                            _schema("Problem"),
                            {
                                "properties": {
                                    "status": {"const": status_code},
                                    "code": {"enum": [p.code for p in group]},
                                }
                            },
                        ]
                    }
                }
            },
        }
    return replies


def _operation(
    method: str, path: str, spec: _Operation, *, auth: bool, open_path: bool
) -> dict[str, Any]:
    problems = list(spec.problems)
    if InvalidParameter not in problems:
        problems.append(InvalidParameter)  # every route refuses a query parameter it lacks
    if auth and not open_path:
        problems += [Unauthorized, Forbidden]
    headers = {"X-Request-ID": _ref("headers", "RequestId")}
    if method == "POST":  # the writes
        headers["Eventlog-Seq"] = _ref("headers", "EventlogSeq")
    responses = {str(code): {**reply, "headers": headers} for code, reply in spec.replies.items()}
    responses.update(_problem_replies(problems))
    operation: dict[str, Any] = {
        "operationId": operation_id(method, path),
        "summary": spec.summary,
        "parameters": [_ref("parameters", p) for p in (*spec.parameters, "RequestId")],
        "responses": responses,
    }
    if spec.body is not None:
        operation["requestBody"] = spec.body
    if auth:
        operation["security"] = [] if open_path else [{"bearer": []}]
    return operation


DOCUMENT_PATH = "/api/openapi.json"
DOCUMENT_ROUTE = "openapi"  # the name of the document's route, by which it is found


def mount_prefix(app: web.Application) -> str:
    """Where the app is mounted ("" at the root): aiohttp prefixes a sub-application's routes."""
    resource = app.router.named_resources().get(DOCUMENT_ROUTE)
    return "" if resource is None else resource.canonical.removesuffix(DOCUMENT_PATH)


def registered_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, less the HEAD aiohttp adds to each GET;
    paths as the app declares them, without the prefix it may be mounted under."""
    prefix = mount_prefix(app)
    found = {
        (r.method, r.resource.canonical.removeprefix(prefix))
        for r in app.router.routes()
        if r.resource
    }
    return {(m, p) for m, p in found if not (m == "HEAD" and ("GET", p) in found)}


def document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``: its routes, as this deployment configures them."""
    settings = app[SETTINGS]
    paths: dict[str, dict[str, Any]] = {}
    for method, path in sorted(registered_routes(app), key=lambda r: (r[1], r[0])):
        spec = OPERATIONS.get((method, path))
        if spec is None:
            continue  # undescribed: the route coverage test fails
        paths.setdefault(path, {})[method.lower()] = _operation(
            method,
            path,
            spec,
            auth=settings.auth_enabled,
            open_path=spec.public or path in settings.open_paths,
        )
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "eventlog",
            "version": __version__,
            "description": (
                "A durable event log for workflow events. Every GET route also answers HEAD. "
                "Every error is application/problem+json with a stable code; a method a path "
                "does not serve is a 405 (method_not_allowed), an unknown path a 404."
            ),
        },
        **({"servers": [{"url": prefix}]} if (prefix := mount_prefix(app)) else {}),
        "paths": paths,
        "components": _components(),
    }
