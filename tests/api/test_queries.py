"""Query parameters do what the reader asked or are refused: unknown names, order, status
filters in any case, the executions status filter, and methods a path does not take."""

from __future__ import annotations

import pytest

from eventlog.browser import assets
from eventlog.openapi import OPERATIONS, query_parameters
from eventlog.storage.base import FILTERS

from .test_errors import problem
from .test_read import ev, feed, post_all

# A concrete path for every read route, and the value each documented parameter takes there.
GET_PATHS = {
    "/api/events": "/api/events",
    "/api/events/stream": "/api/events/stream",
    "/api/events/{event_id}": "/api/events/1",
    "/api/executions": "/api/executions",
    "/api/executions/{execution_id}": "/api/executions/1",
    "/api/executions/{execution_id}/events": "/api/executions/1/events",
    "/api/executions/{execution_id}/events/stream": "/api/executions/1/events/stream",
    "/health": "/health",
    "/ready": "/ready",
    "/metrics": "/metrics",
    "/api/openapi.json": "/api/openapi.json",
    "/": "/",
    "/events": "/events",
    "/executions/{execution_id}": "/executions/1",
    "/assets/{name}": "/assets/" + min(assets()),
}


@pytest.mark.parametrize(("method", "path"), sorted(OPERATIONS))
async def test_unknown_query_parameter_is_400_naming_it_on_every_route(client, method, path):
    """A misspelt parameter (?stauts=) is refused by name, on every route, never ignored."""
    concrete = GET_PATHS.get(path, path)
    reply = await client.request(method, concrete, params={"stauts": "FAILED", "limit": "5"})
    doc = await problem(reply, 400, "invalid_parameter")
    paths = [e["path"] for e in doc["errors"]]
    assert "$query.stauts" in paths and "stauts" in doc["detail"]
    assert ("$query.limit" in paths) == ("limit" not in query_parameters(method, path))


async def test_every_documented_query_parameter_is_taken(client):
    """The routes take exactly what the document lists: none of them is refused as unknown."""
    values = {
        "after": "0",
        "limit": "5",
        "order": "desc",
        "execution_id": "1",
        "status": "x",
        "min_seq": "0",
    }
    for (method, path), _ in OPERATIONS.items():
        names = query_parameters(method, path)
        if method != "GET" or not names or path.endswith("/stream"):
            continue
        params = {name: values.get(name, "x") for name in names}
        reply = await client.get(GET_PATHS[path], params=params)
        assert reply.status in (200, 404), (path, await reply.text())


async def test_feed_order_desc_gives_newest_first_and_pages_back(client):
    """/api/events?order=desc: newest first, and next_cursor pages on towards the oldest."""
    stored = await post_all(client, [ev(1, i) for i in range(1, 6)])
    assert await feed(client, order="desc", limit=2) == stored[::-1]
    assert await feed(client, order="desc", after=stored[3]["seq"]) == stored[2::-1]
    reply = await client.get("/api/events", params={"order": "sideways"})
    await problem(reply, 400, "invalid_parameter")


@pytest.mark.parametrize("spelling", ["COMPLETED", "completed", "Completed"])
async def test_status_filters_ignore_case(client, spelling):
    """Stored statuses are upper-case; a filter in any case finds them (feed and executions)."""
    stored = await post_all(client, [ev(1, 1), ev(1, 2, "step.exit")])
    assert await feed(client, status=spelling) == [stored[1]]
    await post_all(client, [ev(2, 1, "playbook.completed")])
    listing = await (await client.get("/api/executions", params={"status": spelling})).json()
    assert [x["execution_id"] for x in listing["executions"]] == ["2"]


async def test_executions_can_be_filtered_by_status(client):
    """?status=FAILED lists failed executions only, newest first, and pages with the filter."""
    await post_all(
        client,
        [
            ev(1, 1),
            ev(2, 1, "playbook.failed"),
            ev(3, 1),
            ev(4, 1, "workflow.failed"),
            ev(5, 1, "playbook.failed"),
        ],
    )
    reply = await client.get("/api/executions", params={"status": "FAILED", "limit": "2"})
    page = await reply.json()
    assert [x["execution_id"] for x in page["executions"]] == ["5", "4"]
    assert all(x["status"] == "FAILED" for x in page["executions"])
    reply = await client.get(
        "/api/executions", params={"status": "FAILED", "after": page["next_cursor"]}
    )
    page = await reply.json()
    assert [x["execution_id"] for x in page["executions"]] == ["2"]
    assert page["next_cursor"] is None
    running = await (await client.get("/api/executions", params={"status": "running"})).json()
    assert [x["execution_id"] for x in running["executions"]] == ["3", "1"]


async def test_library_status_filter_ignores_case(event_log):
    """The library's pages use the same rule as the feed."""
    await event_log.append(ev(1, 1, "step.exit"))
    await event_log.append(ev(1, 2, "step.enter"))
    found = [e.event_id async for e in event_log.events(status="completed")]
    assert found == [1]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/events/batch"),
        ("PUT", "/api/events/batch"),
        ("DELETE", "/api/events/batch"),
        ("PUT", "/api/events"),
        ("DELETE", "/api/events"),
    ],
)
async def test_methods_a_path_does_not_take_are_405(client, method, path):
    """GET /api/events/batch is a 405 naming POST (not a request for an event named batch)."""
    doc = await problem(await client.request(method, path), 405, "method_not_allowed")
    assert "POST" in doc["detail"]


def test_the_filters_are_one_definition():
    """The feed's filters are the storage Filter's fields; the client and CLI take the same."""
    from eventlog import __main__, client
    from eventlog.storage.base import Filter

    assert FILTERS == ("event_type", "step", "status", "worker_id")
    assert tuple(f.name for f in Filter.__attrs_attrs__)[1:] == FILTERS
    assert client.FILTERS is FILTERS and __main__.FILTERS is FILTERS
