"""scripts/scale.py, run with tiny numbers, loads what it is asked and prints every figure."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import clean_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
LATENCY = r"p50 +\d+\.\d\d ms +p99 +\d+\.\d\d ms +\(n=\d+\)"
FIGURES = [
    "single append",
    "execution page",
    "execution summary",
    "feed event_type=<none>",
    "feed step=<none>",
    "feed status=<none>",
    "feed worker_id=<none>",
    "feed execution_id+event_type=<none>",
]


@pytest.fixture(params=["sqlite", "pg"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(kind, DSN) of an empty store: a SQLite file, or a schema of the run's PostgreSQL."""
    if request.param == "sqlite":
        yield "sqlite", f"sqlite:///{tmp_path}/scale.db"
        return
    yield "pg", request.getfixturevalue("pg_schema_dsn")


def purge_available() -> bool:
    """Whether this version has `eventlog purge` (the script measures it only then)."""
    argv = [sys.executable, "-m", "eventlog", "purge", "--help"]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def test_tiny_run_prints_every_figure_at_every_checkpoint(store):
    """3,000 events with checkpoints at 1,000 and 3,000: both checkpoints are reached, each
    prints the ingest rate, every latency figure with its median and p99, the size per million
    and the purge (or that there is none), and the comparison table has a row per figure."""
    kind, dsn = store
    argv = [sys.executable, "scripts/scale.py", "--store", kind, "--dsn", dsn]
    argv += ["--events", "3000", "--checkpoints", "1000,3000", "--batch", "250"]
    argv += ["--samples", "8", "--budget", "1", "--progress", "1", "--quiet", "0.5"]
    done = subprocess.run(
        argv, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=600, check=False
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "ingest through POST /api/events/batch" in out
    for loaded in ("1,000", "3,000"):
        assert f"--- checkpoint: {loaded} events loaded" in out, out
    lines = [line for line in out.splitlines() if line.startswith(f"[{kind}]")]
    assert len(re.findall(r"ingest rate +[\d,]+ events/s", out)) == 2, out
    for name in FIGURES:
        found = [line for line in lines if re.search(re.escape(name) + " +" + LATENCY, line)]
        assert len(found) == 2, (name, out)
    assert len(re.findall(r"feed event_type=<all \d+ of them> +" + LATENCY, out)) == 2, out
    # The compared page: as many as the first checkpoint matched, at both checkpoints.
    few = re.findall(r"feed event_type=<first (\d+) of them> +" + LATENCY, out)
    assert len(few) == 2 and few[0] == few[1], out
    assert len(re.findall(r"database size +[\d,.]+ MiB, [\d,.]+ MiB per million events", out)) == 2
    if purge_available():
        removed = [
            int(n.replace(",", "")) for n in re.findall(r"purge 10% .* for ([\d,]+) events", out)
        ]
        assert len(removed) == 2 and all(n > 0 for n in removed), out
        held = re.findall(r"purge, longest write-lock hold +(\d+\.\d) ms", out)
        assert len(held) == 2 and all(float(h) > 0 for h in held), out
        for label in ("appends during purge", "appends, 0.5 s before"):
            tails = re.findall(re.escape(label) + " +" + LATENCY + r"  worst \d+\.\d ms", out)
            assert len(tails) == 2, (label, out)
    else:
        assert out.count("purge: not available") == 2, out
    table = out[out.index("| figure |") :]
    for row in (
        "ingest rate",
        "single append p99",
        "execution page p50",
        "feed event_type=<first few> p50",
        "size per million events",
        *(("append p99 during purge",) if purge_available() else ()),
    ):
        assert re.search(
            rf"\| {re.escape(row)} \| \S+ \| [\d,.]+ \| [\d,.]+ \| \d+\.\d\d \| (YES|no) \|", table
        ), (row, table)
    if purge_available():  # under the compared rows: the hold against its bound, the worst
        shown = {
            "purge, longest write-lock hold": r"(within ~50 ms at both|OVER ~50 ms at [^|]+)",
            "worst append during purge": "not compared",
            "worst append just before, no purge": "not compared",
        }
        for row, said in shown.items():
            assert re.search(
                rf"\| {re.escape(row)} \| ms \| [\d,.]+ \| [\d,.]+ \| \d+\.\d\d \| {said} \|",
                table,
            ), (row, table)
