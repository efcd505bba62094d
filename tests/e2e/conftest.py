from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import datarun
from datarun import pgbin
from spool.layout import blocking_ancestor
from tests.conftest import reachable_tmp
from tests.helpers.cli import DATARUN, run

TESTER = "datarun-tester"


@pytest.fixture
def env(clean_env: Path) -> Iterator[dict[str, str]]:
    """A private DATARUN_HOME (embedded server stopped and removed afterwards)."""
    base = reachable_tmp("datarun-test-cli-")
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("DATARUN_")}
    environ["DATARUN_HOME"] = str(base / "home")
    yield environ
    subprocess.run([*DATARUN, "db", "down"], env=environ, capture_output=True, check=False)
    shutil.rmtree(base, ignore_errors=True)


def _unreachable_reason() -> str | None:
    needed = [Path(sys.executable).resolve(), Path(datarun.__file__), Path(psycopg.__file__),
              pgbin.installed_root(), Path(os.__file__)]  # fmt: skip
    for path in needed:
        blocked = blocking_ancestor(path)
        if blocked is not None:
            return f"{path} sits under the private folder {blocked}"
    return None


@pytest.fixture
def normal_user() -> Iterator[tuple[dict[str, str], Any, Path]]:
    """Run datarun as an unprivileged user (the suite itself runs as root in CI)."""
    if os.geteuid() != 0:
        pytest.skip("the whole suite already runs as a normal user")
    reason = _unreachable_reason()
    if reason:
        pytest.skip(f"an unprivileged user cannot run this Python: {reason}")
    try:
        pwd.getpwnam(TESTER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", TESTER],
                       check=True)  # fmt: skip
    entry = pwd.getpwnam(TESTER)
    user_home = reachable_tmp("datarun-test-user-")
    os.chown(user_home, entry.pw_uid, entry.pw_gid)
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("DATARUN_")}
    environ.update(HOME=str(user_home), USER=TESTER)
    environ.pop("XDG_DATA_HOME", None)
    yield environ, entry, user_home
    run(environ, "db", "down", user=TESTER)
    shutil.rmtree(user_home, ignore_errors=True)
