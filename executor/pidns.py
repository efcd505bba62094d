"""A PID namespace per fold, made by the zygote around its fork.

The zygote unshares a new PID namespace for its next children, starts its PID 1 there
(`cat`, reading a pipe only the zygote holds, started with vfork: no copy of the
zygote's page tables), forks the fold's child, which becomes PID 2, and returns to its
own namespace. So the fold's child stays the zygote's own child (wait4, exit codes,
signals, rusage exactly as without a namespace) and is not PID 1 (which the kernel
spares signals such as SIGXCPU). When the zygote closes the pipe (the fold ended, or
the zygote died) `cat` exits, and the kernel kills every process left in the
namespace: nothing a fold started outlives it, whatever session or user it took.
"""

from __future__ import annotations

import os
import shutil

from spool import linux

INIT = shutil.which("cat", path="/usr/bin:/bin") or "/bin/cat"
_own: list[int] = []  # the zygote's own PID namespace (a descriptor), to come back to


def begin() -> tuple[int, int]:
    """Make the next child of this process the PID 2 of a new namespace, whose init
    is started here. Returns (init's pid, the pipe end that keeps it alive). The caller
    forks once, then calls `end()` in the parent (the child must not)."""
    if not _own:
        _own.append(os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC))
    linux.unshare(linux.CLONE_NEWPID)
    try:
        keep, held = os.pipe()
        try:
            init = os.posix_spawn(INIT, [INIT], {}, setsid=True, file_actions=[
                (os.POSIX_SPAWN_DUP2, keep, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ])  # fmt: skip
        except BaseException:
            os.close(held)
            raise
        finally:
            os.close(keep)
    except BaseException:
        end()
        raise
    return init, held


def end() -> None:
    """This process's next children in its own PID namespace again."""
    linux.setns(_own[0], linux.CLONE_NEWPID)
