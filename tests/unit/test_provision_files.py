"""The files `datarun provision` writes on a runner, as text."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from datarun.settings import load_settings
from provision.actions import Options, config_text
from provision.runners import parse
from provision.services import SUPERVISOR, unit_text


def test_the_runners_configuration_is_valid_settings_with_its_limits(
    tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [runner] = parse("ada@runner-1.lab:2222  3  low  1800  1500\n")
    options = Options(database_url="postgresql://datarun:s3cr%40t@master:5432/datarun",
                      spool="/mnt/spool", known_hosts=tmp_path / "known_hosts",
                      tuning={"lease_seconds": 20.0, "heartbeat_seconds": 2.0})  # fmt: skip
    text = config_text(runner, options)
    values = tomllib.loads(text)
    assert values["runner_name"] == "ada@runner-1.lab:2222"
    assert values["workers"] == 3 and values["queues"] == "low"
    assert values["fold_timeout_seconds"] == 1800 and values["fold_cpu_seconds"] == 1500
    assert values["lease_seconds"] == 20.0 and values["heartbeat_seconds"] == 2.0
    (tmp_path / "datarun.toml").write_text(text)
    monkeypatch.setenv("DATARUN_CONFIG", str(tmp_path / "datarun.toml"))
    settings = load_settings()
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == options.database_url
    assert str(settings.spool_path) == "/mnt/spool"
    assert settings.runner_name == runner.name


def test_the_unit_and_the_supervisor_run_the_venvs_executor_with_the_private_config() -> None:
    unit = unit_text("/home/ada/datarun")
    assert "ExecStart=/home/ada/datarun/venv/bin/datarun executor\n" in unit
    assert "Environment=DATARUN_CONFIG=/home/ada/datarun/datarun.toml\n" in unit
    assert "Restart=always" in unit and "WantedBy=multi-user.target" in unit
    assert "./venv/bin/datarun executor &" in SUPERVISOR
    assert 'DATARUN_CONFIG="$PWD/datarun.toml"' in SUPERVISOR
