"""A bounded schemathesis run against a real server on each backend: no 5xx, no reply that
breaks the served OpenAPI document.

This module is also the run's hooks module (SCHEMATHESIS_HOOKS): it teaches schemathesis to
send the NDJSON form of a batch, which the document describes as the array of its lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import schemathesis

from eventlog.codec import NDJSON

pytestmark = pytest.mark.slow

SEED = 20260531
MAX_EXAMPLES = 25  # per operation and phase
RUN_TIMEOUT_S = 120
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
REPO = Path(__file__).resolve().parents[2]


@schemathesis.serializer(*NDJSON)
def ndjson_lines(ctx: Any, value: Any) -> bytes:
    """An array as one JSON document per line; anything else (negative cases) as one line."""
    items = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


def run_schemathesis(url: str, report: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    """`st run` against ``url`` with the module's bounds; the process and its JSON report."""
    st = Path(sys.executable).with_name("st")
    command = [
        str(st),
        "run",
        f"{url}/api/openapi.json",
        "--checks",
        ",".join(CHECKS),
        # The streams never end, so a request to them never completes; their first reply is
        # checked by the API tests instead.
        "--exclude-path-regex",
        "/stream$",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-database",
        "none",
        # One worker: the machine is shared, and a deterministic run needs a fixed order.
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.process.test_schemathesis",
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run(
        command,
        cwd=report.parent,  # schemathesis keeps a cache directory in its working directory
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    return done, json.loads(report.read_text()) if report.exists() else {}


def test_schemathesis_finds_no_server_error_and_no_reply_outside_the_document(
    dsn, backend, start_server, tmp_path
):
    """Every operation but the streams, fuzzed from the live document (coverage, fuzzing and
    stateful phases): every reply is a documented status, media type, headers and body."""
    server = start_server(dsn, env={"EVENTLOG_ACCESS_LOG": "off"})
    started = time.monotonic()
    done, report = run_schemathesis(server.url, tmp_path / "report.json")
    elapsed = time.monotonic() - started
    output = done.stdout[-8000:] + done.stderr[-4000:]
    assert report, f"no report; st exited {done.returncode}:\n{output}"
    cases = report["test_cases"]
    print(
        f"schemathesis on {backend}: {cases['generated']} cases, "
        f"{report['operations']['tested']} operations, {elapsed:.1f} s; phases "
        + ", ".join(f"{name} {phase['status']}" for name, phase in report["phases"].items())
    )
    assert report["failures"] == [] and report["errors"] == [], output
    assert done.returncode == 0, output
    assert report["complete"] and report["stop_reason"] == "completed", output
    assert {p["status"] for p in report["phases"].values()} == {"success"}, report["phases"]
    # Everything but the two streams and this document was exercised, and not vacuously.
    assert report["operations"]["tested"] == report["operations"]["selected"] >= 9, output
    assert cases["generated"] >= 500 and cases["with_failures"] == 0, output
    # The middleware logs each exception it turns into a 500.
    assert "unhandled error" not in server.log(), server.log()
