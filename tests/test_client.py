"""EventLogClient against real servers on both backends, with a TCP relay that loses replies
and cuts connections, and a front that answers 503 before passing requests on."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web

from eventlog.client import (
    ConflictError,
    EventLogClient,
    EventLogError,
    ExpiredError,
    Receipt,
    UnavailableError,
)
from eventlog.codec import structure_envelope
from eventlog.config import Settings
from eventlog.ids import decode
from eventlog.retention import purge
from eventlog.typedefs import EVENT_LOG
from eventlog.web import create_app

from .api.helpers import CONTRACT_BODIES, assert_canonical, assert_reads_back

# --- harness ------------------------------------------------------------------------------

_REQUEST = re.compile(rb"(GET|POST) (\S+) HTTP/1\.1\r\n((?:[^\r\n]+\r\n)*)\r\n")


@attrs.frozen
class Request:
    """One HTTP request as the relay saw it on the wire."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Relay:
    """A TCP relay in front of a server that can lose replies, refuse and cut connections."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.lose_replies = 0  # this many connections pass the request on but lose the reply
        self.refuse = False  # hang up on new connections at once
        self.connections = 0
        self.lost = 0
        self.sent: list[bytearray] = []  # what the client sent, per connection
        self.replied = bytearray()  # what reached the client, all connections
        self._open: set[tuple[asyncio.Transport, asyncio.Transport]] = set()
        self.url = ""

    async def start(self) -> None:
        """Listen on a free port."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        """Cut every connection and stop listening."""
        self.cut()
        self._server.close()
        await self._server.wait_closed()

    def cut(self) -> None:
        """Drop every open connection, both ways, as a network failure would."""
        for pair in list(self._open):
            for transport in pair:
                transport.abort()

    def requests(self) -> list[Request]:
        """Every request seen, in order."""
        found = []
        for data in self.sent:
            at = 0
            while m := _REQUEST.match(data, at):
                headers = {}
                for line in m.group(3).decode().splitlines():
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                end = m.end() + int(headers.get("content-length", "0"))
                found.append(
                    Request(m.group(1).decode(), m.group(2).decode(), headers, data[m.end() : end])
                )
                at = end
        return found

    def count(self, method: str, path: str) -> int:
        """Requests seen for this method and path (query string ignored)."""
        return sum(
            1 for r in self.requests() if r.method == method and r.path.split("?")[0] == path
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.refuse:
            writer.transport.abort()
            return
        lose = self.lose_replies > 0
        self.lose_replies -= lose
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        sent = bytearray()
        self.sent.append(sent)
        pair = (writer.transport, up_writer.transport)
        self._open.add(pair)

        async def forward_requests() -> None:
            while data := await reader.read(65536):
                sent.extend(data)
                up_writer.write(data)
                await up_writer.drain()

        async def forward_replies() -> None:
            while data := await up_reader.read(65536):
                if lose:
                    # The server has answered, so the request is done: the client never knows.
                    self.lost += 1
                    return
                self.replied.extend(data)
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.create_task(forward_requests()), asyncio.create_task(forward_replies())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for transport in pair:
                transport.abort()
            self._open.discard(pair)


class Front:
    """An HTTP front that answers 503 with Retry-After a few times, then passes requests on;
    or, given ``gateway``, answers those statuses first with a proxy's HTML page, as nginx
    does when the service behind it is down (502) or slow (504)."""

    def __init__(
        self,
        upstream: str,
        *,
        unavailable: int = 0,
        retry_after: str = "1",
        gateway: tuple[int, ...] = (),
    ) -> None:
        self.upstream = upstream
        self.unavailable = unavailable
        self.retry_after = retry_after
        self.gateway = list(gateway)
        self.arrivals: list[float] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{path:.*}", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        self.arrivals.append(time.monotonic())
        body = await request.read()
        if self.gateway:
            status = self.gateway.pop(0)
            return web.Response(
                text=f"<html><body><h1>{status} Gateway</h1></body></html>",
                status=status,
                content_type="text/html",
            )
        if len(self.arrivals) <= self.unavailable:
            problem = {
                "type": "urn:eventlog:problem:overloaded",
                "title": "The service is overloaded",
                "status": 503,
                "detail": "try later",
                "code": "overloaded",
            }
            return web.json_response(
                problem,
                status=503,
                headers={"Retry-After": self.retry_after},
                content_type="application/problem+json",
            )
        async with aiohttp.ClientSession() as session:
            async with session.request(
                request.method,
                self.upstream + request.path_qs,
                data=body,
                headers={"Content-Type": "application/json"},
            ) as reply:
                return web.Response(
                    body=await reply.read(), status=reply.status, content_type=reply.content_type
                )


@pytest.fixture
def serve(aiohttp_server, settings: Settings) -> Callable[..., Any]:  # type: ignore[no-untyped-def]
    """Start the service on the test's store with some settings changed; returns the server."""

    async def start(**changes: Any) -> Any:
        return await aiohttp_server(create_app(attrs.evolve(settings, **changes)))

    return start


