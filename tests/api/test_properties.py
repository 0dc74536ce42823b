"""Property-based: thousands of generated bodies per backend — valid, nearly valid and garbage.

No body may produce a 5xx; every valid body must read back equal to what was sent.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventlog.codec import EARLIEST, LATEST, MAX_DEPTH, MAX_INT_DIGITS

from .helpers import assert_reads_agree, assert_reads_back, every_read

EXAMPLES = 700  # per test; three tests, so 2,100 bodies per backend
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
JSON_HEADERS = {"Content-Type": "application/json"}
_ids = itertools.count(10_000_000)

odd_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"])
    | st.sampled_from("\x00\u202e\ufeff𝄞\u2028\x7f"),
    max_size=30,
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.sampled_from([2**63 - 1, -(2**63), 2**64 - 1, 2**64, 0, -0])
    | st.floats(allow_nan=False, allow_infinity=False)
    | odd_text
)


def json_trees(leaves: Any, keys: Any, size: int, max_leaves: int) -> Any:
    """JSON arrays and objects of ``leaves``, their keys drawn from ``keys``."""
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=size) | st.dictionaries(keys, inner, max_size=size),
        max_leaves=max_leaves,
    )


json_values = json_trees(scalars, odd_text, 5, 25)


@st.composite
def deeply_nested(draw: st.DrawFn) -> Any:
    """A value nested up to the deepest a payload may nest."""
    depth = draw(st.integers(min_value=50, max_value=MAX_DEPTH))
    value: Any = draw(scalars)
    for _ in range(depth):
        value = [value] if draw(st.booleans()) else {"k": value}
    return value


def _id(value: int, as_text: bool) -> int | str:
    return str(value) if as_text else value


non_empty_text = odd_text.filter(lambda s: s and "\x00" not in s)
offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
timestamps = st.builds(
    lambda moment, tz, zulu: moment.replace(tzinfo=tz).isoformat().replace("+00:00", zulu),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
    offsets,
    st.sampled_from(["Z", "+00:00", "z"]),
)


@st.composite
def valid_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """An envelope any producer might send: either name for each aliased field, any subset of
    the optional ones, ids as integers or strings. Keys are unique per example."""
    body: dict[str, Any] = {"execution_id": _id(next(_ids), draw(st.booleans()))}
    body[draw(st.sampled_from(["step", "node_name"]))] = draw(non_empty_text)
    body[draw(st.sampled_from(["event_type", "name"]))] = draw(
        non_empty_text | st.sampled_from(["step.enter", "call.done", "command.failed"])
    )
    optional = {
        "payload": json_values | deeply_nested(),
        "context": json_values,
        "meta": st.none() | st.dictionaries(odd_text, json_values, max_size=4),
        "worker_id": st.none() | non_empty_text,
        "result_kind": st.sampled_from(["data", "ref", "refs"]),
        "result_uri": st.none() | non_empty_text,
        "event_ids": st.none()
        | st.lists(st.integers(0, 2**63 - 1).flatmap(lambda i: st.sampled_from([i, str(i)]))),
        "actionable": st.booleans(),
        "informative": st.booleans(),
        "event_id": st.booleans().map(lambda t: _id(next(_ids), t)),
        "status": st.from_regex(r"[A-Za-z][A-Za-z_]{0,31}", fullmatch=True),
        "created_at": timestamps,
        "unknown_field": json_values,
    }
    for name in draw(st.sets(st.sampled_from(sorted(optional)))):
        if {name, "context", "payload"} == {"context", "payload"} and body.keys() & {
            "context",
            "payload",
        }:
            continue  # one of the two names only (both at once is tested with equal values elsewhere)
        body[name] = draw(optional[name])
    return body


WRONG = {
    "execution_id": st.sampled_from([0, -1, 2**63, 1.5, True, "12a", "", [1], {}, None]),
    "step": st.sampled_from([1, "", None, [], {"a": 1}, "a\x00"]),
    "event_type": st.sampled_from([2, "", True, ["x"]]),
    "actionable": st.sampled_from(["yes", 1, 0, "true", [True]]),
    "informative": st.sampled_from(["no", 2, {}]),
    "created_at": st.sampled_from(
        ["2026-05-31T10:00:00", "yesterday", 0, "2026-13-01T00:00:00Z", "2026-05-31T25:00:00Z"]
    ),
    "status": st.sampled_from(["two words", "1A", "", 5, "Ä"]),
    "event_id": st.sampled_from([-1, 2**63, 1.0, "1e3", [1]]),
    "event_ids": st.sampled_from(["1", [1.5], [None], {"a": 1}, [-1]]),
    "meta": st.sampled_from([[], "m", 3, True]),
    "result_kind": st.sampled_from(["blob", 1, "DATA"]),
    "worker_id": st.sampled_from([1, [], {}]),
}


@st.composite
def nearly_valid_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid envelope with one field wrong, or a legacy alias that disagrees with its twin."""
    body = draw(valid_bodies())
    if draw(st.booleans()):
        field = draw(st.sampled_from(sorted(WRONG)))
        for alias, canonical in (("name", "event_type"), ("node_name", "step")):
            if field == canonical:
                body.pop(alias, None)
        body[field] = draw(WRONG[field])
    else:
        canonical, alias = draw(st.sampled_from([("event_type", "name"), ("step", "node_name")]))
        body[canonical], body[alias] = "one", "two"
    return body


