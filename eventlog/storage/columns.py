"""The stored event's columns, in order: the one list both backends build their SQL from.

Adding a field to the stored event is: the attribute on the model (envelope.py), a Column here,
a migration per backend, and tests. The backends derive their column lists, placeholders,
``unnest`` arrays, row tuples and row mapping from this list; tests/storage/test_columns.py
checks it against the migrated schema of each backend.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import attrs
import orjson

from ..envelope import Event, NewEvent

# A JSON array of ids, held as a tuple of ints and stored as JSON text on every backend.
IdTuple = tuple[int, ...]


@attrs.frozen
class Column:
    """One column of the events table: its name, the model's Python type, its SQL types."""

    name: str
    python: Any  # the type of the model's attribute
    sqlite: str
    postgres: str
    attr: str = attrs.field()  # the model's attribute, when it is not called ``name``

    @attr.default
    def _attr(self) -> str:
        return self.name

    @property
    def base(self) -> Any:
        """The Python type without its ``| None``."""
        if isinstance(self.python, types.UnionType):
            (kind,) = (a for a in typing.get_args(self.python) if a is not type(None))
            return kind
        return self.python


EVENT_COLUMNS: tuple[Column, ...] = (
    Column("seq", int, "INTEGER", "bigint"),
    Column("execution_id", int, "INTEGER", "bigint"),
    Column("event_id", int, "INTEGER", "bigint"),
    Column("step", str, "TEXT", "text"),
    Column("event_type", str, "TEXT", "text"),
    Column("status", str, "TEXT", "text"),
    # JSON values travel as the JSON text the codec made, and are stored as that text.
    Column("payload", str, "TEXT", "json", attr="payload_json"),
    Column("meta", str | None, "TEXT", "json", attr="meta_json"),
    Column("worker_id", str | None, "TEXT", "text"),
    Column("result_kind", str, "TEXT", "text"),
    Column("result_uri", str | None, "TEXT", "text"),
    Column("event_ids", IdTuple | None, "TEXT", "json"),
    Column("actionable", bool, "INTEGER", "boolean"),
    Column("informative", bool, "INTEGER", "boolean"),
    Column("created_at", datetime, "INTEGER", "timestamptz"),
    Column("ingested_at", datetime, "INTEGER", "timestamptz"),
    Column("defaulted", int, "INTEGER", "smallint"),
)

# Columns the store assigns while it commits (not known before): the rest come from a NewEvent.
ASSIGNED = ("seq", "ingested_at")


def _ids_to_json(ids: IdTuple) -> str:
    return orjson.dumps(ids).decode()


def _ids_from_json(text: str | bytes) -> IdTuple:
    return tuple(orjson.loads(text))


# How a Python type is stored when the database has no type of its own for it (every backend).
SHARED_ENCODERS: dict[Any, Callable[[Any], Any]] = {IdTuple: _ids_to_json}
SHARED_DECODERS: dict[Any, Callable[[Any], Any]] = {IdTuple: _ids_from_json}

Codecs = Mapping[Any, Callable[[Any], Any]]


class Row(Protocol):
    """A row as the drivers return it (sqlite3.Row, asyncpg.Record): values by column name."""

    def __getitem__(self, name: str, /) -> Any: ...


@attrs.frozen
class EventTable:
    """The events table as one backend sees it: the columns, and the model rows are read into.

    The per-event functions are generated from the columns as source code and compiled once (as
    attrs does for __init__): a loop over the columns at run time costs 2-4 times as much per
    event, which batches of thousands pay in full. The codecs passed in are the backend's
    conversions by Python type; a None is never converted.
    """

    columns: tuple[Column, ...] = EVENT_COLUMNS
    model: type[Event] = Event

    @property
    def names(self) -> list[str]:
        """Every column's name, in order."""
        return [c.name for c in self.columns]

    @property
    def new(self) -> tuple[Column, ...]:
        """The columns a NewEvent carries (all but those assigned at commit)."""
        return tuple(c for c in self.columns if c.name not in ASSIGNED)

    def row(self, codecs: Codecs) -> Callable[[Event], tuple[Any, ...]]:
        """A function from a stored event to its values, every column in order, as the backend
        binds them."""
        found = _Codecs(codecs, SHARED_ENCODERS)
        values = [found.wrap(c, f"event.{c.attr}") for c in self.columns]
        return found.compile("row", "event", "(" + ", ".join(values) + ",)")

    def arrays(self, codecs: Codecs) -> Callable[[Sequence[NewEvent]], list[list[Any]]]:
        """A function from new events to their columns (all but the assigned ones) as parallel
        arrays, one list per column in order, as the backend binds them."""
        found = _Codecs(codecs, SHARED_ENCODERS)
        lists = [f"[{found.wrap(c, f'e.{c.attr}')} for e in events]" for c in self.new]
        return found.compile("arrays", "events", "[" + ", ".join(lists) + "]")

    def decoder(self, codecs: Codecs) -> Callable[[Row], Event]:
        """A function from a row (read by column name) to the model."""
        found = _Codecs(codecs, SHARED_DECODERS, model=self.model)
        values = [f"{c.attr}={found.wrap(c, f'row[{c.name!r}]')}" for c in self.columns]
        return found.compile("decode", "row", "model(" + ", ".join(values) + ")")

    def stored(self) -> Callable[[NewEvent, int, datetime], Event]:
        """A function making the model from a NewEvent (or the model's own new form) once it was
        given its seq at its ingested_at: the model's fields in its own order."""
        names = [f.name for f in attrs.fields(self.model)]
        values = [n if n in ASSIGNED else f"new.{n}" for n in names]
        found = _Codecs({}, {}, model=self.model)
        return found.compile("stored", "new, seq, ingested_at", "model(" + ", ".join(values) + ")")


class _Codecs:
    """The conversions one generated function may call, by name in its namespace."""

    def __init__(self, codecs: Codecs, shared: Codecs, **namespace: Any) -> None:
        self._codecs, self._shared = codecs, shared
        self._namespace: dict[str, Any] = dict(namespace)

    def wrap(self, column: Column, value: str) -> str:
        """``value`` (an expression) converted as the column's type needs."""
        f = self._codecs.get(column.base) or self._shared.get(column.base)
        if f is None:
            return value
        name = f"_{column.name}"
        self._namespace[name] = f
        if column.base is column.python:  # never None
            return f"{name}({value})"
        return f"(None if (v{name} := {value}) is None else {name}(v{name}))"

    def compile(self, name: str, parameters: str, expression: str) -> Callable[..., Any]:
        """A function of ``parameters`` returning ``expression``."""
        source = f"def {name}({parameters}):\n    return {expression}\n"
        exec(compile(source, f"<eventlog.storage.columns {name}>", "exec"), self._namespace)
        function: Callable[..., Any] = self._namespace[name]
        return function


EVENTS = EventTable()
