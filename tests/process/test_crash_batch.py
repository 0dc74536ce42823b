"""Crash safety under mixed load: single events and batches, SIGKILL mid-run (CONTRACT §5, §6).

Six clients post concurrently to a real `eventlog serve` process: three post single events, three
post batches of 5-50 events (NoETL's batch object and the JSON array form, some with an
Idempotency-Key). Every event carries a client-chosen event_id, so a retry is idempotent. The
server is SIGKILLed while requests are in flight; a new process on the same store must hold every
acknowledged event exactly once, and retrying every request exactly as it was sent must complete
the log, each event still stored once.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import signal
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import attrs
import orjson
import pytest

from .conftest import stored_keys

pytestmark = pytest.mark.slow

SINGLE_CLIENTS = 3
SINGLES_PER_CLIENT = 60
BATCH_CLIENTS = 3
BATCHES_PER_CLIENT = 20
PLANNED = SINGLE_CLIENTS * SINGLES_PER_CLIENT + BATCH_CLIENTS * BATCHES_PER_CLIENT
KILL_AFTER = PLANNED * 6 // 10  # acknowledged requests before the SIGKILL
EXECUTIONS = (638758527854445253, 478775660589088776, 12345, 1)
PAGE = 97  # every execution spans several pages
LEAD = 0.1  # how far ahead of the slowest client (as a share of its plan) a client may run
RESEND_EVERY = 4  # re-send every 4th acknowledged request of each kind
RETRY_WORKERS = 6
TIMEOUT = aiohttp.ClientTimeout(total=20)
JSON = {"Content-Type": "application/json"}

Key = tuple[str, str]  # (execution_id, event_id) as the server returns them


@attrs.define
class Request:
    """One planned request, serialised once so that a retry sends the very same bytes."""

    number: int
    path: str
    body: bytes
    headers: dict[str, str]
    keys: list[Key]  # the events it carries, in item order
    form: str  # "single", "batch object" or "batch array"

    @property
    def is_batch(self) -> bool:
        return self.form != "single"

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("Idempotency-Key")


@attrs.define
class Outcome:
    """What became of the requests of the run: replies when acknowledged, else why not."""

    acked: dict[int, dict[str, Any]] = attrs.Factory(dict)
    failed: dict[int, str] = attrs.Factory(dict)
    http_errors: dict[int, str] = attrs.Factory(dict)  # a status that is not 2xx


def _event(n: int, execution_id: int, *, in_object_batch: bool) -> dict[str, Any]:
    """Event number n in one of three producer shapes, with a client-chosen event_id."""
    event_id = 710000000000000000 + n
    shape = n % 3
    if shape == 0:  # Rust executor / worker
        body: dict[str, Any] = {
            "execution_id": execution_id,
            "event_type": "command.completed",
            "step": "fetch",
            "status": "COMPLETED",
            "context": {"n": n, "nested": [1, 2.5, None, True]},
            "event_id": str(event_id),
            "worker_id": "w-1",
            "meta": {"attempts": 1},
        }
    elif shape == 1:  # legacy Python worker, event_id as a JSON number
        body = {
            "execution_id": str(execution_id),
            "name": "call.done",
            "step": "fetch",
            "payload": {"result": "ok", "n": n},
            "event_id": event_id,
        }
    else:  # minimal
        body = {
            "execution_id": str(execution_id),
            "event_type": "step.enter",
            "step": f"s-{n}",
            "event_id": str(event_id),
        }
    if in_object_batch:
        del body["execution_id"]  # inherited from the batch object
    return body


def _key(execution_id: int, n: int) -> Key:
    return (str(execution_id), str(710000000000000000 + n))


def _plan() -> list[list[Request]]:
    """Each client's requests; every event id is used once in the whole plan."""
    rng = random.Random(20260531)
    numbers, events = itertools.count(), itertools.count()
    clients: list[list[Request]] = []
    for _ in range(SINGLE_CLIENTS):
        requests = []
        for _ in range(SINGLES_PER_CLIENT):
            n, execution_id = next(events), rng.choice(EXECUTIONS)
            body = orjson.dumps(_event(n, execution_id, in_object_batch=False))
            keys = [_key(execution_id, n)]
            requests.append(Request(next(numbers), "/api/events", body, dict(JSON), keys, "single"))
        clients.append(requests)
    for k in range(BATCH_CLIENTS):  # the clients vary form and key out of step with each other
        requests = []
        for b in range(BATCHES_PER_CLIENT):
            number, size = next(numbers), rng.randint(5, 50)
            headers = dict(JSON)
            if (b + k) % 2 == 0:
                headers["Idempotency-Key"] = f"crash-batch-{number}"
            ns = [next(events) for _ in range(size)]
            if (b + 2 * k) % 4 < 2:  # NoETL's batch object: one execution, items inherit it
                execution_id = rng.choice(EXECUTIONS)
                data: Any = {
                    "execution_id": str(execution_id),
                    "worker_id": "w-batch",
                    "events": [_event(n, execution_id, in_object_batch=True) for n in ns],
                }
                keys, form = [_key(execution_id, n) for n in ns], "batch object"
            else:  # a JSON array spread over several executions
                executions = [rng.choice(EXECUTIONS) for _ in ns]
                data = [_event(n, x, in_object_batch=False) for n, x in zip(ns, executions)]
                keys, form = [_key(x, n) for n, x in zip(ns, executions)], "batch array"
            requests.append(
                Request(number, "/api/events/batch", orjson.dumps(data), headers, keys, form)
            )
        clients.append(requests)
    return clients


