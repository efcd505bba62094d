"""The zygote's children, one per fold: fork each, watch it, reap it, say how it ended.

For each fold: its dataset (kept loaded for the next folds), its control group
(executor.cgroups: killed, read and removed after the fold), its work/ tmpfs
(executor.mounts), a PID namespace of its own (executor.pidns), then the fork. While
it runs: its output pipe (copied to the fold's log, capped), its wall-clock deadline
(the whole process group is killed), a v1 memory group's OOM event. When both its exit
status (wait4: resource usage) and the end of its output are in, and its namespace is
gone, its `FoldDone` is reported. No thread, no database connection: forking is safe.
"""

from __future__ import annotations

import gc
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from executor import SANDBOX_FAILED, cgroups, mounts, pidns
from executor.messages import FoldDone, FoldLimits, FoldSpec
from executor.running import Running, Shared, killpg, private, rss_kb
from executor.sandbox import kill_user
from executor.sharedruns import SharedRuns

CHUNK = 1 << 16
CACHE_DATASETS = 4


class Children(SharedRuns):
    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        self.send = send  # a line to the executor
        self.running: dict[str, Running] = {}
        self.by_pipe: dict[int, Running] = {}
        self.by_pid: dict[int, Running] = {}
        self.cache: OrderedDict[str, Any] = OrderedDict()
        self.inits: dict[int, Running] = {}  # PID namespaces' inits
        self.by_oom: dict[int, Running] = {}  # v1 memory groups' OOM eventfds
        self.by_control: dict[int, Running] = {}  # shared children's B/E pipes
        self.by_fold: dict[str, Running] = {}  # shared children, by their folds' keys
        self.busy_groups: list[cgroups.FoldGroup] = []  # to remove once empty
        self.hierarchies: set[cgroups.Hierarchy] = set()  # seen: stale groups removed

    # ---- data ---------------------------------------------------------------------

    def dataset(self, path: str, kind: str, target: str | None) -> Any:
        from executor.fold import load_dataset

        if path in self.cache:
            self.cache.move_to_end(path)
            return self.cache[path]
        data = load_dataset(Path(path), kind, target)
        self.cache[path] = data
        while len(self.cache) > CACHE_DATASETS:
            self.cache.popitem(last=False)
        return data

    # ---- a fold's start -----------------------------------------------------------

    def start(self, key: str, spec: FoldSpec, folds: list[tuple[str, FoldSpec]] | None = None,
              release_after: float | None = None) -> None:  # fmt: skip
        """Fork a child for the fold `spec`, or, given `folds` (several of one
        submission), one child that runs them in turn (`key` is then the child's own)."""
        keys = [key] + [k for k, _ in folds or []]
        spec = folds[0][1] if folds else spec
        limits = spec.limits
        isolated = limits.namespaces
        group: cgroups.FoldGroup | None = None
        try:
            data = self.dataset(spec.dataset_path, spec.kind, spec.target)
            group = self._group(key, limits)
            if group is not None:
                spec = replace(spec, cgroups=tuple(group.join_files))
            if isolated:
                mounts.plan(hide=spec.hide)  # once: the child inherits it
                mounts.mount_work(spec.work, int(limits.disk_mb or 1024), spec.uid, spec.gid)
            log = open(spec.log, "wb", opener=private)  # noqa: SIM115 (closed at reap)
        except Exception as exc:
            if group is not None:
                group.remove()
            self._refuse(keys, exc)
            return
        read_end, write_end = os.pipe()
        # a shared child's B/E lines to us, and our answer to each E
        control = (*os.pipe(), *os.pipe()) if folds else None
        base = rss_kb()
        try:
            pid, init, keep = self._fork(spec, data, read_end, write_end, isolated=isolated,
                                         shared=[s for _, s in folds or []],
                                         control=control)  # fmt: skip
        except OSError as exc:
            for fd in (read_end, write_end, *(control or ())):
                os.close(fd)
            if group is not None:
                group.remove()
            log.close()
            self._refuse(keys, exc)
            return
        os.close(write_end)
        os.set_blocking(read_end, False)
        now = time.monotonic()
        job = Running(key, pid, read_end, log, int(limits.log_bytes),
                      now + float(limits.timeout), now, base, spec.uid, group,
                      spec.work if isolated else None, init, keep)  # fmt: skip
        self._track(job, folds, control, float(limits.timeout), release_after)

    def _track(self, job: Running, folds: list[tuple[str, FoldSpec]] | None,
               control: tuple[int, ...] | None, timeout: float,
               release_after: float | None) -> None:  # fmt: skip
        """Watch a child just forked: its pipes, its pid, its namespace, its OOM events."""
        if control is not None and folds:
            os.close(control[1])
            os.close(control[2])
            os.set_blocking(control[0], False)
            os.set_blocking(control[3], False)
            job.shared = Shared(list(folds), control[0], control[3], timeout, release_after,
                                total=len(folds))  # fmt: skip
            self.by_control[control[0]] = job
            for fold_key, _ in folds:
                self.by_fold[fold_key] = job
        self.running[job.key] = job
        self.by_pipe[job.pipe] = job
        self.by_pid[job.pid] = job
        if job.init is not None:
            self.inits[job.init] = job
        if job.group is not None and job.group.oom_event is not None:
            self.by_oom[job.group.oom_event] = job
        self.send({"op": "started", "key": job.key, "pid": job.pid})

    def _refuse(self, keys: list[str], exc: BaseException) -> None:
        for key in keys:
            self.send(FoldDone(key, start_error=f"{type(exc).__name__}: {exc}").to_message())

    def _fork(self, spec: FoldSpec, data: Any, read_end: int, write_end: int, *,
              isolated: bool, shared: list[FoldSpec],
              control: tuple[int, int, int, int] | None,
              ) -> tuple[int, int | None, int | None]:  # fmt: skip
        """Fork the fold's child (in a PID namespace of its own when `isolated`), or a
        child for the `shared` folds: (its pid, its namespace's init, the pipe that
        keeps that init alive)."""
        from executor.fold import child_main, child_main_shared

        gc.freeze()  # the child's collector then leaves our objects (and their pages) alone
        init = keep = None
        if isolated:
            init, keep = pidns.begin()
        try:
            pid = os.fork()
        except OSError:
            if keep is not None:
                pidns.end()
                os.close(keep)  # its init exits
            raise
        if pid == 0:  # the fold's child: never returns
            code = SANDBOX_FAILED
            try:
                # other datasets (another challenge's labels) are not this fold's to see:
                # its code could reach them through this frame (its own stays: `data`)
                self.cache.clear()
                os.close(read_end)
                if control is not None:
                    os.close(control[0])
                    os.close(control[3])
                    code = child_main_shared(shared, data, write_end, control[1], control[2])
                else:
                    code = child_main(spec, data, write_end)
            except BaseException as exc:  # the sandbox itself failed: its last log line
                os.write(2, f"\n{type(exc).__name__}: {exc}\n".encode(errors="replace"))
            finally:
                os._exit(code)
        if init is not None:
            pidns.end()
        return pid, init, keep

    def _group(self, key: str, limits: FoldLimits) -> cgroups.FoldGroup | None:
        hierarchy = limits.isolation.cgroups if limits.isolation else None
        if hierarchy is None:
            return None
        if hierarchy not in self.hierarchies:  # what a dead zygote left there, once
            self.hierarchies.add(hierarchy)
            cgroups.remove_stale(hierarchy, alive=os.getpid())
        name = f"{cgroups.PREFIX}{os.getpid()}-{key}"
        return cgroups.FoldGroup.create(hierarchy, name, limits.memory_mb,
                                        limits.max_processes)  # fmt: skip

    # ---- stopping folds -----------------------------------------------------------

    def kill(self, key: str) -> None:
        """Stop a fold; in a shared child, the child (its folds not run are said so)."""
        job = self.running.get(key) or self.by_fold.get(key)
        if job is not None:
            job.killed = True
            self._stop(job)

    def _stop(self, job: Running) -> None:
        """Kill the fold: its process group, its PID namespace (init's pipe closed: the
        kernel kills every process in it), its control group."""
        killpg(job.pid)
        self._end_namespace(job)
        if job.group is not None:
            job.group.kill()

    def _end_namespace(self, job: Running) -> None:
        if job.keep is not None:
            os.close(job.keep)
            job.keep = None

    def out_of_memory(self, fd: int) -> None:
        job = self.by_oom.get(fd)
        if job is not None and job.group is not None and job.group.oom_fired():
            # v1 kills one process: the fold is limited as a whole, so all of it goes
            job.oom = True
            self._stop(job)

    def enforce_deadlines(self) -> None:
        now = time.monotonic()
        for job in self.running.values():
            release_at = job.shared.release_at if job.shared else None
            if release_at is not None and now >= release_at:
                self._release(job)
            if job.exit is None and not job.timed_out and now >= job.deadline:
                job.timed_out = True
                self._stop(job)
            elif (
                job.exit is not None
                and now >= job.deadline + 5
                and (self._pipe_open(job) or self._control_open(job))
            ):  # a descendant escaped the group and holds a pipe
                self._close_control(job)
                self._close_pipe(job)

    # ---- events -------------------------------------------------------------------

    def watched(self) -> list[int]:
        """The descriptors to wait on: the folds' output pipes, v1 OOM events."""
        return [*self.by_pipe, *self.by_oom, *self.by_control]

    def seconds_to_deadline(self) -> float:
        deadlines = [j.deadline for j in self.running.values()]
        deadlines += [j.shared.release_at for j in self.running.values()
                      if j.shared and j.shared.release_at is not None]  # fmt: skip
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else 1.0

    def readable(self, fd: int) -> None:
        if fd in self.by_oom:
            self.out_of_memory(fd)
        elif fd in self.by_control:
            self.said(fd)
        else:
            self.drain(fd)

    def tend(self) -> None:
        """After each wait: reap what exited, kill what is past its deadline, remove the
        control groups that were still busy."""
        self.reap()
        self.enforce_deadlines()
        if self.busy_groups:
            self.remove_busy_groups()

    def drain(self, fd: int) -> None:
        job = self.by_pipe.get(fd)
        if job is None:
            return
        while True:
            try:
                chunk = os.read(fd, CHUNK)
            except BlockingIOError:
                return
            if not chunk:
                self._close_pipe(job)
                return
            if job.log.closed:  # a shared child past its last fold: nobody's log
                continue
            room = max(0, job.log_cap - job.written)
            if room:
                job.log.write(chunk[:room])
                job.written += min(room, len(chunk))
            job.dropped += max(0, len(chunk) - room)

    def _close_pipe(self, job: Running) -> None:
        if self._pipe_open(job):
            del self.by_pipe[job.pipe]
            os.close(job.pipe)
        self._maybe_finish(job)

    def reap(self) -> None:
        while self.by_pid or self.inits:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.inits:  # the namespace is gone, and every process in it
                done = self.inits.pop(pid)
                done.init = None
                self._maybe_finish(done)
                continue
            job = self.by_pid.pop(pid, None)
            if job is None:
                continue
            killpg(pid)  # whatever the fold left running dies with it
            self._end_namespace(job)  # even what left its group (in its namespace)
            if job.uid is not None and job.work is None:  # no namespace: all of its user
                kill_user(job.uid)
            job.exit = (status, usage)
            if self._pipe_open(job):
                self.drain(job.pipe)
            if self._control_open(job):
                self.said(job.shared.control)  # type: ignore[union-attr]
            self._maybe_finish(job)

    # ---- a fold's end -------------------------------------------------------------

    def _maybe_finish(self, job: Running) -> None:
        if job.exit is None or self._pipe_open(job) or self.running.get(job.key) is not job:
            return  # wait for both: the exit status and the end of its output (once)
        if job.init is not None or self._control_open(job):
            return  # and for its namespace's end: then none of its processes is left
        status, usage = job.exit
        self._close_log(job)
        del self.running[job.key]
        peak, oom = None, job.oom
        if job.group is not None:
            if job.group.oom_event is not None:
                self.by_oom.pop(job.group.oom_event, None)
                job.group.oom_fired()
            peak, oom = job.group.stats()
            if not job.group.remove(wait=0.5):
                self.busy_groups.append(job.group)
        done = FoldDone(
            job.key, exit_code=os.waitstatus_to_exitcode(status),
            timed_out=job.timed_out, killed=job.killed,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            peak_rss_kb=usage.ru_maxrss, base_rss_kb=job.base_rss_kb,
            minor_faults=usage.ru_minflt,
            wall_seconds=time.monotonic() - job.started,
            log_bytes=job.written, log_dropped=job.dropped,
            memory_peak_bytes=peak, oom=oom,
            disk_full=mounts.work_full(job.work) if job.work else False,
        )  # fmt: skip
        if job.shared is not None:
            self._shared_end(job, done)
        self.send(done.to_message())

    def _close_log(self, job: Running) -> None:
        if job.log.closed:
            return
        if job.dropped:
            job.log.write(
                f"\n[datarun: output capped at {job.log_cap} bytes; "
                f"{job.dropped} more bytes dropped]\n".encode()
            )
        job.log.close()

    def remove_busy_groups(self) -> None:
        self.busy_groups = [g for g in self.busy_groups if not g.remove()]

    def shutdown(self) -> None:
        """Kill every fold, wait a little for their ends, remove their groups."""
        for job in list(self.running.values()):
            self._stop(job)
        deadline = time.monotonic() + 5
        while (self.by_pid or self.inits) and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.01)
        for job in self.running.values():
            if job.group is not None:
                job.group.remove(wait=0.5)
        self.remove_busy_groups()
