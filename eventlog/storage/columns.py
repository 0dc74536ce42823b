"""The stored event's columns, in order: the one list both backends build their SQL from.

Adding a field to the stored event is: the attribute on the model (envelope.py), a Column here,
a migration per backend, and tests. The backends derive their column lists, placeholders,
``unnest`` arrays, row tuples and row mapping from this list; tests/storage/test_columns.py
checks it against the migrated schema of each backend.
"""

from __future__ import annotations

import operator
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
    """The events table as one backend sees it: the columns, the model rows are read into, and
    the backend's conversions by Python type (None values are never converted)."""

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

    def encoder(self, columns: Sequence[Column], codecs: Codecs) -> Callable[[NewEvent], list[Any]]:
        """A function from an event to its values for ``columns``, in their order, as the
        backend binds them."""
        get = operator.attrgetter(*(c.attr for c in columns))
        steps = [(i, f) for i, c in enumerate(columns) if (f := _codec(c, codecs, SHARED_ENCODERS))]
        one = len(columns) == 1  # attrgetter of one name returns the value, not a tuple

        def encode(event: NewEvent) -> list[Any]:
            values = [get(event)] if one else list(get(event))
            for i, f in steps:
                if values[i] is not None:
                    values[i] = f(values[i])
            return values

        return encode

    def decoder(self, codecs: Codecs) -> Callable[[Row], Event]:
        """A function from a row (read by column name) to the model."""
        steps = [(c.attr, c.name, _codec(c, codecs, SHARED_DECODERS)) for c in self.columns]
        model = self.model

        def decode(row: Row) -> Event:
            values = {}
            for attr, name, f in steps:
                value = row[name]
                values[attr] = value if f is None or value is None else f(value)
            return model(**values)

        return decode


def _codec(column: Column, codecs: Codecs, shared: Codecs) -> Callable[[Any], Any] | None:
    return codecs.get(column.base) or shared.get(column.base)


EVENTS = EventTable()
