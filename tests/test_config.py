"""load_settings: defaults < TOML file < EVENTLOG_* variables < flags, and errors naming the key."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from eventlog.config import ConfigError, Settings, load_settings, unknown_variables

SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "config" / "eventlog.toml"


def _toml(tmp_path: Path, text: str, name: str = "eventlog.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_defaults_without_file_env_or_flags() -> None:
    """Nothing configured: a SQLite file under var/, on 127.0.0.1:8080."""
    settings = load_settings(env={})
    assert settings == Settings()
    assert settings.dsn == "sqlite:///var/eventlog.db"
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080


def test_each_source_overrides_the_one_below_it(tmp_path: Path) -> None:
    """Flag beats env beats file beats default, one setting decided at each level."""
    path = _toml(tmp_path, 'port = 1111\nhost = "0.0.0.0"\nnode_id = 5\n')
    env = {"EVENTLOG_PORT": "2222", "EVENTLOG_HOST": "10.0.0.1"}
    settings = load_settings(path, env=env, overrides={"port": 3333, "host": None})
    assert settings.port == 3333  # flag over env and file
    assert settings.host == "10.0.0.1"  # env over file (a flag left as None does not count)
    assert settings.node_id == 5  # file over default
    assert settings.dsn == Settings().dsn  # default


def test_eventlog_config_names_the_file_when_no_path_is_given(tmp_path: Path) -> None:
    """EVENTLOG_CONFIG is read when load_settings gets no path."""
    path = _toml(tmp_path, "node_id = 7\n")
    assert load_settings(env={"EVENTLOG_CONFIG": path}).node_id == 7


def test_an_explicit_path_wins_over_eventlog_config(tmp_path: Path) -> None:
    """--config beats EVENTLOG_CONFIG."""
    given = _toml(tmp_path, "node_id = 7\n", "given.toml")
    from_env = _toml(tmp_path, "node_id = 9\n", "env.toml")
    assert load_settings(given, env={"EVENTLOG_CONFIG": from_env}).node_id == 7


def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist is reported, not ignored."""
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="nope.toml"):
        load_settings(missing, env={})


def test_an_unknown_key_in_the_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """A misspelt key stops the load instead of being silently ignored."""
    path = _toml(tmp_path, "port = 9000\nnode_idd = 3\n")
    with pytest.raises(ConfigError, match="node_idd"):
        load_settings(path, env={})


def test_a_wrong_type_in_the_file_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    """port = "x" is refused, and the message says port."""
    path = _toml(tmp_path, 'port = "x"\n')
    with pytest.raises(ConfigError, match="port"):
        load_settings(path, env={})


def test_an_out_of_range_value_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    """node_id = 2000 is past 1023, and the message says node_id."""
    path = _toml(tmp_path, "node_id = 2000\n")
    with pytest.raises(ConfigError, match="node_id"):
        load_settings(path, env={})


def test_bad_text_in_an_environment_variable_is_a_config_error_naming_the_variable() -> None:
    """EVENTLOG_PORT=abc names EVENTLOG_PORT, the thing the user has to fix."""
    with pytest.raises(ConfigError, match="EVENTLOG_PORT"):
        load_settings(env={"EVENTLOG_PORT": "abc"})


def test_a_flag_wins_over_bad_text_in_its_environment_variable() -> None:
    """EVENTLOG_PORT=abc with --port given: the variable is never read, so it cannot fail."""
    assert load_settings(env={"EVENTLOG_PORT": "abc"}, overrides={"port": 18555}).port == 18555


def test_a_misspelt_variable_is_named_with_the_setting_it_resembles() -> None:
    """EVENTLOG_WRITE_TOKEN (no S) is reported with EVENTLOG_WRITE_TOKENS as the likely intent."""
    assert unknown_variables({"EVENTLOG_WRITE_TOKEN": "secret", "EVENTLOG_PORT": "1"}) == [
        "EVENTLOG_WRITE_TOKEN is not an eventlog setting and is ignored; "
        "did you mean EVENTLOG_WRITE_TOKENS?"
    ]


def test_an_unknown_variable_like_no_setting_is_named_without_a_guess() -> None:
    """A variable resembling nothing is still reported, with no suggestion."""
    assert unknown_variables({"EVENTLOG_ZZZ": "1"}) == [
        "EVENTLOG_ZZZ is not an eventlog setting and is ignored"
    ]


