"""The systemd commands `datarun provision` runs on a runner, run here in `sh`.

No runner of the test machines has a systemd manager, so the commands run in a local
`sh` exactly as SSH would run them, with a `systemctl` and a `loginctl` on PATH that
write down how they were called (and answer as a manager would).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import cast

import pytest

from provision.services import UNIT_NAME, SystemdUnit, enable_linger
from provision.ssh import Remote, RemoteError

TOOL = """#!/bin/sh
echo "XDG_RUNTIME_DIR=$XDG_RUNTIME_DIR $(basename "$0") $*" >> "$CALLS"
case "$*" in
  *is-active*) exit "$(cat "$ACTIVE")" ;;
  *daemon-reload*|*enable-linger*) exit "$(cat "$FAIL")" ;;
esac
"""


class LocalRunner:
    """A runner's shell, here: what `Remote.run` does over SSH, done by `sh -c`."""

    def __init__(self, folder: Path) -> None:
        (folder / "bin").mkdir()
        for tool in ("systemctl", "loginctl"):
            (folder / "bin" / tool).write_text(TOOL)
            (folder / "bin" / tool).chmod(0o755)
        self.calls, self.active, self.fail = folder / "calls", folder / "active", folder / "fail"
        self.active.write_text("3")  # inactive
        self.fail.write_text("0")
        self.env = {"PATH": f"{folder}/bin:/usr/bin:/bin", "CALLS": str(self.calls),
                    "ACTIVE": str(self.active), "FAIL": str(self.fail)}  # fmt: skip

    def run(
        self, command: str, *, check: bool = True, timeout: float = 600
    ) -> tuple[int, str, str]:
        done = subprocess.run(["sh", "-c", command], env=self.env, capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip
        if check and done.returncode != 0:
            raise RemoteError(f"exit {done.returncode}")
        return done.returncode, done.stdout, done.stderr

    def called(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


@pytest.fixture
def runner(tmp_path: Path) -> LocalRunner:
    return LocalRunner(tmp_path)


def test_the_user_unit_is_started_by_the_users_manager_with_its_runtime_folder(
    runner: LocalRunner,
) -> None:
    unit = SystemdUnit(cast(Remote, runner), "/home/ada/datarun", user=True)
    assert unit.kind == "systemd --user"
    unit.start()
    runtime = f"XDG_RUNTIME_DIR=/run/user/{os.getuid()}"
    assert runner.called() == [
        f"{runtime} systemctl --user reset-failed {UNIT_NAME}",
        f"{runtime} systemctl --user daemon-reload",
        f"{runtime} systemctl --user enable --now {UNIT_NAME}",
    ]
    assert not unit.running()
    runner.active.write_text("0")
    assert unit.running()


def test_a_failed_daemon_reload_starts_nothing(runner: LocalRunner) -> None:
    runner.fail.write_text("1")
    with pytest.raises(RemoteError):
        SystemdUnit(cast(Remote, runner), "/home/ada/datarun", user=True).start()
    assert not any("enable" in call for call in runner.called())


def test_a_unit_still_active_after_its_stop_is_a_failed_stop(runner: LocalRunner) -> None:
    runner.active.write_text("0")
    unit = SystemdUnit(cast(Remote, runner), "/root/datarun")
    with pytest.raises(RemoteError, match="still active after systemctl stop"):
        unit.stop()
    assert runner.called()[0] == f"XDG_RUNTIME_DIR= systemctl stop {UNIT_NAME}"  # no --user
    runner.active.write_text("3")
    unit.stop()


def test_lingering_refused_is_a_reason_not_an_error(runner: LocalRunner) -> None:
    assert enable_linger(cast(Remote, runner)) is None
    assert runner.called() == ["XDG_RUNTIME_DIR= loginctl enable-linger"]
    runner.fail.write_text("1")
    assert enable_linger(cast(Remote, runner)) == "exit 1"
