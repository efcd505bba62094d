"""The embedded server's pid file, `<pgdata>/postmaster.pid`: what it says, whether
the process it names is really this folder's postmaster, and clearing it when stale.

After a SIGKILL the file stays behind; its pid may be dead, or reused by another
process (pid reuse), so a live pid alone does not mean the server runs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PidFile:
    """The fields of postmaster.pid datarun reads; all empty when there is no valid file."""

    pid: int | None = None
    port: int | None = None
    socket_dir: str = ""
    listen: str = ""
    status: str = ""


def path_of(pgdata: Path) -> Path:
    return pgdata / "postmaster.pid"


def read(pgdata: Path) -> PidFile:
    """pid, port, socket folder, listen address and status from postmaster.pid."""
    try:
        lines = path_of(pgdata).read_text(encoding="utf-8").splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return PidFile()
    field = [line.strip() for line in lines] + [""] * 8
    port = int(field[3]) if field[3].isdigit() else None
    return PidFile(pid, port, field[4], field[5], field[7])


def is_our_postmaster(pid: int, pgdata: Path) -> bool:
    """Whether `pid` is alive and a `postgres` serving `pgdata`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by the server user
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return not Path("/proc/self").exists()  # no /proc: trust the live pid
    return (
        bool(cmdline)
        and Path(cmdline[0].decode(errors="replace")).name == "postgres"
        and str(pgdata).encode() in cmdline
    )


def clear_stale(pgdata: Path) -> None:
    """Remove postmaster.pid when the process it names is not this folder's server."""
    pid = read(pgdata).pid
    if pid is not None and not is_our_postmaster(pid, pgdata):
        log.info("removing stale %s (pid %d is not this server)", path_of(pgdata), pid)
        path_of(pgdata).unlink(missing_ok=True)