def _encode(body: Any, ascii_only: bool) -> bytes:
    return json.dumps(body, ensure_ascii=ascii_only).encode()


garbage = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.sampled_from(
        [
            b'"\\ud800"',
            b'{"execution_id": 1, "step": "\\udc00", "name": "x"}',
            b"[" * 5000,
            b'{"a": 1e400}',
            b"NaN",
            b"\xef\xbb\xbf{}",
            b"{" + b'"a":' * 3000,
            b"1" * 10000,
        ]
    ),
)


async def _post(client: Any, body: bytes) -> Any:
    reply = await client.post("/api/events", data=body, headers=JSON_HEADERS)
    assert reply.status < 500, await reply.text()
    return reply


@PROPERTY
@given(body=valid_bodies(), ascii_only=st.booleans())
async def test_valid_bodies_are_stored_and_read_back_equal(client, body, ascii_only):
    """Every valid body: 200, and every field it sent reads back equal."""
    reply = await _post(client, _encode(body, ascii_only))
    assert reply.status == 200, await reply.text()
    event_id = (await reply.json())["event_id"]
    got = await client.get(
        f"/api/events/{event_id}", params={"execution_id": str(body["execution_id"])}
    )
    assert_reads_back(body, await got.json())


@PROPERTY
@given(body=nearly_valid_bodies())
async def test_nearly_valid_bodies_are_422(client, body):
    """One wrong field: a 422 problem naming a field, never stored, never a 5xx."""
    reply = await _post(client, _encode(body, True))
    assert reply.status == 422, await reply.text()
    assert (await reply.json())["errors"]


@PROPERTY
@given(body=garbage)
async def test_garbage_never_causes_a_server_error(client, body):
    """Arbitrary bytes and JSON: any 4xx, never a 5xx."""
    reply = await _post(client, body)
    if reply.status >= 400:
        assert reply.content_type == "application/problem+json"


# --- the edges of every field's range, read back through every read path -----------------

EDGES = settings(
    max_examples=40,  # each reads its event back ten ways: about ten seconds per backend
    derandomize=True,  # the same examples on every run, so CI is stable
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
_64 = 2**63
edge_integers = (
    st.sampled_from(
        [0, -0, 1, -1, _64 - 1, -_64, _64, -_64 - 1, 2 * _64, 10**40, -(10**40)]
        + [int("9" * MAX_INT_DIGITS), -int("9" * MAX_INT_DIGITS)]
    )
    | st.integers()
)
edge_floats = st.sampled_from(
    [1.7976931348623157e308, -1.7976931348623157e308, 5e-324, -5e-324, 2.2250738585072014e-308]
    + [-0.0, 0.1, 1e16, 1e-7]
) | st.floats(allow_nan=False, allow_infinity=False)
edge_text = (
    odd_text
    | st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1)
    | st.sampled_from(["x" * 20_000, "𝄞" * 5_000, "\x00" * 10, "\U0010ffff", "\ufffe"])
)
edge_scalars = st.none() | st.booleans() | edge_integers | edge_floats | edge_text
edge_values = json_trees(edge_scalars, edge_text, 4, 12)


