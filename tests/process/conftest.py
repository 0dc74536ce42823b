"""Real server processes: start `python -m eventlog serve` on a DSN, wait for it to listen, kill it.

The server's stdout and stderr go to a log file in tmp_path, never to a pipe (the access log
would fill a pipe and block the server). The environment has every EVENTLOG_ variable removed
except those a test sets, so a developer's shell cannot change what the tests see.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import aiohttp
import asyncpg
import pytest

LISTENING = re.compile(r"eventlog listening on (http://(\S+?):(\d+)) \(")
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ without EVENTLOG_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTLOG_")}
    env.update(extra or {})
    return env


class Server:
    """One running `eventlog serve` process."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path
        self.url = ""
        self.host = ""
        self.port = 0

    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text("utf-8", errors="replace")

    def wait_listening(self, timeout: float = START_TIMEOUT_S) -> None:
        """Poll the log until the listening line appears; fail with the log otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            match = LISTENING.search(self.log())
            if match:
                self.url, self.host, self.port = match[1], match[2], int(match[3])
                return
            if self.proc.poll() is not None:
                pytest.fail(
                    f"eventlog serve exited with {self.proc.returncode} before listening; "
                    f"log:\n{self.log()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"eventlog serve did not listen within {timeout} s; log:\n{self.log()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, no final commit; then reap the process."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT_S)

    def terminate(self) -> int:
        """SIGTERM, wait for the exit, and return the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(
                f"eventlog serve ignored SIGTERM for {STOP_TIMEOUT_S} s; log:\n{self.log()}"
            )


class ServerFactory:
    """Starts servers for one test and reaps every one of them at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.servers: list[Server] = []

    def __call__(
        self,
        dsn: str | None,
        node_id: int | None = None,
        *,
        args: Sequence[str] = ("--port", "0"),
        env: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> Server:
        """Start `python -m eventlog serve --dsn DSN <args> --node-id N`; wait until it listens."""
        command = [sys.executable, "-m", "eventlog", "serve"]
        if dsn is not None:
            command += ["--dsn", dsn]
        command += list(args)
        if node_id is not None:
            command += ["--node-id", str(node_id)]
        log_path = self.tmp_path / f"server-{len(self.servers) + 1}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=clean_env(env),
                cwd=self.tmp_path,
            )
        server = Server(proc, log_path)
        self.servers.append(server)
        if wait:
            server.wait_listening()
        return server

    def close(self) -> None:
        for server in self.servers:
            server.kill()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """A factory for real server processes, all killed and reaped when the test ends."""
    factory = ServerFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


class Cli:
    """Runs `python -m eventlog ...` (or another command) to completion."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd

    def __call__(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
        timeout: float = 30.0,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*(command or [sys.executable, "-m", "eventlog"]), *args],
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
            capture_output=True,
            text=True,
            env=clean_env(env),
            cwd=self.cwd,
            timeout=timeout,
            check=False,
        )


@pytest.fixture
def run_eventlog(tmp_path: Path) -> Cli:
    """Run the CLI in tmp_path with a clean environment; returns the CompletedProcess."""
    return Cli(tmp_path)


async def stored_keys(
    session: aiohttp.ClientSession, url: str, execution_id: str, page_size: int
) -> list[tuple[str, str]]:
    """Every (execution_id, event_id) of one execution, paging in seq order; seq must grow."""
    keys: list[tuple[str, str]] = []
    after: str | None = None
    last_seq = 0
    while True:
        params = (
            {"limit": str(page_size)}
            if after is None
            else {"limit": str(page_size), "after": after}
        )
        async with session.get(f"{url}/api/executions/{execution_id}/events", params=params) as r:
            assert r.status == 200, await r.text()
            page = await r.json()
        for event in page["events"]:
            assert event["execution_id"] == execution_id
            assert int(event["seq"]) > last_seq, f"seq went back in execution {execution_id}"
            last_seq = int(event["seq"])
            keys.append((event["execution_id"], event["event_id"]))
        after = page["next_cursor"]
        if after is None:
            return keys


@pytest.fixture
def pg_schema_dsn(pg_database_dsn: str) -> Iterator[str]:
    """An empty schema of the run's PostgreSQL database, dropped afterwards (for tests that
    run eventlog in processes of their own, outside the event loop of pytest-aiohttp)."""
    schema = f"t_{secrets.token_hex(4)}"

    async def sql(statement: str) -> None:
        conn = await asyncpg.connect(pg_database_dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(sql(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{pg_database_dsn}?search_path={schema}"
    finally:
        asyncio.run(sql(f"DROP SCHEMA {schema} CASCADE"))
