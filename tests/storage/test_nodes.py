"""Node id claims: the store's contract on every backend, and NodeIds, which mints under one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from eventlog.config import ConfigError, Settings, load_settings
from eventlog.ids import decode
from eventlog.log import EventLog
from eventlog.nodes import NodeIds
from eventlog.problems import DatabaseUnavailable
from eventlog.storage.base import (
    EventStore,
    NodeClaimLost,
    NodeHolder,
    NodeIdUnavailable,
)
from eventlog.storage.registry import open_store

LEASE = 30.0
SHORT = 0.4  # a lease the tests outlive on purpose


def holder(name: str) -> NodeHolder:
    """A holder with a recognisable host name and token."""
    return NodeHolder(f"host-{name}", 4000 + len(name), f"token-{name}")


def wall_ms() -> int:
    """This host's clock in Unix ms."""
    return time.time_ns() // 1_000_000


class Clocks:
    """A wall clock (Unix ms) and a monotonic clock (s) for NodeIds: the real ones, moved by
    hand as far as the test says."""

    def __init__(self) -> None:
        self.wall_offset_ms = 0
        self.monotonic_offset = 0.0

    def wall_ms(self) -> int:
        """The wall clock, offset."""
        return wall_ms() + self.wall_offset_ms

    def monotonic(self) -> float:
        """The monotonic clock, offset."""
        return time.monotonic() + self.monotonic_offset


def ms_of(event_id: int) -> int:
    """The Unix ms an id carries."""
    return decode(event_id).unix_ms


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[EventStore]:
    """An opened, migrated store."""
    async with open_store(dsn) as store:
        await store.migrate()
        yield store


@pytest.fixture
async def other(dsn: str, store: EventStore) -> AsyncIterator[EventStore]:
    """A second store on the same database (connections of their own, as another process has)."""
    async with open_store(dsn) as other:
        yield other


async def test_two_automatic_claimants_get_different_node_ids_lowest_first(store, other):
    """Auto claims from two connections take 0, then 1."""
    a = await store.claim_node(holder("a"), None, LEASE, wall_ms())
    b = await other.claim_node(holder("b"), None, LEASE, wall_ms())
    assert (a.node_id, b.node_id) == (0, 1)
    assert a.floor_ms == b.floor_ms == 0


async def test_concurrent_automatic_claims_never_share_a_node_id(dsn, store, other):
    """Twenty claims racing over two connections each end with a node id of their own."""
    claims = await asyncio.gather(
        *(
            (store if i % 2 else other).claim_node(holder(f"c{i}"), None, LEASE, wall_ms())
            for i in range(20)
        )
    )
    assert sorted(c.node_id for c in claims) == list(range(20))


async def test_claiming_a_node_id_held_by_a_live_instance_fails_naming_it(store, other):
    """An explicit claim of a held id raises NodeIdUnavailable with the holder's host and pid."""
    await store.claim_node(holder("a"), 7, LEASE, wall_ms())
    with pytest.raises(NodeIdUnavailable, match=r"node id 7 is held by host host-a pid 4001"):
        await other.claim_node(holder("b"), 7, LEASE, wall_ms())


async def test_an_automatic_claim_skips_ids_held_explicitly(store, other):
    """With 0 and 1 held, auto takes 2."""
    await store.claim_node(holder("a"), 0, LEASE, wall_ms())
    await store.claim_node(holder("b"), 1, LEASE, wall_ms())
    assert (await other.claim_node(holder("c"), None, LEASE, wall_ms())).node_id == 2


async def test_an_expired_claim_is_taken_over_above_the_old_holders_ceiling(store, other):
    """Once a lease runs out the id can be claimed; the newcomer's floor is the old ceiling,
    and the old holder's renewal then fails naming the newcomer."""
    old = await store.claim_node(holder("a"), 3, SHORT, wall_ms())
    await asyncio.sleep(SHORT + 0.1)
    new = await other.claim_node(holder("b"), 3, LEASE, wall_ms())
    assert new.node_id == 3
    assert new.floor_ms == old.ceiling_ms
    with pytest.raises(NodeClaimLost, match="host-b"):
        await store.renew_node(holder("a"), 3, LEASE, wall_ms())


async def test_release_frees_the_node_id_and_leaves_the_last_ms_as_floor(store, other):
    """After release the id is claimable at once; the next floor is what the holder reported."""
    await store.claim_node(holder("a"), 5, LEASE, wall_ms())
    last = wall_ms()
    await store.release_node(holder("a"), 5, last)
    taken = await other.claim_node(holder("b"), 5, LEASE, wall_ms())
    assert (taken.node_id, taken.floor_ms) == (5, last)
    assert (await other.claim_node(holder("c"), None, LEASE, wall_ms())).node_id == 0