@st.composite
def deepest(draw: st.DrawFn) -> Any:
    """A value nesting exactly as deeply as a payload may (or a little less)."""
    value: Any = draw(edge_scalars)
    for _ in range(MAX_DEPTH - draw(st.integers(0, 3))):
        value = [value] if draw(st.booleans()) else {draw(odd_text): value}
    return value


@st.composite
def edge_instants(draw: st.DrawFn) -> str:
    """created_at at (or near) either end of its range, or anywhere, at any offset; sometimes
    with nanoseconds, whose last three digits are dropped."""
    moment = draw(
        st.sampled_from([EARLIEST, LATEST])
        | st.datetimes(
            min_value=EARLIEST.replace(tzinfo=None), max_value=LATEST.replace(tzinfo=None)
        ).map(lambda m: m.replace(tzinfo=UTC))
    )
    text = moment.astimezone(draw(offsets)).isoformat(timespec="microseconds")
    if draw(st.booleans()):
        text = text[:26] + draw(st.sampled_from(["000", "999", "123"])) + text[26:]
    return text.replace("+00:00", draw(st.sampled_from(["Z", "+00:00", "-00:00"])))


edge_names = non_empty_text | st.sampled_from(["s" * 20_000, "𝄞", "\u202e\ufeff"])
_fresh = itertools.count(5_000_000_000)


@st.composite
def edge_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """An envelope whose every field sits at an edge of its range (or anywhere inside it)."""
    # One event per key (no duplicates, no 409s): an edge execution id gets an event id never
    # used before, an execution id never used before gets an edge event id.
    if draw(st.booleans()):
        execution_id = draw(st.sampled_from([1, _64 - 1, _64 // 2]))
        event_id = next(_fresh)
    else:
        execution_id = next(_fresh)
        event_id = draw(st.sampled_from([0, 1, _64 - 1]))
    body: dict[str, Any] = {
        "execution_id": draw(st.sampled_from([execution_id, str(execution_id)])),
        "event_id": draw(st.sampled_from([event_id, str(event_id)])),
        "event_type": draw(edge_names),
        "step": draw(edge_names),
        "payload": draw(edge_values | deepest()),
        "created_at": draw(edge_instants()),
    }
    optional = {
        "meta": st.dictionaries(edge_text, edge_values | deepest(), max_size=2).filter(
            lambda m: not any(_depth(v) >= MAX_DEPTH for v in m.values())
        ),
        "worker_id": edge_names,
        "result_uri": edge_names,
        "event_ids": st.lists(st.sampled_from([0, _64 - 1, "0", str(_64 - 1)]), max_size=3),
        "status": st.from_regex(r"[A-Za-z][A-Za-z_]{31}", fullmatch=True),
    }
    for name in draw(st.sets(st.sampled_from(sorted(optional)))):
        body[name] = draw(optional[name])
    return body


def _depth(value: Any) -> int:
    depth = 0
    while type(value) in (list, dict):
        value = next(iter(value.values() if type(value) is dict else value), None)
        depth += 1
    return depth


@pytest.mark.filterwarnings("ignore:Generating overly large repr")  # long edge values
@EDGES
@given(body=edge_bodies())
async def test_envelopes_at_the_edges_read_back_equal_on_every_read_path(client, dsn, body):
    """Each edge envelope is accepted, and then by id, its execution's page (both orders), the
    feed, both streams from just before it, an export, the execution's summary and the
    executions list all answer 200 and agree with what was sent."""
    reply = await client.post("/api/events", data=_encode(body, False), headers=JSON_HEADERS)
    assert reply.status == 200, await reply.text()
    event_id = (await reply.json())["event_id"]
    reads = await every_read(client, dsn, event_id, str(body["execution_id"]))
    assert_reads_agree(reads)
    assert_reads_back(body, reads["by id"])