@pytest.fixture
async def server(serve):  # type: ignore[no-untyped-def]
    """The service, with heartbeats every 50 ms so the streams carry comments to skip."""
    return await serve(stream_heartbeat=0.05)


@pytest.fixture
async def relay(server) -> Any:  # type: ignore[no-untyped-def]
    """A relay in front of the service."""
    relay = Relay(server.port)
    await relay.start()
    yield relay
    await relay.close()


def url(server: Any) -> str:
    """The base URL of a test server."""
    return str(server.make_url("")).rstrip("/")


def fast(base_url: str, **options: Any) -> EventLogClient:
    """A client whose retries wait milliseconds, not seconds."""
    return EventLogClient(base_url, **{"backoff": 0.01, "max_backoff": 0.05, **options})


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``predicate()`` holds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def stored(client: EventLogClient, execution_id: int) -> list[dict[str, Any]]:
    """Every stored event of one execution."""
    return [e async for e in client.events(execution_id)]


def body(n: int, execution_id: int = 7, **extra: Any) -> dict[str, Any]:
    """A small legacy-dialect envelope."""
    return {"execution_id": execution_id, "name": "call.done", "step": f"s{n}", **extra}


# --- emit ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", sorted(CONTRACT_BODIES))
async def test_emit_in_each_dialect_round_trips(server, dialect):
    """Each producer dialect is stored as sent; an id is minted under the client's node id
    only when the envelope has none, and the caller's dict is left unchanged."""
    sent = CONTRACT_BODIES[dialect]
    unchanged = copy.deepcopy(sent)
    async with EventLogClient(url(server), node_id=77) as client:
        receipt = await client.emit(sent)
        event = await client.get(receipt.event_id, execution_id=int(sent["execution_id"]))
    assert sent == unchanged
    assert receipt.duplicate is False
    if "event_id" in sent:
        assert receipt.event_id == int(sent["event_id"])
    else:
        assert decode(receipt.event_id).node_id == 77
    assert event["event_id"] == str(receipt.event_id)
    assert_canonical(event)
    assert_reads_back(sent, event)


async def test_receipts_carry_the_seq_that_min_seq_reads_at(server):
    """emit and emit_batch return the seq their write reached; get and events take it as
    min_seq and find the write."""
    async with EventLogClient(url(server)) as client:
        one = await client.emit({"execution_id": "8", "event_type": "step.enter", "step": "a"})
        batch = await client.emit_batch(
            [{"execution_id": "8", "event_type": "step.exit", "step": "a"}] * 2
        )
        event = await client.get(one.event_id, min_seq=one.seq)
        events = [e async for e in client.events(8, min_seq=batch.seq)]
    assert one.seq is not None and batch.seq is not None
    assert event["seq"] == str(one.seq)
    assert [int(e["seq"]) for e in events] == [one.seq, batch.seq - 1, batch.seq]


