"""The HTTP layer's middlewares and error replies: bearer-token auth, and every error as a
problem+json reply (the edge middleware in web.py calls error_response)."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from .problems import (
    PROBLEM_JSON,
    BodyTooLarge,
    Forbidden,
    InternalError,
    MethodNotAllowed,
    NotFound,
    Problem,
    Unauthorized,
)

log = logging.getLogger("eventlog")

PROBLEM_CODE = web.ResponseKey("problem_code", str)


def problem_response(problem: Problem) -> web.Response:
    """The HTTP reply for ``problem``."""
    headers = dict(problem.headers)
    if problem.status == 503:
        headers.setdefault("Retry-After", "1")
    response = web.Response(
        body=orjson.dumps(problem.to_dict()),
        status=problem.status,
        content_type=PROBLEM_JSON,
        headers=headers,
    )
    response[PROBLEM_CODE] = problem.code  # for the metrics
    return response


def _from_http_exception(exc: web.HTTPException) -> Problem:
    """aiohttp raises these itself (unknown route, wrong method, oversized body)."""
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return BodyTooLarge(exc.text or "request body too large")
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("no route matches this path")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return MethodNotAllowed(f"allowed: {allowed}", headers={"Allow": allowed})
    problem = Problem(exc.reason)
    problem.status = exc.status  # type: ignore[misc]
    problem.code = exc.reason.lower().replace(" ", "_").replace("-", "_")  # type: ignore[misc]
    problem.title = exc.reason  # type: ignore[misc]
    return problem


def bearer_auth_middleware(
    write_tokens: list[str], read_tokens: list[str], is_open: Callable[[web.Request], bool]
) -> Any:
    """Require a bearer token: a write token for POST, a read or write token for the rest."""
    writers = [t.encode() for t in write_tokens]
    readers = writers + [t.encode() for t in read_tokens]

    def known(token: bytes, tokens: list[bytes]) -> bool:
        # Compare against every token, in constant time, so timing tells nothing.
        return sum(hmac.compare_digest(token, t) for t in tokens) > 0

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_open(request):
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(
                "send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": 'Bearer realm="eventlog"'},
            )
        allowed = writers if request.method not in ("GET", "HEAD", "OPTIONS") else readers
        try:
            raw = token.strip().encode()
        except UnicodeEncodeError:  # bytes that were not UTF-8: no token looks like that
            raw = b""
        if not raw or not known(raw, allowed):
            raise Forbidden("this token may not make this request")
        return await handler(request)

    return auth


def error_response(request: web.Request, exc: Exception) -> web.Response:
    """The problem+json reply for an error a handler raised (an HTTPException of status 400 or
    more, or any other exception); an unexpected one is logged and becomes a 500."""
    if isinstance(exc, Problem):
        return problem_response(exc)
    if isinstance(exc, web.HTTPException):
        return problem_response(_from_http_exception(exc))
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return problem_response(InternalError("an unexpected error occurred; it has been logged"))
