"""What the zygote knows of each running child (`executor.children`), and what it reads
of a process in /proc."""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from executor import cgroups
from executor.messages import FoldSpec


@dataclass
class Running:
    key: str
    pid: int
    pipe: int
    log: BinaryIO
    log_cap: int
    deadline: float
    started: float
    base_rss_kb: int
    uid: int | None  # the fold's own user, whose every process dies with the fold
    group: cgroups.FoldGroup | None = None  # its control group
    work: str | None = None  # its work/ tmpfs, when it has namespaces
    init: int | None = None  # its PID namespace's init, until reaped
    keep: int | None = None  # the pipe that keeps that init (and the namespace) alive
    written: int = 0
    dropped: int = 0
    timed_out: bool = False
    killed: bool = False
    oom: bool = False
    exit: tuple[int, Any] | None = field(default=None)
    shared: Shared | None = None  # a child that runs several folds of one submission


@dataclass
class Shared:
    """A shared child's folds, in order, and where it is: `current` is the fold it runs
    (`running`, after its `B`) or will run next; each fold's own log and limits."""

    folds: list[tuple[str, FoldSpec]]
    control: int  # the child's B/E lines (read end)
    ack: int  # our answer to each E (write end): the child waits for it
    timeout: float
    # once a fold has run this long, the folds not started are given back (`not_run`)
    # to run in parallel elsewhere, and the child stops after that fold
    release_after: float | None
    total: int = 0  # the folds it was given
    current: int = 0
    running: bool = False
    inbuf: bytes = b""
    cpu_at_start: float = 0.0  # the child's CPU time at the current fold's B
    started: float = 0.0

    @property
    def key(self) -> str | None:
        return self.folds[self.current][0] if self.current < len(self.folds) else None

    @property
    def release_at(self) -> float | None:
        """When to give back the folds not started (None: nothing to give back)."""
        if not self.running or self.release_after is None or self.current + 1 >= len(self.folds):
            return None
        return self.started + self.release_after


def private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)  # the fold's log: not for other folds' eyes


def killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far, its reaped children's included (/proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_status_kb(pid: int, name: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return None


def reset_peak(pid: int) -> None:
    """Start a fold's peak RSS afresh in a shared child (clear_refs 5)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/clear_refs", "w") as handle:
        handle.write("5")


def rss_kb() -> int:
    """This process's RSS (the zygote's, as a child forked now starts with)."""
    return proc_status_kb(os.getpid(), "VmRSS") or 0
