"""The command line: eventlog serve | migrate | tail | export | import | ids decode."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from . import __version__, logs, tools
from .config import ConfigError, Settings, describe_dsn, load_settings, unknown_variables
from .ids import decode
from .problems import Problem
from .storage.base import FILTERS, StoreError, open_store

log = logging.getLogger("eventlog")


def describe_access(settings: Settings) -> str:
    """Whether requests need a token, for the start-up line (the tokens themselves never)."""
    if not settings.auth_enabled:
        return "access control off: no tokens are set, anyone may read and write"
    return (
        f"access control on: {len(settings.write_tokens)} write and "
        f"{len(settings.read_tokens)} read token(s)"
    )


def _store_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML settings file (or EVENTLOG_CONFIG)")
    parser.add_argument("--dsn", help="sqlite:///path.db or postgresql://… (or EVENTLOG_DSN)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eventlog", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP service")
    _store_flags(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080; 0 picks one)")
    serve.add_argument(
        "--node-id", type=int, help="snowflake node id 0-1023 (default: claim a free one)"
    )
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    serve.add_argument("--log-format", choices=("text", "json"), help="log lines as text or JSON")
    serve.add_argument(
        "--workers",
        default="1",
        help='server processes sharing the port (default 1; "auto": one per core)',
    )

    migrate = commands.add_parser("migrate", help="apply pending schema migrations and exit")
    _store_flags(migrate)

    tail = commands.add_parser(
        "tail",
        help="print the live stream as JSON lines",
        description="Print the live stream as JSON lines. Retry policy: while the service "
        "cannot be reached, at the start or later, tail tries again with a growing wait "
        "(at most 5 s between attempts) for ever, logging once when the stream is lost and "
        "once when it is back; --max-wait bounds the time without a connection (then exit "
        "status 1). A 4xx reply (a bad filter, a missing token) ends it at once.",
    )
    tail.add_argument(
        "--url",
        default="http://127.0.0.1:8080",
        help="the service's base URL (default: %(default)s)",
    )
    tail.add_argument(
        "--max-wait",
        type=float,
        metavar="SECONDS",
        help="give up after this long without reaching the service (default: never)",
    )
    tail.add_argument("--execution-id", type=int, help="one execution only")
    tail.add_argument("--after", type=int, help="start after this seq (default: from now)")
    tail.add_argument(
        "--token",
        default=os.environ.get("EVENTLOG_TOKEN"),
        help="bearer token, when the service requires one (or EVENTLOG_TOKEN)",
    )
    for name in FILTERS:
        tail.add_argument(f"--{name.replace('_', '-')}", help=f"only events with this {name}")

    export = commands.add_parser("export", help="write events as NDJSON to standard output")
    _store_flags(export)
    export.add_argument("--execution-id", type=int, help="one execution only")

    imp = commands.add_parser("import", help="append the events of an NDJSON file")
    _store_flags(imp)
    imp.add_argument(
        "file", help="NDJSON, one event per line (as `eventlog export` writes); - reads stdin"
    )

    ids = commands.add_parser("ids", help="work with snowflake ids")
    id_commands = ids.add_subparsers(dest="ids_command", required=True)
    decode_cmd = id_commands.add_parser("decode", help="print an id's timestamp, node and sequence")
    decode_cmd.add_argument("id", help="a 64-bit snowflake id in decimal")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        "dsn": args.dsn,
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "node_id": getattr(args, "node_id", None),
        "log_level": getattr(args, "log_level", None),
        "log_format": getattr(args, "log_format", None),
    }
    return load_settings(args.config, overrides=overrides)


async def serve(
    settings: Settings,
    *,
    reuse_port: bool = False,
    on_listening: Callable[[], object] | None = None,
) -> int:
    """Run the service until SIGTERM or SIGINT, then drain and stop; the exit status.
    ``reuse_port``: share the port with other processes (``serve --workers``)."""
    from .web import EVENT_LOG, SERVICE, STREAMS, create_app

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


def _serve_command(settings: Settings, workers_text: str) -> int:
    from .workers import supervise, worker_count

    try:
        workers = worker_count(workers_text)
    except ValueError:
        print(
            f'eventlog: --workers must be a positive number or "auto", not {workers_text!r}',
            file=sys.stderr,
        )
        return 2
    if workers == 1:
        return asyncio.run(serve(settings))
    if settings.node_id is not None:
        print(
            "eventlog: --node-id names one process; with --workers each worker claims its own",
            file=sys.stderr,
        )
        return 2
    return supervise(settings, workers)


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


async def _migrate(settings: Settings) -> int:
    try:
        async with open_store(settings.dsn, **settings.store_options()) as store:
            applied = await store.migrate()
    except StoreError as e:
        log.error("cannot migrate: %s", e)
        return 1
    print("applied: " + ", ".join(applied) if applied else "the schema is up to date")
    return 0


def _decode(text: str) -> int:
    try:
        if not text.isascii() or not text.isdigit():
            raise ValueError(text)
        parts = decode(int(text))
    except ValueError:
        print(f"eventlog: {text!r} is not a 64-bit snowflake id", file=sys.stderr)
        return 2
    print(f"id         {int(text)}")
    print(f"timestamp  {parts.timestamp.isoformat(timespec='milliseconds').replace('+00:00', 'Z')}")
    print(f"unix_ms    {parts.unix_ms}")
    print(f"node_id    {parts.node_id}")
    print(f"sequence   {parts.sequence}")
    return 0


def _warn_unknown_variables() -> None:
    for warning in unknown_variables():
        log.warning("%s", warning)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `eventlog` console script and of `python -m eventlog`."""
    args = _parser().parse_args(argv)
    if args.command == "ids":
        return _decode(args.id)
    if args.command == "tail":
        logging.basicConfig(level="INFO", format="%(asctime)s %(message)s", stream=sys.stderr)
        _warn_unknown_variables()
        filters = {k: v for k in FILTERS if (v := getattr(args, k)) is not None}
        try:
            return asyncio.run(
                tools.tail(
                    args.url,
                    execution_id=args.execution_id,
                    filters=filters,
                    after=args.after,
                    out=sys.stdout,
                    token=args.token,
                    max_wait=args.max_wait,
                )
            )
        except KeyboardInterrupt:
            return 130
    try:
        settings = _settings(args)
    except ConfigError as e:
        print(f"eventlog: configuration error: {e}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format.lower())
    _warn_unknown_variables()
    try:
        if args.command == "serve":
            return _serve_command(settings, args.workers)
        if args.command == "export":
            asyncio.run(tools.export(settings, args.execution_id, sys.stdout.buffer))
            return 0
        if args.command == "import":
            progress = sys.stderr if sys.stderr.isatty() else None
            asyncio.run(tools.import_file(settings, args.file, progress=progress))
            return 0
        return asyncio.run(_migrate(settings))
    except Problem as e:
        print(f"eventlog: {e.detail}", file=sys.stderr)
        for error in e.errors or []:
            print(f"  {error.path}: {error.message}", file=sys.stderr)
        return 1
    except (StoreError, OSError) as e:
        print(f"eventlog: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