async def _send(session: aiohttp.ClientSession, url: str, request: Request) -> tuple[int, str]:
    async with session.post(url + request.path, data=request.body, headers=request.headers) as r:
        return r.status, await r.text()


class Load:
    """Runs the clients concurrently, none more than LEAD of its plan ahead of the slowest, and
    calls ``on_ack`` after each acknowledgement (so both kinds of request are under way mid-run)."""

    def __init__(self, clients: list[list[Request]], on_ack: Callable[[], None]) -> None:
        self.clients = clients
        self.outcome = Outcome()
        self.in_flight: set[int] = set()
        self.on_ack = on_ack
        self._done = [0] * len(clients)
        self._progress = asyncio.Condition()

    def _fraction(self, c: int) -> float:
        return self._done[c] / len(self.clients[c])

    def _may_send(self, c: int) -> bool:
        return self._fraction(c) <= min(map(self._fraction, range(len(self.clients)))) + LEAD

    async def run(self, session: aiohttp.ClientSession, url: str) -> Outcome:
        await asyncio.gather(*(self._client(session, url, c) for c in range(len(self.clients))))
        return self.outcome

    async def _client(self, session: aiohttp.ClientSession, url: str, c: int) -> None:
        for request in self.clients[c]:
            async with self._progress:
                await self._progress.wait_for(lambda: self._may_send(c))
            self.in_flight.add(request.number)
            try:
                status, text = await _send(session, url, request)
            except (aiohttp.ClientError, TimeoutError) as e:
                self.outcome.failed[request.number] = repr(e)
            else:
                if 200 <= status < 300:
                    self.outcome.acked[request.number] = orjson.loads(text)
                else:
                    self.outcome.failed[request.number] = f"{status}: {text}"
                    self.outcome.http_errors[request.number] = f"{status}: {text}"
            finally:
                self.in_flight.discard(request.number)
            if request.number in self.outcome.acked:
                self.on_ack()
            async with self._progress:
                self._done[c] += 1
                self._progress.notify_all()


async def _all_stored(session: aiohttp.ClientSession, url: str) -> Counter[Key]:
    """How many times each key is stored, over every execution of the plan."""
    pages = await asyncio.gather(*(stored_keys(session, url, str(x), PAGE) for x in EXECUTIONS))
    return Counter(key for keys in pages for key in keys)


def _check_first_reply(request: Request, reply: dict[str, Any]) -> None:
    """A first acknowledgement names the events sent, in order, none of them a duplicate."""
    assert reply["status"] == "ok", reply
    assert reply["duplicate"] is False, (request.form, reply)
    if request.is_batch:
        assert reply["event_ids"] == [event_id for _, event_id in request.keys], request.number
        assert reply["duplicates"] == [], (request.form, reply)
    else:
        assert reply["event_id"] == request.keys[0][1]


def _check_retry_reply(
    request: Request, reply: dict[str, Any], stored_before: bool, first: dict[str, Any] | None
) -> None:
    """A retry's reply agrees with whether the request's events were stored before it."""
    assert reply["status"] == "ok", reply
    if not request.is_batch:
        assert reply["event_id"] == request.keys[0][1]
        assert reply["duplicate"] is stored_before, (request.number, stored_before, reply)
        return
    assert reply["event_ids"] == [event_id for _, event_id in request.keys], request.number
    if request.idempotency_key is not None:
        assert reply["duplicate"] is stored_before, (request.number, stored_before, reply)
        if first is not None:  # the first reply, replayed
            assert reply == {**first, "duplicate": True}, (first, reply)
        elif not stored_before:
            assert reply["duplicates"] == [], reply
    else:
        assert reply["duplicate"] is False, reply
        expected = list(range(len(request.keys))) if stored_before else []
        assert reply["duplicates"] == expected, (request.number, stored_before, reply)


