"""Which store a DSN names: a registry from URL scheme to EventStore class.

A backend is a module with an EventStore subclass (with ``from_settings``) and one ``register``
call, here for the built-in ones or by the program that brings its own. The built-in backends
are named by import path and imported on first use, so a SQLite service never loads asyncpg.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .base import EventStore

if TYPE_CHECKING:
    from ..config import Settings

_STORES: dict[str, type[EventStore] | str] = {}


def register(scheme: str, store: type[EventStore] | str) -> None:
    """Make DSNs of ``scheme`` open ``store``: the class, or "package.module:Class"."""
    _STORES[scheme.lower()] = store


def schemes() -> list[str]:
    """The registered URL schemes."""
    return sorted(_STORES)


def store_class(dsn: str) -> type[EventStore]:
    """The class the DSN's scheme names; ValueError when no store is registered for it."""
    scheme = dsn.partition(":")[0].lower()
    found = _STORES.get(scheme)
    if found is None:
        known = ", ".join(f"{s}://…" for s in schemes())
        raise ValueError(f"unsupported DSN scheme {scheme!r}: use one of {known}")
    if isinstance(found, str):
        module, _, name = found.partition(":")
        found = _STORES[scheme] = getattr(importlib.import_module(module), name)
        assert isinstance(found, type) and issubclass(found, EventStore)
    return found


def open_store(dsn: str, **options: object) -> EventStore:
    """The store the DSN names, with the backend's own keyword options (not yet opened)."""
    make: Callable[..., EventStore] = store_class(dsn)
    return make(dsn, **options)


def store_from_settings(settings: Settings, **options: Any) -> EventStore:
    """The store ``settings.dsn`` names, configured by the settings and ``options`` (the
    backend's own keyword arguments); not yet opened."""
    return store_class(settings.dsn).from_settings(settings, **options)


register("sqlite", "eventlog.storage.sqlite:SqliteStore")
register("postgresql", "eventlog.storage.postgres:PostgresStore")
register("postgres", "eventlog.storage.postgres:PostgresStore")
