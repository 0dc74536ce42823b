"""The served OpenAPI document is valid, complete, and true to the code and its replies.

Each check is a function that returns what it found wrong; every one is run on the served
document (nothing may be found) and on a document or reply spoiled on purpose (the spoiling
must be found), so that no check passes vacuously.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import attrs
import jsonschema_rs
import pytest
from aiohttp import web
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from eventlog.codec import ALIASES, _BatchHeader
from eventlog.config import Settings
from eventlog.envelope import Envelope
from eventlog.problems import Problem
from eventlog.web import create_app

from .helpers import CONTRACT_BODIES

DOC = "/api/openapi.json"
MINIMAL = CONTRACT_BODIES["minimal"]
JSON = {"Content-Type": "application/json"}
# Problems no operation lists: an unexpected error, and a method a path does not serve.
UNLISTED_CODES = {"internal_error", "method_not_allowed"}
# The event browser's pages and assets: no data, so no token.
BROWSER_PAGES = {"/", "/executions/{execution_id}", "/events", "/assets/{name}"}


@pytest.fixture
def app_settings(tmp_path) -> Settings:
    """Default settings on a SQLite store (the document does not depend on the backend)."""
    return Settings(dsn=f"sqlite:///{tmp_path}/events.db")


@pytest.fixture
async def sqlite_client(aiohttp_client, app_settings):  # type: ignore[no-untyped-def]
    """A client of the default app on SQLite."""
    return await aiohttp_client(create_app(app_settings))


async def served(client) -> dict[str, Any]:
    """The document the app serves."""
    reply = await client.get(DOC)
    assert reply.status == 200, await reply.text()
    assert reply.content_type == "application/json"
    return await reply.json()


def resolve(doc: dict[str, Any], ref: str) -> Any:
    """The node a local $ref points at; KeyError when there is none."""
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def walk(node: Any, path: str = "#") -> Iterator[tuple[str, Any]]:
    """Every (JSON pointer, value) in ``node``."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}/{str(key).replace('~', '~0').replace('/', '~1')}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}/{index}")


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema_rs.Validator:
    """A validator for ``schema``, its $refs resolved inside the document."""
    return jsonschema_rs.Draft202012Validator({**doc, **schema}, validate_formats=True)


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path, operation) of every documented operation."""
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


# --- the checks -----------------------------------------------------------------------------


def document_problems(doc: dict[str, Any]) -> list[str]:
    """What makes ``doc`` an invalid OpenAPI 3.1 document: structure, schemas, refs, examples."""
    found = [f"openapi: {e}" for e in OPENAPI_31_VALIDATOR.iter_errors(doc)]
    for where, node in walk(doc):
        if isinstance(node, dict) and isinstance(node.get("$ref"), str):
            try:
                resolve(doc, node["$ref"])
            except (KeyError, IndexError, TypeError):
                found.append(f"{where}: $ref {node['$ref']} points at nothing")
    schemas = list(doc.get("components", {}).get("schemas", {}).values())
    schemas += [n["schema"] for _, n in walk(doc["paths"]) if isinstance(n, dict) and "schema" in n]
    for schema in schemas:
        try:
            jsonschema_rs.meta.validate(
                {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
            )
        except jsonschema_rs.ValidationError as e:
            found.append(f"schema {schema}: {e}")
    for where, node in walk(doc["paths"]):
        if isinstance(node, dict) and "examples" in node and "schema" in node:
            check = validator(doc, node["schema"])
            for name, example in node["examples"].items():
                for e in check.iter_errors(example["value"]):
                    found.append(f"{where} example {name}: {e.message}")
    return found


def registered(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path) of every route in the router; the HEAD aiohttp adds beside a GET is
    covered by documenting the GET."""
    routes = {(r.method, r.resource.canonical) for r in app.router.routes()}
    return {(m, p) for m, p in routes if not (m == "HEAD" and ("GET", p) in routes)}


def route_problems(app: web.Application, doc: dict[str, Any]) -> list[str]:
    """Routes served but not documented, and documented but not served."""
    documented = {(m, p) for m, p, _ in operations(doc)}
    served_routes = registered(app)
    return [f"undocumented: {m} {p}" for m, p in sorted(served_routes - documented)] + [
        f"not served: {m} {p}" for m, p in sorted(documented - served_routes)
    ]


