"""Start, find and stop a runner's `run.sh` supervisor; run on the runner, stdlib only.

`datarun provision` sends this file's text to the runner's venv python (`python -c TEXT
start|status|stop FOLDER`): it imports nothing of datarun and needs no upload, so that
`status` and `stop` work on a runner set up by an earlier datarun.

Why a lock and not the pid file alone: a pid file outlives its process, and the pid it
names may since belong to anything (pid reuse), so `kill -0 $(cat executor.pid)` says
"running" for an unrelated process, and a stop signals it. Here the supervisor holds a
POSIX lock on `executor.lock` for as long as it lives: the kernel drops the lock when the
process dies, whatever kills it, so "locked" means "a supervisor is alive", and a second
supervisor cannot start beside the first (it cannot take the lock). POSIX (fcntl) locks,
not flock, because they belong to one process: they survive the supervisor's exec into
`sh run.sh` but are not inherited by its children, so an orphaned child cannot keep the
lock. The pid file is still written, by the holder right after taking the lock, so that
while the lock is held the pid file names its holder (a live process, so not a reused
pid): that is the pid a stop signals.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import sys
import time

LOCK, PIDFILE, LOG = "executor.lock", "executor.pid", "executor.log"
TAKE_SECONDS = 3.0  # a status probe holds the lock for microseconds: retry past it


def _held(folder: str) -> bool:
    """Whether another process holds the lock (this probe takes it for an instant)."""
    try:
        fd = os.open(os.path.join(folder, LOCK), os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)  # releases the probe's lock, if it took it
    return False


def _recorded(folder: str) -> int | None:
    try:
        with open(os.path.join(folder, PIDFILE)) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def _legacy(folder: str, pid: int) -> bool:
    """A supervisor started by an earlier datarun (no lock): `sh run.sh` in this folder.

    Its command line and working folder are checked, not only that the pid lives, so
    that a reused pid is not taken for it.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return argv[:2] == [b"sh", b"run.sh"] and cwd == os.path.realpath(folder)


def find(folder: str) -> int | None:
    """The running supervisor's pid, or None."""
    pid = _recorded(folder)
    if _held(folder):
        return pid if pid is not None else -1
    return pid if pid is not None and _legacy(folder, pid) else None


def _take(folder: str) -> bool:
    """Take the lock on fd 9, the only fd of this process on the lock file.

    A process loses its POSIX locks on a file when it closes any fd of that file, and
    exec closes the close-on-exec ones: so one fd, inheritable, opened before locking.
    """
    fd = os.open(os.path.join(folder, LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    os.dup2(fd, 9)  # inheritable (dup2's default): exec keeps it open, and so the lock
    os.close(fd)
    deadline = time.monotonic() + TAKE_SECONDS
    while True:
        try:
            fcntl.lockf(9, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN) or time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def start(folder: str) -> int:
    """Start `sh run.sh` in its own session, holding the lock; say its pid or why not."""
    folder = os.path.realpath(folder)
    pid = find(folder)
    if pid is not None:
        print(f"a supervisor is already running here (pid {pid}): not starting another")
        return 1
    read, write = os.pipe()  # not inherited across exec: EOF tells the parent it went well
    child = os.fork()
    if child == 0:
        os.close(read)
        try:
            _become_supervisor(folder)
            reason = "could not start run.sh"
        except BaseException as exc:  # the parent says why; this child never returns
            reason = str(exc) or type(exc).__name__
        os.write(write, reason.encode())
        os._exit(1)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        reason = pipe.read().decode()
    if reason:
        print(f"the supervisor did not start: {reason}")
        return 1
    print(f"started the supervisor (pid {child})")
    return 0


def _become_supervisor(folder: str) -> None:
    """In the forked child: own session, stdio to the log, the lock, then `sh run.sh`."""
    os.setsid()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup: the SSH session ends now
    os.chdir(folder)
    log = os.open(LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    if not _take(folder):
        raise RuntimeError(f"another supervisor took the lock first (pid {_recorded(folder)})")
    tmp = f"{PIDFILE}.tmp"
    with open(tmp, "w") as handle:
        handle.write(f"{os.getpid()}\n")
    os.replace(tmp, PIDFILE)
    os.execv("/bin/sh", ["sh", "run.sh"])


def stop(folder: str, timeout: float) -> int:
    """SIGTERM to the supervisor (it stops the executor), then wait until it is gone."""
    pid = find(folder)
    if pid is None:
        print("not running")
        return 0
    if pid <= 0:
        print(f"{folder}/{LOCK} is locked but {PIDFILE} names no process: stop it by hand")
        return 1
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    except PermissionError:
        owner = _owner(pid)
        print(f"cannot stop the supervisor (pid {pid}, user {owner}): not permitted; it is "
              "still running")  # fmt: skip
        return 1
    deadline = time.monotonic() + timeout
    while find(folder) is not None:
        if time.monotonic() > deadline:
            print(f"the supervisor (pid {pid}) is still running {timeout:.0f} s after SIGTERM")
            return 1
        time.sleep(0.2)
    print(f"stopped the supervisor (pid {pid})")
    return 0


def _owner(pid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
    except (OSError, KeyError):
        return "?"


def main(argv: list[str]) -> int:
    """Exit 0 when done (or, for status, running), 1 when not, 2 when it cannot tell."""
    command, folder = argv[0], argv[1]
    try:
        if command == "start":
            return start(folder)
        if command == "stop":
            return stop(folder, float(argv[2]) if len(argv) > 2 else 60.0)
        pid = find(folder)  # status: exit 0 and the pid when running
    except OSError as exc:  # say, a lock file this account cannot open
        print(f"cannot tell whether the supervisor runs: {exc}")
        return 2
    print(pid if pid is not None else "not running")
    return 0 if pid is not None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
