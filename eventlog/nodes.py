"""The node id this instance mints ids under: claimed in the database, renewed while it runs.

Safety rests on three rules. (1) A claim is a lease in the database: nobody else takes the node
id until it has gone ``lease`` seconds without renewal. (2) The holder stops minting, by its own
monotonic clock, ``lease`` seconds after the start of its last successful renewal, which is no
later than the expiry the database recorded. (3) Every renewal records a ceiling: this holder's
wall clock plus the lease, above every id it may mint before the lease runs out; the next holder
of the node id mints only ids later than that ceiling (waiting, if its clock is behind). So a
paused or crashed holder and its successor never mint the same id, whatever the clock skew
between their hosts: the ceiling is written in the old holder's own clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from .ids import EPOCH_MS, TIMESTAMP_SHIFT, SnowflakeGenerator, wall_clock_ms
from .problems import DatabaseUnavailable
from .storage.base import (
    EventStore,
    NodeClaimLost,
    NodeHolder,
    NodeIdUnavailable,
    StoreError,
)

log = logging.getLogger("eventlog.nodes")


def _ms(snowflake: int) -> int:
    """The Unix ms a snowflake id carries."""
    return (snowflake >> TIMESTAMP_SHIFT) + EPOCH_MS


class NodeIds:
    """Mints snowflake ids under a node id claimed in the store; a stand-in for
    SnowflakeGenerator (``next_id``, ``next_ids``, ``node_id``) that refuses to mint, with a
    503, while it holds no live claim.

    ``wanted`` None picks the lowest free node id. When a renewal finds the claim taken
    (this process was paused past its lease), an automatic id is replaced by a fresh claim; a
    configured one is claimed again until its new holder lets it go, writes failing meanwhile.
    """

    def __init__(
        self,
        store: EventStore,
        wanted: int | None,
        *,
        lease: float = 30.0,
        holder: NodeHolder | None = None,
        wall_ms: Callable[[], int] = wall_clock_ms,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        # Two clocks, as in the module's rules: the wall clock (Unix ms) goes into ids and
        # ceilings; the monotonic one times the lease, which a wall clock set back must not
        # extend.
        self._wall_ms = wall_ms
        self._monotonic = monotonic
        self._store = store
        self._wanted = wanted
        self._lease = lease
        self._lease_ms = round(lease * 1000)
        self._renew_every = lease / 3
        self.holder = holder or NodeHolder.this_process()
        self._generator: SnowflakeGenerator | None = None
        self._deadline = 0.0  # monotonic() past which no id may be minted
        self._ceiling_ms = 0  # no id later than this (Unix ms) may be minted
        self._ceiling_id = 0  # the least id past the ceiling
        self._last_id = 0  # the latest id minted under the current claim
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._unclaimed_said = False  # the "no node id" error is logged once per episode

    @property
    def node_id(self) -> int | None:
        """The node id held now (None while none is)."""
        return None if self._generator is None else self._generator.node_id

    def next_id(self) -> int:
        """The next id; DatabaseUnavailable (503) while no live claim is held."""
        new = self._usable().next_id()
        self._last_id = new
        if new >= self._ceiling_id:
            self._past_ceiling()
        return new

    def next_ids(self, n: int) -> list[int]:
        """``n`` strictly increasing ids, or DatabaseUnavailable as for next_id."""
        new = self._usable().next_ids(n)
        if new:
            self._last_id = new[-1]
            if new[-1] >= self._ceiling_id:
                self._past_ceiling()
        return new

    @property
    def live(self) -> bool:
        """Whether a live claim is held, so ids can be minted."""
        return self._generator is not None and self._monotonic() < self._deadline

    def _usable(self) -> SnowflakeGenerator:
        generator = self._generator
        if generator is None or self._monotonic() >= self._deadline:
            self._wake.set()
            raise DatabaseUnavailable(
                "this instance holds no live claim on a node id, so it cannot mint ids",
                headers={"Retry-After": "1"},
            )
        return generator

    def _past_ceiling(self) -> None:
        # The wall clock jumped ahead since the last renewal: the next holder's floor would not
        # cover this id, so it is dropped. The renewal this wakes raises the ceiling.
        self._wake.set()
        raise DatabaseUnavailable(
            "the clock moved past this instance's id ceiling; renewing its node id claim",
            headers={"Retry-After": "1"},
        )

    async def claim(self) -> int:
        """Claim a node id and start renewing it; NodeIdUnavailable (naming the holder) when
        the configured one is held by a live instance. Returns the node id."""
        await self._claim()
        assert self._generator is not None
        if self._task is None:
            self._task = asyncio.create_task(self._renew_forever(), name="eventlog-node-claim")
        return self._generator.node_id

    async def _claim(self) -> None:
        started = self._monotonic()
        claim = await self._store.claim_node(
            self.holder, self._wanted, self._lease, self._wall_ms()
        )
        give_up = started + self._renew_every  # the first renewal is due by then
        while True:
            generator = SnowflakeGenerator(claim.node_id, self._wall_ms)
            first = generator.next_id()
            behind_ms = claim.floor_ms + 1 - _ms(first)
            if behind_ms <= 0:
                break
            # The previous holder's clock ran ahead of ours: wait until ours passes the ids it
            # may have minted, unless that would take longer than a third of a lease.
            if self._monotonic() + behind_ms / 1000 > give_up:
                await self._store.release_node(self.holder, claim.node_id, claim.floor_ms)
                raise NodeIdUnavailable(
                    f"ids under node id {claim.node_id} were minted up to {behind_ms} ms ahead "
                    "of this host's clock: fix the clock, or configure another node_id"
                )
            log.warning(
                "node id %d: waiting %d ms for this host's clock to pass the previous holder's ids",
                claim.node_id,
                behind_ms,
            )
            await asyncio.sleep(behind_ms / 1000)
        # The first id past the floor is thrown away: it keeps every later one past the floor
        # (a generator never goes back), even if the wall clock steps back from now on.
        self._last_id = first
        self._set_ceiling(claim.ceiling_ms)
        self._deadline = started + self._lease
        self._generator = generator
        log.info("claimed node id %d (%s)", claim.node_id, self.holder)

    async def _renew_forever(self) -> None:
        delay = self._renew_every
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
            try:
                renewed = await self._renew()
            except Exception:  # the task must outlive any failure, or minting stops for good
                log.exception("renewing the node id claim failed unexpectedly")
                renewed = False
            delay = self._renew_every if renewed else min(1.0, self._renew_every)

    async def _renew(self) -> bool:
        """One renewal (or a new claim when none is held); whether a live claim is held."""
        if self._generator is None:
            try:
                async with asyncio.timeout(self._renew_every):
                    await self._claim()
            except (StoreError, NodeIdUnavailable, TimeoutError) as e:
                # Said once, not once a second for as long as it lasts.
                if not self._unclaimed_said:
                    log.error("no node id, writes fail until one is claimed: %s", e)
                    self._unclaimed_said = True
                return False
            self._unclaimed_said = False
            return True
        node_id = self._generator.node_id
        started = self._monotonic()
        ceiling = max(self._wall_ms(), _ms(self._last_id)) + self._lease_ms
        try:
            async with asyncio.timeout(self._renew_every):
                await self._store.renew_node(self.holder, node_id, self._lease, ceiling)
        except NodeClaimLost as e:
            self._generator = None
            log.error(
                "LOST node id %d: %s. No id was minted under it after this instance's lease "
                "ran out; %s",
                node_id,
                e,
                "claiming another node id"
                if self._wanted is None
                else "writes fail until the configured node id is free again",
            )
            self._wake.set()  # claim again at once
            return False
        except (StoreError, TimeoutError) as e:
            left = self._deadline - self._monotonic()
            log.warning(
                "renewing the claim on node id %d failed (%s); minting stops in %.1f s unless "
                "a renewal succeeds",
                node_id,
                e or type(e).__name__,
                max(left, 0.0),
            )
            return False
        self._deadline = started + self._lease
        self._set_ceiling(max(self._ceiling_ms, ceiling))
        return True

    def _set_ceiling(self, ceiling_ms: int) -> None:
        self._ceiling_ms = ceiling_ms
        self._ceiling_id = (ceiling_ms + 1 - EPOCH_MS) << TIMESTAMP_SHIFT

    async def release(self) -> None:
        """Stop renewing and free the node id for the next instance; never raises."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        generator, self._generator = self._generator, None
        if generator is None:
            return
        try:
            await self._store.release_node(self.holder, generator.node_id, _ms(self._last_id))
        except StoreError as e:
            log.warning(
                "could not release node id %d (%s); it is free once its lease runs out",
                generator.node_id,
                e,
            )
        else:
            log.info("released node id %d", generator.node_id)
