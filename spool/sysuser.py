"""System users datarun creates when it runs as root: `datarun-pg` runs the embedded
database server, `datarun-run` runs untrusted fold code. A leaf module: the embedded
server and the executor both use it."""

from __future__ import annotations

import logging
import pwd
import shutil
import subprocess

from spool.errors import DatarunError

log = logging.getLogger(__name__)


def ensure(name: str, purpose: str) -> pwd.struct_passwd:
    """The user `name`, created as a system user without home or shell if missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    cmd = [useradd, "--system", "--user-group", "--no-create-home",
           "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name]  # fmt: skip
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise DatarunError(f"cannot create the system user {name} to {purpose}: {exc}") from exc
    try:
        entry = pwd.getpwnam(name)  # another process may have created it meanwhile
    except KeyError:
        raise DatarunError(
            f"cannot create the system user {name} to {purpose}: "
            f"{result.stderr.strip() or result.returncode}"
        ) from None
    log.info("created system user %s to %s", name, purpose)
    return entry
