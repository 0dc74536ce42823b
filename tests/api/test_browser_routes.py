"""The event browser's routes: pages and assets without a token, data never; the API and its
404s unchanged; the same under a mount prefix."""

from __future__ import annotations

import re

from aiohttp import web

from eventlog.browser import PAGES, assets, pages
from eventlog.config import Settings
from eventlog.web import create_app

PAGE_PATHS = ["/", "/executions/12345", "/events"]


async def test_pages_and_assets_need_no_token_but_the_data_does(aiohttp_client, tmp_path):
    """With tokens on, every page and every asset it links is served without one; the API it
    reads still answers 401 without a token."""
    settings = Settings(dsn=f"sqlite:///{tmp_path}/e.db", read_tokens=["r"], write_tokens=["w"])
    client = await aiohttp_client(create_app(settings))
    for path in PAGE_PATHS:
        reply = await client.get(path)
        assert reply.status == 200, path
        assert reply.content_type == "text/html"
        assert "script-src 'self'" in reply.headers["Content-Security-Policy"]
        html = await reply.text()
        linked = re.findall(r'(?:src|href)="(?:\.\./|\./)?(assets/[^"]+)"', html)
        assert linked, path
        for asset in linked:
            served = await client.get("/" + asset)
            assert served.status == 200, asset
    assert (await client.get("/api/executions")).status == 401
    assert (await client.get("/api/events/stream")).status == 401
    assert (await client.get("/metrics")).status == 200  # an open path, as before


async def test_unknown_paths_and_assets_are_problem_404s(aiohttp_client, tmp_path):
    """Unknown paths, unknown assets, a page asked for as an asset, and execution ids that are
    not ids all answer problem+json 404, as any unknown path did before."""
    client = await aiohttp_client(create_app(Settings(dsn=f"sqlite:///{tmp_path}/e.db")))
    for path in [
        "/nowhere",
        "/assets/nothing.js",
        "/assets/page.html",
        "/assets/../web.py",
        "/executions/abc",
        "/executions/0",
        "/executions/9223372036854775808",
        "/executions/12/events",
        "/api/nowhere",
    ]:
        reply = await client.get(path)
        assert reply.status == 404, path
        assert reply.content_type == "application/problem+json", path
        assert (await reply.json())["code"] == "not_found", path
    reply = await client.post("/")
    assert reply.status == 405 and (await reply.json())["code"] == "method_not_allowed"


async def test_assets_revalidate_with_their_etag(aiohttp_client, tmp_path):
    """Each file carries an ETag and no-cache; the same ETag back gets a bodiless 304."""
    client = await aiohttp_client(create_app(Settings(dsn=f"sqlite:///{tmp_path}/e.db")))
    reply = await client.get("/assets/app.css")
    assert reply.status == 200 and reply.content_type == "text/css"
    assert reply.headers["Cache-Control"] == "no-cache"
    assert await reply.read() == assets()["app.css"].body
    again = await client.get("/assets/app.css", headers={"If-None-Match": reply.headers["ETag"]})
    assert again.status == 304 and await again.read() == b""


async def test_pages_are_served_under_a_mount_prefix(aiohttp_client, tmp_path):
    """Mounted at /el, the pages and assets are under /el and the host's paths stay its own."""
    host = web.Application()
    host.add_subapp("/el", create_app(Settings(dsn=f"sqlite:///{tmp_path}/e.db")))
    client = await aiohttp_client(host)
    for path in ["/el/", "/el/executions/5", "/el/events", "/el/assets/common.js"]:
        assert (await client.get(path)).status == 200, path
    assert (await client.get("/")).status == 404
    assert (await client.get("/events")).status == 404


def test_every_page_and_the_modules_it_loads_are_in_the_package():
    """Each page's script and the modules it preloads are shipped (package data), and the
    modules a script imports are the ones its page preloads."""
    files = assets()
    for path, page in PAGES.items():
        html = pages()[path].body.decode()
        loaded = re.findall(r'assets/([a-z]+\.js)"', html)
        assert loaded == [f"{name}.js" for name in (*page.imports, page.script)]
        assert all(name in files for name in loaded)
        script = files[f"{page.script}.js"].body.decode()
        imported = set(re.findall(r"from '\./([a-z]+)\.js'", script))
        for name in list(imported):
            imported |= set(
                re.findall(r"from '\./([a-z]+)\.js'", files[f"{name}.js"].body.decode())
            )
        assert imported == set(page.imports), path
