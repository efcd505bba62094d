"""A control group per fold: its processes' memory (tmpfs files and shared memory
included) and their number limited together, its peak memory measured, and whatever
it leaves killed at its end.

cgroup v2 where the machine gives its controllers to the executor's own group (a
systemd service with `Delegate=yes`, say); otherwise the v1 `memory` and `pids`
hierarchies, as on hosts that still mount them. Each fold's group is a child of the
executor's own, named after the zygote's pid (`datarun-<pid>-<job>.<attempt>`), so a
later zygote removes what a dead one left. The zygote creates the group, the fold's
child moves itself in (as root, before it runs any submission code), and the zygote
reads, kills and removes it after the fold.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from spool import linux

log = logging.getLogger(__name__)

PREFIX = "datarun-"


@dataclass(frozen=True)
class Hierarchy:
    """Where fold groups go: v2, one folder; v1, one per controller (pids optional)."""

    version: int
    memory: Path
    pids: Path | None = None

    def folders(self, name: str) -> list[Path]:
        if self.version == 2 or self.pids is None:
            return [self.memory / name]
        return [self.memory / name, self.pids / name]


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(mount point, root within the hierarchy, type, options) of every cgroup mount."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        point = fields[4].replace("\\040", " ")
        found.append((point, fields[3], tail[0], set(tail[2].split(","))))
    return found


def _own_groups() -> dict[str, str]:
    """This process's group per controller ('' for v2's unified hierarchy)."""
    groups = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            groups[name] = path
    return groups


def _join(point: str, root: str, path: str) -> Path | None:
    if root != "/" and not (path == root or path.startswith(root + "/")):
        return None  # our group is outside what this mount shows
    inner = path[len(root) :] if root != "/" else path
    return Path(point + inner.rstrip("/")) if inner.strip("/") else Path(point)


def find() -> tuple[Hierarchy | None, str]:
    """The hierarchy fold groups can be made in, or None and why not."""
    try:
        mounts, own = _mounts(), _own_groups()
    except OSError as exc:
        return None, f"cannot read this process's control groups: {exc}"
    why = "no cgroup v2 memory controller and no v1 memory hierarchy"
    for point, root, kind, _ in mounts:
        if kind == "cgroup2" and "" in own:
            folder = _join(point, root, own[""])
            if folder is not None:
                found, why = _v2(folder, at_root=folder == Path(point))
                if found is not None:
                    return found, ""
    memory = pids = None
    for point, root, kind, options in mounts:
        if kind != "cgroup":
            continue
        if "memory" in options and "memory" in own:
            memory = _join(point, root, own["memory"])
        if "pids" in options and "pids" in own:
            pids = _join(point, root, own["pids"])
    if memory is not None and os.access(memory, os.W_OK):
        usable_pids = pids if pids is not None and os.access(pids, os.W_OK) else None
        return Hierarchy(1, memory, usable_pids), ""
    if memory is not None:
        why = f"cannot create groups in {memory}"
    return None, why


def _v2(folder: Path, at_root: bool) -> tuple[Hierarchy | None, str]:
    try:
        available = (folder / "cgroup.controllers").read_text().split()
        if "memory" not in available:
            return None, f"cgroup v2 gives {folder} no memory controller"
        enabled = (folder / "cgroup.subtree_control").read_text().split()
        wanted = [c for c in ("memory", "pids") if c in available and c not in enabled]
        if wanted:
            # Only a group without processes may hand controllers to its children (the
            # v2 rule): the executor moves itself into a leaf of its own first, which
            # it may do only when it is alone in its group (a delegated service's).
            procs = [] if at_root else (folder / "cgroup.procs").read_text().split()
            if procs and procs != [str(os.getpid())]:
                return None, (f"{folder} holds other processes, so its controllers cannot "
                              "reach fold groups: run the executor in a group of its own "
                              "(systemd: Delegate=yes)")  # fmt: skip
            if procs:
                leaf = folder / f"{PREFIX}executor"
                leaf.mkdir(exist_ok=True)
                (leaf / "cgroup.procs").write_text(str(os.getpid()))
            (folder / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
    except OSError as exc:
        return None, f"cannot use cgroup v2 at {folder}: {exc}"
    return Hierarchy(2, folder), ""


def probe() -> tuple[Hierarchy | None, str]:
    """find(), then a group actually made, limited and removed."""
    hierarchy, why = find()
    if hierarchy is None:
        return None, why
    try:
        # the thread too: executors started together in one process probe at once
        name = f"{PREFIX}{os.getpid()}-probe-{threading.get_ident()}"
        group = FoldGroup.create(hierarchy, name, 64, 8)
    except OSError as exc:
        return None, f"cannot create a control group: {exc}"
    group.remove()
    return hierarchy, ""


class FoldGroup:
    """One fold's group (one folder per v1 controller)."""

    def __init__(self, hierarchy: Hierarchy, name: str) -> None:
        self.hierarchy = hierarchy
        self.name = name
        self.folders = hierarchy.folders(name)
        self.memory = self.folders[0]
        self.oom_event: int | None = None  # v1: an eventfd the kernel signals on OOM
        self._oom_control: int | None = None
        self.oom_seen = False

    @classmethod
    def create(cls, hierarchy: Hierarchy, name: str, memory_mb: int | None,
               max_processes: int | None) -> FoldGroup:  # fmt: skip
        group = cls(hierarchy, name)
        try:
            for folder in group.folders:
                folder.mkdir()
            group._limit(memory_mb, max_processes)
        except OSError:
            group.remove()
            raise
        return group

    def _limit(self, memory_mb: int | None, max_processes: int | None) -> None:
        limit = str(memory_mb * 2**20) if memory_mb else None
        if self.hierarchy.version == 2:
            if limit:
                _write(self.memory / "memory.max", limit)
            _write(self.memory / "memory.swap.max", "0", optional=True)
            _write(self.memory / "memory.oom.group", "1", optional=True)  # all die together
            if max_processes:
                _write(self.memory / "pids.max", str(max_processes), optional=True)
            return
        if limit:
            _write(self.memory / "memory.limit_in_bytes", limit)
            _write(self.memory / "memory.memsw.limit_in_bytes", limit, optional=True)
        if max_processes and len(self.folders) > 1:
            _write(self.folders[1] / "pids.max", str(max_processes))
        # v1 has no oom.group: the zygote hears of an OOM through this eventfd and kills
        # the whole fold, as v2 does by itself.
        self.oom_event = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._oom_control = os.open(self.memory / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        _write(self.memory / "cgroup.event_control", f"{self.oom_event} {self._oom_control}")

    @property
    def join_files(self) -> list[str]:
        """What the fold's child writes `0` into to join (itself, as root, while it has
        one thread). v1's `tasks` moves that one thread without the machine-wide lock
        that `cgroup.procs` takes, whose wait (an RCU grace period) cost 12 ms a fold."""
        name = "tasks" if self.hierarchy.version == 1 else "cgroup.procs"
        return [str(folder / name) for folder in self.folders]

    def pids(self) -> list[int]:
        found: set[int] = set()
        for folder in self.folders:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
        return sorted(found)

    def kill(self) -> None:
        """SIGKILL every process in the group: cgroup.kill on v2; on v1, each through a
        pidfd, checked to be in this group after it was opened (a pid reused by then
        is another process: it is left alone)."""
        if self.hierarchy.version == 2 and _write(self.memory / "cgroup.kill", "1", optional=True):
            return
        for pid in self.pids():
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue
            try:
                if f"/{self.name}\n" in Path(f"/proc/{pid}/cgroup").read_text() + "\n":
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
            except OSError:
                pass
            finally:
                os.close(fd)

    def oom_fired(self) -> bool:
        """Drain the v1 eventfd: True if the kernel signalled an OOM since last asked."""
        if self.oom_event is None:
            return False
        try:
            os.eventfd_read(self.oom_event)
        except BlockingIOError:
            return False
        self.oom_seen = True
        return True

    def stats(self) -> tuple[int | None, bool]:
        """(peak memory in bytes, whether the out-of-memory killer ran in the group)."""
        if self.hierarchy.version == 2:
            peak = _read_int(self.memory / "memory.peak")
            events = _read_keyed(self.memory / "memory.events")
            return peak, self.oom_seen or events.get("oom_kill", 0) > 0
        peak = _read_int(self.memory / "memory.max_usage_in_bytes")
        control = _read_keyed(self.memory / "memory.oom_control")
        return peak, self.oom_seen or control.get("oom_kill", 0) > 0

    def remove(self, wait: float = 0.0) -> bool:
        """Kill what is left, then remove the folders; False if some are still busy
        (processes still exiting): call again later."""
        for fd in (self.oom_event, self._oom_control):
            if fd is not None:
                os.close(fd)
        self.oom_event = self._oom_control = None
        deadline = time.monotonic() + wait
        while True:
            self.kill()
            busy = False
            for folder in self.folders:
                try:
                    folder.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    busy = True
            if not busy:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)


def remove_stale(hierarchy: Hierarchy, alive: int | None = None) -> list[Path]:
    """Remove empty fold groups of zygotes that are gone (never another zygote's live
    groups; a non-empty group is left, and logged)."""
    removed = []
    parents = {hierarchy.memory, *([hierarchy.pids] if hierarchy.pids else [])}
    for parent in parents:
        try:
            entries = list(parent.glob(f"{PREFIX}*-*"))
        except OSError:
            continue
        for folder in entries:
            owner = folder.name[len(PREFIX) :].split("-", 1)[0]
            if not owner.isdigit() or int(owner) == alive or linux.pid_alive(int(owner)):
                continue
            try:
                folder.rmdir()
                removed.append(folder)
            except OSError as exc:
                log.warning("control group %s of a gone zygote is still busy: %s", folder, exc)
    return removed


def _write(path: Path, value: str, optional: bool = False) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if optional:
            return False
        raise
    try:
        os.write(fd, value.encode())
    except OSError:
        if optional:
            return False
        raise
    finally:
        os.close(fd)
    return True


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_keyed(path: Path) -> dict[str, int]:
    out = {}
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[key] = int(value)
    except OSError:
        pass
    return out