def defined_codes() -> dict[str, int]:
    """Every problem code the code defines, found by walking Problem's subclasses."""
    codes = {Problem.code: Problem.status}
    pending = [Problem]
    while pending:
        for sub in pending.pop().__subclasses__():
            codes[sub.code] = sub.status
            pending.append(sub)
    return codes


def problem_code_problems(doc: dict[str, Any], codes: dict[str, int]) -> list[str]:
    """Documented codes that differ from ``codes`` (code -> status), problem replies whose
    codes carry another status, and defined codes no operation can reply with."""
    found = []
    documented = set(doc["components"]["schemas"]["ProblemCode"]["enum"])
    if documented != set(codes):
        found.append(f"ProblemCode {sorted(documented)} != defined {sorted(codes)}")
    used = set()
    for method, path, operation in operations(doc):
        for status, reply in operation["responses"].items():
            media = reply.get("content", {}).get("application/problem+json")
            if media is None:
                continue
            narrowed = media["schema"]["allOf"][1]["properties"]
            if narrowed["status"]["const"] != int(status):
                found.append(f"{method} {path} {status}: status const differs")
            for code in narrowed["code"]["enum"]:
                used.add(code)
                if codes.get(code) != int(status):
                    found.append(f"{method} {path} {status}: {code} is a {codes.get(code)}")
    if unused := set(codes) - used - UNLISTED_CODES:
        found.append(f"no operation replies with {sorted(unused)}")
    return found


def envelope_problems(doc: dict[str, Any]) -> list[str]:
    """Where the documented envelope and batch object differ from the fields and aliases the
    codec reads."""
    schemas = doc["components"]["schemas"]
    envelope = schemas["Envelope"]
    found = []
    fields = {f.name for f in attrs.fields(Envelope)}
    if set(envelope["properties"]) != fields | set(ALIASES):
        found.append(f"Envelope properties {sorted(envelope['properties'])}")
    aliases = {
        name: p["x-alias-of"] for name, p in envelope["properties"].items() if "x-alias-of" in p
    }
    if aliases != ALIASES:
        found.append(f"aliases {aliases} != {ALIASES}")
    required = {f.name for f in attrs.fields(Envelope) if f.default is attrs.NOTHING}
    documented_required = set()
    for rule in envelope.get("allOf", []):
        for option in [rule, *rule.get("anyOf", [])]:
            documented_required.update(option.get("required", []))
    expected = required | {a for a, c in ALIASES.items() if c in required}
    if documented_required != expected:
        found.append(f"required {sorted(documented_required)} != {sorted(expected)}")
    header = {f.name for f in attrs.fields(_BatchHeader)}
    if set(schemas["BatchObject"]["properties"]) != header | {"events"}:
        found.append(f"BatchObject properties {sorted(schemas['BatchObject']['properties'])}")
    if set(schemas["BatchItem"]["properties"]) != set(envelope["properties"]):
        found.append("BatchItem and Envelope properties differ")
    return found


def reply_problems(
    doc: dict[str, Any], method: str, path: str, status: int, media: str, body: Any
) -> list[str]:
    """Why a reply is not one the document describes for this operation."""
    responses = doc["paths"][path][method.lower()]["responses"]
    if str(status) not in responses:
        return [f"{method} {path}: status {status} is not documented"]
    content = responses[str(status)].get("content", {})
    if media not in content:
        return [f"{method} {path} {status}: {media} is not documented"]
    check = validator(doc, content[media]["schema"])
    return [f"{method} {path} {status}: {e.message}" for e in check.iter_errors(body)]


async def documented(client, doc, method: str, path: str, template: str | None = None, **kw):
    """Send a request; assert its reply is what the document describes; return the body."""
    reply = await client.request(method, path, **kw)
    body = await reply.json(content_type=None)
    assert (
        reply_problems(doc, method, template or path, reply.status, reply.content_type, body) == []
    )
    return reply.status, body


# --- the served document --------------------------------------------------------------------


async def test_served_document_is_valid_openapi_31_with_valid_schemas_refs_and_examples(
    sqlite_client,
):
    """The OpenAPI 3.1 meta-schema, the JSON Schema 2020-12 meta-schema for every schema,
    every $ref resolving, every example valid against its schema."""
    doc = await served(sqlite_client)
    assert doc["openapi"].startswith("3.1.")
    assert document_problems(doc) == []