async def test_emit_takes_an_envelope_object(server):
    """The package's Envelope class is sent with the fields it holds, timestamp included."""
    raw = {
        "execution_id": "5",
        "name": "step.exit",
        "node_name": "a",
        "created_at": "2026-05-31T10:00:00+02:00",
    }
    envelope = structure_envelope(raw)
    async with EventLogClient(url(server)) as client:
        receipt = await client.emit(envelope)
        event = await client.get(receipt.event_id)
    assert envelope.event_id is None  # the client minted on a copy
    assert_reads_back(raw, event)


async def test_emit_again_under_the_minted_id_is_stored_once_and_reported_duplicate(server):
    """Sending the same event with the id the first call minted stores nothing new and says
    duplicate; a second call without an id is a new event with a new id."""
    async with EventLogClient(url(server)) as client:
        first = await client.emit(body(1))
        again = await client.emit({**body(1), "event_id": first.event_id})
        other = await client.emit(body(1))
        events = await stored(client, 7)
    assert again == Receipt(first.event_id, True, first.seq)
    assert other.event_id > first.event_id and not other.duplicate
    assert [e["event_id"] for e in events] == [str(first.event_id), str(other.event_id)]


async def test_a_reply_lost_in_flight_is_retried_and_the_event_stored_once(server, relay):
    """The relay passes the request on but drops the connection before the reply: the client
    sends it again with the same minted id, and the server stores it once."""
    relay.lose_replies = 1
    async with fast(relay.url) as client:
        receipt = await client.emit(body(1))
        events = await stored(client, 7)
    posts = [r for r in relay.requests() if r.method == "POST"]
    assert relay.lost == 1
    assert len(posts) == 2 and posts[0].body == posts[1].body
    assert receipt.duplicate is True  # the first attempt had stored it
    assert [e["event_id"] for e in events] == [str(receipt.event_id)]


async def test_503_retry_after_is_honoured_before_each_retry(server, aiohttp_server):
    """Two 503s with Retry-After: 1, then the real service: each retry waits at least the
    second asked for (the client's own backoff is 10 ms), and the event is stored once."""
    front = Front(url(server), unavailable=2, retry_after="1")
    front_server = await aiohttp_server(front.app)
    async with fast(url(front_server)) as client:
        receipt = await client.emit(body(1))
        events = await stored(client, 7)
    gaps = [b - a for a, b in zip(front.arrivals, front.arrivals[1:])]
    assert len(gaps) == 2 + 1  # two refused, one passed on, one read
    assert all(1.0 <= gap < 1.5 for gap in gaps[:2]), gaps
    assert receipt.duplicate is False
    assert [e["event_id"] for e in events] == [str(receipt.event_id)]


async def test_502_and_504_from_a_proxy_are_retried_like_503(server, aiohttp_server):
    """A proxy answers 502, 504, 502 with HTML pages, then passes the request on: emit
    succeeds and the event is stored once; so does a read."""
    front = Front(url(server), gateway=(502, 504, 502))
    front_server = await aiohttp_server(front.app)
    async with fast(url(front_server)) as client:
        receipt = await client.emit(body(1))
        front.gateway = [504, 502]
        event = await client.get(receipt.event_id)
    assert len(front.arrivals) == 4 + 3
    assert receipt.duplicate is False
    assert event["event_id"] == str(receipt.event_id)


async def test_a_proxy_that_keeps_answering_502_raises_unavailable_after_max_attempts(
    server, aiohttp_server
):
    """Retries of 502 are bounded as for 503: UnavailableError with status 502 at the end."""
    front = Front(url(server), gateway=(502,) * 10)
    front_server = await aiohttp_server(front.app)
    async with fast(url(front_server), max_attempts=3) as client:
        with pytest.raises(UnavailableError) as caught:
            await client.emit(body(1))
    assert len(front.arrivals) == 3
    assert caught.value.status == 502


