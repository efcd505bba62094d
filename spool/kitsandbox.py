"""A RAMP kit's `problem.py` on the master, as a user of its own, in a root of its own.

The organizer's code is trusted to be the organizer's, not to be root's: while the
master prepares a kit (`spool.prepare --module spool.rampkit`) and while it scores one
(`watcher.rampscore`), the child that imports `problem.py` first loads its libraries
and sets its limits as root, then enters a mount, IPC and network namespace of its own
whose root (`spool.newroot`) shows the Python installation and only the folders the
child needs (the kit, read-only; what it writes), and becomes `datarun-kit`. A master
that is not root runs kits as itself; a root master without `CAP_SYS_ADMIN` (a
container that withholds it) runs them as root, as before, and says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from spool import linux, newroot, sysuser

KIT_USER = "datarun-kit"
KIT_ROOT = "/run/datarun-kit-root"  # each child mounts its new root here, privately


def kit_ids() -> tuple[int, int] | None:
    """(uid, gid) of the kit's user when this process is root (created if missing)."""
    if os.geteuid() != 0:
        return None
    entry = sysuser.ensure(KIT_USER, "run RAMP kits' problem.py on the master")
    return entry.pw_uid, entry.pw_gid


def confine(
    ids: tuple[int, int], *, read_only: Iterable[str] = (), writable: Iterable[str] = (),
    hide: Iterable[str] = (), tmp_mb: int = 256,
) -> None:  # fmt: skip
    """In the kit's child, as root, its libraries loaded: a root of its own, no network,
    then the kit's user. OSError when the machine does not allow namespaces."""
    os.makedirs(KIT_ROOT, mode=0o700, exist_ok=True)
    newroot.plan(hide=hide)  # before the namespace: what Python needs, seen from here
    linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWIPC | linux.CLONE_NEWNET)
    newroot.enter(KIT_ROOT, read_only=read_only, writable=writable, tmp_mb=tmp_mb)
    linux.no_new_privs()
    os.setgroups([])
    os.setgid(ids[1])
    os.setuid(ids[0])
