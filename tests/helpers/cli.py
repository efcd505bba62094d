"""Run the `datarun` command as a user would, for end-to-end tests."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import tempfile
from pathlib import Path

DATARUN = [sys.executable, "-m", "datarun"]
REPO = Path(__file__).resolve().parents[2]


def run(
    env: dict[str, str], *args: str, user: str | None = None
) -> subprocess.CompletedProcess[str]:
    ids = pwd.getpwnam(user) if user else None
    return subprocess.run(
        [*DATARUN, *args], env=env, capture_output=True, text=True, timeout=120, cwd="/",
        user=ids.pw_uid if ids else None, group=ids.pw_gid if ids else None,
        extra_groups=[] if ids else None,
    )  # fmt: skip


def private_python(base: Path) -> tuple[list[str], dict[str, str], Path]:
    """This Python with its packages seen under a private (0700) folder made in `base`, as
    in a clone under `mktemp -d` or a venv under /root, wherever this checkout lives:
    the command prefix, the environment to add, and the private folder. The packages are
    reached through a link inside it (no copy); the standard library stays where it is."""
    import sklearn

    private = Path(tempfile.mkdtemp(prefix="private-", dir=base))
    private.chmod(0o700)
    packages = private / "site-packages"
    packages.symlink_to(Path(sklearn.__file__).parents[1], target_is_directory=True)
    path = os.pathsep.join([str(packages), str(REPO)])
    return [sys.executable, "-S"], {"PYTHONPATH": path}, private


def in_process(spool: Path, url: str, home: Path, *args: str, code: int = 0) -> str:
    """A `datarun` command run in this process (typer's runner: fast), on this spool and
    database; its output, or its error's message when it fails as `code` says."""
    from typer.testing import CliRunner

    from datarun.cli import app

    env = {"DATARUN_DATABASE_URL": url, "DATARUN_HOME": str(home), "DATARUN_SPOOL": str(spool)}
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == code, (result.output, result.exception)
    return result.output if code == 0 else f"{result.output}{result.exception}"
