"""A shared child's folds, as the zygote follows them (`executor.children`): the child
says B when a fold begins and E when it ends on a control pipe, and waits for an answer
to each E; each fold gets its own log, deadline, CPU time and peak memory."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from executor.messages import FoldDone
from executor.running import Running, cpu_seconds, private, proc_status_kb, reset_peak


class SharedRuns:
    """Mixed into `Children`, which owns the state and the methods declared here."""

    send: Callable[[dict[str, Any]], None]
    running: dict[str, Running]
    by_pipe: dict[int, Running]
    by_control: dict[int, Running]
    by_fold: dict[str, Running]
    drain: Callable[[int], None]
    _close_log: Callable[[Running], None]
    _stop: Callable[[Running], None]
    _maybe_finish: Callable[[Running], None]

    # A closed descriptor's number is soon another child's: "still open" is asked of the
    # job that owns it, never of the number alone.
    def _pipe_open(self, job: Running) -> bool:
        return self.by_pipe.get(job.pipe) is job

    def _control_open(self, job: Running) -> bool:
        return job.shared is not None and self.by_control.get(job.shared.control) is job

    def _close_control(self, job: Running) -> None:
        if self._control_open(job):
            assert job.shared is not None
            del self.by_control[job.shared.control]
            os.close(job.shared.control)
            os.close(job.shared.ack)

    def said(self, fd: int) -> None:
        """A shared child's B/E lines: a fold begins, a fold ends. Anything else (its
        code may write there too) breaks the protocol: the child is killed, and the
        fold it was at fails."""
        job = self.by_control.get(fd)
        if job is None or job.shared is None:
            return
        shared = job.shared
        while True:
            try:
                chunk = os.read(fd, 512)
            except BlockingIOError:
                return
            if not chunk:
                self._close_control(job)
                self._maybe_finish(job)
                return
            shared.inbuf += chunk
            while b"\n" in shared.inbuf:
                line, shared.inbuf = shared.inbuf.split(b"\n", 1)
                if not self._fold_event(job, line):
                    shared.inbuf = b""
                    self._close_control(job)
                    self._stop(job)
                    return
            if len(shared.inbuf) > 16:
                self._close_control(job)
                self._stop(job)
                return

    def _fold_event(self, job: Running, line: bytes) -> bool:
        shared = job.shared
        assert shared is not None
        if shared.key is None or line not in (b"B", b"E") or (line == b"E") != shared.running:
            return False
        now = time.monotonic()
        job.deadline = now + shared.timeout  # each fold's own, from its start
        if line == b"B":
            shared.running = True
            shared.started = now
            shared.cpu_at_start = cpu_seconds(job.pid)
            job.base_rss_kb = proc_status_kb(job.pid, "VmRSS") or job.base_rss_kb
            reset_peak(job.pid)
            return True
        if self._pipe_open(job):
            self.drain(job.pipe)  # what it printed before its E is the fold's
        self._close_log(job)
        key = shared.key
        done = FoldDone(
            key, exit_code=0, cpu_seconds=max(0.0, cpu_seconds(job.pid) - shared.cpu_at_start),
            peak_rss_kb=proc_status_kb(job.pid, "VmHWM"), base_rss_kb=job.base_rss_kb,
            wall_seconds=now - shared.started, log_bytes=job.written, log_dropped=job.dropped,
        )  # fmt: skip
        self.send(done.to_message())
        self.by_fold.pop(key, None)
        shared.current += 1
        shared.running = False
        if shared.key is None and len(shared.folds) < shared.total:
            self._stop(job)  # the folds after it were given back: the child goes
            return True
        if shared.key is not None:
            job.log = open(shared.folds[shared.current][1].log, "wb", opener=private)  # noqa: SIM115
            job.written = job.dropped = 0
        with contextlib.suppress(OSError):  # on: what it prints now is the next fold's
            os.write(shared.ack, b"k")
        return True

    def _release(self, job: Running, give: int | None = None) -> None:
        """Give back `give` of the folds not started, the last ones (None: all of them:
        the fold running is long, they run in parallel in children of their own). The
        child stops after the last fold it keeps."""
        shared = job.shared
        assert shared is not None
        cut = shared.current + 1 if give is None else len(shared.folds) - give
        for key, _ in shared.folds[cut:]:
            self.by_fold.pop(key, None)
            self.send(FoldDone(key, not_run=True, lent=give is not None).to_message())
        shared.folds = shared.folds[:cut]

    def share(self, key: str) -> None:
        """An idle worker asks for half of what a shared child has left to run: the
        last of its folds not started (the one running counts as the child's; between
        two folds, the next stays, so the child is never left with none)."""
        job = self.running.get(key)
        if job is None or job.shared is None or job.exit is not None:
            return
        shared = job.shared
        left = len(shared.folds) - shared.current  # the one running included
        give = left // 2
        if give > 0:
            self._release(job, give)

    def _shared_end(self, job: Running, done: FoldDone) -> None:
        """The shared child is gone: the fold it was at ends as the child did (its
        crash, its timeout, its kill: that fold's alone), and the folds after it did
        not run."""
        shared = job.shared
        assert shared is not None
        if shared.key is not None:
            ran = max(0.0, (done.cpu_seconds or 0.0) - shared.cpu_at_start)
            began = shared.started if shared.running else time.monotonic()
            self.send(replace(done, key=shared.key, cpu_seconds=ran,
                              wall_seconds=time.monotonic() - began,
                              memory_peak_bytes=None).to_message())  # fmt: skip
            for key, _ in shared.folds[shared.current + 1 :]:
                self.send(FoldDone(key, not_run=True).to_message())
        for key, _ in shared.folds:
            self.by_fold.pop(key, None)
