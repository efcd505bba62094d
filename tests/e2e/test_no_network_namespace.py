"""On a machine where folds cannot be cut off from the network (a container without
CAP_SYS_ADMIN, made here with setpriv), a root executor refuses to start and says how
to allow it; `fold_network = true` lets it run; the demo sets that for its own
examples. Without namespaces, folds also cannot see a Python installed under a private
folder: the executor says once, and exactly, what they can import; this runs here with
such a Python, wherever the checkout lives (CI clones into a 0700 `mktemp -d` as root)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from executor.daemon import NOT_PRELOADED_EXAMPLES, PRELOADED_EXAMPLES
from tests.conftest import reachable_tmp
from tests.helpers.cli import DATARUN, private_python, run
from tests.helpers.waiting import wait_for_line

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.skipif(os.geteuid() != 0, reason="only a root executor takes the network away"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"),
]

WITHOUT_SYS_ADMIN = ["setpriv", "--bounding-set", "-sys_admin"]


@pytest.fixture
def private() -> Iterator[tuple[list[str], dict[str, str], Path]]:
    """This Python as if installed under a private folder (the only one on its path)."""
    base = reachable_tmp("datarun-test-private-")
    yield private_python(base)
    shutil.rmtree(base, ignore_errors=True)


def test_an_executor_refuses_to_run_folds_with_a_network_they_should_not_have(env, private):
    assert run(env, "init").returncode == 0
    refused = subprocess.run([*WITHOUT_SYS_ADMIN, *DATARUN, "executor"], env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert refused.returncode == 1
    assert "cannot be cut off from the network" in refused.stderr
    assert "DATARUN_FOLD_NETWORK=true" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    # with a Python under a private folder, as in a clone under `mktemp -d`: the warning
    # about imports comes before the line this waits for, once
    python, extra, folder = private
    allowed = subprocess.Popen([*WITHOUT_SYS_ADMIN, *python, "-m", "datarun", "executor"],
                               env={**env, **extra, "DATARUN_FOLD_NETWORK": "true"}, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        printed = wait_for_line(allowed, " serving ", 120, "the executor to serve")
    finally:
        allowed.terminate()
        rest, _ = allowed.communicate(timeout=60)
    assert allowed.returncode == 0, printed + rest
    printed += rest
    assert printed.count(f"cannot read {folder} ") == 1, printed  # once, on one line
    warning = next(line for line in printed.splitlines() if "cannot read" in line)
    assert warning.startswith("20") and " WARNING " in warning, warning  # a log record
    for module in PRELOADED_EXAMPLES + NOT_PRELOADED_EXAMPLES:
        assert module in warning


# In a fold's stead: the zygote's own preloading, then a fork that becomes a sandbox
# user, as folds do without namespaces; what imports there and what fails.
PROBE = """
import importlib, json, os, sys
from executor.daemon import sandbox_import_warning
from executor.sandbox import SandboxUsers
from executor.zygote import prewarm

warning = sandbox_import_warning()
users = SandboxUsers(1)
users.lease()
uid, gid = users.take()
prewarm()
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.setgroups([]); os.setgid(gid); os.setuid(uid)
    found = {}
    for name in sys.argv[1:]:
        try:
            importlib.import_module(name)
            found[name] = "ok"
        except Exception as exc:
            found[name] = type(exc).__name__
    os.write(write, json.dumps(found).encode())
    os._exit(0)
os.close(write)
os.waitpid(pid, 0)
found = json.loads(os.read(read, 1 << 16))
print(json.dumps({"warning": warning, "found": found}))
"""


def test_the_warning_says_exactly_what_folds_can_import(private):
    python, extra, folder = private
    modules = [*PRELOADED_EXAMPLES, "scipy", "scipy.stats", "pandas", "statistics",
               *NOT_PRELOADED_EXAMPLES]  # fmt: skip
    probed = subprocess.run([*python, "-c", PROBE, *modules], env={**os.environ, **extra},
                            capture_output=True, text=True, timeout=300, cwd="/")  # fmt: skip
    assert probed.returncode == 0, probed.stderr[-3000:]
    result = json.loads(probed.stdout.strip().splitlines()[-1])
    warning = result["warning"]
    assert warning is not None and f"cannot read {folder} " in warning
    assert "Python's standard library" in warning  # this one's is readable
    expected = {name: "ok" for name in modules}
    expected.update({name: "ModuleNotFoundError" for name in NOT_PRELOADED_EXAMPLES})
    assert result["found"] == expected


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
