"""What a root executor gives each fold: a user of its own, and no network.

Each fold that may run at once has its own system user (see SandboxUsers). The
network goes with an empty network namespace of the fold's own.

Python 3.11 has no `os.unshare`, hence libc. The namespace holds only a loopback that
is down, so a fold reaches nothing: not the database, not the spool's server, not the
internet. It needs root (CAP_SYS_ADMIN), which a container may withhold: the executor
tries once at start and refuses to run folds with a network they were not meant to have.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import pwd
import signal
import threading
from pathlib import Path

from executor import mounts
from spool import sysuser
from spool.bundles import remove
from spool.errors import ConfigError

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
SANDBOX_USER = "datarun-run"  # the base name: folds run as datarun-run-1, -2, ...
LEASES = Path("/run/datarun-sandbox")  # root's, and gone at reboot with the leases


def no_network() -> None:
    """Move this process into a new, empty network namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"cannot take the network away: {os.strerror(errno)}")


def network_check() -> None:
    """Can a fold leave the network here? Tried in a child, which then exits."""
    pid = os.fork()
    if pid == 0:
        try:
            no_network()
        except OSError:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise ConfigError(
            "folds cannot be cut off from the network on this machine (a network namespace "
            "needs CAP_SYS_ADMIN, which a container may withhold): grant it, or set "
            "DATARUN_FOLD_NETWORK=true (fold_network) to let folds use the network"
        )


class SandboxUsers:
    """The users folds run as when the executor is root: one per fold that may run at
    once, so that a fold cannot touch another's files or processes, and so that all of
    a fold's processes, even those that left its session, can be killed at its end.
    Each user is leased machine-wide with a lock file, so two executors on one machine
    never share one: `datarun-run-1`, `datarun-run-2`, ... created when first needed."""

    def __init__(self, count: int, leases: Path = LEASES) -> None:
        self.count = count
        self.leases = leases
        self._held: dict[str, int] = {}  # user name -> its lock's fd
        self._free: list[tuple[int, int]] = []
        self._ready = threading.Condition()

    @property
    def fds(self) -> tuple[int, ...]:
        return tuple(self._held.values())

    def lease(self) -> list[str]:
        """Lock `count` users. Every free lease on the way (a dead executor's, however
        many workers it had) has its user's leftover processes killed first."""
        if self._held:
            return list(self._held)
        try:
            self.leases.mkdir(mode=0o700, parents=True, exist_ok=True)
            known = {p.name for p in self.leases.glob(f"{SANDBOX_USER}-*")}
            k = 0
            while len(self._held) < self.count or f"{SANDBOX_USER}-{k + 1}" in known:
                k += 1
                name = f"{SANDBOX_USER}-{k}"
                fd = os.open(self.leases / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # another executor's
                    os.close(fd)
                    continue
                entry = sysuser.ensure(name, "run submission code")
                kill_user(entry.pw_uid)  # whatever a dead executor's fold left behind
                if len(self._held) < self.count:
                    self._held[name] = fd
                    self._free.append((entry.pw_uid, entry.pw_gid))
                else:
                    os.close(fd)  # cleaned, not needed
        except OSError as exc:
            raise ConfigError(
                f"cannot lease the sandbox users' locks in {self.leases}: {exc}; the "
                "executor runs as root and needs that folder writable"
            ) from exc
        return list(self._held)

    def take(self) -> tuple[int, int]:
        with self._ready:
            self._ready.wait_for(lambda: bool(self._free))
            return self._free.pop(0)  # the longest idle first

    def give(self, ids: tuple[int, int]) -> None:
        with self._ready:
            self._free.append(ids)
            self._ready.notify()

    def close(self) -> None:
        """Kill what the users still run, then let the leases go."""
        for name, fd in self._held.items():
            kill_user(pwd.getpwnam(name).pw_uid)
            os.close(fd)
        self._held.clear()


def kill_user(uid: int) -> bool:
    """SIGKILL every process of `uid`: from a child that becomes that user, since
    kill(-1) reaches exactly the processes a user may signal (its own), atomically.
    False (and logged) when that could not be done; never raises."""
    try:
        pid = os.fork()
        if pid == 0:
            try:
                os.setgroups([])
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                os._exit(0)  # it had no process left
            except BaseException:
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
    except OSError as exc:
        log.error("could not kill the processes of uid %d: %s", uid, exc)
        return False
    if os.waitstatus_to_exitcode(status) != 0:
        log.error("could not kill the processes of uid %d", uid)
        return False
    return True


SHARED = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))


def remove_files_of(uid: int) -> None:
    """What a fold's user left in the machine's shared folders (its processes are dead
    by now): the next fold that runs as this user must not find it."""
    for folder in SHARED:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                remove(Path(entry.path))  # fd-based: deep trees, swapped links
            except FileNotFoundError:
                continue  # gone meanwhile (another fold's scratch folder, say)
            except OSError as exc:
                log.warning("could not remove %s: %s", entry.path, exc)


def release_scratch(scratch: Path) -> None:
    """After the executor has collected a fold's files, before it removes the scratch
    folder: unmount the fold's work/ tmpfs (nothing to do when it has none). Never
    raises."""
    mounts.release_scratch(scratch)
