"""Tests for eventlog.ids: snowflake generation and decoding."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlog.ids import EPOCH_MS, MAX_ID, NODE_ID_MAX, DecodedId, SnowflakeGenerator, decode


def compose(offset_ms: int, node_id: int, sequence: int) -> int:
    """Build an id by hand from the documented bit layout."""
    return (offset_ms << 22) | (node_id << 12) | sequence


class ScriptedClock:
    """Fake clock returning scripted Unix-ms values, then repeating the last one.

    Fails loudly after `budget` reads so a generator that waits forever
    makes the test fail instead of hang.
    """

    def __init__(self, values: Iterable[int], budget: int = 100_000) -> None:
        self._values = list(values)
        self._budget = budget
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls > self._budget:
            raise AssertionError(f"clock read more than {self._budget} times")
        return self._values[min(self.calls, len(self._values)) - 1]


def frozen_then_advancing(start_ms: int, frozen_calls: int) -> Callable[[], int]:
    """Fake clock that reads start_ms for the first `frozen_calls` reads, then +1 per read."""
    calls = 0

    def clock() -> int:
        nonlocal calls
        calls += 1
        return start_ms + max(0, calls - frozen_calls)

    return clock


def assert_strictly_increasing(ids: list[int]) -> None:
    """Fail if any id is not greater than the one before it."""
    for earlier, later in zip(ids, ids[1:]):
        assert later > earlier


def test_ids_strictly_increase_when_clock_jumps_backwards() -> None:
    """A clock that steps back never makes ids repeat or decrease."""
    t = EPOCH_MS + 1_000
    clock = ScriptedClock([t, t + 1, t - 500, t - 500, t + 2, t - 10, t + 1, t + 2, t + 3])
    gen = SnowflakeGenerator(node_id=1, clock=clock)

    ids = [gen.next_id() for _ in range(9)]

    assert_strictly_increasing(ids)
    assert [decode(i).unix_ms - EPOCH_MS for i in ids] == [
        1_000,
        1_001,
        1_001,
        1_001,
        1_002,
        1_002,
        1_002,
        1_002,
        1_003,
    ]
    assert [decode(i).sequence for i in ids] == [0, 0, 1, 2, 0, 1, 2, 3, 0]


def test_exhausted_sequence_with_clock_behind_borrows_next_millisecond() -> None:
    """With the clock stuck behind, an exhausted sequence advances the logical ms instead of waiting."""
    t = EPOCH_MS + 5_000
    # One reading at t, then the clock sits 10 ms behind forever; waiting would hang.
    clock = ScriptedClock([t, t - 10], budget=20_000)
    gen = SnowflakeGenerator(node_id=2, clock=clock)

    ids = gen.next_ids(3 * 4096 + 1)

    assert_strictly_increasing(ids)
    decoded = [decode(i) for i in ids]
    assert decoded[4095].unix_ms == t and decoded[4095].sequence == 4095
    assert decoded[4096].unix_ms == t + 1 and decoded[4096].sequence == 0
    assert decoded[-1].unix_ms == t + 3 and decoded[-1].sequence == 0


def test_more_than_4096_ids_in_one_millisecond_move_to_next_millisecond() -> None:
    """The 4,097th id in a frozen millisecond waits for, and lands in, the next millisecond."""
    t = EPOCH_MS + 42_000
    # 4,097 reads hand out seq 0..4095 then hit exhaustion; a few more polls
    # while waiting, then the clock advances so the test cannot hang.
    clock = frozen_then_advancing(t, frozen_calls=4_100)
    gen = SnowflakeGenerator(node_id=3, clock=clock)

    ids = [gen.next_id() for _ in range(5_000)]

    assert_strictly_increasing(ids)
    decoded = [decode(i) for i in ids]
    assert all(d.unix_ms == t for d in decoded[:4096])
    assert [d.sequence for d in decoded[:4096]] == list(range(4096))
    assert decoded[4096].unix_ms > t
    assert decoded[4096].sequence == 0
    assert decoded[4096].timestamp > decoded[4095].timestamp


def test_ids_from_eight_threads_never_collide_and_increase_per_thread() -> None:
    """Eight threads sharing one generator get unique ids, increasing within each thread."""
    gen = SnowflakeGenerator(node_id=7)
    per_thread = 20_000
    n_threads = 8
    results: list[list[int]] = [[] for _ in range(n_threads)]
    start = threading.Barrier(n_threads)

    def worker(index: int) -> None:
        start.wait()
        out = results[index]
        for _ in range(per_thread):
            out.append(gen.next_id())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()

    all_ids = [i for ids in results for i in ids]
    assert len(all_ids) == n_threads * per_thread
    assert len(set(all_ids)) == len(all_ids)
    for ids in results:
        assert_strictly_increasing(ids)


def test_next_ids_returns_a_strictly_increasing_batch() -> None:
    """next_ids(n) returns n increasing ids that continue after earlier ids."""
    gen = SnowflakeGenerator(node_id=4, clock=ScriptedClock([EPOCH_MS + 10]))
    first = gen.next_id()

    batch = gen.next_ids(100)

    assert len(batch) == 100
    assert_strictly_increasing([first, *batch])
    assert gen.next_ids(0) == []


def test_next_ids_rejects_negative_count() -> None:
    """next_ids with a negative count raises ValueError."""
    with pytest.raises(ValueError):
        SnowflakeGenerator(node_id=0).next_ids(-1)


def test_hand_built_id_decodes_to_its_parts() -> None:
    """An id built by hand from the bit layout decodes to its timestamp, node and sequence."""
    when = datetime(2025, 3, 14, 15, 9, 26, 535_000, tzinfo=UTC)
    unix_ms = int(when.timestamp()) * 1000 + 535
    raw = compose(unix_ms - EPOCH_MS, node_id=513, sequence=4001)

    decoded = decode(raw)

    assert decoded == DecodedId(timestamp=when, unix_ms=unix_ms, node_id=513, sequence=4001)
    assert decoded.timestamp.tzinfo is not None
    assert decoded.timestamp.utcoffset().total_seconds() == 0


def test_decode_extremes_of_the_layout() -> None:
    """Zero decodes to the epoch and MAX_ID decodes to all-ones parts."""
    assert decode(0) == DecodedId(
        timestamp=datetime(2024, 1, 1, tzinfo=UTC), unix_ms=EPOCH_MS, node_id=0, sequence=0
    )
    top = decode(MAX_ID)
    assert (top.unix_ms - EPOCH_MS, top.node_id, top.sequence) == (2**41 - 1, 1023, 4095)


def test_generated_id_decodes_to_clock_time_and_node() -> None:
    """An id from a fixed clock on node 37 decodes to node 37 and that clock's time."""
    unix_ms = EPOCH_MS + 86_400_000 + 123  # 2024-01-02T00:00:00.123Z
    gen = SnowflakeGenerator(node_id=37, clock=lambda: unix_ms)

    decoded = decode(gen.next_id())

    assert decoded.node_id == 37
    assert decoded.sequence == 0
    assert decoded.unix_ms == unix_ms
    assert decoded.timestamp == datetime(2024, 1, 2, 0, 0, 0, 123_000, tzinfo=UTC)