@pytest.mark.parametrize(
    "spoil",
    [
        lambda d: d.pop("info"),
        lambda d: d["components"]["schemas"]["Event"].update(type="record"),
        lambda d: d["components"]["schemas"].pop("Execution"),
        lambda d: d["paths"]["/api/events"]["post"]["requestBody"]["content"]["application/json"][
            "examples"
        ]["minimal"]["value"].pop("step"),
    ],
    ids=["no_info", "bad_schema", "dangling_ref", "invalid_example"],
)
async def test_document_check_finds_a_spoiled_document(sqlite_client, spoil):
    """The validity check is not vacuous: each spoiling is found."""
    doc = await served(sqlite_client)
    spoil(doc)
    assert document_problems(doc)


async def test_every_registered_route_is_documented_and_every_documented_route_is_served(
    aiohttp_client, app_settings
):
    """The router and the document list the same (method, path) pairs; a route added to the
    app without a description in eventlog.openapi shows up as undocumented."""
    app = create_app(app_settings)
    doc = await served(await aiohttp_client(app))
    assert route_problems(app, doc) == []
    assert ("GET", DOC) in registered(app) and ("POST", "/api/events") in registered(app)

    extra = create_app(app_settings)

    async def undocumented(request: web.Request) -> web.Response:
        return web.Response()

    extra.router.add_put("/api/events/{event_id}", undocumented)
    extra_doc = await served(await aiohttp_client(extra))
    assert route_problems(extra, extra_doc) == ["undocumented: PUT /api/events/{event_id}"]
    doc["paths"]["/api/nowhere"] = {"get": doc["paths"]["/health"]["get"]}
    assert route_problems(app, doc) == ["not served: GET /api/nowhere"]


async def test_documented_problem_codes_are_the_codes_the_code_defines(
    aiohttp_client, app_settings
):
    """ProblemCode lists every Problem subclass's code; each problem reply of an operation
    allows only codes of its status; with auth on, every code but internal_error and
    method_not_allowed is a reply of some operation."""
    settings = attrs.evolve(app_settings, write_tokens=["w"])
    client = await aiohttp_client(create_app(settings))
    doc = await (await client.get(DOC, headers={"Authorization": "Bearer w"})).json()
    codes = defined_codes()
    assert {"invalid_envelope", "not_found", "db_unavailable"} <= set(codes)
    assert problem_code_problems(doc, codes) == []

    assert problem_code_problems(doc, {**codes, "teapot": 418})
    wrong = copy.deepcopy(doc)
    get_event = wrong["paths"]["/api/events/{event_id}"]["get"]["responses"]
    get_event["404"]["content"]["application/problem+json"]["schema"]["allOf"][1]["properties"][
        "code"
    ]["enum"].append("invalid_json")
    assert problem_code_problems(wrong, codes)


async def test_documented_envelope_is_the_fields_and_aliases_the_codec_reads(sqlite_client):
    """Envelope, BatchItem and BatchObject name exactly the codec's fields and aliases, with
    the same alias map and the same required fields."""
    doc = await served(sqlite_client)
    assert envelope_problems(doc) == []

    for spoil in (
        lambda s: s["Envelope"]["properties"].pop("node_name"),
        lambda s: s["Envelope"]["properties"]["context"].update({"x-alias-of": "meta"}),
        lambda s: s["Envelope"]["allOf"].pop(0),
        lambda s: s["BatchObject"]["properties"].pop("worker_id"),
    ):
        spoiled = copy.deepcopy(doc)
        spoil(spoiled["components"]["schemas"])
        assert envelope_problems(spoiled)


def _invalid_value(check: jsonschema_rs.Validator) -> Any:
    """A JSON value the property's schema refuses, or None when it takes any value."""
    for value in ({"a": 1}, [1.5], 1.5, "", "1.5", True, None):
        if not check.is_valid(value):
            return value
    return None


