"""On a machine where folds cannot be cut off from the network (a container without
CAP_SYS_ADMIN, made here with setpriv), a root executor refuses to start and says how
to allow it; `fold_network = true` lets it run; the demo sets that for its own
examples."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers.cli import DATARUN, run

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.skipif(os.geteuid() != 0, reason="only a root executor takes the network away"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"),
]

WITHOUT_SYS_ADMIN = ["setpriv", "--bounding-set", "-sys_admin"]


def test_an_executor_refuses_to_run_folds_with_a_network_they_should_not_have(env):
    assert run(env, "init").returncode == 0
    refused = subprocess.run([*WITHOUT_SYS_ADMIN, *DATARUN, "executor"], env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert refused.returncode == 1
    assert "cannot be cut off from the network" in refused.stderr
    assert "DATARUN_FOLD_NETWORK=true" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    allowed = subprocess.Popen([*WITHOUT_SYS_ADMIN, *DATARUN, "executor"],
                               env={**env, "DATARUN_FOLD_NETWORK": "true"}, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        assert allowed.stdout is not None
        lines: list[str] = []  # warnings may come first: what folds lack on this machine
        while not any("serving" in x or "registered" in x for x in lines[-1:]):
            lines.append(allowed.stdout.readline())
            assert lines[-1] and len(lines) < 20, lines
    finally:
        allowed.terminate()
        assert allowed.wait(timeout=60) == 0


def test_the_demo_lets_its_examples_keep_the_network_there():
    code = ("from pathlib import Path; from rich.console import Console; "
            "from datarun.demo import Demo; "
            "print(Demo(Path('/nonexistent'), Console()).environment()"
            ".get('DATARUN_FOLD_NETWORK'))")  # fmt: skip
    there = subprocess.run([*WITHOUT_SYS_ADMIN, sys.executable, "-c", code],
                           capture_output=True, text=True, check=True)  # fmt: skip
    here = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert there.stdout.strip() == "true"
    assert here.stdout.strip() == "None"