async def test_the_services_own_502_is_raised_at_once_not_retried(aiohttp_server):
    """A 502 carrying eventlog's own problem (unreadable_row: a stored row it cannot render)
    will not change on a retry: it raises EventLogError after one request."""
    arrivals = []

    async def unreadable(request: web.Request) -> web.Response:
        arrivals.append(request.path)
        problem = {
            "type": "urn:eventlog:problem:unreadable_row",
            "title": "A stored row cannot be read",
            "status": 502,
            "detail": "seq 7 cannot be rendered",
            "code": "unreadable_row",
        }
        return web.json_response(problem, status=502, content_type="application/problem+json")

    app = web.Application()
    app.router.add_get("/api/events/{event_id}", unreadable)
    stub = await aiohttp_server(app)
    async with fast(url(stub)) as client:
        with pytest.raises(EventLogError) as caught:
            await client.get(1)
    assert not isinstance(caught.value, UnavailableError)
    assert (caught.value.status, caught.value.code) == (502, "unreadable_row")
    assert arrivals == ["/api/events/1"]


async def test_a_retry_after_past_the_deadline_ends_the_call_at_once(server, aiohttp_server):
    """A Retry-After longer than what is left of the deadline raises UnavailableError with the
    503's problem now, rather than sleeping past the deadline."""
    front = Front(url(server), unavailable=5, retry_after="30")
    front_server = await aiohttp_server(front.app)
    started = time.monotonic()
    async with fast(url(front_server), deadline=5) as client:
        with pytest.raises(UnavailableError) as caught:
            await client.emit(body(1))
    assert time.monotonic() - started < 1.0
    assert len(front.arrivals) == 1
    assert (caught.value.status, caught.value.code) == (503, "overloaded")


async def test_an_invalid_envelope_raises_the_problem_and_is_not_retried(server, relay):
    """A 422 raises EventLogError with the problem's code, document and field errors (at the
    names sent), after exactly one request."""
    async with fast(relay.url) as client:
        with pytest.raises(EventLogError) as caught:
            await client.emit({"execution_id": "x", "name": "call.done"})
    error = caught.value
    assert type(error) is EventLogError
    assert (error.status, error.code) == (422, "invalid_envelope")
    assert error.problem["status"] == 422 and error.problem["code"] == "invalid_envelope"
    assert {e.path for e in error.errors} == {"$.execution_id", "$.step"}
    assert relay.count("POST", "/api/events") == 1


async def test_other_content_under_a_stored_key_raises_conflict_once(server, relay):
    """A 409 event_conflict is a ConflictError, not a success, and is not retried."""
    async with fast(relay.url) as client:
        await client.emit(body(1, event_id=42))
        with pytest.raises(ConflictError) as caught:
            await client.emit(body(2, event_id=42))
        events = await stored(client, 7)
    assert (caught.value.status, caught.value.code) == (409, "event_conflict")
    assert relay.count("POST", "/api/events") == 2
    assert [e["step"] for e in events] == ["s1"]


async def test_a_service_that_never_answers_is_tried_max_attempts_times(server, relay):
    """Every connection hung up at once: UnavailableError with code unreachable after exactly
    max_attempts connections."""
    relay.refuse = True
    async with fast(relay.url, max_attempts=4) as client:
        with pytest.raises(UnavailableError) as caught:
            await client.emit(body(1))
    assert (caught.value.status, caught.value.code) == (None, "unreachable")
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectionError)
    assert relay.connections == 4


async def test_emit_batch_retried_after_a_lost_reply_is_replayed_not_doubled(server, relay):
    """The batch's reply is lost: the retry carries the same Idempotency-Key and body, the
    server replays its first reply, and each event is stored once."""
    relay.lose_replies = 1
    items = [
        body(1),
        {**body(2), "event_id": "900"},
        {"execution_id": 7, "event_type": "step.enter", "node_name": "s3"},
    ]
    unchanged = copy.deepcopy(items)
    async with fast(relay.url) as client:
        receipt = await client.emit_batch(items)
        events = await stored(client, 7)
    posts = [r for r in relay.requests() if r.method == "POST"]
    assert items == unchanged
    assert len(posts) == 2 and posts[0].body == posts[1].body
    assert posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]
    assert receipt.replayed is True and receipt.duplicates == ()  # the first reply, replayed
    assert receipt.event_ids[1] == 900 and len(set(receipt.event_ids)) == 3
    assert [int(e["event_id"]) for e in events] == list(receipt.event_ids)