async def test_codec_refuses_what_the_document_refuses_under_each_documented_name(client):
    """For every documented envelope property, a value its schema refuses is a 422 naming
    that property: the codec reads every name the document gives, with the same types."""
    doc = await served(client)
    properties = doc["components"]["schemas"]["Envelope"]["properties"]
    tried = 0
    for name, schema in properties.items():
        value = _invalid_value(validator(doc, schema))
        if value is None:
            continue  # payload and its alias take any JSON value
        body = {k: v for k, v in MINIMAL.items() if k != ALIASES.get(name)}
        body[name] = value
        reply = await client.post("/api/events", json=body)
        assert reply.status == 422, (name, value, await reply.text())
        paths = [e["path"] for e in (await reply.json(content_type=None))["errors"]]
        assert f"$.{name}" in paths, (name, value, paths)
        tried += 1
    assert tried == len(properties) - 2


# --- real replies against their documented schemas ---------------------------------------


async def test_replies_of_every_operation_validate_against_the_document(client):
    """Accepted, batch (all three forms), event, execution, pages, probes and the document
    itself: each real reply has a documented status, media type and shape."""
    doc = await served(client)
    examples = doc["paths"]["/api/events"]["post"]["requestBody"]["content"]["application/json"]
    for example in examples["examples"].values():
        status, accepted = await documented(
            client, doc, "POST", "/api/events", json=example["value"]
        )
        assert status == 200
    batches = doc["paths"]["/api/events/batch"]["post"]["requestBody"]["content"]
    for example in batches["application/json"]["examples"].values():
        status, _ = await documented(
            client, doc, "POST", "/api/events/batch", json=example["value"]
        )
        assert status == 200
    status, batch = await documented(
        client,
        doc,
        "POST",
        "/api/events/batch",
        data=b'{"execution_id": 7, "event_type": "a.b", "step": "s"}\n\n'
        b'{"execution_id": 7, "name": "a.done", "node_name": "s", "event_id": 99}\n',
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert status == 200 and len(batch["event_ids"]) == 2
    for path, template in [
        (f"/api/events/{accepted['event_id']}", "/api/events/{event_id}"),
        ("/api/executions/12345", "/api/executions/{execution_id}"),
        ("/api/executions/7/events?order=desc&limit=1", "/api/executions/{execution_id}/events"),
        ("/api/events?limit=2", "/api/events"),
        ("/api/events?execution_id=7&step=s", "/api/events"),
        ("/api/executions?limit=1", "/api/executions"),
        ("/health", "/health"),
        ("/ready", "/ready"),
        (DOC, DOC),
    ]:
        status, body = await documented(client, doc, "GET", path, template)
        assert status == 200, (path, body)
    assert (await documented(client, doc, "GET", "/api/events?limit=2", "/api/events"))[1][
        "next_cursor"
    ]


async def test_problem_replies_validate_against_the_document(client):
    """404, 400 (bad id, bad parameter, bad JSON, empty body), 409 (both kinds), 415, 422:
    each problem reply is documented for its operation, code included."""
    doc = await served(client)
    key = {"Idempotency-Key": "k-1"}
    cases: list[tuple[str, str, str | None, dict[str, Any], int]] = [
        ("GET", "/api/events/1", "/api/events/{event_id}", {}, 404),
        ("GET", "/api/executions/1", "/api/executions/{execution_id}", {}, 404),
        ("GET", "/api/events/abc", "/api/events/{event_id}", {}, 400),
        ("GET", "/api/events?limit=0", "/api/events", {}, 400),
        ("GET", "/api/executions/0/events", "/api/executions/{execution_id}/events", {}, 400),
        ("POST", "/api/events", None, {"data": b"{", "headers": JSON}, 400),
        ("POST", "/api/events/batch", None, {"data": b" ", "headers": JSON}, 400),
        (
            "POST",
            "/api/events",
            None,
            {"data": b"x", "headers": {"Content-Type": "text/plain"}},
            415,
        ),
        ("POST", "/api/events", None, {"json": {"execution_id": "x"}}, 422),
        ("POST", "/api/events/batch", None, {"json": {"events": [{}]}}, 422),
        ("POST", "/api/events", None, {"json": {**MINIMAL, "event_id": 5}}, 200),
        ("POST", "/api/events", None, {"json": {**MINIMAL, "event_id": 5, "step": "x"}}, 409),
        ("POST", "/api/events", None, {"json": MINIMAL, "headers": key}, 200),
        ("POST", "/api/events", None, {"json": {**MINIMAL, "step": "y"}, "headers": key}, 409),
        ("POST", "/api/events", None, {"json": MINIMAL, "headers": {"Idempotency-Key": ""}}, 400),
    ]
    for method, path, template, kw, expected in cases:
        status, body = await documented(client, doc, method, path, template, **kw)
        assert status == expected, (method, path, body)


async def test_reply_check_finds_replies_outside_the_document(client):
    """The reply check is not vacuous: an extra field, a numeric id, an undocumented status or
    a code of another status is found."""
    doc = await served(client)
    await client.post("/api/events", json={**MINIMAL, "event_id": 3})
    event = await (await client.get("/api/events/3")).json()
    path = "/api/events/{event_id}"
    assert reply_problems(doc, "GET", path, 200, "application/json", event) == []
    assert reply_problems(doc, "GET", path, 200, "application/json", {**event, "extra": 1})
    assert reply_problems(doc, "GET", path, 200, "application/json", {**event, "seq": 1})
    assert reply_problems(doc, "GET", path, 200, "text/html", event)
    assert reply_problems(doc, "GET", path, 409, "application/problem+json", {})
    problem = await (await client.get("/api/events/4")).json(content_type=None)
    media = "application/problem+json"
    assert reply_problems(doc, "GET", path, 404, media, problem) == []
    assert reply_problems(doc, "GET", path, 404, media, {**problem, "code": "invalid_json"})


async def test_streams_reply_with_the_documented_media_type(client):
    """The two SSE routes (left out of the schemathesis run: they never end) open with a
    documented status and media type."""
    doc = await served(client)
    for path, template in [
        ("/api/events/stream", "/api/events/stream"),
        ("/api/executions/5/events/stream", "/api/executions/{execution_id}/events/stream"),
    ]:
        async with client.get(path) as reply:
            assert reply.status == 200
            content = doc["paths"][template]["get"]["responses"]["200"]["content"]
            assert reply.content_type in content
            assert (await reply.content.readline()).startswith(b":")
        status, body = await documented(client, doc, "GET", path + "?after=x", template)
        assert status == 400 and body["code"] == "invalid_parameter"


async def test_security_follows_the_configured_tokens(aiohttp_client, tmp_path):
    """Without tokens no operation needs credentials and none replies 401; with tokens every
    operation but the open paths and the browser's pages needs a bearer token and documents 401
    and 403, and the real 401 reply validates."""
    open_doc = await served(
        await aiohttp_client(create_app(Settings(dsn=f"sqlite:///{tmp_path}/a.db")))
    )
    assert "bearer" in open_doc["components"]["securitySchemes"]
    for _, _, operation in operations(open_doc):
        assert "security" not in operation and "401" not in operation["responses"]

    settings = Settings(
        dsn=f"sqlite:///{tmp_path}/b.db", write_tokens=["w"], open_paths=["/health"]
    )
    client = await aiohttp_client(create_app(settings))
    reply = await client.get(DOC, headers={"Authorization": "Bearer w"})
    doc = await reply.json()
    for method, path, operation in operations(doc):
        if path == "/health" or path in BROWSER_PAGES:
            assert operation["security"] == [] and "401" not in operation["responses"]
        else:
            assert operation["security"] == [{"bearer": []}], (method, path)
            assert {"401", "403"} <= set(operation["responses"]), (method, path)
    status, body = await documented(client, doc, "GET", "/api/executions")
    assert status == 401 and body["code"] == "unauthorized"
    status, body = await documented(
        client, doc, "POST", "/api/events", json=MINIMAL, headers={"Authorization": "Bearer x"}
    )
    assert status == 403 and body["code"] == "forbidden"


async def test_operation_ids_are_unique_and_links_name_real_operations(sqlite_client):
    """Links and tools address operations by operationId: no two share one, and every link
    names one that exists."""
    doc = await served(sqlite_client)
    ids = [operation["operationId"] for _, _, operation in operations(doc)]
    assert len(set(ids)) == len(ids)
    links = [
        link["operationId"]
        for _, _, operation in operations(doc)
        for reply in operation["responses"].values()
        for link in reply.get("links", {}).values()
    ]
    assert links and set(links) <= set(ids)
