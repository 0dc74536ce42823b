"""The command line, run as real processes: ids decode, migrate, serve's settings, --help."""

from __future__ import annotations

import importlib.metadata
import json
import os
import pty
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

import eventlog
from eventlog.storage.base import load_migrations

from .conftest import clean_env

pytestmark = pytest.mark.slow

EPOCH_UNIX_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z (CONTRACT §3)


def _compose(offset_ms: int, node_id: int, sequence: int) -> int:
    """A snowflake id built by hand from the layout in CONTRACT §3."""
    return (offset_ms << 22) | (node_id << 12) | sequence


def _lines(text: str) -> dict[str, str]:
    return dict(line.split(None, 1) for line in text.splitlines() if line.strip())


@pytest.mark.parametrize(
    ("moment", "node_id", "sequence"),
    [
        (datetime(2026, 5, 31, 10, 0, 0, 123_000, tzinfo=UTC), 517, 4000),
        (datetime(2024, 1, 1, tzinfo=UTC), 0, 0),
        (datetime(2031, 12, 24, 23, 59, 59, 999_000, tzinfo=UTC), 1023, 4095),
    ],
)
def test_ids_decode_prints_the_timestamp_node_and_sequence_of_an_id(
    run_eventlog, moment: datetime, node_id: int, sequence: int
) -> None:
    """`eventlog ids decode` splits a hand-built id back into its parts."""
    unix_ms = int(moment.timestamp() * 1000)
    event_id = _compose(unix_ms - EPOCH_UNIX_MS, node_id, sequence)
    done = run_eventlog("ids", "decode", str(event_id))
    assert done.returncode == 0, done.stderr
    assert _lines(done.stdout) == {
        "id": str(event_id),
        "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "unix_ms": str(unix_ms),
        "node_id": str(node_id),
        "sequence": str(sequence),
    }


@pytest.mark.parametrize("text", ["abc", "12a", "1.5", "-1", str(2**63)])
def test_ids_decode_of_a_non_id_exits_2(run_eventlog, text: str) -> None:
    """A text that is not a 64-bit id: exit status 2, a message on stderr, nothing on stdout."""
    done = run_eventlog("ids", "decode", text)
    assert done.returncode == 2
    assert done.stdout == ""
    assert text in done.stderr


def test_migrate_applies_the_schema_once_then_reports_it_up_to_date(
    run_eventlog, dsn: str, backend: str
) -> None:
    """`eventlog migrate` on an empty store applies 0001_events; a second run has nothing to do."""
    names = [f"{m.version:04d}_{m.name}" for m in load_migrations(backend)]
    assert names[0] == "0001_events"
    first = run_eventlog("migrate", "--dsn", dsn)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "applied: " + ", ".join(names)
    second = run_eventlog("migrate", "--dsn", dsn)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "the schema is up to date"


def test_serve_with_an_unknown_key_in_the_config_file_exits_2_naming_it(
    run_eventlog, tmp_path: Path
) -> None:
    """A config file with a key eventlog does not know stops `serve` before it listens."""
    config = tmp_path / "eventlog.toml"
    config.write_text('port = 0\nlisten_backlog = 128\ndsn = "sqlite:///events.db"\n')
    done = run_eventlog("serve", "--config", str(config), timeout=20)
    assert done.returncode == 2, done.stderr
    assert "listen_backlog" in done.stderr
    assert "listening" not in done.stderr


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_serve_port_flag_wins_over_eventlog_port(start_server, tmp_path: Path) -> None:
    """--port beats EVENTLOG_PORT: the server listens on the flag's port."""
    flag_port, env_port = _free_ports(2)
    server = start_server(
        f"sqlite:///{tmp_path}/events.db",
        args=("--port", str(flag_port)),
        env={"EVENTLOG_PORT": str(env_port)},
    )
    assert server.url == f"http://127.0.0.1:{flag_port}", server.log()


def test_serve_takes_its_port_from_eventlog_port_without_the_flag(
    start_server, tmp_path: Path
) -> None:
    """Without --port, EVENTLOG_PORT is used (so the precedence test above can fail)."""
    (env_port,) = _free_ports(1)
    server = start_server(
        f"sqlite:///{tmp_path}/events.db", args=(), env={"EVENTLOG_PORT": str(env_port)}
    )
    assert server.port == env_port, server.log()


