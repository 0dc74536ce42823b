"""The store registry: a DSN's scheme picks the store class; settings configure it; a store
registered from outside the package runs the same contract suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eventlog.config import ConfigError, make_settings
from eventlog.storage.postgres import PostgresStore
from eventlog.storage.registry import open_store, schemes, store_class, store_from_settings
from eventlog.storage.sqlite import SqliteStore

ROOT = Path(__file__).parents[2]


def test_built_in_schemes_name_their_stores():
    """sqlite, postgresql and postgres are registered, and name the two backends."""
    assert {"sqlite", "postgresql", "postgres"} <= set(schemes())
    assert store_class("sqlite:///x.db") is SqliteStore
    assert store_class("postgresql://h/db") is store_class("POSTGRES://h/db") is PostgresStore


def test_each_store_takes_its_own_settings():
    """from_settings hands each backend the settings that concern it."""
    sqlite = store_from_settings(make_settings(dsn="sqlite:///x.db", sqlite_synchronous="NORMAL"))
    assert isinstance(sqlite, SqliteStore) and sqlite._synchronous == "NORMAL"
    pg = store_from_settings(
        make_settings(dsn="postgresql://h/db", pg_pool_max=3, db_command_timeout=7)
    )
    assert isinstance(pg, PostgresStore) and (pg._pool_max, pg._command_timeout) == (3, 7)


def test_an_unregistered_scheme_is_refused_by_the_store_and_by_the_settings():
    """No store for the scheme: open_store raises ValueError naming the known schemes, and the
    settings refuse the DSN with a ConfigError."""
    with pytest.raises(ValueError, match="unsupported DSN scheme 'mysql'.*sqlite://"):
        open_store("mysql://x")
    with pytest.raises(ConfigError, match="mysql"):
        make_settings(dsn="mysql://x")


def test_a_dsn_its_store_refuses_is_a_config_error():
    """The scheme is known but the store refuses the rest of the DSN: the settings say so."""
    with pytest.raises(ConfigError, match="sqlite:events.db"):
        make_settings(dsn="sqlite:events.db")


@pytest.mark.slow
def test_the_contract_suite_runs_against_a_store_registered_from_outside(tmp_path):
    """A plugin registers another scheme and EVENTLOG_TEST_STORES names it: the storage contract
    suite runs against that store too, and passes."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/storage/test_contract.py",
            "-p",
            "tests.storage.other_store",
            "-k",
            "othersqlite",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        env={**os.environ, "EVENTLOG_TEST_STORES": "othersqlite:///{tmp_path}/events.db"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "deselected" in result.stdout, result.stdout