def test_settings_and_the_variables_read_on_purpose_are_not_reported() -> None:
    """Every setting's variable, EVENTLOG_CONFIG, EVENTLOG_TOKEN and the test switches pass;
    variables of other programs are not looked at."""
    env = {f"EVENTLOG_{a.name.upper()}": "x" for a in attrs.fields(Settings)} | {
        "EVENTLOG_CONFIG": "x",
        "EVENTLOG_TOKEN": "x",
        "EVENTLOG_REQUIRE_PG": "1",
        "EVENTLOG_REQUIRE_BROWSER": "1",
        "EVENTLOG_TEST_PG_DSN": "x",
        "PATH": "/bin",
        "XEVENTLOG_PORT": "1",
    }
    assert unknown_variables(env) == []


def test_numbers_in_environment_variables_are_read_as_numbers() -> None:
    """EVENTLOG_PORT, EVENTLOG_NODE_ID and a float setting come from text."""
    settings = load_settings(
        env={"EVENTLOG_PORT": "9090", "EVENTLOG_NODE_ID": "12", "EVENTLOG_SHUTDOWN_TIMEOUT": "2.5"}
    )
    assert (settings.port, settings.node_id, settings.shutdown_timeout) == (9090, 12, 2.5)


def test_environment_variables_are_read_the_same_on_every_call() -> None:
    """Loading settings once must not change how the next load reads the environment."""
    for _ in range(3):
        assert load_settings(env={"EVENTLOG_PORT": "9090"}).port == 9090


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
    ],
)
def test_boolean_environment_variables_accept_the_usual_words(text: str, value: bool) -> None:
    """EVENTLOG_MIGRATE_ON_START reads 1/true/yes/on and 0/false/no/off, any case."""
    assert load_settings(env={"EVENTLOG_MIGRATE_ON_START": text}).migrate_on_start is value


@pytest.mark.parametrize("text", ["maybe", "", "2", "enabled"])
def test_other_boolean_text_is_a_config_error_naming_the_variable(text: str) -> None:
    """EVENTLOG_MIGRATE_ON_START=maybe is refused, naming the variable."""
    with pytest.raises(ConfigError, match="EVENTLOG_MIGRATE_ON_START"):
        load_settings(env={"EVENTLOG_MIGRATE_ON_START": text})


def test_the_shipped_config_file_loads_and_equals_the_defaults() -> None:
    """config/eventlog.toml documents the defaults: loading it changes nothing."""
    assert SHIPPED_CONFIG.is_file(), f"{SHIPPED_CONFIG} is missing"
    assert load_settings(str(SHIPPED_CONFIG), env={}) == Settings()


def test_read_dsn_is_a_postgresql_standby_of_a_postgresql_dsn() -> None:
    """read_dsn comes from the environment like any setting; next to a SQLite dsn, or naming
    a SQLite file, it stops the program with a message naming it."""
    pg = "postgresql://postgres@127.0.0.1:5432/events"
    standby = "postgresql://postgres@127.0.0.1:5433/events"
    env = {"EVENTLOG_DSN": pg, "EVENTLOG_READ_DSN": standby}
    assert load_settings(env=env).read_dsn == standby
    assert load_settings(env={}).read_dsn is None
    for dsn, read_dsn in (("sqlite:///x.db", standby), (pg, "sqlite:///x.db")):
        with pytest.raises(ConfigError, match="read_dsn"):
            load_settings(env={"EVENTLOG_DSN": dsn, "EVENTLOG_READ_DSN": read_dsn})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90d", 90 * 86_400),
        ("12h", 43_200),
        ("30m", 1800),
        ("45s", 45),
        ("2w", 1_209_600),
        ("1d12h", 129_600),
    ],
)
def test_retention_is_read_as_a_duration(text: str, seconds: int) -> None:
    """retention takes a number and a unit (or several), from the file or the environment."""
    settings = load_settings(env={"EVENTLOG_RETENTION": text})
    assert settings.retention_period is not None
    assert settings.retention_period.total_seconds() == seconds


def test_retention_is_off_by_default() -> None:
    """Nothing is removed unless retention is set."""
    assert load_settings(env={}).retention_period is None


@pytest.mark.parametrize("text", ["90", "d", "90 d", "1.5h", "0d", "-1d", "forever", ""])
def test_a_retention_that_is_no_duration_is_a_config_error_naming_it(text: str) -> None:
    """A bad retention stops the program, saying what a duration looks like."""
    with pytest.raises(ConfigError, match="retention"):
        load_settings(env={"EVENTLOG_RETENTION": text})
