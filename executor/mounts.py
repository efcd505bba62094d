"""What a fold sees of the filesystem, when the executor is root: a root of its own.

The fold's child, in a mount namespace of its own, builds a new root on a small tmpfs
and pivots into it: read-only binds of what Python and its libraries need (`/usr`, the
`/lib` links, a few files of `/etc`, the Python prefixes and the folders on `sys.path`),
its own `code/` (read-only), its `work/` (read-write), a RAMP kit's folder (read-only,
as ramp-test exposes it), `/dev/null`, `zero`, `full`, `random` and `urandom`, a `/proc`
of its PID namespace (other users' processes hidden), and a private tmpfs shown as
`/tmp`, `/var/tmp` and `/dev/shm`. No `store/`, `predictions/`, `results/`, datarun's
home, other folds' scratch folders, `/run`, `/home` or `/sys`.

`work/` itself is a tmpfs of `fold_disk_mb`, mounted by the zygote where the executor
can read it after the fold (`<scratch>/work`, on the machine's side) and unmounted by
the executor once it has collected the fold's files (`release_scratch`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from executor import linux
from executor.linux import MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_REC

log = logging.getLogger(__name__)

NEWROOT = "/run/datarun-fold-root"  # where each fold mounts its new root before pivoting
SYSTEM = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
# What of /etc a fold's programs read (users, the dynamic linker's cache, time zone,
# certificates, alternatives' links, Python's own): never the whole folder, which holds
# package managers' and tools' credentials. Each entry costs a mount per fold.
ETC = ("passwd", "group", "nsswitch.conf", "hosts", "localtime", "timezone", "ld.so.cache",
       "ssl", "alternatives", "mime.types", "python3",
       f"python{sys.version_info.major}.{sys.version_info.minor}")  # fmt: skip
DEVICES = ("null", "zero", "full", "random", "urandom")
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2"}  # fmt: skip
# The shared tmpfs's own folders, shown as /tmp, /var/tmp and /dev/shm.
PRIVATE = {"tmp": ".tmp", "var/tmp": ".var-tmp", "dev/shm": ".shm"}


@dataclass(frozen=True)
class Entry:
    kind: str  # "dir" or "file": a read-only bind; "link": a symbolic link
    path: str
    target: str = ""
    # A file root owns and only root may write is read-only to a fold's user (never
    # root) already: its bind is not made read-only again (one call less per file).
    remount: bool = True


_plans: list[list[Entry]] = []  # the one plan of this process, once made


def plan(hide: Iterable[str] = ()) -> list[Entry]:
    """What every fold's root holds besides its own folders; computed once per process
    (the zygote, before it forks). Never a folder that holds one of `hide` (the spool,
    the scratch folders): a Python installed there is left out, and said so."""
    if _plans:
        return _plans[0]
    hidden = [os.path.abspath(h) for h in hide]
    entries: list[Entry] = []
    for name in SYSTEM:
        entries += _entry(f"/{name}")
    for name in ETC:
        entries += _entry(f"/etc/{name}")
    bound = [os.path.realpath(e.path) for e in entries if e.kind == "dir"]
    prefixes = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix, *sys.path}
    for path in sorted({os.path.abspath(p) for p in prefixes if p}, key=len):
        real = os.path.realpath(path)
        if path == "/" or not os.path.exists(path) or _under(real, bound):
            continue
        if any(_under(h, [path]) or _under(h, [real]) for h in hidden):
            log.warning("folds will not see %s: it holds the spool or the scratch folders",
                        path)  # fmt: skip
            continue
        entries += _entry(path)
        bound.append(real)
    _plans.append(entries)
    return entries


def _entry(path: str) -> list[Entry]:
    if os.path.islink(path):
        return [Entry("link", path, os.readlink(path))]
    if os.path.isdir(path):
        return [Entry("dir", path)]
    if os.path.isfile(path):
        st = os.stat(path)
        return [Entry("file", path, remount=st.st_uid != 0 or bool(st.st_mode & 0o022))]
    return []


def _under(path: str, folders: Iterable[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


def enter_root(spec: dict[str, Any]) -> None:
    """In the fold's child, as root, in a fresh mount namespace (and the fold's PID
    namespace): build the fold's root and pivot into it. Leaves the cwd at `/`."""
    disk_mb = int(spec["limits"].get("disk_mb") or 1024)
    root = NEWROOT
    linux.mount(None, "/", None, MS_REC | linux.MS_PRIVATE)  # nothing leaks either way
    linux.mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    umask = os.umask(0o022)
    try:
        _private_tmp(root, disk_mb)
        for entry in plan():
            _place(root, entry)
        ro = [spec["code"]]
        if spec.get("kind") == "ramp":  # the kit's own files, as ramp-test shows them
            ro.append(str(Path(spec["dataset_path"]) / "bundle"))
        for path in ro:
            _bind(path, root + path, read_only=True)
        _bind(spec["work"], root + spec["work"], read_only=False)  # nosuid, nodev: a tmpfs
        _dev(root)
        os.mkdir(f"{root}/proc")
        _proc(f"{root}/proc")
        # The root itself read-only: nothing but the mounts above may be written.
        linux.mount(None, root, None, linux.MS_REMOUNT | MS_BIND | linux.MS_RDONLY
                    | MS_NOSUID | MS_NODEV)  # fmt: skip
    finally:
        os.umask(umask)
    os.chdir(root)
    linux.pivot_root(".", ".")  # the old root ends up on top of the new one...
    linux.umount(".", MNT_DETACH)  # ...and goes
    os.chdir("/")


