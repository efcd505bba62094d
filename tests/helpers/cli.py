"""Run the `datarun` command as a user would, for end-to-end tests."""

from __future__ import annotations

import pwd
import subprocess
import sys

DATARUN = [sys.executable, "-m", "datarun"]


def run(
    env: dict[str, str], *args: str, user: str | None = None
) -> subprocess.CompletedProcess[str]:
    ids = pwd.getpwnam(user) if user else None
    return subprocess.run(
        [*DATARUN, *args], env=env, capture_output=True, text=True, timeout=120, cwd="/",
        user=ids.pw_uid if ids else None, group=ids.pw_gid if ids else None,
        extra_groups=[] if ids else None,
    )  # fmt: skip
