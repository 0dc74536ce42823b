"""The example program runs as the README says, and keeps its history across runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).parents[2] / "examples" / "workflow.py"


def test_example_records_a_workflow_and_prints_its_summary_and_timeline(tmp_path):
    """Run twice on one file: the same summary and timeline, since a rerun only retries."""
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), str(tmp_path / "example.db")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.splitlines())
    lines = outputs[0]
    assert lines[0] == "execution 1001: COMPLETED, 4 events"
    timeline = [line.split() for line in lines[1:]]
    assert [(t[0], t[2], t[3]) for t in timeline] == [
        ("1", "start", "step.enter"),
        ("2", "fetch", "call.done"),
        ("3", "fetch", "step.exit"),
        ("4", "end", "playbook.completed"),
    ]
    assert outputs[1] == outputs[0]
    assert (tmp_path / "example.db").stat().st_size > 0
