"""The dependency floors setup.cfg declares are versions eventlog works with."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import clean_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]


def test_the_declared_floors_install_and_serve(tmp_path, pg_schema_dsn):
    """scripts/floors.py installs every dependency at its declared floor into a fresh venv (from
    the package index, a regular install), then the example program runs and requests through
    the app work on SQLite and PostgreSQL."""
    done = subprocess.run(
        [sys.executable, "scripts/floors.py", "--keep", str(tmp_path), "--dsn", pg_schema_dsn],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "execution 1001: COMPLETED, 4 events" in output
    assert output.count("requests on") == 2, output
    assert "requests on sqlite ok" in output and "requests on postgresql ok" in output