@pytest.mark.parametrize("command", ["serve", "migrate"])
@pytest.mark.parametrize("bad_dsn", ["mysql://localhost/events", "events.db", "sqlite:events.db"])
def test_a_dsn_with_an_unsupported_scheme_exits_2(run_eventlog, command: str, bad_dsn: str) -> None:
    """A DSN that is neither sqlite:/// nor postgresql:// is a configuration error (exit 2)."""
    done = run_eventlog(command, "--dsn", bad_dsn, timeout=20)
    assert done.returncode == 2, done.stderr
    assert "dsn" in done.stderr
    assert bad_dsn in done.stderr


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["ids", "decode", "--help"]])
def test_console_script_and_python_m_print_the_same_help(run_eventlog, args: list[str]) -> None:
    """The `eventlog` console script and `python -m eventlog` are the same program."""
    script = Path(sys.executable).parent / "eventlog"
    assert script.is_file(), f"no console script next to {sys.executable}"
    via_module = run_eventlog(*args)
    via_script = run_eventlog(*args, command=[str(script)])
    assert via_module.returncode == via_script.returncode == 0, (
        via_module.stderr + via_script.stderr
    )
    assert via_module.stdout.startswith("usage: eventlog")
    assert via_script.stdout == via_module.stdout


def test_a_bad_eventlog_port_does_not_stop_serve_when_port_is_given(
    start_server, tmp_path: Path
) -> None:
    """EVENTLOG_PORT=abc with --port: the flag decides, the variable is never read."""
    (flag_port,) = _free_ports(1)
    server = start_server(
        f"sqlite:///{tmp_path}/events.db",
        args=("--port", str(flag_port)),
        env={"EVENTLOG_PORT": "abc"},
    )
    assert server.port == flag_port, server.log()


def test_a_bad_eventlog_port_without_the_flag_exits_2_naming_it(
    run_eventlog, tmp_path: Path
) -> None:
    """With no flag to replace it, EVENTLOG_PORT=abc stops serve before it listens."""
    done = run_eventlog(
        "serve", "--dsn", f"sqlite:///{tmp_path}/events.db", env={"EVENTLOG_PORT": "abc"}
    )
    assert done.returncode == 2, done.stderr
    assert "EVENTLOG_PORT='abc'" in done.stderr
    assert "listening" not in done.stderr
    assert not (tmp_path / "events.db").exists()


def test_a_misspelt_token_variable_is_named_and_the_start_line_says_access_is_open(
    start_server, tmp_path: Path
) -> None:
    """EVENTLOG_WRITE_TOKEN (no S): a warning names it with the setting it resembles, and the
    listening line says there is no access control; the test switches are not reported."""
    server = start_server(
        f"sqlite:///{tmp_path}/events.db",
        env={"EVENTLOG_WRITE_TOKEN": "secret", "EVENTLOG_REQUIRE_PG": "1"},
    )
    log = server.log()
    assert (
        "EVENTLOG_WRITE_TOKEN is not an eventlog setting and is ignored; "
        "did you mean EVENTLOG_WRITE_TOKENS?"
    ) in log
    assert "EVENTLOG_REQUIRE_PG" not in log
    listening = next(line for line in log.splitlines() if "listening on" in line)
    assert "access control off" in listening
    assert "secret" not in log


def test_the_start_line_says_access_control_is_on_with_tokens(start_server, tmp_path: Path) -> None:
    """EVENTLOG_WRITE_TOKENS set: the listening line says so, with counts but no token."""
    server = start_server(
        f"sqlite:///{tmp_path}/events.db",
        env={"EVENTLOG_WRITE_TOKENS": "s3cret1,s3cret2", "EVENTLOG_READ_TOKENS": "r3ad"},
    )
    log = server.log()
    listening = next(line for line in log.splitlines() if "listening on" in line)
    assert "access control on: 2 write and 1 read token(s)" in listening
    assert "is not an eventlog setting" not in log
    assert "s3cret" not in log and "r3ad" not in log


