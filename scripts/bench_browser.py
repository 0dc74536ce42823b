"""The event browser on a big execution, against a baseline measured in the same run.

A real `eventlog serve` (SQLite, loopback, a free port) holds one execution of --events events;
Debian's chromium (headless, through playwright) opens its page --repeat times, alternating each
time with the baseline, and the medians are printed:
- page: from navigation until every event is laid out and painted (list, filters, timeline);
- render: the part of that the page spent laying out and painting, not fetching;
- baseline: the same browser fetching and parsing the same pages of 1,000 with bare fetch(),
  which is what any client needs to have the data at all.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import orjson
from playwright.async_api import async_playwright

EXECUTION = 8001
BASELINE = """async (id) => {
  const started = performance.now();
  let after = null, count = 0;
  for (;;) {
    const url = new URL(`../api/executions/${id}/events`, location.href);
    url.searchParams.set('limit', '1000');
    if (after) url.searchParams.set('after', after);
    const reply = await fetch(url);
    if (!reply.ok) throw new Error(`${url}: ${reply.status}`);
    const page = JSON.parse(await reply.text());
    count += page.events.length;
    if (!page.next_cursor) break;
    after = page.next_cursor;
  }
  return [performance.now() - started, count];
}"""


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def events(count: int) -> list[dict]:
    """One execution: 40 steps, 8 workers, a failure now and then, 50 ms apart."""
    t0 = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    return [
        {
            "execution_id": EXECUTION,
            "step": f"step_{i % 40:02d}",
            "event_type": "command.failed" if i % 997 == 0 else "call.done",
            "worker_id": f"w-{i % 8}",
            "created_at": (t0 + timedelta(milliseconds=50 * i)).isoformat(),
            "payload": {"i": i, "rows": [i, i + 1]},
        }
        for i in range(count)
    ]


async def wait_ready(base: str) -> None:
    """Until the server answers /ready (at most 20 s)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(base + "/ready") as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("the server did not become ready")


async def run(args: argparse.Namespace) -> None:
    """Seed, then measure page and baseline alternately."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as folder:
        server = subprocess.Popen(
            [Path(sys.executable).parent / "eventlog", "serve", "--port", str(port),
             "--dsn", f"sqlite:///{folder}/bench.db", "--log-level", "WARNING"],
        )  # fmt: skip
        try:
            await wait_ready(base)
            async with aiohttp.ClientSession() as session:
                body = io.BytesIO(orjson.dumps(events(args.events)))
                headers = {"Content-Type": "application/json"}
                async with session.post(base + "/api/events/batch", data=body, headers=headers):
                    pass
            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path=args.chromium)
                page = await browser.new_page(viewport={"width": 1440, "height": 900})
                figures: dict[str, list[float]] = {"page": [], "render": [], "baseline": []}
                for _ in range(args.repeat):
                    await page.goto(f"{base}/executions/{EXECUTION}")
                    await page.wait_for_selector(
                        f"body[data-loaded='{args.events}']", timeout=60_000
                    )
                    data = await page.evaluate("({...document.body.dataset})")
                    figures["page"].append(float(data["loadedMs"]))
                    figures["render"].append(float(data["renderMs"]))
                    took, count = await page.evaluate(BASELINE, EXECUTION)
                    assert count == args.events, count
                    figures["baseline"].append(took)
                await browser.close()
        finally:
            server.terminate()
            server.wait(10)
    med = {k: statistics.median(v) for k, v in figures.items()}
    print(
        f"eventlog browser bench, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"{args.events:,} events, {args.repeat} alternating runs, medians"
    )
    print(f"page, navigation to all painted: {med['page']:.0f} ms")
    print(f"  of which laying out and painting: {med['render']:.0f} ms")
    print(f"baseline, fetch() and JSON.parse of the same pages: {med['baseline']:.0f} ms")
    print(f"page / baseline: {med['page'] / med['baseline']:.2f}")


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
