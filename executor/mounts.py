"""What a fold sees of the filesystem, when the executor is root: a root of its own.

The fold's child, in a mount namespace of its own, builds a new root (`spool.newroot`)
on a small tmpfs and pivots into it: read-only binds of what Python and its libraries
need (`/usr`, the `/lib` links, a few files of `/etc`, the Python prefixes and the
folders on `sys.path`), its own `code/` (read-only), its `work/` (read-write), a RAMP
kit's folder (read-only, as ramp-test exposes it), `/dev/null`, `zero`, `full`,
`random` and `urandom`, a `/proc` of its PID namespace (other users' processes hidden),
and a private tmpfs shown as `/tmp`, `/var/tmp` and `/dev/shm`. No `store/`,
`predictions/`, `results/`, datarun's home, other folds' scratch folders, `/run`,
`/home` or `/sys`.

`work/` itself is a tmpfs of `fold_disk_mb`, mounted by the zygote where the executor
can read it after the fold (`<scratch>/work`, on the machine's side) and unmounted by
the executor once it has collected the fold's files (`release_scratch`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from spool import linux, newroot
from spool.linux import MNT_DETACH, MS_NODEV, MS_NOSUID
from spool.newroot import plan

if TYPE_CHECKING:  # messages imports isolation, which imports this module
    from executor.messages import FoldSpec

__all__ = ["NEWROOT", "enter_root", "mount_work", "plan", "release_scratch", "release_stale"]

log = logging.getLogger(__name__)

NEWROOT = "/run/datarun-fold-root"  # where each fold mounts its new root before pivoting


def enter_root(spec: FoldSpec) -> None:
    """In the fold's child, as root, in a fresh mount namespace (and the fold's PID
    namespace): build the fold's root and pivot into it. Leaves the cwd at `/`."""
    read_only = [spec.code]
    if spec.kind == "ramp":  # the kit's own files, as ramp-test shows them
        read_only.append(str(Path(spec.dataset_path) / "bundle"))
    newroot.enter(NEWROOT, read_only=read_only, writable=[spec.work],  # work: a tmpfs
                  tmp_mb=int(spec.limits.disk_mb or 1024))  # fmt: skip


# ---- the executor's side: work/ as a tmpfs -------------------------------------------


def mount_work(work: str, disk_mb: int, uid: int | None, gid: int | None) -> None:
    """`work/` as a tmpfs of `disk_mb` for the fold's user (mounted on the machine's
    side, so that the executor reads the fold's files after the fold)."""
    owner = f",uid={uid},gid={gid}" if uid is not None else ""
    options = f"size={disk_mb}m,nr_inodes={newroot.inodes(disk_mb)},mode=0700{owner}"
    linux.mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV, options)


def work_full(work: str) -> bool:
    """Is the fold's work/ tmpfs (nearly) full? Read before it is released."""
    try:
        st = os.statvfs(work)
    except OSError:
        return False
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    return total > 0 and free < max(1 << 20, total // 100)


def release_scratch(scratch: Path) -> None:
    """Unmount the fold's work/ tmpfs (its memory goes back) once its files have been
    collected; nothing to do when it was not mounted. Never raises."""
    try:
        linux.umount(scratch / "work", MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):  # not a mount point: fine
            log.error("could not unmount %s: %s", scratch / "work", exc)


def release_stale(parent: Path, prefix: str) -> list[str]:
    """Unmount the work/ tmpfs of scratch folders whose executor is gone (killed before
    its clean-up), so that their folders can be removed."""
    released = []
    base = str(parent.absolute()).rstrip("/") + "/" + prefix
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if not point.startswith(base) or not point.endswith("/work"):
                continue
            owner = point[len(base) :].split("-", 1)[0]
            if owner.isdigit() and not linux.pid_alive(int(owner)):
                with contextlib.suppress(OSError):
                    linux.umount(point, MNT_DETACH)
                    released.append(point)
    return released