def test_default_clock_ids_decode_to_now() -> None:
    """With the wall clock, a fresh id decodes to about the current time."""
    before = datetime.now(UTC)
    decoded = decode(SnowflakeGenerator(node_id=NODE_ID_MAX).next_id())
    after = datetime.now(UTC)

    assert decoded.node_id == NODE_ID_MAX
    # The id is truncated to the millisecond, so allow 1 ms below `before`.
    assert before.timestamp() - 0.001 <= decoded.timestamp.timestamp() <= after.timestamp()


@pytest.mark.parametrize("node_id", [-1, NODE_ID_MAX + 1])
def test_node_id_out_of_range_is_rejected(node_id: int) -> None:
    """Node ids outside 0..1023 raise ValueError."""
    with pytest.raises(ValueError):
        SnowflakeGenerator(node_id=node_id)


@pytest.mark.parametrize("node_id", [0, NODE_ID_MAX])
def test_node_id_bounds_are_accepted(node_id: int) -> None:
    """Node ids 0 and 1023 are valid."""
    assert SnowflakeGenerator(node_id=node_id).node_id == node_id


@pytest.mark.parametrize("raw", [-1, -(2**63), MAX_ID + 1, 2**64])
def test_decode_rejects_ids_outside_63_bits(raw: int) -> None:
    """Negative ids and ids above 2**63 - 1 raise ValueError."""
    with pytest.raises(ValueError):
        decode(raw)


def test_clock_before_epoch_is_rejected_until_an_id_exists() -> None:
    """Clock readings before 2024-01-01 raise while no id has been issued yet."""
    clock = ScriptedClock([EPOCH_MS - 1, EPOCH_MS - 60_000, EPOCH_MS + 5, EPOCH_MS - 1])
    gen = SnowflakeGenerator(node_id=0, clock=clock)

    for _ in range(2):
        with pytest.raises(ValueError):
            gen.next_id()
    first = gen.next_id()
    # Once an id exists, a pre-epoch reading is just a clock that went backwards.
    second = gen.next_id()

    assert second > first
    assert decode(second).unix_ms == EPOCH_MS + 5


@given(
    offset_ms=st.integers(min_value=0, max_value=2**41 - 1),
    node_id=st.integers(min_value=0, max_value=1023),
    sequence=st.integers(min_value=0, max_value=4095),
)
def test_composed_id_round_trips_through_decode(
    offset_ms: int, node_id: int, sequence: int
) -> None:
    """Any timestamp/node/sequence composed into an id decodes back to the same parts."""
    decoded = decode(compose(offset_ms, node_id, sequence))

    assert decoded.unix_ms == EPOCH_MS + offset_ms
    assert decoded.node_id == node_id
    assert decoded.sequence == sequence
    assert round(decoded.timestamp.timestamp() * 1000) == EPOCH_MS + offset_ms
