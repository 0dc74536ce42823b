"""The command line: eventlog serve | migrate | partitions | tail | export | import | purge |
vacuum | ids decode."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from . import __version__, logs, tools
from .codec import parse_timestamp
from .config import ConfigError, Settings, load_settings, unknown_variables
from .ids import decode
from .problems import Problem
from .retention import parse_duration, purge
from .serving import serve
from .storage.base import FILTERS, StoreError
from .storage.registry import store_from_settings

log = logging.getLogger("eventlog")


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

    migrate = commands.add_parser(
        "migrate",
        help="apply pending schema migrations and exit",
        description="Apply pending schema migrations and exit. On PostgreSQL, a database made "
        "before the events table was partitioned has its events copied into partitions, with a "
        "progress line per 50,000; an interrupted copy resumes where it stopped when run again.",
    )
    _store_flags(migrate)

    parts = commands.add_parser(
        "partitions",
        help="list the PostgreSQL events partitions: name, range, approximate rows, size",
    )
    _store_flags(parts)

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

    purge = commands.add_parser(
        "purge",
        help="remove the events ingested before a time, and print how many",
        description="Remove every event ingested before --before (and nothing else), in short "
        "steps while the service goes on serving; execution summaries follow, a stream or page "
        "resumed from a removed seq is told so. Prints how many events were removed (0 when "
        "none); with --dry-run, how many would be.",
    )
    _store_flags(purge)
    purge.add_argument(
        "--before",
        required=True,
        metavar="TIME|DURATION",
        help="an RFC 3339 time with an offset (2026-01-01T00:00:00Z), or a duration back from "
        "now (90d, 12h, 30m, 1d12h)",
    )
    purge.add_argument(
        "--dry-run", action="store_true", help="count what would be removed; remove nothing"
    )
    purge.add_argument(
        "--archive",
        metavar="FILE",
        help="first write the events to remove to FILE as NDJSON (as `eventlog export` "
        "writes; gzip when FILE ends in .gz); nothing is removed unless it is complete",
    )

    vacuum = commands.add_parser(
        "vacuum",
        help="give the space of removed events back (SQLite: VACUUM, once per older file)",
        description="SQLite: rewrite the file (VACUUM) so that it shrinks, and switch it to "
        "incremental auto-vacuum, after which purges shrink it step by step by themselves; "
        "it locks the file for its whole run (stop the service, or choose a quiet time). "
        "PostgreSQL: VACUUM (ANALYZE) the events and summaries now.",
    )
    _store_flags(vacuum)

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


async def _migrate(settings: Settings) -> int:
    try:
        async with store_from_settings(settings) as store:
            applied = await store.migrate(progress=lambda line: print(line, flush=True))
    except StoreError as e:
        log.error("cannot migrate: %s", e)
        return 1
    print("applied: " + ", ".join(applied) if applied else "the schema is up to date")
    return 0


async def _partitions(settings: Settings) -> int:
    async with store_from_settings(settings, read_only=True) as store:
        # Only PostgreSQL's store partitions (its module loads with the first PostgreSQL DSN).
        listing = getattr(store, "list_partitions", None)
        if listing is None:
            print(f"eventlog: {store.backend} does not partition its events", file=sys.stderr)
            return 2
        held = await listing()
    if not held:
        print("the events table is not partitioned (`eventlog migrate` partitions it)")
        return 0
    print(f"{'name':<20} {'from (UTC)':<20} {'to (UTC)':<20} {'~rows':>12} {'size':>10}")
    for p in held:
        lower, upper = (f"{m:%Y-%m-%d %H:%M}" for m in (p.lower, p.upper))
        note = "  (detaching)" if p.detaching else ""
        print(f"{p.name:<20} {lower:<20} {upper:<20} {p.rows:>12} {_size(p.bytes):>10}{note}")
    return 0


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _cut_off(text: str) -> datetime:
    """--before: an RFC 3339 time, or a duration back from now."""
    try:
        return datetime.now(UTC) - parse_duration(text)
    except ValueError:
        pass
    try:
        return parse_timestamp(text)
    except ValueError:
        raise ValueError(
            f"--before {text!r} is neither an RFC 3339 time with an offset "
            "(2026-01-01T00:00:00Z) nor a duration (90d, 12h, 30m)"
        ) from None


async def _purge(settings: Settings, before: datetime, dry_run: bool, archive: str | None) -> int:
    # Checked read-only first: a SQLite file that is not there is an error, not a new file.
    async with store_from_settings(settings, read_only=True) as store:
        if await store.pending_migrations():
            raise StoreError("the database schema is not current: run `eventlog migrate` first")
    async with store_from_settings(settings) as store:
        result = await purge(store, before, dry_run=dry_run, archive=archive)
    if result.archived is not None:
        log.info("archived %d events to %s", result.archived, archive)
    if result.steps:
        log.info("removed %d events %s", result.removed, result.steps_said)
    print(result.removed)
    return 0


async def _vacuum(settings: Settings) -> int:
    async with store_from_settings(settings) as store:
        await store.vacuum()
    print("vacuumed")
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
        if args.command == "purge":
            try:
                before = _cut_off(args.before)
            except ValueError as e:
                print(f"eventlog: {e}", file=sys.stderr)
                return 2
            return asyncio.run(_purge(settings, before, args.dry_run, args.archive))
        if args.command == "vacuum":
            return asyncio.run(_vacuum(settings))
        if args.command == "import":
            progress = sys.stderr if sys.stderr.isatty() else None
            asyncio.run(tools.import_file(settings, args.file, progress=progress))
            return 0
        if args.command == "partitions":
            return asyncio.run(_partitions(settings))
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
