"""eventlog mounted inside another aiohttp application, driven through that application."""

from __future__ import annotations

import asyncio

from aiohttp import web

from eventlog.log import EventLog
from eventlog.web import create_app

HOST_KEY = web.AppKey("host_started", list)


def host_app(settings, **kwargs) -> web.Application:  # type: ignore[no-untyped-def]
    """A host application with a route and a startup hook of its own, eventlog under /events."""
    app = web.Application()
    app[HOST_KEY] = []

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"host": True})

    async def started(app: web.Application) -> None:
        app[HOST_KEY].append("started")

    app.router.add_get("/hello", hello)
    app.on_startup.append(started)
    app.add_subapp("/events", create_app(settings, **kwargs))
    return app


async def test_mounted_app_serves_writes_reads_and_problems_under_its_prefix(
    aiohttp_client, settings
):
    """Writes, reads, a stream and problem replies work under /events; the host's own route
    and startup hook are untouched; aiohttp's hooks open and close the store."""
    client = await aiohttp_client(host_app(settings))
    assert client.app[HOST_KEY] == ["started"]
    assert await (await client.get("/hello")).json() == {"host": True}
    body = {"execution_id": "41", "event_type": "step.enter", "step": "a", "event_id": "7"}
    reply = await client.post("/events/api/events", json=body)
    assert reply.status == 200 and (await reply.json())["event_id"] == "7"
    reply = await client.get("/events/api/executions/41/events")
    assert [e["step"] for e in (await reply.json())["events"]] == ["a"]
    reply = await client.post("/events/api/events", json={"execution_id": "41"})
    assert reply.status == 422
    assert reply.content_type == "application/problem+json"
    assert (await reply.json())["code"] == "invalid_envelope"
    assert (await client.get("/events/ready")).status == 200
    async with client.get("/events/api/executions/41/events/stream?after=0") as stream:
        assert await stream.content.readline() == b": stream open\n"
        assert await stream.content.readline() == b"\n"
        assert (await stream.content.readline()).startswith(b"id: ")
    reply = await client.get("/hello/nowhere")
    assert reply.status == 404  # the host's own 404, not eventlog's


async def test_a_shared_log_stays_open_for_its_owner_when_the_host_stops(aiohttp_client, settings):
    """An EventLog the host program started itself is used, not closed, by the mounted app;
    the host's stop ends the app's streams but not the owner's subscriptions."""
    async with EventLog(settings) as log:
        live = log.subscribe(execution_id=42)
        client = await aiohttp_client(host_app(settings, event_log=log))
        body = {"execution_id": "42", "event_type": "step.enter", "step": "b"}
        assert (await client.post("/events/api/events", json=body)).status == 200
        async with asyncio.timeout(5):
            assert (await anext(live)).step == "b"
        await client.close()  # the host shuts down: its cleanup runs
        assert log.running
        appended = await log.append({**body, "step": "c"})
        assert (await log.get(appended.event.event_id)).step == "c"
        async with asyncio.timeout(5):
            assert (await anext(live)).step == "c"
        await live.aclose()


async def test_the_openapi_document_under_a_mount_names_its_prefix(aiohttp_client, settings):
    """Mounted at /events, the document lists the same paths, with /events as its server."""
    root = await aiohttp_client(create_app(settings))
    alone = await (await root.get("/api/openapi.json")).json()
    client = await aiohttp_client(host_app(settings))
    mounted = await (await client.get("/events/api/openapi.json")).json()
    assert mounted["paths"] and mounted["paths"] == alone["paths"]
    assert mounted["servers"] == [{"url": "/events"}] and "servers" not in alone
