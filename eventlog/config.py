"""Settings: one attrs class, loaded from defaults < TOML file < EVENTLOG_* variables < flags."""

from __future__ import annotations

import difflib
import os
import tomllib
import typing
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs
from cattrs.errors import ClassValidationError

from .codec import converter
from .retention import parse_duration
from .storage.registry import store_from_settings


class ConfigError(Exception):
    """A setting is unknown or has a bad value; the message names it."""


def _between(low: float, high: float) -> Any:
    def check(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
        if not low <= value <= high:
            raise ValueError(f"{attribute.name} must be between {low} and {high}, not {value}")

    return check


def _one_of(*choices: str) -> Any:
    def check(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
        if value.upper() not in choices:
            raise ValueError(f"{attribute.name} must be one of {', '.join(choices)}, not {value!r}")

    return check


MIB = 1024 * 1024


def _duration(text: str) -> timedelta | None:
    if text == "off":
        return None
    try:
        return parse_duration(text)
    except ValueError as e:
        raise ValueError(f'retention: {e}, or "off"') from None


@attrs.frozen(kw_only=True)
class Settings:
    """Every setting, with its default; config/eventlog.toml documents each one."""

    dsn: str = "sqlite:///var/eventlog.db"
    host: str = "127.0.0.1"
    port: int = attrs.field(default=8080, validator=_between(0, 65535))
    # None is "auto": the lowest node id no live instance holds, claimed at start.
    node_id: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_between(0, 1023))
    )
    node_lease: float = attrs.field(default=30.0, validator=_between(1, 3600))
    migrate_on_start: bool = True
    max_body_bytes: int = attrs.field(default=MIB, validator=_between(1024, 1024 * MIB))
    max_batch_body_bytes: int = attrs.field(default=16 * MIB, validator=_between(1024, 1024 * MIB))
    max_batch_events: int = attrs.field(default=10_000, validator=_between(1, 1_000_000))
    writer_queue_events: int = attrs.field(default=100_000, validator=_between(1, 100_000_000))
    writer_max_batch: int = attrs.field(default=1_000, validator=_between(1, 1_000_000))
    idempotency_ttl: float = attrs.field(default=86_400.0, validator=_between(1, 365 * 86_400))
    idempotency_purge_interval: float = attrs.field(default=300.0, validator=_between(0.1, 86_400))
    # How long events are kept ("90d", "12h", "30m", "1d12h"; "off": for ever). The service
    # removes older ones every retention_interval seconds, in short steps, as `eventlog purge`.
    retention: str = attrs.field(default="off", validator=lambda _, a, v: _duration(v))
    retention_interval: float = attrs.field(default=60.0, validator=_between(0.05, 86_400))
    stream_heartbeat: float = attrs.field(default=15.0, validator=_between(0.05, 3600))
    stream_poll_interval: float = attrs.field(default=1.0, validator=_between(0.01, 60))
    stream_queue_events: int = attrs.field(default=1000, validator=_between(1, 1_000_000))
    sqlite_synchronous: str = attrs.field(
        default="FULL", validator=_one_of("FULL", "EXTRA", "NORMAL")
    )
    pg_pool_min: int = attrs.field(default=1, validator=_between(0, 1000))
    pg_pool_max: int = attrs.field(default=10, validator=_between(1, 1000))
    pg_partition_days: int = attrs.field(default=7, validator=_between(1, 366))
    db_connect_timeout: float = attrs.field(default=5.0, validator=_between(0.1, 600))
    db_command_timeout: float = attrs.field(default=30.0, validator=_between(0.1, 3600))
    # PostgreSQL only: a hot standby of ``dsn`` that serves the reads. None: reads go to ``dsn``.
    read_dsn: str | None = None
    min_seq_wait: float = attrs.field(default=2.0, validator=_between(0, 60))
    shutdown_timeout: float = attrs.field(default=10.0, validator=_between(0, 3600))
    log_level: str = attrs.field(
        default="INFO", validator=_one_of("DEBUG", "INFO", "WARNING", "ERROR")
    )
    log_format: str = attrs.field(default="text", validator=_one_of("TEXT", "JSON"))
    access_log: bool = True
    # Keys whose values are replaced by "[REDACTED]" in payload and meta before storage, at
    # any depth, compared without regard to case. Empty: nothing is redacted.
    redact_keys: list[str] = attrs.field(factory=list)
    # Bearer tokens. None configured: no access control. A write token may also read.
    write_tokens: list[str] = attrs.field(factory=list)
    read_tokens: list[str] = attrs.field(factory=list)
    # The API's description is not a secret, and clients need it before they have a token.
    open_paths: list[str] = attrs.field(
        factory=lambda: ["/health", "/ready", "/metrics", "/api/openapi.json"]
    )

    @property
    def retention_period(self) -> timedelta | None:
        """``retention`` as a duration; None when off."""
        return _duration(self.retention)

    @property
    def auth_enabled(self) -> bool:
        """Whether requests need a bearer token."""
        return bool(self.write_tokens or self.read_tokens)


