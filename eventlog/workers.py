"""`eventlog serve --workers N`: N server processes on one port, under one parent.

One Python process serves one core's worth of requests (the event loop holds the GIL). Each
worker is a whole service of its own — its node-id lease, writer, stream hub and metrics — and
they share only the database and the listening port (SO_REUSEPORT: the kernel spreads new
connections over them). Seq values stay in commit order across them, as across any processes
writing one database, and each stream hub reads the log itself, so a stream on one worker sees
what the others commit (on PostgreSQL at once through NOTIFY, on SQLite by its poll).
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from multiprocessing.context import SpawnContext, SpawnProcess
from multiprocessing.synchronize import Event
from types import FrameType

import attrs

from .config import Settings

log = logging.getLogger("eventlog")

RESTART_DELAY_S = 1.0  # before replacing a worker that died before it listened
STOP_GRACE_S = 5.0  # past a worker's own shutdown bound, before it is killed


def worker_count(text: str) -> int:
    """--workers: a positive number, or "auto" for the number of cores this process may use."""
    if text == "auto":
        return len(os.sched_getaffinity(0))
    count = int(text)
    if count < 1:
        raise ValueError(text)
    return count


def _reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound (not listening) to the port, which it holds for the workers' lifetime:
    port 0 is resolved once, and a restarted worker finds the same port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _run_worker(settings: Settings, number: int, listening: Event) -> None:
    """A worker process: the service, on the shared port."""
    import asyncio

    from . import logs
    from .__main__ import serve

    logs.configure(settings.log_level, settings.log_format.lower())
    multiprocessing.current_process().name = f"eventlog-worker-{number}"
    sys.exit(asyncio.run(serve(settings, reuse_port=True, on_listening=listening.set)))


@attrs.define
class _Worker:
    number: int
    process: SpawnProcess
    listening: Event
    started: float


class Supervisor:
    """Starts the workers, replaces one that dies, and stops them all on SIGTERM or SIGINT."""

    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        self._context: SpawnContext = multiprocessing.get_context("spawn")
        self._stopping = False

    def _start(self, number: int) -> _Worker:
        listening = self._context.Event()
        process = self._context.Process(
            target=_run_worker,
            args=(self.settings, number, listening),
            name=f"eventlog-worker-{number}",
        )
        process.start()
        return _Worker(number, process, listening, time.monotonic())

    def _signalled(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> int:
        """Serve until signalled; 0 when every worker stopped cleanly."""
        try:
            reserved = _reserve_port(self.settings.host, self.settings.port)
        except OSError as e:
            log.error("cannot listen on %s:%s: %s", self.settings.host, self.settings.port, e)
            return 1
        with reserved:
            self.settings = attrs.evolve(self.settings, port=reserved.getsockname()[1])
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, self._signalled)
            workers = [self._start(n) for n in range(1, self.count + 1)]
            log.info(
                "eventlog serving http://%s:%d with %d worker processes (pids %s)",
                self.settings.host,
                self.settings.port,
                self.count,
                ", ".join(str(w.process.pid) for w in workers),
            )
            failed = self._watch(workers)
            return self._stop(workers) or failed

    def _watch(self, workers: list[_Worker]) -> int:
        """Replace workers that die until a signal comes; 1 if the service cannot start."""
        while not self._stopping:
            multiprocessing.connection.wait([w.process.sentinel for w in workers], timeout=0.5)
            for i, worker in enumerate(workers):
                if worker.process.is_alive() or self._stopping:
                    continue
                worker.process.join()
                code = worker.process.exitcode
                if not worker.listening.is_set():
                    if not any(w.listening.is_set() for w in workers):
                        # None has ever started (a bad DSN, say): as the one process would.
                        log.error("worker %d could not start (exit code %s)", worker.number, code)
                        return 1
                    time.sleep(RESTART_DELAY_S)
                log.warning(
                    "worker %d (pid %d) exited with code %s; starting another",
                    worker.number,
                    worker.process.pid,
                    code,
                )
                workers[i] = self._start(worker.number)
        return 0

    def _stop(self, workers: list[_Worker]) -> int:
        """SIGTERM to every worker (each drains, as a lone server does); wait for them all."""
        for worker in workers:
            if worker.process.is_alive() and worker.process.pid is not None:
                os.kill(worker.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_timeout + STOP_GRACE_S
        status = 0
        for worker in workers:
            worker.process.join(max(deadline - time.monotonic(), 0.0))
            if worker.process.is_alive():
                log.error("worker %d did not stop in time; killing it", worker.number)
                worker.process.kill()
                worker.process.join()
            if worker.process.exitcode != 0:
                status = 1
        log.info("all %d workers stopped", len(workers))
        return status


def supervise(settings: Settings, count: int) -> int:
    """Run ``count`` workers under this process until SIGTERM or SIGINT."""
    return Supervisor(settings, count).run()
