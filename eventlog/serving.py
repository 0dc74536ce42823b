"""Serving the HTTP app in this process until a signal, then draining and stopping: what
`eventlog serve` runs, alone or in each worker process of `serve --workers`."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import logs
from .config import Settings, describe_dsn

log = logging.getLogger("eventlog")


def describe_access(settings: Settings) -> str:
    """Whether requests need a token, for the start-up line (the tokens themselves never)."""
    if not settings.auth_enabled:
        return "access control off: no tokens are set, anyone may read and write"
    return (
        f"access control on: {len(settings.write_tokens)} write and "
        f"{len(settings.read_tokens)} read token(s)"
    )


async def serve(
    settings: Settings,
    *,
    reuse_port: bool = False,
    on_listening: Callable[[], object] | None = None,
) -> int:
    """Run the service until SIGTERM or SIGINT, then drain and stop; the exit status.
    ``reuse_port``: share the port with other processes (``serve --workers``)."""
    from .typedefs import EVENT_LOG, SERVICE, STREAMS
    from .web import create_app

    app = create_app(settings)
    # The drain comes out of the shutdown budget; what is left bounds the in-flight handlers
    # (never 0, which aiohttp reads as "wait for ever").
    drain = min(DRAIN_S, settings.shutdown_timeout / 2)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=max(settings.shutdown_timeout - drain, 0.001),
        **(
            {"access_log_class": logs.AccessLogger} if settings.access_log else {"access_log": None}
        ),
    )
    try:
        await runner.setup()
    except Exception as e:  # the store could not be opened or migrated
        log.error("cannot start: %s", e)
        return 1
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port or None)
        await site.start()
    except OSError as e:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, e.strerror)
        await runner.cleanup()
        return 1
    host, port = runner.addresses[0][:2]
    log.info(
        "eventlog listening on http://%s:%s (store: %s, node id %d, %s)",
        host,
        port,
        describe_dsn(settings.dsn),
        app[EVENT_LOG].node_id,
        describe_access(settings),
    )
    if on_listening is not None:
        on_listening()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    started = loop.time()
    app[SERVICE].draining = True  # every reply from now on says `Connection: close`
    # Stop accepting first; no await comes between this and the flag above, so every reply
    # that says `Connection: close` leaves a client that can only be refused, never reset.
    await site.stop()
    log.info("shutting down: no longer accepting connections")
    idle = await _drain(runner, app[STREAMS], drain)
    log.info("drained; closing %d connection(s) left open besides streams", idle)
    # aiohttp from here: end the streams (each with its final message), wait for the handlers
    # still running, close the connections, then close the log (writer flushed, then store).
    # Bounded: with the database gone, closing could otherwise wait out its timeouts.
    budget = max(settings.shutdown_timeout - (loop.time() - started), 0.0) + CLOSE_GRACE_S
    try:
        async with asyncio.timeout(budget):
            await runner.cleanup()
    except TimeoutError:
        log.error(
            "shutdown did not finish within shutdown_timeout (%.1f s): exiting without closing "
            "the store; requests not yet answered were not acknowledged",
            settings.shutdown_timeout,
        )
        return 1
    log.info("stopped after %.2f s", loop.time() - started)
    return 0


CLOSE_GRACE_S = 2.0  # past shutdown_timeout, for closing the log once the handlers are done
DRAIN_S = 1.0  # the longest shutdown waits for open connections to finish their exchange


async def _drain(runner: web.AppRunner, streams: set[Any], seconds: float) -> int:
    """Serve what arrives on open connections until only streams remain or ``seconds`` pass;
    return how many other connections are still open (idle ones, to be closed)."""
    # aiohttp's own shutdown stops reading every connection at once: a request written onto
    # an idle keep-alive connection at that moment would go unanswered. Here each connection
    # that sends one more request gets its answer, with `Connection: close`, and is closed by
    # the server after it; only connections idle for the whole drain are closed unasked.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        open_now = len(runner.server.connections) if runner.server else 0
        others = max(open_now - len(streams), 0)
        if others == 0 or loop.time() >= deadline:
            return others
        await asyncio.sleep(0.01)
