"""What this machine lets the executor give each fold beyond a user and no network:
control groups (its memory, tmpfs files and shared memory included, and its
processes, limited as a whole) and mount and PID namespaces (a root of its own,
`work/`, `/tmp`, `/var/tmp` and `/dev/shm` on size-capped tmpfs, a `/proc` of its own
processes). Probed once at executor start; where a layer is missing, folds fall back
to what docs/guarantees.md describes (rlimits per process, the machine's filesystem),
and the executor says so once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from executor import cgroups, mounts, pidns
from executor.cgroups import Hierarchy
from spool import linux

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Isolation:
    cgroups: Hierarchy | None = None
    namespaces: bool = False  # mount and PID namespaces, work/ on a tmpfs (root only)

    def as_dict(self) -> dict[str, Any]:
        h = self.cgroups
        return {
            "cgroups": h.version if h else None,
            "cgroup_memory": str(h.memory) if h else None,
            "cgroup_pids": str(h.pids) if h and h.pids else None,
            "namespaces": self.namespaces,
        }

    @classmethod
    def from_dict(cls, iso: dict[str, Any]) -> Isolation:
        """What as_dict said (the zygote's side of it)."""
        pids = iso.get("cgroup_pids")
        hierarchy = (
            Hierarchy(int(iso["cgroups"]), Path(iso["cgroup_memory"]), Path(pids) if pids else None)
            if iso.get("cgroups")
            else None
        )
        return cls(hierarchy, bool(iso.get("namespaces")))

    def describe(self) -> str:
        h = self.cgroups
        kinds = "memory, pids" if h and (h.version == 2 or h.pids) else "memory"
        groups = f"cgroup v{h.version} ({kinds})" if h else "no control group"
        spaces = "mount and PID namespaces" if self.namespaces else "no mount or PID namespace"
        return f"{groups}, {spaces}"

    @staticmethod
    def probe(loud: bool = True) -> Isolation:
        """Try each layer here, once; say what folds get, and what they do not."""
        return probe(loud)


def probe(loud: bool = True) -> Isolation:
    """Try each layer here, once; say what folds get, and what they do not (a warning
    if `loud` and the executor is root, else an info line)."""
    root = os.geteuid() == 0
    hierarchy, why_groups = cgroups.probe()
    why_spaces = namespace_check() if root else "they need a root executor"
    isolation = Isolation(hierarchy, why_spaces is None)
    log.info("folds are isolated with %s", isolation.describe())
    level = logging.WARNING if root and loud else logging.INFO
    if hierarchy is None:
        log.log(level, "no control group for folds (%s): each fold's memory and processes "
                "are limited per process (RLIMIT_AS, RLIMIT_NPROC), not as a whole, and its "
                "peak memory is its largest process's", why_groups)  # fmt: skip
    if why_spaces is not None:
        log.log(level, "no mount or PID namespace for folds (%s): folds see the machine's "
                "files (what their user may read) and processes, and their disk use is "
                "limited per file (RLIMIT_FSIZE)", why_spaces)  # fmt: skip
    return isolation


def namespace_check() -> str | None:
    """Can a fold get a mount and PID namespace, a tmpfs root, a /proc and pivot_root
    here? Tried in children; None if so, else why not."""
    if linux.PIVOT_ROOT is None:
        return "pivot_root's number on this processor is not known"
    if not os.access(pidns.INIT, os.X_OK):
        return f"no {pidns.INIT} to be a PID namespace's init"
    try:
        os.makedirs(mounts.NEWROOT, mode=0o700, exist_ok=True)
    except OSError as exc:
        return f"cannot create {mounts.NEWROOT}: {exc}"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (a child)
        os.close(read)
        code = 1
        try:
            linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWPID | linux.CLONE_NEWIPC)
            inner = os.fork()
            if inner == 0:
                try:
                    _try_root()
                except BaseException as exc:
                    os.write(write, str(exc).encode(errors="replace")[:500])
                    os._exit(1)
                os._exit(0)
            _, status = os.waitpid(inner, 0)
            code = os.waitstatus_to_exitcode(status)
        except BaseException as exc:
            os.write(write, str(exc).encode(errors="replace")[:500])
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as said:
        message = said.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        return None
    return message or f"the check exited with status {status}"


def _try_root() -> None:
    root = mounts.NEWROOT
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    linux.mount("tmpfs", root, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=64k,mode=0755")
    os.mkdir(f"{root}/proc")
    linux.mount("proc", f"{root}/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV)
    os.chdir(root)
    linux.pivot_root(".", ".")
    linux.umount(".", linux.MNT_DETACH)
