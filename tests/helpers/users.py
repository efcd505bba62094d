"""Real Unix users for the tests of a challenge: made with useradd (the suite runs as
root), and commands run as them with setpriv, as a participant's shell would."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def unix_users(*names: str) -> Iterator[dict[str, pwd.struct_passwd]]:
    """These users (prefixed, made if missing), removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make Unix users")
    if shutil.which("setpriv") is None or shutil.which("useradd") is None:
        pytest.skip("needs setpriv and useradd")
    made = []
    for name in names:
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--no-create-home", "--home-dir", "/nonexistent",
                            "--user-group", "--shell", "/bin/sh", name],
                           check=True, capture_output=True)  # fmt: skip
            made.append(name)
    try:
        yield {name: pwd.getpwnam(name) for name in names}
    finally:
        for name in made:
            subprocess.run(["userdel", name], check=False, capture_output=True)


def setpriv(user: str, argv: list[str]) -> list[str]:
    """argv as `user` runs it: that user's own ids and groups, nothing of root's."""
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *argv]


def as_user(user: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run argv as `user`, with that user's own groups and nothing of root's."""
    done = subprocess.run(
        setpriv(user, list(argv)),
        capture_output=True, text=True, check=False, timeout=60, cwd="/",
        env={"PATH": "/usr/bin:/bin", "HOME": "/", "LANG": "C.UTF-8"},
    )  # fmt: skip
    if check and done.returncode:
        raise AssertionError(f"as {user}: {' '.join(argv)}: exit {done.returncode}: "
                             f"{done.stderr.strip()}")  # fmt: skip
    return done


def drop_as(user: str, source: Path, folder: Path) -> Path:
    """Drop a bundle as `user` does: copy under a hidden name, then one rename."""
    hidden = folder / f".{source.name}.part"
    as_user(user, "cp", "-r", str(source), str(hidden))
    as_user(user, "mv", "-T", str(hidden), str(folder / source.name))
    return folder / source.name
