"""The few Linux calls the sandboxes need (a fold's; a RAMP kit's children on the
master) that Python 3.11's `os` lacks, through libc: unshare, setns, mount, umount2,
pivot_root and mount_setattr; the size of this process's address space; and glibc's
malloc settings a long-running daemon needs."""

from __future__ import annotations

import ctypes
import os
import platform

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4

# System call numbers of what glibc may not wrap (pivot_root differs by architecture;
# mount_setattr has one number everywhere, since Linux 5.12).
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217}.get(platform.machine())
MOUNT_SETATTR = 442

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]  # fmt: skip
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.syscall.restype = ctypes.c_long


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]  # fmt: skip


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _b(path: str | os.PathLike[str] | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def mount(source: str | None, target: str | os.PathLike[str], fstype: str | None = None,
          flags: int = 0, data: str | None = None) -> None:  # fmt: skip
    result = _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data))
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source or fstype} on {target}: {os.strerror(errno)}")


def umount(target: str | os.PathLike[str], flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    if PIVOT_ROOT is None:
        raise OSError(38, f"pivot_root: unknown system call number on {platform.machine()}")
    _check(_libc.syscall(PIVOT_ROOT, _b(new_root), _b(put_old)), "pivot_root")


def read_only(target: str | os.PathLike[str], extra: int = MS_NOSUID | MS_NODEV) -> None:
    """Make a mount and every mount below it read-only (mount_setattr, Linux 5.12);
    on older kernels, the top mount only (its submounts keep their own flags)."""
    attr = MountAttr(attr_set=MOUNT_ATTR_RDONLY
                     | (MOUNT_ATTR_NOSUID if extra & MS_NOSUID else 0)
                     | (MOUNT_ATTR_NODEV if extra & MS_NODEV else 0))  # fmt: skip
    path = _b(target)
    result = _libc.syscall(MOUNT_SETATTR, AT_FDCWD, path, AT_RECURSIVE, ctypes.byref(attr),
                           ctypes.sizeof(attr))  # fmt: skip
    if result == 0:
        return
    if ctypes.get_errno() != 38:  # ENOSYS: an older kernel
        _check(result, f"read-only {target}")
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | extra)


def pid_alive(pid: int) -> bool:
    """Is there a process `pid` (ours to signal or not)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


PR_SET_NO_NEW_PRIVS = 38


def no_new_privs() -> None:
    """No privilege from setuid or setgid programs (crontab, at) from here on."""
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def vm_size() -> int:
    """This process's address space in bytes (VmSize): what an RLIMIT_AS must leave
    room beyond, since the libraries already loaded count against it."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


# glibc's mallopt parameter for MALLOC_ARENA_MAX
M_ARENA_MAX = -8


def malloc_arenas(most: int) -> bool:
    """Cap glibc's malloc arenas, as MALLOC_ARENA_MAX does, for arenas made from now on.
    A daemon's threads each take an arena of their own (up to 8 per core), and a long
    run leaves each fragmented; a few shared ones keep its memory near what it uses.
    False where the C library is not glibc."""
    mallopt = getattr(_libc, "mallopt", None)
    return bool(mallopt and mallopt(M_ARENA_MAX, most))


def malloc_trim() -> None:
    """Give what malloc freed back to the system (glibc; nothing elsewhere)."""
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)
