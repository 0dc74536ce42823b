"""Shared checks for the HTTP tests."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from eventlog.codec import ALIASES, same_json
from eventlog.openapi import CONTRACT_EXAMPLES

CANONICAL_KEYS = {
    "event_id",
    "execution_id",
    "seq",
    "step",
    "event_type",
    "status",
    "payload",
    "meta",
    "worker_id",
    "result_kind",
    "result_uri",
    "event_ids",
    "actionable",
    "informative",
    "created_at",
    "ingested_at",
}
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")

# The four bodies of CONTRACT §1, as today's producers send them: the document's examples, so
# every example the API description shows is also proven to work.
CONTRACT_BODIES = {name: example["value"] for name, example in CONTRACT_EXAMPLES.items()}

_ID_FIELDS = {"execution_id", "event_id"}


def instant(text: str) -> datetime:
    """An RFC 3339 timestamp as an aware datetime."""
    return datetime.fromisoformat(text.upper()).astimezone(UTC)


def assert_reads_back(sent: dict[str, Any], event: dict[str, Any]) -> None:
    """Every field the producer sent reads back equal (CONTRACT §2), under its canonical name."""
    assert set(event) == CANONICAL_KEYS
    for key, value in sent.items():
        field = ALIASES.get(key, key)
        if field not in CANONICAL_KEYS or field in ("seq", "ingested_at"):
            continue  # unknown fields are ignored, server-owned ones never taken from a client
        if value is None and field == "event_id":
            continue  # null means absent
        got = event[field]
        if field in _ID_FIELDS:
            assert got == str(int(value)), field
        elif field == "event_ids":
            assert got == (None if value is None else [str(int(v)) for v in value])
        elif field == "created_at":
            assert instant(got) == instant(value), field
        elif field == "status":
            assert got == value.upper()
        elif value is None and field in ("result_kind", "actionable", "informative"):
            continue  # null means absent: the default applies
        else:
            assert same_json(got, value), (field, got, value)


def assert_canonical(event: dict[str, Any]) -> None:
    """The output shape of CONTRACT §2: ids as decimal strings, UTC microsecond timestamps."""
    assert set(event) == CANONICAL_KEYS
    for key in ("event_id", "execution_id", "seq"):
        assert isinstance(event[key], str) and event[key].isdigit(), key
    assert event["event_ids"] is None or all(isinstance(i, str) for i in event["event_ids"])
    assert TIMESTAMP.fullmatch(event["created_at"])
    assert TIMESTAMP.fullmatch(event["ingested_at"])
    assert isinstance(event["actionable"], bool) and isinstance(event["informative"], bool)
    assert event["result_kind"] in ("data", "ref", "refs")
