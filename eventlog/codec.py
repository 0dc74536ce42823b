"""The edge between the wire and the models: JSON, the one cattrs converter, and its errors.

Every request body is structured here and every event is unstructured here; no model knows
about JSON or about the legacy field names.
"""

from __future__ import annotations

import json
import math
import re
import types
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs
import cattrs
import orjson
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn

from .envelope import (
    RESULT_KINDS,
    Envelope,
    Event,
    Execution,
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
from .problems import EmptyBody, FieldError, InvalidEnvelope, InvalidJson, Problem
from .status import normalise_status

# Legacy producers' names for three fields: alias -> canonical.
ALIASES = {"name": "event_type", "node_name": "step", "context": "payload"}


# --- JSON ---------------------------------------------------------------------------------

# orjson reads integers outside -2^63 … 2^64-1 as floats, silently; a body with a digit run
# that could be one (twenty digits, or a minus and nineteen) goes through the standard library
# instead, which keeps every integer exact. (Mapping every digit to 0 and searching for runs of
# zeros is ten times faster than a regex here.)
# What HTTP requests may carry besides envelopes (web.py enforces, openapi.py describes).
MAX_PAGE = 1000  # events or executions per page
NDJSON = ("application/x-ndjson", "application/ndjson", "application/jsonl")  # media types
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # the Idempotency-Key header

_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_TWENTY_DIGITS = b"0" * 20
_NEGATIVE_NINETEEN = b"-" + b"0" * 19


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


@attrs.frozen
class Unrepresentable:
    """A JSON number read from a body that no store can give back as sent (a float beyond a
    64-bit double, an integer of more than MAX_INT_DIGITS digits). Parsing keeps it, so that
    the field holding it is refused by name (422) rather than the whole body (400)."""

    text: str


# Python reads and writes integers of up to this many digits (sys.int_info); a stored payload
# must be readable by the library API (Event.payload) and by idempotency checks.
MAX_INT_DIGITS = 4300
# How deeply arrays and objects may nest inside payload and meta: the depth orjson writes
# (tests/test_codec.py pins it), so every value that passes is written by the fast path.
MAX_DEPTH = 254
_INT_BOUND = 10**MAX_INT_DIGITS


def _float(text: str) -> float | Unrepresentable:
    value = float(text)
    return value if math.isfinite(value) else Unrepresentable(text)


def _int(text: str) -> int | Unrepresentable:
    if len(text) - text.startswith("-") > MAX_INT_DIGITS:
        return Unrepresentable(text)
    return int(text)


def _shortened(text: str) -> str:
    return text if len(text) <= 40 else text[:40] + "…"


def loads(data: bytes) -> Any:
    """Parse a JSON document; raise EmptyBody or InvalidJson (400) when it is not one, and
    InvalidEnvelope (422) naming the field when it nests deeper than any store keeps."""
    if not data.strip():
        raise EmptyBody("the request body is empty; send one JSON document")
    shape = data.translate(_DIGITS_TO_ZERO)
    if _TWENTY_DIGITS not in shape and _NEGATIVE_NINETEEN not in shape:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # the standard library tells a wrong body from a value we refuse by name
    try:
        text = data.decode("utf-8")
        return json.loads(text, parse_constant=_reject_constant, parse_float=_float, parse_int=_int)
    except RecursionError:
        problem = _too_deep(text)
        if problem is None:
            raise InvalidJson("the body is not valid JSON: its brackets do not balance") from None
        raise problem from None
    except ValueError as e:
        raise InvalidJson(f"the body is not valid JSON: {str(e)[:200]}") from None


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[^\s\[\]{}:,"]+|\S')


def _too_deep(text: str) -> Problem | None:
    """For a body too deep for the parsers: a 422 naming the envelope field that nests too
    deeply, or None when its brackets do not balance (then it is not JSON at all)."""
    frames: list[list[Any]] = []  # per open container: [is_object, key or index]
    found: list[list[Any]] | None = None
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            frames.append([token == "{", None if token == "{" else 0])
            if found is None and len(frames) > MAX_DEPTH + 3:
                found = [list(f) for f in frames]
        elif token in ("]", "}"):
            if not frames or frames.pop()[0] != (token == "}"):
                return None
        elif token == "," and frames and not frames[-1][0]:
            frames[-1][1] += 1
        elif token.startswith('"') and frames and frames[-1][0]:
            frames[-1][1] = token  # a key, or a value after one: the next ":" follows a key
    if frames or found is None:
        return None
    # The envelope's field: $.payload; $[3].payload in an array; $.events[3].payload.
    top_is_events = found[0][0] and found[0][1] == '"events"'
    level = 3 if top_is_events else 1 if found[0][0] else 2
    path = "$" + "".join(
        f".{json.loads(key)}" if is_object else f"[{key}]" for is_object, key in found[:level]
    )
    message = f"nests deeper than {MAX_DEPTH} levels of arrays and objects"
    return InvalidEnvelope(f"{path}: {message}", errors=[FieldError(path, message)])


def loads_ndjson(data: bytes) -> tuple[list[Any], list[int]]:
    """One JSON document per line (blank lines skipped), with the line numbers they came from;
    InvalidJson names every bad line, else InvalidEnvelope every line nested too deeply."""
    values, numbers, errors, deep = [], [], [], []
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            values.append(loads(line))
            numbers.append(number)
        except InvalidJson as e:
            errors.append(FieldError(f"line {number}", e.detail.removeprefix("the body is ")))
        except InvalidEnvelope as e:
            deep += [FieldError(f"line {number}: {f.path}", f.message) for f in e.errors or ()]
    if errors:
        raise InvalidJson(f"{len(errors)} line(s) are not valid JSON", errors=errors)
    if deep:
        raise InvalidEnvelope(_summary(deep), errors=deep)
    return values, numbers


def dumps(value: Any) -> bytes:
    """Serialise to compact JSON; integers beyond 64 bits are written exactly."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        pass
    # The standard library writes any integer and nests deeper than orjson's limit; a lone
    # surrogate fails the encode below, which is what we want: it has no UTF-8 form.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def json_text(value: Any) -> str:
    """JSON text of an already parsed value, or ValueError saying why no store keeps it."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        pass  # too deep, an integer past 64 bits, a lone surrogate, or a refused number
    why = _unstorable(value)
    if why is not None:
        raise ValueError(why)
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError("contains a lone surrogate, which has no UTF-8 form") from None
    return text


def _unstorable(value: Any) -> str | None:
    """Why a parsed value cannot be stored as it came, if it cannot: nesting past MAX_DEPTH or
    a number no store gives back (a loop: the value may nest deeper than Python recurses)."""
    pending = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        kind = type(item)
        if kind is dict or kind is list:
            if depth == MAX_DEPTH:
                return f"nests deeper than {MAX_DEPTH} levels of arrays and objects"
            children = item.values() if kind is dict else item
            pending.extend((child, depth + 1) for child in children)
        elif kind is int and not -_INT_BOUND < item < _INT_BOUND:  # (from the library API)
            return f"holds an integer of more than {MAX_INT_DIGITS} digits"
        elif kind is Unrepresentable:
            return (
                f"holds the number {_shortened(item.text)}, which is outside what is kept (a finite "
                f"64-bit float, or an integer of at most {MAX_INT_DIGITS} digits)"
            )
    return None


def same_json(a: Any, b: Any) -> bool:
    """JSON equality: unlike ==, true is not 1 and 1 is not 1.0; object key order is ignored.
    (A loop, not recursion: a payload may nest deeper than Python's recursion limit.)"""
    pairs = [(a, b)]
    while pairs:
        x, y = pairs.pop()
        if type(x) is not type(y):
            return False
        if type(x) is dict:
            if x.keys() != y.keys():
                return False
            pairs.extend((v, y[k]) for k, v in x.items())
        elif type(x) is list:
            if len(x) != len(y):
                return False
            pairs.extend(zip(x, y, strict=True))
        elif x != y:
            return False
    return True


# --- strict structuring hooks -------------------------------------------------------------

_DIGITS = re.compile(r"[0-9]{1,40}")
RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _int64(value: Any, low: int) -> int:
    if type(value) is int:
        number = value
    elif type(value) is str and _DIGITS.fullmatch(value):
        number = int(value)
    else:
        raise ValueError("must be an integer or a string of decimal digits")
    if not low <= number <= MAX_ID:
        raise ValueError(f"must be between {low} and 2^63-1")
    return number


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def valid_text(value: str) -> bool:
    """Whether every backend can hold this string in a text column."""
    return _UNSTORABLE.search(value) is None


def _text(value: Any, _: Any = None) -> str:
    if type(value) is not str:
        raise ValueError("must be a string")
    if _UNSTORABLE.search(value):
        raise ValueError("must not contain a NUL character or a lone surrogate")
    return value


def _name(value: Any, _: Any) -> str:
    if not _text(value):
        raise ValueError("must not be empty")
    return str(value)


def _status(value: Any, _: Any) -> str:
    status = normalise_status(_text(value))
    if status is None:
        raise ValueError("must match ^[A-Z][A-Z_]{0,31}$ once upper-cased")
    return status


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds: 2026-05-31T10:00:00.000000Z."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


# The instants created_at may hold: both stores keep every microsecond between them (asyncpg
# writes 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z as -infinity and infinity, which
# no reader can render), and a day of margin lets any reader show them at any UTC offset.
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
_RANGE = f"must fall between {format_timestamp(EARLIEST)} and {format_timestamp(LATEST)}"


def _timestamp(value: Any, _: Any) -> datetime:
    if type(value) is not str or not RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 timestamp with an offset, like 2026-05-31T10:00:00Z")
    if value.startswith("0000"):
        raise ValueError(_RANGE)
    try:
        # fromisoformat wants upper-case T and Z; digits past microseconds are dropped.
        moment = datetime.fromisoformat(value.upper())
    except ValueError as e:
        raise ValueError(f"is not a valid timestamp: {e}") from None
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # the offset moves it outside years 1 to 9999
        raise ValueError(_RANGE) from None
    if not EARLIEST <= moment <= LATEST:
        raise ValueError(_RANGE)
    return moment


def parse_timestamp(text: str) -> datetime:
    """An RFC 3339 timestamp with an offset, in UTC; ValueError saying what is wrong."""
    return _timestamp(text, None)


def _result_kind(value: Any, _: Any) -> str:
    if value not in RESULT_KINDS or type(value) is not str:
        raise ValueError("must be one of " + ", ".join(f'"{k}"' for k in RESULT_KINDS))
    return value


def _json_value(value: Any, _: Any = None) -> Any:
    json_text(value)  # raises ValueError for what cannot be stored
    return value


def _json_object(value: Any, _: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise ValueError("must be a JSON object or null")
    _json_value(value)  # raises ValueError for what cannot be stored
    return value


def _id_list(value: Any, _: Any) -> tuple[int, ...]:
    if type(value) is not list:
        raise ValueError("must be an array of ids or null")
    errors = []
    ids = []
    for index, item in enumerate(value):
        try:
            ids.append(_int64(item, 0))
        except ValueError as e:
            e.__notes__ = [IterableValidationNote(f"@ index {index}", index, int)]
            errors.append(e)
    if errors:
        raise IterableValidationError("invalid ids", errors, IdList)
    return tuple(ids)


def _strict_bool(value: Any, _: Any) -> bool:
    if type(value) is not bool:
        raise ValueError("must be true or false")
    return value


def _strict_int(value: Any, _: Any) -> int:
    if type(value) is not int:
        raise ValueError("must be an integer")
    return value


def _strict_float(value: Any, _: Any) -> float:
    if type(value) not in (int, float):
        raise ValueError("must be a number")
    return float(value)


def _optional(hook: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def structure(value: Any, kind: Any) -> Any:
        return None if value is None else hook(value, kind)

    return structure


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=False)
    conv.register_structure_hook(str, _text)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(float, _strict_float)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook(Id64, lambda v, _: _int64(v, 0))
    conv.register_structure_hook(ExecutionId, lambda v, _: _int64(v, 1))
    conv.register_structure_hook(Text, _text)
    conv.register_structure_hook(Name, _name)
    conv.register_structure_hook(Status, _status)
    conv.register_structure_hook(Timestamp, _timestamp)
    conv.register_structure_hook(ResultKind, _result_kind)
    conv.register_structure_hook(JsonValue, _json_value)
    conv.register_structure_hook(JsonObject, _json_object)
    conv.register_structure_hook(IdList, _id_list)
    # "X | None" gets a hook of its own, or cattrs would dispatch on the value's type per call.
    for field in attrs.fields(Envelope):
        kind = typing.get_type_hints(Envelope)[field.name]
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            (inner,) = [t for t in typing.get_args(kind) if t is not type(None)]
            conv.register_structure_hook(kind, _optional(conv.get_structure_hook(inner)))
    # Hooks for the field types go first: the class hook is generated against them.
    conv.register_structure_hook(Envelope, make_dict_structure_fn(Envelope, conv))
    conv.register_unstructure_hook(Event, _unstructure_event)
    conv.register_unstructure_hook(Execution, _unstructure_execution)
    return conv


# --- events out ---------------------------------------------------------------------------


def _unstructure_event(event: Event) -> dict[str, Any]:
    # Payload and meta are spliced in as the stored JSON text, never re-parsed on a read.
    return {
        "event_id": str(event.event_id),
        "execution_id": str(event.execution_id),
        "seq": str(event.seq),
        "step": event.step,
        "event_type": event.event_type,
        "status": event.status,
        "payload": orjson.Fragment(event.payload_json),
        "meta": None if event.meta_json is None else orjson.Fragment(event.meta_json),
        "worker_id": event.worker_id,
        "result_kind": event.result_kind,
        "result_uri": event.result_uri,
        "event_ids": None if event.event_ids is None else [str(i) for i in event.event_ids],
        "actionable": event.actionable,
        "informative": event.informative,
        "created_at": format_timestamp(event.created_at),
        "ingested_at": format_timestamp(event.ingested_at),
    }


def _unstructure_execution(x: Execution) -> dict[str, Any]:
    return {
        "execution_id": str(x.execution_id),
        "status": x.status,
        "event_count": x.event_count,
        "first_event_at": format_timestamp(x.first_event_at),
        "last_event_at": format_timestamp(x.last_event_at),
        "last_event_type": x.last_event_type,
        "last_seq": str(x.last_seq),
    }


converter = _make_converter()
_structure_envelope_fields = converter.get_structure_hook(Envelope)


# --- envelopes in -------------------------------------------------------------------------


def structure_envelope(obj: Any, path: str = "$") -> Envelope:
    """Structure one envelope in any producer dialect; InvalidEnvelope lists every bad field."""
    envelope, errors = _structure_envelope(obj, path)
    if errors:
        raise InvalidEnvelope(_summary(errors), errors=errors)
    assert envelope is not None
    return envelope


def _summary(errors: list[FieldError]) -> str:
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{first.path}: {first.message}{more}"


def _structure_envelope(obj: Any, path: str) -> tuple[Envelope | None, list[FieldError]]:
    if type(obj) is not dict:
        return None, [FieldError(path, "must be a JSON object")]
    # The generated hook reads the canonical keys only; an alias is copied onto its field.
    data = obj
    wire = {}  # canonical field -> the name the client used, for error paths
    errors = []
    for alias, canonical in ALIASES.items():
        if obj.get(alias) is None:
            continue  # absent, or null: the same thing
        if obj.get(canonical) is not None:
            if not same_json(obj[canonical], obj[alias]):
                errors.append(
                    FieldError(
                        f"{path}.{alias}",
                        f"conflicting fields: {alias!r} and {canonical!r} differ",
                    )
                )
        else:
            if data is obj:
                data = dict(obj)
            data[canonical] = obj[alias]
            wire[canonical] = alias
    try:
        envelope = _structure_envelope_fields(data, Envelope)
    except ClassValidationError as exc:
        errors.extend(_field_errors(exc, path, wire))
        envelope = None
    if errors:
        return None, errors
    return envelope, []


def _field_errors(exc: BaseException, path: str, wire: dict[str, str]) -> list[FieldError]:
    """Flatten cattrs' exception groups into wire-named paths."""
    if isinstance(exc, ClassValidationError):
        noted, other = exc.group_exceptions()
        out = [FieldError(path, str(e)) for e in other]
        for sub, note in noted:
            out += _field_errors(sub, f"{path}.{wire.get(note.name, note.name)}", {})
        return out
    if isinstance(exc, IterableValidationError):
        items, rest = exc.group_exceptions()
        out = [FieldError(path, str(e)) for e in rest]
        for sub, item in items:
            out += _field_errors(sub, f"{path}[{item.index}]", {})
        return out
    if isinstance(exc, ForbiddenExtraKeysError):
        return [FieldError(path, str(exc))]
    if isinstance(exc, KeyError):
        return [FieldError(path, "is required")]
    return [FieldError(path, str(exc))]


def plain_json_errors(value: Any, path: str = "$") -> list[FieldError]:
    """Where a Python value (from the library API) holds something JSON cannot say: a NaN, a
    tuple, a datetime, a key that is not a string. Over HTTP such values cannot arrive; from
    Python they would otherwise be stored changed."""
    kind = type(value)
    if kind in (str, int, bool) or value is None:
        return []
    if kind is float:
        return [] if math.isfinite(value) else [FieldError(path, "must be a finite number")]
    if kind is list:
        return [e for i, item in enumerate(value) for e in plain_json_errors(item, f"{path}[{i}]")]
    if kind is dict:
        errors = []
        for key, item in value.items():
            if type(key) is not str:
                errors.append(FieldError(path, f"keys must be strings, not {type(key).__name__}"))
            else:
                errors += plain_json_errors(item, f"{path}.{key}")
        return errors
    return [FieldError(path, f"must be a JSON value, not {kind.__name__}")]


REDACTED = "[REDACTED]"


def redact(value: Any, keys: frozenset[str]) -> Any:
    """``value`` with the value of every object key in ``keys`` (lower-case; compared without
    regard to case) replaced by "[REDACTED]", at any depth. The input is not changed."""
    if type(value) is dict:
        return {k: REDACTED if k.lower() in keys else redact(v, keys) for k, v in value.items()}
    if type(value) is list:
        return [redact(v, keys) for v in value]
    return value


def wire_form(envelope: Envelope) -> dict[str, Any]:
    """An Envelope built in Python, as the dict a producer would send, so it is checked by the
    same rules; a naive created_at is refused rather than guessed."""
    data = {k: v for k, v in attrs.asdict(envelope, recurse=False).items() if v is not None}
    created = data.get("created_at")
    if isinstance(created, datetime) and created.tzinfo is not None:
        data["created_at"] = format_timestamp(created)
    if isinstance(data.get("event_ids"), tuple):
        data["event_ids"] = list(data["event_ids"])
    return data


def structure_python(items: list[Any], *, single: bool = False) -> list[Envelope]:
    """Envelopes handed over in Python (dicts in any dialect, or Envelope objects), validated
    exactly as over HTTP; InvalidEnvelope lists every bad item and field (paths $[i]...)."""
    envelopes, errors = [], []
    for index, item in enumerate(items):
        path = "$" if single else f"$[{index}]"
        if type(item) is Envelope:
            item = wire_form(item)
        try:
            item_errors = plain_json_errors(item, path)
        except RecursionError:
            item_errors = [
                FieldError(path, f"nests deeper than {MAX_DEPTH} levels of arrays and objects")
            ]
        if not item_errors:
            envelope, item_errors = _structure_envelope(item, path)
            envelopes.append(envelope)
        errors += item_errors
    if errors:
        raise InvalidEnvelope(_summary(errors), errors=errors)
    return envelopes  # type: ignore[return-value]


@attrs.frozen
class BatchHeader:
    """The NoETL batch object's own fields; its items inherit them."""

    execution_id: ExecutionId | None = None
    worker_id: Text | None = None


def _batch_form(data: Any) -> tuple[str, list[Any], dict[str, Any], list[FieldError]]:
    """A batch's parts: the path its items sit at, the items, the fields they inherit (from
    NoETL's batch object) and the errors in the batch's own fields."""
    if type(data) is list:
        return "$", data, {}, []
    if type(data) is not dict:
        raise InvalidEnvelope(
            "a batch is an array of events or an object with an events array",
            errors=[FieldError("$", 'must be an array or an object with "events"')],
        )
    inherited: dict[str, Any] = {}
    errors: list[FieldError] = []
    try:
        header = converter.structure(
            {k: data[k] for k in ("execution_id", "worker_id") if k in data}, BatchHeader
        )
        inherited = {k: v for k, v in attrs.asdict(header).items() if v is not None}
    except ClassValidationError as exc:
        errors += _field_errors(exc, "$", {})
    items = data.get("events")
    if type(items) is not list:
        errors.append(FieldError("$.events", "must be an array of events"))
        items = []
    return "$.events", items, inherited, errors


def structure_batch(data: Any, *, lines: list[int] | None = None) -> list[Envelope]:
    """Structure a batch in any of its forms; InvalidEnvelope lists every bad item and field.

    Forms: NoETL's ``{"execution_id", "worker_id"?, "events": [...]}`` (items inherit the two
    fields), a JSON array of envelopes, or NDJSON: the parsed lines with their ``lines``
    numbers, so that errors read ``line 4: $.step``.
    """
    prefix, items, inherited, errors = _batch_form(data)
    envelopes = []
    for index, item in enumerate(items):
        if inherited and type(item) is dict:
            # The item's own fields win; its nulls mean absent, so they inherit too.
            item = inherited | {k: v for k, v in item.items() if v is not None}
        path = f"{prefix}[{index}]" if lines is None else f"line {lines[index]}: $"
        envelope, item_errors = _structure_envelope(item, path)
        errors += item_errors
        envelopes.append(envelope)
    if errors:
        raise InvalidEnvelope(_summary(errors), errors=errors)
    return envelopes  # type: ignore[return-value]