async def test_release_by_a_former_holder_leaves_the_new_claim_alone(store, other):
    """A release from the holder whose claim was taken over changes nothing."""
    await store.claim_node(holder("a"), 2, SHORT, wall_ms())
    await asyncio.sleep(SHORT + 0.1)
    await other.claim_node(holder("b"), 2, LEASE, wall_ms())
    await store.release_node(holder("a"), 2, 0)
    with pytest.raises(NodeIdUnavailable, match="host-b"):
        await store.claim_node(holder("c"), 2, LEASE, wall_ms())


async def test_renewal_keeps_the_claim_past_its_first_lease(store, other):
    """Renewed every third of a lease, a claim is still held three leases later."""
    first = await store.claim_node(holder("a"), 4, SHORT, wall_ms())
    expires = first.expires_at
    for _ in range(9):
        await asyncio.sleep(SHORT / 3)
        renewed = await store.renew_node(holder("a"), 4, SHORT, wall_ms())
        assert renewed > expires
        expires = renewed
        with pytest.raises(NodeIdUnavailable):
            await other.claim_node(holder("b"), 4, LEASE, wall_ms())


async def test_a_late_renewal_succeeds_when_nobody_took_the_node_id(store):
    """Past its expiry, a claim nobody took over is renewed, not lost."""
    await store.claim_node(holder("a"), 6, SHORT, wall_ms())
    await asyncio.sleep(SHORT + 0.1)
    await store.renew_node(holder("a"), 6, LEASE, wall_ms())


async def test_renewing_a_released_claim_is_lost(store):
    """A released claim cannot be renewed."""
    await store.claim_node(holder("a"), 8, LEASE, wall_ms())
    await store.release_node(holder("a"), 8, wall_ms())
    with pytest.raises(NodeClaimLost, match="released"):
        await store.renew_node(holder("a"), 8, LEASE, wall_ms())


async def test_renewal_never_lowers_the_ceiling(store, other):
    """A renewal with a lower ceiling keeps the higher one for the next holder."""
    await store.claim_node(holder("a"), 9, SHORT, wall_ms())
    high = wall_ms() + 1_000
    await store.renew_node(holder("a"), 9, SHORT, high)
    await store.renew_node(holder("a"), 9, SHORT, high - 500)
    await asyncio.sleep(SHORT + 0.1)
    assert (await other.claim_node(holder("b"), 9, LEASE, wall_ms())).floor_ms == high


# --- NodeIds: minting under a claim ---------------------------------------------------------


async def test_event_logs_on_one_store_mint_under_different_node_ids(settings):
    """Two logs on one database claim 0 and 1 and mint ids carrying them; closing frees 0."""
    async with EventLog(settings) as first, EventLog(settings) as second:
        assert (first.node_id, second.node_id) == (0, 1)
        a = await first.append({"execution_id": 1, "event_type": "step.enter", "step": "s"})
        b = await second.append({"execution_id": 1, "event_type": "step.enter", "step": "s"})
        assert decode(a.event.event_id).node_id == 0
        assert decode(b.event.event_id).node_id == 1
    async with EventLog(settings) as again:
        assert again.node_id == 0


async def test_an_event_log_configured_with_a_held_node_id_does_not_start(dsn):
    """Start fails with NodeIdUnavailable naming this process while the first log holds the id."""
    import os

    async with EventLog(Settings(dsn=dsn, node_id=12)):
        with pytest.raises(NodeIdUnavailable, match=rf"node id 12 is held by .* pid {os.getpid()}"):
            await EventLog(Settings(dsn=dsn, node_id=12)).start()
    async with EventLog(Settings(dsn=dsn, node_id=12)) as log:
        assert log.node_id == 12


def claim_elsewhere(dsn: str, node_id: int | None, name: str) -> tuple[int, int]:
    """Claim from another thread's event loop, as another process would (the test's own loop
    may be blocked meanwhile); returns the node id and a first minted id. The claim stays."""

    async def run() -> tuple[int, int]:
        async with open_store(dsn) as store:
            ids = NodeIds(store, node_id, lease=LEASE, holder=holder(name))
            return await ids.claim(), ids.next_id()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


async def test_a_paused_holder_stops_minting_and_its_successor_mints_past_it(dsn, store):
    """A holder paused past its lease refuses to mint; another process takes the id and mints
    only later ids; the paused one, on waking, finds the claim lost and claims another id."""
    paused = NodeIds(store, None, lease=SHORT, holder=holder("a"))
    assert await paused.claim() == 0
    minted = [paused.next_id() for _ in range(100)]
    time.sleep(SHORT + 0.1)  # blocks the event loop, as a stopped process: no renewal runs
    with pytest.raises(DatabaseUnavailable):
        paused.next_id()
    taken, first = claim_elsewhere(dsn, 0, "b")
    try:
        assert (taken, decode(first).node_id) == (0, 0)
        assert ms_of(first) > ms_of(max(minted))
        async with asyncio.timeout(5):
            while paused.node_id in (None, 0):
                with pytest.raises(DatabaseUnavailable):
                    paused.next_id()
                await asyncio.sleep(0.02)
        assert paused.node_id == 1
        assert decode(paused.next_id()).node_id == 1
    finally:
        await paused.release()


