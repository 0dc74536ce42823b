"""The README's curl session, pasted into bash as written, against a real `eventlog serve`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import clean_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _session() -> str:
    """The first sh block after the session's heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("```sh\n", text.index("## A session with curl")) + len("```sh\n")
    return text[start : text.index("```\n", start)]


def test_the_curl_session_runs_as_written(start_server, tmp_path: Path) -> None:
    """Every command of the session succeeds in one bash run; the id captured from the POST
    fetches the same event, the bad envelope gets its 422, and ids decode reads the id."""
    if shutil.which("curl") is None:
        pytest.fail("curl is needed to replay the README's session")
    server = start_server(f"sqlite:///{tmp_path}/events.db")
    script = _session().replace("http://127.0.0.1:8080", server.url)
    assert script != _session(), "the session no longer names http://127.0.0.1:8080"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    reply, event, page, problem = (json.loads(line) for line in lines[:4])
    assert reply["status"] == "ok" and reply["commands_generated"] == 0
    assert event["event_id"] == reply["event_id"] and event["payload"] == {"result": "ok"}
    assert [e["event_id"] for e in page["events"]] == [reply["event_id"]]
    assert problem["status"] == 422 and problem["code"] == "invalid_envelope"
    assert lines[4].split() == ["id", reply["event_id"]]
    assert len(lines) == 9
