"""The runner's supervisor (`provision.supervise`), run here as on a runner: real processes.

The folder is a runner's `~/datarun` with the real `run.sh`; its executor is a stand-in
(`venv/bin/datarun` is `sleep`), since what is tested is who holds the lock, what a
status finds and what a stop signals.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision import supervise
from provision.services import SUPERVISOR
from tests.helpers.waiting import wait_for

SCRIPT = supervise.__file__


def _supervise(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, SCRIPT, args[0], str(folder), *args[1:]],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    executor = tmp_path / "venv" / "bin" / "datarun"
    executor.write_text("#!/bin/sh\nexec sleep 300\n")
    executor.chmod(0o755)
    (tmp_path / "run.sh").write_text(SUPERVISOR)
    (tmp_path / "run.sh").chmod(0o755)
    yield tmp_path
    pid = supervise._recorded(str(tmp_path))
    if pid is not None and _alive(pid):
        os.killpg(pid, signal.SIGKILL)  # the supervisor leads its own session


def _status(folder: Path) -> int | None:
    result = _supervise(folder, "status")
    return int(result.stdout) if result.returncode == 0 else None


def test_one_supervisor_holds_the_lock_a_second_is_refused_and_stop_ends_both_processes(
    folder: Path,
) -> None:
    started = _supervise(folder, "start")
    assert started.returncode == 0, started.stdout + started.stderr
    pid = int((folder / "executor.pid").read_text())
    assert f"(pid {pid})" in started.stdout
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"sh", b"run.sh"]
    assert _status(folder) == pid
    wait_for(lambda: _children(pid), 10, "the executor")
    [executor] = _children(pid)

    again = _supervise(folder, "start")
    assert again.returncode == 1
    assert f"already running here (pid {pid})" in again.stdout
    assert int((folder / "executor.pid").read_text()) == pid

    stopped = _supervise(folder, "stop")
    assert stopped.returncode == 0, stopped.stdout
    assert not _alive(pid) and not _alive(executor)
    assert _status(folder) is None
    assert _supervise(folder, "stop").stdout.strip() == "not running"


def test_a_pid_file_naming_an_unrelated_live_process_is_not_the_supervisor(
    folder: Path,
) -> None:
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        (folder / "executor.pid").write_text(f"{stranger.pid}\n")
        assert _status(folder) is None
        stopped = _supervise(folder, "stop")
        assert stopped.stdout.strip() == "not running"
        assert stranger.poll() is None  # not signalled
        started = _supervise(folder, "start")
        assert started.returncode == 0, started.stdout + started.stderr
        assert _status(folder) != stranger.pid
    finally:
        stranger.kill()
        stranger.wait()


def test_a_killed_supervisor_leaves_no_lock_behind(folder: Path) -> None:
    assert _supervise(folder, "start").returncode == 0
    pid = int((folder / "executor.pid").read_text())
    wait_for(lambda: _children(pid), 10, "the executor")
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: not _alive(pid), 10, "the supervisor's end")
    assert _status(folder) is None  # the kernel dropped the lock with the process
    assert _supervise(folder, "start").returncode == 0


def test_a_supervisor_started_by_an_earlier_datarun_is_found_and_stopped(folder: Path) -> None:
    # Earlier versions: `setsid nohup sh run.sh` and a pid file, no lock.
    legacy = subprocess.Popen(["setsid", "sh", "run.sh"], cwd=folder, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: Path(f"/proc/{legacy.pid}/cmdline").read_bytes().startswith(b"sh\0"),
                 10, "sh")  # fmt: skip
        (folder / "executor.pid").write_text(f"{legacy.pid}\n")
        assert _status(folder) == legacy.pid
        refused = _supervise(folder, "start")
        assert refused.returncode == 1 and "already running" in refused.stdout
        stopped = _supervise(folder, "stop")
        assert stopped.returncode == 0, stopped.stdout
        assert legacy.wait(timeout=10) == 0
    finally:
        if legacy.poll() is None:
            legacy.kill()
            legacy.wait()


def test_a_supervisor_that_ignores_sigterm_is_reported_still_running(folder: Path) -> None:
    (folder / "run.sh").write_text("#!/bin/sh\ntrap '' TERM\nwhile :; do sleep 1; done\n")
    assert _supervise(folder, "start").returncode == 0
    pid = int((folder / "executor.pid").read_text())
    begun = time.monotonic()
    stopped = _supervise(folder, "stop", "1")
    assert stopped.returncode == 1
    assert f"the supervisor (pid {pid}) is still running 1 s after SIGTERM" in stopped.stdout
    assert time.monotonic() - begun < 10
    assert _alive(pid) and _status(folder) == pid


def test_a_lock_it_cannot_open_is_cannot_tell_not_stopped(folder: Path) -> None:
    (folder / "executor.lock").mkdir()  # not a file: opening it fails, as a foreign 0600 one
    status = _supervise(folder, "status")
    assert status.returncode == 2
    assert status.stdout.startswith("cannot tell whether the supervisor runs: ")
    assert _supervise(folder, "start").returncode == 2