async def test_emit_batch_reports_items_already_stored(server):
    """Items stored before are listed in duplicates; a new call gets a new Idempotency-Key,
    so it is not a replay."""
    async with EventLogClient(url(server)) as client:
        first = await client.emit(body(1))
        receipt = await client.emit_batch([{**body(1), "event_id": first.event_id}, body(2)])
    assert receipt.duplicates == (0,) and receipt.replayed is False
    assert receipt.event_ids[0] == first.event_id


# --- events -------------------------------------------------------------------------------


async def test_events_pages_in_seq_order_with_no_repeats_and_filters(server, relay):
    """25 events read 10 a page take three requests and come back each once, in seq order;
    execution, event type, step and after narrow the reading."""
    async with EventLogClient(url(server)) as writer:
        receipts = await writer.emit_batch(
            [
                body(n % 3, execution_id=1 + n % 2, name="call.done" if n % 4 else "step.enter")
                for n in range(25)
            ]
        )
    async with fast(relay.url) as client:
        everything = [e async for e in client.events(limit=10)]
        assert relay.count("GET", "/api/events") == 3
        calls = [e async for e in client.events(limit=10, event_type="call.done")]
        one = [e async for e in client.events(2, limit=4)]
        one_step = [e async for e in client.events(2, step="s1")]
        rest = [e async for e in client.events(after=int(everything[9]["seq"]), limit=7)]
        with pytest.raises(TypeError):
            [e async for e in client.events(colour="red")]
    seqs = [int(e["seq"]) for e in everything]
    assert seqs == sorted(set(seqs)) and len(seqs) == 25
    assert [int(e["event_id"]) for e in everything] == list(receipts.event_ids)
    assert (
        calls == [e for e in everything if e["event_type"] == "call.done"] and 0 < len(calls) < 25
    )
    assert one == [e for e in everything if e["execution_id"] == "2"]
    assert relay.count("GET", "/api/executions/2/events") == 3  # 12 events, 4 a page
    assert one_step == [e for e in one if e["step"] == "s1"] and one_step
    assert rest == everything[10:]


# --- tail ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def following(client: EventLogClient, **options: Any) -> Any:
    """Run client.tail(**options) in a task; yields the list the events arrive in."""
    got: list[dict[str, Any]] = []

    async def follow() -> None:
        async with contextlib.aclosing(client.tail(**options)) as stream:
            async for event in stream:
                got.append(event)

    task = asyncio.create_task(follow())
    try:
        yield got
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def subscribers(server: Any) -> int:
    """Live stream subscribers on a test server."""
    return server.app[EVENT_LOG].hub.subscriber_count


async def test_tail_resumes_after_the_connection_drops_with_no_gap_and_no_repeat(server, relay):
    """The relay cuts the stream after three events; three more are written while it is down;
    the tail reconnects with Last-Event-ID and yields all six once, in order, and no heartbeat."""
    async with EventLogClient(url(server)) as writer, fast(relay.url) as client:
        ids = [(await writer.emit(body(n))).event_id for n in range(3)]
        async with following(client, after=0) as got:
            await until(lambda: len(got) == 3)
            relay.cut()
            ids += [(await writer.emit(body(n))).event_id for n in range(3, 6)]
            await until(lambda: len(got) == 6)
            await asyncio.sleep(0.3)  # time for a repeat, or a heartbeat taken for an event
    assert [int(e["event_id"]) for e in got] == ids
    seqs = [int(e["seq"]) for e in got]
    assert seqs == sorted(set(seqs))
    for event in got:
        assert_canonical(event)
    streams = [r for r in relay.requests() if r.path.startswith("/api/events/stream")]
    assert len(streams) >= 2
    assert streams[0].headers["last-event-id"] == "0"
    assert streams[1].headers["last-event-id"] == str(seqs[2])


