"""A program embedding eventlog, for the two-process test: it appends through the library API.

usage: python embedded_writer.py DSN NUMBER OUT_DIR SECONDS

Once started it writes its node id to OUT_DIR/embedded-NUMBER.ready, waits for OUT_DIR/go,
then appends from WORKERS concurrent tasks for SECONDS (every other event without an event_id,
so that it mints one), and at the end writes each acknowledged append as a JSON line to
OUT_DIR/embedded-NUMBER.acks and each failure to OUT_DIR/embedded-NUMBER.errors.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from eventlog.config import Settings
from eventlog.log import EventLog

WORKERS = 4


async def main(dsn: str, number: int, out: Path, seconds: float) -> None:
    """Append until the time is up; record every acknowledgement and every failure."""
    acks: list[dict[str, object]] = []
    errors: list[str] = []
    async with EventLog(Settings(dsn=dsn)) as log:
        (out / f"embedded-{number}.ready").write_text(str(log.node_id))
        while not (out / "go").exists():
            await asyncio.sleep(0.01)
        stop_at = time.monotonic() + seconds

        async def worker(k: int) -> None:
            execution_id = 1000 * number + k + 1
            n = 0
            while time.monotonic() < stop_at:
                n += 1
                body: dict[str, object] = {
                    "execution_id": execution_id,
                    "event_type": "step.enter",
                    "step": f"worker-{k}",
                    "payload": {"n": n},
                }
                if n % 2:
                    body["event_id"] = number * 10**9 + k * 10**6 + n
                try:
                    appended = await log.append(body)
                except Exception as e:  # recorded; the test fails on any
                    errors.append(f"{type(e).__name__}: {getattr(e, 'detail', e)}")
                    continue
                acks.append(
                    {
                        "worker": k,
                        "execution_id": appended.event.execution_id,
                        "event_id": appended.event.event_id,
                        "seq": appended.event.seq,
                        "minted": "event_id" not in body,
                        "duplicate": appended.duplicate,
                    }
                )

        await asyncio.gather(*(worker(k) for k in range(WORKERS)))
    (out / f"embedded-{number}.acks").write_text("".join(json.dumps(a) + "\n" for a in acks))
    (out / f"embedded-{number}.errors").write_text("".join(e + "\n" for e in errors))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])))