def test_version_prints_the_installed_version(run_eventlog) -> None:
    """`eventlog --version` prints the package's version, the one pip installed."""
    done = run_eventlog("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"eventlog {eventlog.__version__}"
    assert eventlog.__version__ == importlib.metadata.version("eventlog")


def test_export_of_a_sqlite_file_that_does_not_exist_fails_and_creates_nothing(
    run_eventlog, tmp_path: Path
) -> None:
    """Exporting a missing file: exit 1 naming it; no file, no directory, no WAL appears."""
    before = sorted(tmp_path.rglob("*"))
    done = run_eventlog("export", "--dsn", "sqlite:///missing/events.db")
    assert done.returncode == 1, done.stderr
    assert "no SQLite file at missing/events.db" in done.stderr
    assert done.stdout == ""
    assert sorted(tmp_path.rglob("*")) == before


async def _tables(dsn: str, backend: str) -> list[str]:
    if backend == "sqlite":
        with sqlite3.connect(dsn.removeprefix("sqlite:///")) as db:
            return [r[0] for r in db.execute("SELECT name FROM sqlite_master")]
    conn = await asyncpg.connect(dsn.partition("?")[0])
    try:
        schema = dsn.partition("search_path=")[2]
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
        return [r[0] for r in rows]
    finally:
        await conn.close()


async def test_export_of_a_store_without_an_event_log_says_so_and_changes_nothing(
    run_eventlog, dsn: str, backend: str
) -> None:
    """An existing but empty database (an empty SQLite file; an empty schema): exit 1 saying
    it holds no event log, and still no table in it afterwards."""
    if backend == "sqlite":
        sqlite3.connect(dsn.removeprefix("sqlite:///")).close()
    done = run_eventlog("export", "--dsn", dsn)
    assert done.returncode == 1, done.stderr
    assert "holds no event log" in done.stderr
    assert await _tables(dsn, backend) == []


def _ndjson(count: int) -> str:
    return "".join(
        json.dumps({"execution_id": 41, "event_id": 100 + n, "name": "step.enter", "step": f"s{n}"})
        + "\n"
        for n in range(count)
    )


def test_import_dash_reads_standard_input(run_eventlog, dsn: str) -> None:
    """`eventlog import -` appends the NDJSON piped to it; export reads the events back."""
    done = run_eventlog("import", "--dsn", dsn, "-", stdin=_ndjson(3))
    assert done.returncode == 0, done.stderr
    assert "imported 3 new events, 0 already stored" in done.stderr
    exported = run_eventlog("export", "--dsn", dsn)
    assert exported.returncode == 0, exported.stderr
    events = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [(e["event_id"], e["step"]) for e in events] == [
        ("100", "s0"),
        ("101", "s1"),
        ("102", "s2"),
    ]


def test_import_progress_bar_and_log_lines_each_keep_their_own_line(tmp_path: Path) -> None:
    """On a terminal, the bar is drawn in place; a log line written while it shows (the node
    id released at the end) starts on a line of its own instead of after the bar."""
    source = tmp_path / "events.ndjson"
    source.write_text(_ndjson(2500))
    main, other = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "eventlog", "import", "--dsn", "sqlite:///e.db", str(source)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=other,
            cwd=tmp_path,
            env=clean_env(),
        )
        os.close(other)
        output = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the process closed its end
                break
            if not chunk:
                break
            output += chunk
        assert proc.wait(timeout=60) == 0, output
    finally:
        os.close(main)
    lines = output.decode().replace("\r\n", "\n").split("\n")
    bars = [line for line in lines if "2500/2500 lines" in line]
    assert len(bars) == 1 and bars[0].endswith("2500 new, 0 already stored"), lines
    released = [line for line in lines if "released node id" in line]
    assert len(released) == 1 and "lines," not in released[0], lines
    assert "\r[###" in bars[0]  # drawn in place, chunk by chunk


def test_tail_with_max_wait_gives_up_after_that_long_and_logs_the_loss_once(run_eventlog) -> None:
    """Nothing listens: `tail --max-wait 2` keeps trying for two seconds, logs one line when
    the stream is lost (not one per attempt), then exits 1 saying why."""
    (port,) = _free_ports(1)
    started = time.monotonic()
    done = run_eventlog("tail", "--url", f"http://127.0.0.1:{port}", "--max-wait", "2")
    assert done.returncode == 1, done.stderr
    assert 2.0 <= time.monotonic() - started < 15.0
    assert done.stderr.count("stream lost") == 1, done.stderr
    assert "for up to 2 s" in done.stderr
    assert "unreachable" in done.stderr.splitlines()[-1]


def test_tail_help_shows_the_default_url_and_the_retry_policy(run_eventlog) -> None:
    """`tail --help` names the default --url and says how long tail keeps trying."""
    done = run_eventlog("tail", "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "(default: http://127.0.0.1:8080)" in text
    assert "--max-wait SECONDS" in text and "for ever" in text


def test_partitions_lists_name_range_rows_and_size_or_says_sqlite_has_none(
    run_eventlog, dsn: str, backend: str
) -> None:
    """`eventlog partitions` prints a line per partition of the events table on PostgreSQL
    (today's first, two ahead); on SQLite it says there are none to list and exits 2."""
    assert run_eventlog("migrate", "--dsn", dsn).returncode == 0
    done = run_eventlog("partitions", "--dsn", dsn)
    if backend == "sqlite":
        assert done.returncode == 2
        assert "sqlite does not partition its events" in done.stderr
        return
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["name", "from", "(UTC)", "to", "(UTC)", "~rows", "size"]
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert len(rows) == 3
    name, day, _, _, _, count, *size = rows[0].split()
    assert (name, day, count) == (f"events_p{today.replace('-', '')}", today, "0")
    assert size[1] in ("kB", "MB")