def _private_tmp(root: str, disk_mb: int) -> None:
    """One tmpfs of `disk_mb` for /tmp, /var/tmp and /dev/shm together."""
    shared = f"{root}/tmp"
    os.mkdir(shared)
    linux.mount("tmpfs", shared, "tmpfs", MS_NOSUID | MS_NODEV,
                f"size={disk_mb}m,nr_inodes={_inodes(disk_mb)},mode=0755")  # fmt: skip
    for place, folder in PRIVATE.items():
        os.mkdir(f"{shared}/{folder}")
        os.chmod(f"{shared}/{folder}", 0o1777)
        if place != "tmp":
            os.makedirs(f"{root}/{place}")
            linux.mount(f"{shared}/{folder}", f"{root}/{place}", None, MS_BIND)
    # last: stacked on the tmpfs's own top, which hides the other two folders
    linux.mount(f"{shared}/{PRIVATE['tmp']}", shared, None, MS_BIND)


def _inodes(disk_mb: int) -> int:
    return max(4096, disk_mb * 64)


def _place(root: str, entry: Entry) -> None:
    target = root + entry.path
    if entry.kind == "link":
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.symlink(entry.target, target)
    else:
        _bind(entry.path, target, read_only=entry.remount)


def _bind(source: str, target: str, *, read_only: bool) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "a"):
            pass
    linux.mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        linux.read_only(target)


def _dev(root: str) -> None:
    dev = f"{root}/dev"
    os.makedirs(dev, exist_ok=True)
    for name in DEVICES:
        with open(f"{dev}/{name}", "a"):
            pass
        linux.mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND)
    for name, target in DEV_LINKS.items():
        os.symlink(target, f"{dev}/{name}")


def _proc(target: str) -> None:
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    try:  # other users' processes (the namespace's init, root's) are not even listed
        linux.mount("proc", target, "proc", flags, "hidepid=invisible")
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        linux.mount("proc", target, "proc", flags, "hidepid=2")  # before Linux 5.8


# ---- the executor's side: work/ as a tmpfs -------------------------------------------


def mount_work(work: str, disk_mb: int, uid: int | None, gid: int | None) -> None:
    """`work/` as a tmpfs of `disk_mb` for the fold's user (mounted on the machine's
    side, so that the executor reads the fold's files after the fold)."""
    owner = f",uid={uid},gid={gid}" if uid is not None else ""
    linux.mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV,
                f"size={disk_mb}m,nr_inodes={_inodes(disk_mb)},mode=0700{owner}")  # fmt: skip


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