def _sample_of_each_kind(requests: dict[int, Request], acked: list[int]) -> list[int]:
    """Every RESEND_EVERY-th acknowledged request of each form, with and without a key."""
    kinds: dict[tuple[str, bool], list[int]] = {}
    for number in acked:
        request = requests[number]
        kinds.setdefault((request.form, request.idempotency_key is not None), []).append(number)
    assert set(kinds) == {
        ("single", False),
        ("batch object", False),
        ("batch object", True),
        ("batch array", False),
        ("batch array", True),
    }, f"some kind of request was never acknowledged: {sorted(kinds)}"
    return [number for numbers in kinds.values() for number in numbers[::RESEND_EVERY]]


async def _retry(
    session: aiohttp.ClientSession, url: str, requests: list[Request]
) -> dict[int, tuple[int, str]]:
    """Send each request again, exactly as before, from a few concurrent workers."""
    replies: dict[int, tuple[int, str]] = {}
    todo = iter(requests)

    async def worker() -> None:
        for request in todo:
            replies[request.number] = await _send(session, url, request)

    await asyncio.gather(*(worker() for _ in range(RETRY_WORKERS)))
    return replies


async def test_sigkill_during_concurrent_singles_and_batches_loses_no_acknowledged_event(
    dsn: str, start_server
) -> None:
    """SIGKILL amid singles and batches: acked events stored once; retrying everything completes it."""
    clients = _plan()
    requests = {r.number: r for client in clients for r in client}
    sent_keys = {key for r in requests.values() for key in r.keys}
    server = start_server(dsn, node_id=1)
    in_flight_at_kill: set[int] = set()

    def kill_mid_run() -> None:
        """SIGKILL once KILL_AFTER requests are acked and a single and a batch are in flight."""
        forms = {requests[n].is_batch for n in load.in_flight}
        if (
            not in_flight_at_kill
            and len(load.outcome.acked) >= KILL_AFTER
            and forms == {True, False}
        ):
            server.proc.send_signal(signal.SIGKILL)  # the clients keep posting into the crash
            in_flight_at_kill.update(load.in_flight)

    load = Load(clients, kill_mid_run)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        outcome = await load.run(session, server.url)
    server.kill()  # reap it
    assert server.proc.returncode == -signal.SIGKILL
    assert outcome.http_errors == {}, (
        f"error replies while the server was up: {outcome.http_errors}"
    )
    assert len(outcome.acked) >= KILL_AFTER
    assert in_flight_at_kill, "no single and batch were in flight together after KILL_AFTER acks"
    assert set(outcome.acked) | set(outcome.failed) == set(requests)
    for number, reply in outcome.acked.items():
        _check_first_reply(requests[number], reply)
    acked_keys = {key for n in outcome.acked for key in requests[n].keys}

    restarted = start_server(dsn, node_id=2)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        stored = await _all_stored(session, restarted.url)
        twice = {k: c for k, c in stored.items() if c > 1}
        assert twice == {}, f"events stored more than once after the crash: {twice}"
        assert acked_keys - set(stored) == set(), "an acknowledged event was lost"
        assert set(stored) - sent_keys == set(), "an event nobody sent was stored"
        stored_before = {}
        for number, request in requests.items():
            held = [key in stored for key in request.keys]
            assert all(held) or not any(held), f"batch {number} was stored in part: {held}"
            stored_before[number] = all(held)

        resent = _sample_of_each_kind(requests, sorted(outcome.acked))
        again = [requests[n] for n in sorted(outcome.failed)] + [requests[n] for n in resent]
        replies = await _retry(session, restarted.url, again)
        bad = {n: reply for n, reply in replies.items() if reply[0] != 200}
        assert bad == {}, f"retries were refused: {bad}"
        for number, (_, text) in replies.items():
            first = outcome.acked.get(number)
            _check_retry_reply(requests[number], orjson.loads(text), stored_before[number], first)

        stored = await _all_stored(session, restarted.url)
    twice = {k: c for k, c in stored.items() if c > 1}
    assert twice == {}, f"events stored more than once after the retries: {twice}"
    assert set(stored) == sent_keys
    for process in (server, restarted):
        assert "Traceback" not in process.log(), process.log()