async def test_tail_resumes_after_a_cutoff(serve):
    """With room for one waiting event, a batch of three cuts the subscriber off; the tail
    reconnects at once (its backoff is seconds) from the cutoff's seq and yields the three
    once. Started without after=, it yields none of the events written before."""
    server = await serve(stream_queue_events=1, stream_heartbeat=0.05)
    relay = Relay(server.port)
    await relay.start()
    try:
        slow = EventLogClient(relay.url, backoff=5.0)
        async with EventLogClient(url(server)) as writer, slow as client:
            await writer.emit_batch([body(0), body(1)])
            async with following(client) as got:
                await until(lambda: subscribers(server) == 1)
                receipt = await writer.emit_batch([body(n) for n in range(2, 5)])
                await until(lambda: len(got) == 3, timeout=2.0)
                await asyncio.sleep(0.3)
    finally:
        await relay.close()
    assert b"event: cutoff" in relay.replied
    assert [int(e["event_id"]) for e in got] == list(receipt.event_ids)
    streams = [r for r in relay.requests() if r.path.startswith("/api/events/stream")]
    assert [r.headers["last-event-id"] for r in streams[:2]] == ["2", "2"]


async def test_tail_from_now_loses_nothing_when_the_first_connection_drops(server, relay):
    """Started without after=, cut before any event arrives, kept away while an event is
    written: on reconnecting it still yields that event, since "now" was pinned to a seq."""
    async with EventLogClient(url(server)) as writer, fast(relay.url, max_backoff=0.2) as client:
        await writer.emit(body(0))
        async with following(client) as got:
            await until(lambda: subscribers(server) == 1)
            relay.refuse = True
            relay.cut()
            missed = await writer.emit(body(1))
            refused = relay.connections
            await until(lambda: relay.connections > refused)  # a reconnection was turned away
            relay.refuse = False
            await until(lambda: len(got) == 1)
    assert [int(e["event_id"]) for e in got] == [missed.event_id]


async def test_tail_starts_after_the_given_seq_and_filters(server):
    """after= skips what it names and everything before; execution_id and event_type narrow
    the stream; live events follow the stored ones."""
    async with EventLogClient(url(server)) as client:
        await client.emit_batch([body(n, execution_id=1 + n % 2) for n in range(6)])
        stored_seqs = [int(e["seq"]) async for e in client.events()]
        async with (
            following(client, after=stored_seqs[1]) as everything,
            following(client, after=0, execution_id=2) as two,
            following(client, after=0, event_type="step.enter") as entered,
        ):
            live = await client.emit({"execution_id": 2, "event_type": "step.enter", "step": "x"})
            await until(lambda: len(everything) == 5 and len(two) == 4 and len(entered) == 1)
            await asyncio.sleep(0.2)
    assert [int(e["seq"]) for e in everything[:4]] == stored_seqs[2:]
    assert everything[4]["event_id"] == str(live.event_id)
    assert {e["execution_id"] for e in two} == {"2"} and two[-1]["event_id"] == str(live.event_id)
    assert [e["event_id"] for e in entered] == [str(live.event_id)]


async def test_tail_with_a_bad_request_raises_at_once(server, relay):
    """A 400 (execution id 0) raises the problem after one request; an unknown filter is a
    TypeError before any request."""
    async with fast(relay.url) as client:
        with pytest.raises(EventLogError) as caught:
            async for _ in client.tail(after=0, execution_id=0):
                pass
        with pytest.raises(TypeError):
            async for _ in client.tail(after=0, colour="red"):
                pass
    assert (caught.value.status, caught.value.code) == (400, "invalid_parameter")
    assert [r.path.split("?")[0] for r in relay.requests()] == ["/api/executions/0/events/stream"]


