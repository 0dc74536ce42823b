"""The codec alone: JSON fidelity, strict structuring, aliases, and the canonical output."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlog.codec import (
    MAX_DEPTH,
    MAX_INT_DIGITS,
    converter,
    dumps,
    loads,
    same_json,
    structure_envelope,
)
from eventlog.envelope import Defaulted, Event
from eventlog.problems import EmptyBody, InvalidEnvelope, InvalidJson


@pytest.mark.parametrize(
    "text",
    [
        b"18446744073709551615",
        b"-9223372036854775808",
        b"-9223372036854775809",
        b"18446744073709551616",
        b"-9999999999999999999",
        b"123456789012345678901234567890",
        b"[1, -123456789012345678901234567890, 0.5]",
    ],
)
def test_integers_of_any_size_survive_a_round_trip(text):
    """orjson would turn integers past 64 bits into floats; the codec keeps them exact."""
    value = loads(text)
    assert loads(dumps(value)) == value
    assert dumps(value).replace(b" ", b"") == text.replace(b" ", b"")


@given(st.integers())
def test_any_integer_round_trips(number):
    """Property: an integer of any size reads back as the same integer."""
    assert loads(dumps({"n": number})) == {"n": number}


@pytest.mark.parametrize(
    "text",
    [
        b"NaN",
        b"Infinity",
        b'{"a": -Infinity}',
        # with a 20-digit integer beside them, these take the standard library's path
        b"[NaN, 12345678901234567890123]",
    ],
)
def test_non_finite_numbers_are_not_json(text):
    """NaN and Infinity are not JSON at all, on both parsing paths."""
    with pytest.raises(InvalidJson):
        loads(text)


@pytest.mark.parametrize(
    "payload",
    [
        b"1e999",
        b"-1e999",
        b"[1e999, 12345678901234567890123]",  # the standard library's parsing path
        b"9" * (MAX_INT_DIGITS + 1),
        b"-" + b"9" * (MAX_INT_DIGITS + 1),
    ],
)
def test_numbers_no_store_gives_back_are_refused_by_the_field_holding_them(payload):
    """A float past a 64-bit double or an integer of too many digits is valid JSON: the field
    that holds it is refused (422), not the body."""
    body = b'{"execution_id": 1, "step": "s", "event_type": "t", "payload": %s}' % payload
    with pytest.raises(InvalidEnvelope) as caught:
        structure_envelope(loads(body))
    assert [e.path for e in caught.value.errors or ()] == ["$.payload"]


def test_integers_of_the_most_digits_kept_read_back_exactly():
    """The longest integer accepted is kept digit for digit."""
    number = int("9" * MAX_INT_DIGITS)
    body = b'{"execution_id": 1, "step": "s", "event_type": "t", "payload": %d}' % number
    assert structure_envelope(loads(body)).payload == number


def test_the_nesting_limit_is_what_the_fast_writer_writes():
    """MAX_DEPTH is exactly how deep orjson writes: one level more and it gives up (so the
    documented limit costs no check on the usual path, and an upgrade that moves it shows)."""
    deep: Any = []
    for _ in range(MAX_DEPTH - 1):
        deep = [deep]
    orjson.dumps(deep)
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps([deep])


def test_empty_body_is_its_own_error():
    """Nothing at all is not the same mistake as broken JSON."""
    with pytest.raises(EmptyBody):
        loads(b" \r\n")


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (1, 1.0, False),
        (True, 1, False),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
        ([1, 2], [2, 1], False),
        (None, None, True),
        ({"a": [0]}, {"a": [False]}, False),
    ],
)
def test_same_json_is_json_equality_not_python_equality(a, b, same):
    """true is not 1, 1 is not 1.0, key order does not matter."""
    assert same_json(a, b) is same


def test_aliases_map_onto_canonical_fields():
    """name, node_name and context are event_type, step and payload."""
    envelope = structure_envelope(
        {"execution_id": "7", "name": "call.done", "node_name": "n", "context": {"x": 1}}
    )
    assert (envelope.event_type, envelope.step, envelope.payload) == ("call.done", "n", {"x": 1})


def test_input_dict_is_not_modified():
    """Structuring copies; the caller's dict keeps its legacy keys."""
    body = {"execution_id": 7, "name": "a", "node_name": "n"}
    structure_envelope(body)
    assert body == {"execution_id": 7, "name": "a", "node_name": "n"}


def test_batch_path_prefix_appears_in_errors():
    """Errors carry the path they were structured at, for batch items."""
    with pytest.raises(InvalidEnvelope) as info:
        structure_envelope({"execution_id": 1, "name": "a"}, path="$.events[3]")
    assert [e.path for e in info.value.errors] == ["$.events[3].step"]


def test_event_unstructures_to_the_canonical_shape():
    """Ids as strings, timestamps in UTC with microseconds, stored JSON spliced in verbatim."""
    event = Event(
        execution_id=2**63 - 1,
        event_id=5,
        step="s",
        event_type="t",
        status="RUNNING",
        payload_json='{"big":123456789012345678901234567890}',
        meta_json=None,
        worker_id=None,
        result_kind="data",
        result_uri=None,
        event_ids=(1, 2),
        actionable=True,
        informative=False,
        created_at=datetime(1, 1, 1, tzinfo=UTC),
        defaulted=Defaulted.NONE,
        seq=9,
        ingested_at=datetime(2026, 5, 31, 10, 0, 0, 5, tzinfo=UTC),
    )
    text = orjson.dumps(converter.unstructure(event))
    doc = loads(text)
    assert doc["execution_id"] == str(2**63 - 1) and doc["seq"] == "9"
    assert doc["payload"] == {"big": 123456789012345678901234567890}
    assert doc["event_ids"] == ["1", "2"]
    assert doc["created_at"] == "0001-01-01T00:00:00.000000Z"
    assert doc["ingested_at"] == "2026-05-31T10:00:00.000005Z"
