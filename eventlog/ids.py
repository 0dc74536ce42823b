"""64-bit snowflake ids: time-ordered, unique per node, safe to sort as integers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import attrs

__all__ = [
    "EPOCH_MS",
    "MAX_ID",
    "NODE_ID_MAX",
    "SEQUENCE_MAX",
    "TIMESTAMP_MAX",
    "DecodedId",
    "SnowflakeGenerator",
    "decode",
]

# Layout (top bit always 0, so ids are positive signed 64-bit integers):
#   bits 62-22  milliseconds since EPOCH_MS (41 bits)
#   bits 21-12  node id (10 bits)
#   bits 11-0   sequence within the millisecond (12 bits)
EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z in Unix milliseconds
_EPOCH_DT = datetime(2024, 1, 1, tzinfo=UTC)

TIMESTAMP_BITS = 41
NODE_BITS = 10
SEQUENCE_BITS = 12

NODE_SHIFT = SEQUENCE_BITS
TIMESTAMP_SHIFT = SEQUENCE_BITS + NODE_BITS

TIMESTAMP_MAX = (1 << TIMESTAMP_BITS) - 1
NODE_ID_MAX = (1 << NODE_BITS) - 1
SEQUENCE_MAX = (1 << SEQUENCE_BITS) - 1
MAX_ID = 2**63 - 1

# Sleep between clock polls while waiting out an exhausted millisecond.
_POLL_SLEEP_S = 0.0001


def wall_clock_ms() -> int:
    """Return the current wall-clock time in Unix milliseconds."""
    return time.time_ns() // 1_000_000


def _compose(offset_ms: int, node_id: int, sequence: int) -> int:
    """Pack already-validated parts into an id."""
    return (offset_ms << TIMESTAMP_SHIFT) | (node_id << NODE_SHIFT) | sequence


class SnowflakeGenerator:
    """Thread-safe generator of strictly increasing snowflake ids for one node."""

    __slots__ = ("_clock", "_last_ms", "_lock", "_node_id", "_sequence")

    def __init__(self, node_id: int, clock: Callable[[], int] = wall_clock_ms) -> None:
        if isinstance(node_id, bool) or not isinstance(node_id, int):
            raise TypeError(f"node_id must be an int, not {type(node_id).__name__}")
        if not 0 <= node_id <= NODE_ID_MAX:
            raise ValueError(f"node_id must be in 0..{NODE_ID_MAX}, got {node_id}")
        self._node_id = node_id
        self._clock = clock
        self._lock = threading.Lock()
        # Logical millisecond (offset from EPOCH_MS) of the last id issued; -1 = none yet.
        self._last_ms = -1
        self._sequence = 0

    @property
    def node_id(self) -> int:
        """The node id embedded in every id from this generator."""
        return self._node_id

    def next_id(self) -> int:
        """Return the next id, strictly greater than every id issued before."""
        with self._lock:
            return self._next_locked()

    def next_ids(self, n: int) -> list[int]:
        """Return `n` strictly increasing ids, taking the lock only once."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        with self._lock:
            return [self._next_locked() for _ in range(n)]

    def _read_clock(self) -> int:
        """Read the clock as milliseconds since EPOCH_MS."""
        return self._clock() - EPOCH_MS

    def _next_locked(self) -> int:
        """Issue one id; the caller holds the lock."""
        now = self._read_clock()
        if now < 0 and self._last_ms < 0:
            # Nothing issued yet, so there is no earlier millisecond to fall back on.
            raise ValueError(f"clock reads {now + EPOCH_MS} ms, before the id epoch {EPOCH_MS}")
        if now > self._last_ms:
            ms, seq = now, 0
        elif self._sequence < SEQUENCE_MAX:
            # Same millisecond, or the clock went backwards (NTP step, VM pause):
            # keep counting in the last millisecond used so ids never go back.
            ms, seq = self._last_ms, self._sequence + 1
        elif now == self._last_ms:
            ms, seq = self._wait_for_next_ms(), 0
        else:
            # Exhausted and the clock is behind: waiting could take as long as
            # the clock is wrong (possibly forever), so borrow the next
            # millisecond instead. The real clock will catch up eventually.
            ms, seq = self._last_ms + 1, 0
        if ms > TIMESTAMP_MAX:
            raise OverflowError("snowflake timestamp space exhausted (clock past year 2093)")
        self._last_ms = ms
        self._sequence = seq
        return _compose(ms, self._node_id, seq)

    def _wait_for_next_ms(self) -> int:
        """Poll the clock until it leaves the last millisecond; return the one to use."""
        while True:
            time.sleep(_POLL_SLEEP_S)
            now = self._read_clock()
            if now > self._last_ms:
                return now
            if now < self._last_ms:
                # The clock stepped back while we waited: same reasoning as in
                # _next_locked, do not wait on a clock that is behind.
                return self._last_ms + 1


@attrs.frozen
class DecodedId:
    """The parts of a snowflake id."""

    timestamp: datetime
    unix_ms: int
    node_id: int
    sequence: int


def decode(id: int) -> DecodedId:  # noqa: A002 - public name matches the id it decodes
    """Split a snowflake id into its timestamp, node id and sequence."""
    if isinstance(id, bool) or not isinstance(id, int):
        raise TypeError(f"id must be an int, not {type(id).__name__}")
    if not 0 <= id <= MAX_ID:
        raise ValueError(f"id must be in 0..{MAX_ID}, got {id}")
    offset_ms = id >> TIMESTAMP_SHIFT
    return DecodedId(
        # timedelta arithmetic is exact; float-based fromtimestamp can be off by 1 ms.
        timestamp=_EPOCH_DT + timedelta(milliseconds=offset_ms),
        unix_ms=EPOCH_MS + offset_ms,
        node_id=(id >> NODE_SHIFT) & NODE_ID_MAX,
        sequence=id & SEQUENCE_MAX,
    )
