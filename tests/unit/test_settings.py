from __future__ import annotations

from pathlib import Path

import pytest

from datarun.settings import config_file, effective, load_settings, sources
from spool.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_any_configuration(clean_env: Path, monkeypatch):
    monkeypatch.setenv("DATARUN_HOME", str(clean_env / "home"))
    s = load_settings()
    assert s.home == clean_env / "home"
    assert s.spool_path == clean_env / "home" / "spool"
    assert s.database_url is None  # the embedded server
    assert s.lease_seconds == 30.0
    assert set(sources(s).values()) == {"environment", "default"}


def test_precedence_argument_over_environment_over_file_over_default(clean_env, monkeypatch):
    write(clean_env / "datarun.toml", "lease_seconds = 40\npoll_seconds = 3\nmax_attempts = 7\n")
    monkeypatch.setenv("DATARUN_LEASE_SECONDS", "50")
    monkeypatch.setenv("DATARUN_POLL_SECONDS", "4")
    s = load_settings(lease_seconds=60)
    assert (s.lease_seconds, s.poll_seconds, s.max_attempts, s.rescan_seconds) == (60, 4, 7, 10)
    origin = sources(s, {"lease_seconds": 60})
    assert origin["lease_seconds"] == "argument"
    assert origin["poll_seconds"] == "environment"
    assert origin["max_attempts"] == "file"
    assert origin["rescan_seconds"] == "default"


def test_config_file_lookup_order(clean_env, monkeypatch, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("DATARUN_HOME", str(home))
    assert config_file() is None
    in_home = write(home / "datarun.toml", "max_attempts = 2\n")
    assert config_file() == in_home
    local = write(clean_env / "datarun.toml", "max_attempts = 3\n")
    assert config_file() == local
    named = write(tmp_path_factory.mktemp("etc") / "other.toml", "max_attempts = 4\n")
    monkeypatch.setenv("DATARUN_CONFIG", str(named))
    assert config_file() == named
    assert load_settings().max_attempts == 4


def test_named_config_file_must_exist(clean_env, monkeypatch):
    monkeypatch.setenv("DATARUN_CONFIG", str(clean_env / "missing.toml"))
    with pytest.raises(ConfigError, match="missing.toml, which is not a file"):
        load_settings()


def test_bad_value_names_field_and_where_to_fix_it(clean_env, monkeypatch):
    monkeypatch.setenv("DATARUN_LEASE_SECONDS", "soon")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "lease_seconds" in str(err.value)
    assert "DATARUN_LEASE_SECONDS" in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_key_in_file_is_refused(clean_env):
    write(clean_env / "datarun.toml", "lease_secs = 5\n")
    with pytest.raises(ConfigError, match="lease_secs.*datarun.toml"):
        load_settings()


def test_invalid_toml_is_refused_with_file_name(clean_env):
    write(clean_env / "datarun.toml", "lease_seconds = = 5\n")
    with pytest.raises(ConfigError, match="datarun.toml: not valid TOML"):
        load_settings()


def test_heartbeat_must_fit_twice_in_lease(clean_env, monkeypatch):
    monkeypatch.setenv("DATARUN_LEASE_SECONDS", "10")
    monkeypatch.setenv("DATARUN_HEARTBEAT_SECONDS", "6")
    with pytest.raises(ConfigError, match="at most half of lease_seconds"):
        load_settings()


def test_effective_masks_every_secret(clean_env, monkeypatch):
    monkeypatch.setenv("DATARUN_DATABASE_URL", "postgresql://alice:s3cret@db.example:5433/dr")
    monkeypatch.setenv("DATARUN_DB_PASSWORD", "hunter2")
    s = load_settings()
    shown = effective(s)
    assert shown["database_url"] == "postgresql://alice:****@db.example:5433/dr"
    assert shown["db_password"] == "****"
    assert "s3cret" not in repr(s) and "hunter2" not in repr(s)
    assert s.database_url is not None


def test_relative_paths_become_absolute(clean_env, monkeypatch):
    monkeypatch.setenv("DATARUN_HOME", "rel/home")
    monkeypatch.setenv("DATARUN_SPOOL", "~/spool")
    s = load_settings()
    assert s.home == clean_env / "rel" / "home"
    assert s.spool_path == Path.home() / "spool"
