"""A pytest plugin that registers a store under a scheme of its own, as an outside backend's
package would, so that the contract suite can be run against it (see test_registry.py)."""

from __future__ import annotations

from typing import Any

from eventlog.storage.registry import register
from eventlog.storage.sqlite import SqliteStore

SCHEME = "othersqlite"


class OtherStore(SqliteStore):
    """SQLite under another scheme: a stand-in for a backend eventlog does not ship."""

    def __init__(self, dsn: str, **options: Any) -> None:
        super().__init__("sqlite:///" + dsn.removeprefix(f"{SCHEME}:///"), **options)


register(SCHEME, OtherStore)