FIELDS = {a.name: a for a in attrs.fields(Settings)}
# Resolved once: cattrs later replaces the string annotations on the class itself.
_TYPES = typing.get_type_hints(Settings)
ENV_PREFIX = "EVENTLOG_"


def _from_env_text(name: str, text: str) -> Any:
    """Environment variables are strings; read them as the setting's type."""
    kind = _TYPES[name]
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind == int | None:  # node_id: a number or "auto"
            return "auto" if text.strip() == "auto" else int(text)
        if kind == list[str]:
            return [part.strip() for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            f"{ENV_PREFIX}{name.upper()}={text!r} is not a valid {getattr(kind, '__name__', 'int')}"
        ) from None
    return text


def load_settings(
    config_path: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge the sources in order of precedence; ConfigError names the first bad key."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    path = config_path or env.get(f"{ENV_PREFIX}CONFIG")
    if path:
        try:
            with open(path, "rb") as f:
                from_file = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
        unknown = sorted(set(from_file) - set(FIELDS))
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r} in {path}")
        data.update(from_file)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    for name in FIELDS:
        text = env.get(ENV_PREFIX + name.upper())
        # A flag replaces the variable unread, so a bad value there cannot stop the program.
        if text is not None and name not in given:
            data[name] = _from_env_text(name, text)
    data.update(given)
    if data.get("node_id") == "auto":
        data["node_id"] = None
    try:
        settings = converter.structure(data, Settings)
    except ClassValidationError as exc:
        raise ConfigError("; ".join(_messages(exc))) from None
    except ValueError as e:  # a validator
        raise ConfigError(str(e)) from None
    if settings.pg_pool_min > settings.pg_pool_max:
        raise ConfigError("pg_pool_min must not exceed pg_pool_max")
    try:
        store_from_settings(settings)  # the store checks its DSN (it opens nothing yet)
    except ValueError as e:
        raise ConfigError(f"dsn {settings.dsn!r}: {e}") from None
    if settings.read_dsn is not None and not (
        _scheme(settings.dsn) in _POSTGRES and _scheme(settings.read_dsn) in _POSTGRES
    ):
        raise ConfigError("read_dsn is a PostgreSQL hot standby of a PostgreSQL dsn")
    return settings


# EVENTLOG_* variables read on purpose that are not settings: the config file's path, the
# token of `eventlog tail`, and the test suite's own switches.
OTHER_VARIABLES = frozenset(
    {
        "EVENTLOG_CONFIG",
        "EVENTLOG_TOKEN",
        "EVENTLOG_REQUIRE_PG",
        "EVENTLOG_REQUIRE_BROWSER",
        "EVENTLOG_TEST_STORES",
        "EVENTLOG_TEST_PG_DSN",
    }
)


_POSTGRES = frozenset({"postgresql", "postgres"})


def _scheme(dsn: str) -> str:
    return dsn.partition(":")[0].lower()


def unknown_variables(env: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each EVENTLOG_* variable that nothing reads, naming the closest known one
    (a misspelt EVENTLOG_WRITE_TOKENS would otherwise leave the service open, silently)."""
    env = os.environ if env is None else env
    known = sorted({ENV_PREFIX + name.upper() for name in FIELDS} | OTHER_VARIABLES)
    # Compared without the prefix, which every name shares and would make all of them close.
    suffixes = {name.removeprefix(ENV_PREFIX): name for name in known}
    warnings = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        suffix = name.removeprefix(ENV_PREFIX).upper()
        close = difflib.get_close_matches(suffix, suffixes, n=1, cutoff=0.6)
        hint = f"; did you mean {suffixes[close[0]]}?" if close else ""
        warnings.append(f"{name} is not an eventlog setting and is ignored{hint}")
    return warnings


def make_settings(**values: Any) -> Settings:
    """Settings from keyword arguments alone (no file, no environment), validated as
    load_settings validates them; a value of None keeps the default."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}")
    return load_settings(env={}, overrides=values)


def _messages(exc: ClassValidationError) -> list[str]:
    noted, other = exc.group_exceptions()
    return [f"{note.name}: {sub}" for sub, note in noted] + [str(e) for e in other]


def describe_dsn(dsn: str) -> str:
    """The DSN without its password, fit for a log line."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
