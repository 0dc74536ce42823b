"""The event browser: its pages and assets, served from the package beside the API.

Pages and assets are plain files read once from ``eventlog/static``; they hold no data and are
answered without a token. The pages fetch everything else from ``/api/`` with the reader's
token, so the data stays behind the same tokens as any other client's.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Awaitable, Callable
from importlib import resources

import attrs
from aiohttp import web

from .ids import MAX_ID
from .problems import NotFound


@attrs.frozen
class Page:
    """One page: its script (and the modules it imports, preloaded), its title, and the way
    back to the app's root from its path (relative, so that a mount prefix needs nothing)."""

    script: str
    title: str
    root: str
    imports: tuple[str, ...]


# aiohttp indexes routes by their leading path, so none of these is looked at while resolving
# an /api/ path.
PAGES = {
    "/": Page("executions", "Executions", "./", ("common",)),
    "/executions/{execution_id:[1-9][0-9]{0,18}}": Page(
        "execution", "Execution", "../", ("common", "eventlist", "timeline")
    ),
    "/events": Page("events", "Live feed", "./", ("common", "eventlist")),
}
ASSETS = "/assets/{name}"

_TYPES = {
    "html": "text/html; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "svg": "image/svg+xml",
}
# Everything the pages load comes from this server, and nothing is inline: an injected
# payload rendered by mistake still cannot run.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}


@attrs.frozen
class Asset:
    """One file of the browser, with its validator."""

    body: bytes
    content_type: str
    etag: str


def _asset(body: bytes, kind: str) -> Asset:
    return Asset(body, _TYPES[kind], f'"{hashlib.sha256(body).hexdigest()[:20]}"')


@functools.cache
def assets() -> dict[str, Asset]:
    """Every file under eventlog/static, by name (the page template excepted)."""
    found = {}
    for entry in resources.files("eventlog").joinpath("static").iterdir():
        kind = entry.name.rpartition(".")[2]
        if entry.is_file() and kind in _TYPES and kind != "html":
            found[entry.name] = _asset(entry.read_bytes(), kind)
    return found


@functools.cache
def pages() -> dict[str, Asset]:
    """Each page's HTML, by route path: the one template, filled in once."""
    template = resources.files("eventlog").joinpath("static", "page.html").read_text()
    found = {}
    for path, page in PAGES.items():
        preload = "".join(
            f'<link rel="modulepreload" href="{page.root}assets/{name}.js">\n'
            for name in page.imports
        )
        html = (
            template.replace("{preload}", preload)
            .replace("{root}", page.root)
            .replace("{title}", page.title)
            .replace("{script}", page.script)
        )
        found[path] = _asset(html.encode(), "html")
    return found


def _reply(request: web.Request, asset: Asset, headers: dict[str, str]) -> web.Response:
    # Revalidated on every load (cheap: a 304) so an upgraded server is never paired with
    # stale scripts.
    common = {"ETag": asset.etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=common)
    return web.Response(
        body=asset.body, headers={**common, **headers, "Content-Type": asset.content_type}
    )


def _page(html: Asset) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def page(request: web.Request) -> web.Response:
        """A page of the event browser (its data comes from /api/)."""
        execution_id = request.match_info.get("execution_id")
        if execution_id is not None and int(execution_id) > MAX_ID:
            raise NotFound(f"no execution {execution_id}: ids end at 2^63-1")
        return _reply(request, html, _PAGE_HEADERS)

    return page


async def asset(request: web.Request) -> web.Response:
    """A script, style sheet or icon of the browser."""
    found = assets().get(request.match_info["name"])
    if found is None:
        raise NotFound("no such asset")
    return _reply(request, found, {})


def add_routes(app: web.Application) -> set[web.AbstractResource]:
    """Register the pages and assets on ``app``; returns their resources, which need no token."""
    assets()  # read now, so a broken install fails at start and not on a first visit
    added = {app.router.add_get(path, _page(html)).resource for path, html in pages().items()}
    added.add(app.router.add_get(ASSETS, asset).resource)
    return {r for r in added if r is not None}
