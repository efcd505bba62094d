"""A root of its own for a process that runs code datarun does not trust with root:
a fold (executor.mounts adds its own folders), or a RAMP kit's `problem.py` while the
master prepares or scores the kit.

In a mount namespace of its own, the process builds a new root on a small tmpfs and
pivots into it: read-only binds of what Python and its libraries need (`/usr`, the
`/lib` links, a few files of `/etc`, the Python prefixes and the folders on `sys.path`),
the folders its caller names (read-only or writable), `/dev/null`, `zero`, `full`,
`random` and `urandom`, a `/proc` that hides other users' processes, and a private
tmpfs shown as `/tmp`, `/var/tmp` and `/dev/shm`. Nothing else: no spool, no home, no
`/run`, `/home` or `/sys`. Binding the Python prefixes at their own paths under the
new root also lifts a private ancestor (a pyenv in `/root`, a 0700 checkout) from
the way of an unprivileged user.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from spool import linux
from spool.linux import MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_REC

log = logging.getLogger(__name__)

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
    """What every new root holds besides its caller's folders; computed once per
    process (the zygote, before it forks; a kit's child, before it confines itself).
    Never a folder that holds one of `hide` (the spool, the scratch folders): a Python
    installed there is left out, and said so."""
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


def enter(
    root: str, *, read_only: Iterable[str] = (), writable: Iterable[str] = (), tmp_mb: int,
    proc: bool = True,
) -> None:  # fmt: skip
    """As root, in a fresh mount namespace: build a new root at `root` (an empty folder
    of the machine's) holding `plan()`, `read_only` and `writable` at their own paths,
    and pivot into it. Leaves the cwd at `/`."""
    linux.mount(None, "/", None, MS_REC | linux.MS_PRIVATE)  # nothing leaks either way
    linux.mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    umask = os.umask(0o022)
    try:
        _private_tmp(root, tmp_mb)
        for entry in plan():
            _place(root, entry)
        for path in read_only:
            _bind(path, root + path, read_only=True)
        for path in writable:
            _bind(path, root + path, read_only=False)
        _dev(root)
        if proc:
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
                f"size={disk_mb}m,nr_inodes={inodes(disk_mb)},mode=0755")  # fmt: skip
    for place, folder in PRIVATE.items():
        os.mkdir(f"{shared}/{folder}")
        os.chmod(f"{shared}/{folder}", 0o1777)
        if place != "tmp":
            os.makedirs(f"{root}/{place}")
            linux.mount(f"{shared}/{folder}", f"{root}/{place}", None, MS_BIND)
    # last: stacked on the tmpfs's own top, which hides the other two folders
    linux.mount(f"{shared}/{PRIVATE['tmp']}", shared, None, MS_BIND)


def inodes(disk_mb: int) -> int:
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