async def test_tail_forever_waits_out_a_service_down_at_the_start(server, relay, caplog):
    """Unreachable for more than max_attempts tries before the first connection: with
    forever=True the tail keeps trying, then follows from the head it reads once connected;
    the log says once that the stream was lost and once that it is back."""
    caplog.set_level(logging.DEBUG, logger="eventlog.client")
    relay.refuse = True
    async with (
        EventLogClient(url(server)) as writer,
        fast(relay.url, max_attempts=2) as client,
        following(client, forever=True) as got,
    ):
        await until(lambda: relay.connections >= 5)
        relay.refuse = False
        await until(lambda: subscribers(server) == 1)
        receipt = await writer.emit(body(1))
        await until(lambda: len(got) == 1)
    assert got[0]["event_id"] == str(receipt.event_id)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([m for m in warnings if m.startswith("stream lost")]) == 1, warnings
    assert len([m for m in warnings if m.startswith("stream back")]) == 1, warnings
    assert "until it is back" in warnings[0]


async def test_tail_without_forever_still_gives_up_after_max_attempts(server, relay):
    """The library default is unchanged: max_attempts failed connections in a row raise."""
    relay.refuse = True
    async with fast(relay.url, max_attempts=3) as client, asyncio.timeout(10):
        with pytest.raises(UnavailableError):
            async for _ in client.tail():
                pass
    # aiohttp itself retries a GET once on a connection the peer closed at once.
    assert 3 <= relay.connections <= 6


async def test_tail_forever_with_max_wait_gives_up_after_that_long_unreachable(server, relay):
    """forever=True, max_wait=0.5: UnavailableError about half a second into the outage."""
    relay.refuse = True
    started = time.monotonic()
    async with fast(relay.url, max_backoff=0.1) as client:
        with pytest.raises(UnavailableError) as caught:
            async for _ in client.tail(after=0, forever=True, max_wait=0.5):
                pass
    assert 0.5 <= time.monotonic() - started < 3.0
    assert caught.value.code == "unreachable"


async def test_a_resume_point_that_retention_removed_raises_expired_or_is_skipped(server):
    """Resumed below the purge horizon, tail() and events() raise ExpiredError naming where the
    kept events start; tail(skip_expired=True) warns and goes on from the oldest held."""
    async with EventLogClient(url(server)) as client:
        await client.emit_batch([body(n) for n in range(3)])
        await asyncio.sleep(0.002)
        kept = await client.emit(body(3))
        stored_kept = [e async for e in client.events(after=3)]
        cut = datetime.fromisoformat(stored_kept[0]["ingested_at"].replace("Z", "+00:00"))
        assert (await purge(server.app[EVENT_LOG].store, cut)).removed == 3
        with pytest.raises(ExpiredError) as raised:
            async for _ in client.tail(after=1):
                pass
        assert raised.value.resume_after == 3 and raised.value.problem["oldest_seq"] == "4"
        with pytest.raises(ExpiredError) as raised:
            async for _ in client.events(after=0):
                pass
        assert raised.value.status == 410 and raised.value.resume_after == 3
        async with following(client, after=0, skip_expired=True) as got:
            await until(lambda: len(got) == 1)
    assert [e["event_id"] for e in got] == [str(kept.event_id)]


async def test_tail_from_now_on_a_log_that_retention_emptied_yields_new_events(server):
    """With every event removed, "now" (read from the summaries, none left) is below the
    horizon: the tail is not told of a gap it never asked about, and yields what comes next."""
    async with EventLogClient(url(server)) as client:
        await client.emit_batch([body(n) for n in range(3)])
        store = server.app[EVENT_LOG].store
        await purge(store, datetime.now(UTC) + timedelta(seconds=1))
        assert await client._head() == 0 < await store.purged_through()
        async with following(client) as got:
            await until(lambda: subscribers(server) == 1)
            new = await client.emit(body(3))
            await until(lambda: len(got) == 1)
    assert [e["event_id"] for e in got] == [str(new.event_id)]
