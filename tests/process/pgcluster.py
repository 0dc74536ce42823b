"""Throwaway PostgreSQL clusters for the process tests, and hot standbys of them.

A cluster lives in a temporary folder: initdb and pg_ctl, under `runuser -u postgres` when the
tests run as root (initdb refuses root), listening on a free loopback port. A hot standby is
cloned from a running cluster with `pg_basebackup -R` (streaming replication, trust on
loopback as initdb sets it up). Where no cluster can be made, the test is skipped with a
notice nobody can miss, or fails under EVENTLOG_REQUIRE_PG=1.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

REQUIRE_PG = os.environ.get("EVENTLOG_REQUIRE_PG") == "1"


def pg_bindir() -> Path | None:
    """Where initdb and pg_ctl live: pg_config's answer, else the newest Debian-style folder."""
    candidates = []
    if shutil.which("pg_config"):
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            out = subprocess.run(
                ["pg_config", "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(Path(out.stdout.strip()))
    candidates += sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).parent)  # type: ignore[arg-type]
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A PostgreSQL cluster in a temporary folder, run as the postgres user when we are root.
    ``settings`` are server settings given at each start (-c name=value)."""

    def __init__(
        self,
        bindir: Path,
        folder: Path,
        as_user: list[str],
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.bindir = bindir
        self.folder = folder
        self.data = folder / "data"
        self.log = folder / "postgres.log"
        self.port = free_port()
        self.settings = dict(settings or {})
        self._as_user = as_user

    @property
    def dsn(self) -> str:
        """A DSN of the cluster's postgres database over TCP."""
        return self.database_dsn("postgres")

    def database_dsn(self, database: str) -> str:
        """A DSN of one database of the cluster over TCP."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        done = subprocess.run(
            [*self._as_user, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise AssertionError(
                f"{' '.join(args)} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}\n"
                f"server log:\n{log}"
            )

    def init(self) -> None:
        """initdb with trust authentication for the postgres user."""
        self._run(
            str(self.bindir / "initdb"),
            *("-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8"),
            *("--locale=C", "--no-sync"),
        )

    def clone(self, primary: Cluster) -> None:
        """Make this cluster a streaming hot standby of ``primary`` (which must be running):
        pg_basebackup -R writes the connection to it and standby.signal."""
        self._run(
            str(self.bindir / "pg_basebackup"),
            *("-D", str(self.data), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"),
            *("-R", "-X", "stream", "-c", "fast", "--no-sync"),
        )

    def start(self) -> None:
        """pg_ctl start, waiting until the server accepts connections."""
        options = f"-k {self.folder} -p {self.port} -c listen_addresses=127.0.0.1"
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._run(
            str(self.bindir / "pg_ctl"),
            *("-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60"),
            "start",
        )

    def stop(self, mode: str) -> None:
        """pg_ctl stop -m ``mode``, waiting until the server is gone."""
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"
        )

    def _pids(self) -> list[int]:
        """The postmaster, then its children (the backends and helpers)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in glob.glob("/proc/[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(stat).read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == postmaster:
                    children.append(int(Path(stat).parent.name))
        return [postmaster, *children]

    def freeze(self) -> None:
        """SIGSTOP every process of the cluster: connections open, nothing answers."""
        for pid in self._pids():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT every process of the cluster."""
        for pid in reversed(self._pids()):
            os.kill(pid, signal.SIGCONT)

    def running(self) -> bool:
        """Whether the postmaster is up."""
        return (self.data / "postmaster.pid").exists()


def unavailable(reason: str, what: str) -> None:
    """Skip ``what`` loudly (fail under EVENTLOG_REQUIRE_PG=1): no cluster can be made."""
    if REQUIRE_PG:
        pytest.fail(
            f"EVENTLOG_REQUIRE_PG=1 but a throwaway PostgreSQL cluster is impossible: {reason}"
        )
    pytest.skip(f"NO THROWAWAY POSTGRESQL CLUSTER ({reason}); {what} is SKIPPED")


def _runner(what: str) -> tuple[Path, list[str], pwd.struct_passwd | None]:
    """The binaries, the command prefix that runs them, and the user that owns the files."""
    bindir = pg_bindir()
    if bindir is None:
        unavailable(
            "initdb and pg_ctl not found (pg_config --bindir, /usr/lib/postgresql/*/bin)", what
        )
    assert bindir is not None
    if os.geteuid() != 0:
        return bindir, [], None
    runuser = shutil.which("runuser")
    if runuser is None:
        unavailable("running as root, and runuser is missing (initdb refuses root)", what)
    try:
        owner = pwd.getpwnam("postgres")
    except KeyError:
        unavailable("running as root, and there is no postgres user to run initdb as", what)
    return bindir, [runuser, "-u", "postgres", "--"], owner  # type: ignore[list-item]


@contextlib.contextmanager
def _cluster(what: str, prefix: str, settings: Mapping[str, str] | None) -> Iterator[Cluster]:
    """A cluster in a fresh folder (not yet made), stopped and removed however the test ends."""
    bindir, as_user, owner = _runner(what)
    # Not under pytest's tmp_path: its parents are private to root, and postgres must get in.
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    if owner is not None:
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    cluster = Cluster(bindir, folder, as_user, settings)
    try:
        yield cluster
    finally:
        if cluster.running():
            with contextlib.suppress(AssertionError, subprocess.SubprocessError):
                cluster.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def throwaway_cluster(
    what: str, *, prefix: str, settings: Mapping[str, str] | None = None
) -> Iterator[Cluster]:
    """A started cluster of its own (``what`` names the test in a skip notice)."""
    with _cluster(what, prefix, settings) as cluster:
        cluster.init()
        cluster.start()
        yield cluster


@contextlib.contextmanager
def hot_standby(
    primary: Cluster, what: str, *, prefix: str, settings: Mapping[str, str] | None = None
) -> Iterator[Cluster]:
    """A started streaming hot standby of the running ``primary``."""
    if not (primary.bindir / "pg_basebackup").exists():
        unavailable(f"no pg_basebackup in {primary.bindir}", what)
    with _cluster(what, prefix, settings) as standby:
        standby.clone(primary)
        standby.start()
        yield standby
