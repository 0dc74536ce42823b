"""Install eventlog with every dependency at the lowest version setup.cfg allows, into a fresh
virtual environment, and use it: the example program, and requests through the HTTP app.

A floor in setup.cfg is a promise; this keeps it. Run: python3 scripts/floors.py [--keep DIR]
[--dsn DSN ...] (the requests go to a SQLite file in the scratch folder, and to each empty store
named; tests/process/test_floors.py runs it on both backends as a slow test).
"""

from __future__ import annotations

import argparse
import configparser
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run inside the floor environment: requests through create_app's application, on one store.
REQUESTS = textwrap.dedent(
    """
    import asyncio, sys
    from importlib import metadata, resources

    from aiohttp.test_utils import TestClient, TestServer

    from eventlog.config import make_settings
    from eventlog.web import create_app

    async def main(dsn):
        app = create_app(make_settings(dsn=dsn))
        async with TestClient(TestServer(app)) as client:
            body = {"execution_id": 7, "name": "call.done", "step": "fetch", "payload": {"n": 1}}
            posted = await client.post("/api/events", json=body)
            assert posted.status == 200, await posted.text()
            event_id = (await posted.json())["event_id"]
            got = await client.get(f"/api/events/{event_id}")
            assert (await got.json())["payload"] == {"n": 1}, await got.text()
            batch = await client.post("/api/events/batch", json={"execution_id": 7, "events": [
                {"name": "step.exit", "step": "fetch"}, {"name": "playbook.completed", "step": "end"}
            ]}, headers={"Idempotency-Key": "floors"})
            assert batch.status == 200, await batch.text()
            summary = await (await client.get("/api/executions/7")).json()
            assert (summary["event_count"], summary["status"]) == (3, "COMPLETED"), summary
            bad = await client.post("/api/events", json={"execution_id": "x"})
            assert bad.status == 422 and (await bad.json())["code"] == "invalid_envelope"
            for path in ("/api/openapi.json", "/metrics", "/ready"):
                reply = await client.get(path)
                assert reply.status == 200, (path, await reply.text())
        assert resources.files("eventlog").joinpath("py.typed").is_file()
        print("requests on", dsn.partition(":")[0], "ok with", ", ".join(
            f"{d} {metadata.version(d)}" for d in sys.argv[2:]
        ))

    asyncio.run(main(sys.argv[1]))
    """
)


_NOT_SOURCE = (".git", ".venv", "build", "var", "*.egg-info", ".*_cache", ".hypothesis")


def floors() -> dict[str, str]:
    """Each install_requires entry of setup.cfg and its declared lower bound."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    found = {}
    for line in config["options"]["install_requires"].split("\n"):
        if line.strip():
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9][0-9A-Za-z.]*)", line.strip())
            if match is None:
                raise SystemExit(f"setup.cfg: {line.strip()!r} has no plain >= floor")
            found[match[1]] = match[2]
    return found


def run(command: list[str], cwd: Path | None = None) -> None:
    """Run a command, echoing it (long arguments shortened); exit with its status on failure."""
    print("+", " ".join(a if len(a) < 80 else a[:30] + "…" for a in command), flush=True)
    done = subprocess.run(command, cwd=cwd, check=False)
    if done.returncode:
        raise SystemExit(f"floors: failed with exit status {done.returncode}")


def main() -> None:
    """Build the floor environment and use it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="build the environment in this folder and keep it")
    parser.add_argument("--dsn", action="append", default=[], help="another empty store to use")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="eventlog-floors-") as scratch:
        work = Path(args.keep or scratch)
        work.mkdir(parents=True, exist_ok=True)
        pins = floors()
        constraints = work / "floors.txt"
        constraints.write_text("".join(f"{name}=={v}\n" for name, v in pins.items()))
        venv = work / "venv"
        run([sys.executable, "-m", "venv", "--clear", str(venv)])
        python = str(venv / "bin" / "python")
        # A regular (not editable) install, as a user gets it, package data included; built
        # from a copy, so that the build leaves nothing in the working tree.
        source = work / "source"
        shutil.rmtree(source, ignore_errors=True)
        shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*_NOT_SOURCE))
        run([python, "-m", "pip", "install", "--quiet", "-c", str(constraints), str(source)])
        run([python, str(ROOT / "examples" / "workflow.py"), str(work / "example.db")])
        for dsn in [f"sqlite:///{work / 'requests.db'}", *args.dsn]:
            run([python, "-c", REQUESTS, dsn, *pins], cwd=work)


if __name__ == "__main__":
    main()
