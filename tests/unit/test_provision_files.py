"""The files `datarun provision` writes on a runner, as text."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from datarun.settings import load_settings
from provision.actions import Options, config_text
from provision.runners import parse
from provision.services import SUPERVISOR, Detected, detect_command, unit_text


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
    assert 'DATARUN_CONFIG="$PWD/datarun.toml"' in SUPERVISOR
    assert "./venv/bin/datarun executor 9<&- &" in SUPERVISOR  # the lock stays the loop's


def test_a_user_unit_restarts_on_failure_with_back_off_starts_at_boot_and_logs_to_the_journal(
) -> None:  # fmt: skip
    unit = unit_text("/home/ada/datarun", user=True)
    lines = unit.splitlines()
    for line in ("ExecStart=/home/ada/datarun/venv/bin/datarun executor",
                 "Environment=DATARUN_CONFIG=/home/ada/datarun/datarun.toml",
                 "WorkingDirectory=/home/ada/datarun",
                 "Restart=on-failure", "RestartSec=5", "RestartSteps=10",
                 "RestartMaxDelaySec=300", "StartLimitIntervalSec=3600", "StartLimitBurst=30",
                 "StandardOutput=journal", "StandardError=journal",
                 "SyslogIdentifier=datarun-executor", "KillSignal=SIGTERM",
                 "WantedBy=default.target"):  # fmt: skip
        assert line in lines, line
    # StartLimit* belong to [Unit] (systemd ignores them in [Service] since v230).
    unit_section = unit.split("[Service]")[0]
    assert "StartLimitIntervalSec=" in unit_section and "StartLimitBurst=" in unit_section
    # The network targets are the system manager's; a user manager has none.
    assert "network-online.target" not in unit and "multi-user.target" not in unit
    assert "Restart=always" not in unit


def test_the_system_unit_of_root_runners_is_unchanged() -> None:
    # A changed unit restarts every root runner's executor at the next apply.
    assert unit_text("/root/datarun") == (
        "# Written by datarun provision.\n[Unit]\nDescription=datarun executor\n"
        "After=network-online.target remote-fs.target\nWants=network-online.target\n\n"
        "[Service]\nWorkingDirectory=/root/datarun\n"
        "Environment=DATARUN_CONFIG=/root/datarun/datarun.toml\n"
        "ExecStart=/root/datarun/venv/bin/datarun executor\n"
        "Restart=always\nRestartSec=2\nKillSignal=SIGTERM\nTimeoutStopSec=120\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


@pytest.mark.parametrize(
    ("out", "kind", "wants_linger"),
    [
        ("folder=/root/datarun\nuid=0\nsystemd=yes\n", "systemd", False),
        ("folder=/root/datarun\nuid=0\n", "supervisor", False),
        ("folder=/home/ada/datarun\nuid=1000\nsystemd=yes\nuser_manager=yes\nlinger=yes\n",
         "systemd --user", False),
        # A user manager without lingering stops at logout: enable it first.
        ("folder=/home/ada/datarun\nuid=1000\nsystemd=yes\nuser_manager=yes\n",
         "supervisor", True),
        # systemd runs, but the user's manager does not answer (no session bus).
        ("folder=/home/ada/datarun\nuid=1000\nsystemd=yes\nlinger=yes\n", "supervisor", False),
        # Not installed yet: nothing to point a unit at.
        ("uid=1000\nsystemd=yes\nuser_manager=yes\nlinger=yes\n", "supervisor", False),
    ],
)  # fmt: skip
def test_the_way_to_run_the_executor_follows_what_the_runner_offers(
    out: str, kind: str, wants_linger: bool
) -> None:
    detected = Detected.parse(out)
    assert detected.kind == kind
    assert detected.wants_linger is wants_linger


def test_the_detection_command_runs_in_sh_and_says_what_this_machine_offers(
    tmp_path: Path,
) -> None:
    (tmp_path / "datarun").mkdir()
    command = detect_command(f"{tmp_path}/datarun")
    assert "systemctl --user show-environment" in command
    assert "/var/lib/systemd/linger/$(id -un)" in command
    assert 'XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/run/user/$(id -u)}"' in command
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout
    detected = Detected.parse(out)
    assert detected.folder is not None
    assert Path(detected.folder).resolve() == (tmp_path / "datarun").resolve()
    assert detected.root is (os.geteuid() == 0)
    assert detected.systemd is Path("/run/systemd/system").is_dir()
    missing = Detected.parse(subprocess.run(["sh", "-c", detect_command(f"{tmp_path}/none")],
                                            capture_output=True, text=True).stdout)  # fmt: skip
    assert missing.folder is None and missing.kind == "supervisor"