async def test_a_configured_node_id_lost_is_not_replaced_by_another(dsn, store):
    """An explicit id taken over leaves the holder refusing to mint until it is free again."""
    paused = NodeIds(store, 20, lease=SHORT, holder=holder("a"))
    await paused.claim()
    try:
        time.sleep(SHORT + 0.1)
        assert claim_elsewhere(dsn, 20, "b")[0] == 20
        await asyncio.sleep(SHORT)  # the woken holder's renewal finds the claim lost
        assert paused.node_id is None
        with pytest.raises(DatabaseUnavailable):
            paused.next_id()
        await store.release_node(holder("b"), 20, wall_ms())
        async with asyncio.timeout(5):
            while paused.node_id is None:
                await asyncio.sleep(0.05)
        assert decode(paused.next_id()).node_id == 20
    finally:
        await paused.release()


async def test_a_successor_whose_clock_is_behind_waits_for_the_previous_holders_ids(store, other):
    """The previous holder's ceiling ahead of this clock: the claim waits until it passes."""
    await store.claim_node(holder("a"), 30, SHORT, wall_ms())
    ahead = wall_ms() + 600  # as if the holder's clock ran 600 ms ahead
    await store.renew_node(holder("a"), 30, SHORT, ahead)
    await asyncio.sleep(SHORT + 0.1)
    successor = NodeIds(other, 30, lease=LEASE, holder=holder("b"))
    try:
        await successor.claim()
        assert ms_of(successor.next_id()) > ahead
    finally:
        await successor.release()


async def test_a_clock_jump_past_the_ceiling_refuses_ids_until_renewed(store):
    """Ids past the recorded ceiling are refused; the renewal this triggers raises the ceiling."""
    clocks = Clocks()
    ids = NodeIds(store, None, lease=LEASE, holder=holder("a"), wall_ms=clocks.wall_ms)
    await ids.claim()
    try:
        jump = 10 * round(LEASE * 1000)
        clocks.wall_offset_ms = jump
        with pytest.raises(DatabaseUnavailable, match="ceiling"):
            ids.next_id()
        async with asyncio.timeout(5):
            while True:
                try:
                    minted = ids.next_id()
                    break
                except DatabaseUnavailable:
                    await asyncio.sleep(0.02)
        assert ms_of(minted) >= wall_ms() + jump - 1_000
    finally:
        await ids.release()


async def test_a_holder_stops_minting_at_its_lease_end_even_if_its_clock_stepped_back(store):
    """The lease is timed on the monotonic clock: a wall clock set back does not extend it."""
    clocks = Clocks()
    ids = NodeIds(
        store,
        None,
        lease=LEASE,
        holder=holder("a"),
        wall_ms=clocks.wall_ms,
        monotonic=clocks.monotonic,
    )
    await ids.claim()
    try:
        ids.next_id()
        clocks.wall_offset_ms = -60_000
        ids.next_id()  # the lease still runs: minting goes on, in the last millisecond used
        # The lease's time passes (no renewal is due for a third of it, in real time).
        clocks.monotonic_offset = LEASE + 0.1
        with pytest.raises(DatabaseUnavailable, match="no live claim"):
            ids.next_id()
    finally:
        await ids.release()


@pytest.mark.parametrize(
    ("file", "env", "expected"),
    [
        ("", {}, None),
        ('node_id = "auto"\n', {}, None),
        ("node_id = 7\n", {}, 7),
        ("node_id = 7\n", {"EVENTLOG_NODE_ID": "auto"}, None),
        ("", {"EVENTLOG_NODE_ID": "12"}, 12),
    ],
)
def test_node_id_setting_is_auto_by_default_or_a_number(tmp_path, file, env, expected):
    """node_id reads "auto" (None) or a number, from the file or the environment."""
    path = tmp_path / "eventlog.toml"
    path.write_text(file)
    assert load_settings(str(path), env=env).node_id == expected


@pytest.mark.parametrize("text", ['node_id = "seven"\n', "node_id = 1024\n", "node_id = true\n"])
def test_a_bad_node_id_setting_is_a_config_error_naming_it(tmp_path, text):
    """Anything but "auto" or 0..1023 stops the program with a message naming node_id."""
    path = tmp_path / "eventlog.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="node_id"):
        load_settings(str(path), env={})
