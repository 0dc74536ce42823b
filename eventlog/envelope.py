"""The event's shapes: as a producer sends it, as it goes to the store, as it is stored."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NewType

import attrs

# Envelope, NewEvent and Event are values, never changed after construction; they are not frozen
# only because a frozen attrs class takes three times as long to build, once per event.

# Wire types with strict structuring hooks (registered in codec.py). They are plain ints and
# strings at run time; the NewType only tells the converter which rule applies.
Id64 = NewType("Id64", int)  # a 64-bit id: JSON integer or decimal string
ExecutionId = NewType("ExecutionId", int)  # like Id64, but 1 … 2^63-1
Text = NewType("Text", str)  # a string without NUL (PostgreSQL text cannot hold one)
Name = NewType("Name", str)  # a non-empty Text
Status = NewType("Status", str)  # upper-cased, ^[A-Z][A-Z_]{0,31}$
Timestamp = NewType("Timestamp", datetime)  # RFC 3339 with an offset, held in UTC
JsonValue = NewType("JsonValue", object)  # any JSON value that can be stored
JsonObject = NewType("JsonObject", dict[str, Any])  # a JSON object that can be stored
IdList = NewType("IdList", list[int])  # a JSON array of Id64
ResultKind = NewType("ResultKind", str)  # one of RESULT_KINDS

RESULT_KINDS = ("data", "ref", "refs")


@attrs.define
class Envelope:
    """One event as a producer sent it, aliases resolved; None means the field was not sent."""

    execution_id: ExecutionId
    step: Name
    event_type: Name
    payload: JsonValue | None = None
    meta: JsonObject | None = None
    worker_id: Text | None = None
    result_kind: ResultKind | None = None
    result_uri: Text | None = None
    event_ids: IdList | None = None
    actionable: bool | None = None
    informative: bool | None = None
    event_id: Id64 | None = None
    status: Status | None = None
    created_at: Timestamp | None = None


class Defaulted:
    """Bits of ``NewEvent.defaulted``: fields the server filled in because the producer did not
    send them. (Plain ints: an IntFlag costs microseconds per event on the hot path.)"""

    NONE = 0
    EVENT_ID = 1
    STATUS = 2
    CREATED_AT = 4
    ACTIONABLE = 8  # its default depends on the route (false for batch items)


@attrs.define
class NewEvent:
    """An event with every field resolved, ready to be appended; JSON values kept as JSON text."""

    execution_id: int
    event_id: int
    step: str
    event_type: str
    status: str
    payload_json: str
    meta_json: str | None
    worker_id: str | None
    result_kind: str
    result_uri: str | None
    event_ids: tuple[int, ...] | None
    actionable: bool
    informative: bool
    created_at: datetime
    defaulted: int  # Defaulted bits

    @property
    def key(self) -> tuple[int, int]:
        """The log's key: (execution_id, event_id)."""
        return (self.execution_id, self.event_id)

    @property
    def payload(self) -> Any:
        """The payload, parsed (integers of any size exactly)."""
        return json.loads(self.payload_json)

    @property
    def meta(self) -> dict[str, Any] | None:
        """The meta object, parsed; None when there is none."""
        return None if self.meta_json is None else json.loads(self.meta_json)


@attrs.define
class Event(NewEvent):
    """An event as stored: a NewEvent plus its commit-ordered position and commit time."""

    seq: int
    ingested_at: datetime


@attrs.frozen
class Execution:
    """One execution at a glance, kept up to date by every write."""

    execution_id: int
    event_count: int
    first_event_at: datetime
    last_event_at: datetime
    last_event_type: str
    last_seq: int
    status: str
