from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import reachable_tmp
from tests.helpers.cli import DATARUN


@pytest.fixture
def env(clean_env: Path) -> Iterator[dict[str, str]]:
    """A private DATARUN_HOME (embedded server stopped and removed afterwards)."""
    base = reachable_tmp("datarun-test-cli-")
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("DATARUN_")}
    environ["DATARUN_HOME"] = str(base / "home")
    yield environ
    subprocess.run([*DATARUN, "db", "down"], env=environ, capture_output=True, check=False)
    shutil.rmtree(base, ignore_errors=True)
