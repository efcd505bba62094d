"""The warm preparer: native datasets are prepared in a child forked from one warm
process, which is reused, kills a child past its timeout, and is replaced (or a fresh
child used) when it dies."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from spool import prepare
from spool.errors import BundleError
from tests.helpers import bundles as B


def prepared(tmp_path: Path, name: str, timeout: float = 60) -> dict:
    bundle = B.dataset(tmp_path / "src", name)
    return prepare.prepare_in_child(bundle, tmp_path / name / "prepared", timeout,
                                    memory_mb=1024, file_mb=1024)  # fmt: skip


def warm_pid() -> int | None:
    proc = prepare._warm._proc
    return proc.pid if proc is not None and proc.poll() is None else None


def test_one_warm_process_prepares_each_dataset_in_a_child_of_its_own(tmp_path: Path):
    first = prepared(tmp_path, "a")
    pid = warm_pid()
    assert pid is not None and first["n_folds"] == 3
    start = time.perf_counter()
    second = prepared(tmp_path, "b")
    took = time.perf_counter() - start
    assert warm_pid() == pid and second["n_folds"] == 3  # the same warm process
    summary = json.loads((tmp_path / "b" / "prepared" / "summary.json").read_text())
    assert summary == second
    print(f"a warm preparation took {took:.2f} s")


def test_a_preparation_past_its_timeout_is_killed_and_refused(tmp_path: Path):
    prepared(tmp_path, "warm")  # the warm process is up
    with pytest.raises(BundleError, match="took longer than"):
        prepared(tmp_path, "slow", timeout=0.001)
    assert prepared(tmp_path, "after")["n_folds"] == 3  # and it goes on


def test_a_dead_warm_process_is_replaced(tmp_path: Path):
    prepared(tmp_path, "before")
    pid = warm_pid()
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    proc = prepare._warm._proc
    assert proc is not None
    proc.wait()
    assert prepared(tmp_path, "after")["n_folds"] == 3
    assert warm_pid() not in (None, pid)


def test_an_idle_warm_process_exits_and_the_next_preparation_starts_one(tmp_path: Path):
    """Its memory is the master's only while datasets arrive."""
    idle = prepare._warm.idle
    prepare._warm.close()
    prepare._warm.idle = 6.0  # the margin is 5 s: one left to send a request
    try:
        prepared(tmp_path, "first")
        proc = prepare._warm._proc
        assert proc is not None
        assert proc.wait(timeout=30) == 0  # it left by itself, idle
        assert prepared(tmp_path, "later")["n_folds"] == 3
        assert warm_pid() not in (None, proc.pid)
    finally:
        prepare._warm.close()
        prepare._warm.idle = idle
