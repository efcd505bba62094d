"""The executor's side of the zygote: start it, send it folds, wait for their ends.

The JSON lines it writes and reads are the zygote's protocol (executor.zygote); a
fold's spec and its end cross here as `FoldSpec.to_dict` and `FoldDone.from_message`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future
from typing import Any

from executor.messages import FoldDone, FoldSpec
from spool.environment import child_environment
from spool.errors import DatarunError

log = logging.getLogger(__name__)


class ZygoteDied(DatarunError):
    """The pre-warmed parent exited; the folds it ran are lost (the machine's fault)."""


class _Session:
    """One zygote process and the folds sent to it: when it dies, exactly these fail."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pending: dict[str, Future[FoldDone]] = {}
        self.groups: dict[str, int] = {}  # each running fold's process group
        self.ready = threading.Event()
        self.ended: str | None = None  # why it is gone, once its output ended


class ZygoteClient:
    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._lock = threading.Lock()  # guards the session and its pending folds
        self._session: _Session | None = None
        # The sandbox users' lease locks: the zygote holds them too, so a user is not
        # leased again while an old zygote (its executor killed) may still fork as it.
        self.pass_fds: tuple[int, ...] = ()

    def start(self) -> None:
        with self._lock:
            session = self._session
            if session is None or session.ended is not None or session.proc.poll() is not None:
                if session is not None and session.proc.poll() is None:
                    session.proc.kill()  # its output ended but it lingers: a new one
                session = self._spawn()
        if not session.ready.wait(timeout=120):
            raise ZygoteDied("the fold runner did not start within 120 s")

    def _spawn(self) -> _Session:
        proc = subprocess.Popen(
            [sys.executable, "-m", "executor.zygote"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=child_environment(self.threads), cwd="/", start_new_session=True,
            pass_fds=self.pass_fds,
        )  # fmt: skip
        session = self._session = _Session(proc)
        assert proc.stdout is not None
        threading.Thread(target=self._read, args=(session,), daemon=True,
                         name="zygote-reader").start()  # fmt: skip
        return session

    @property
    def pid(self) -> int | None:
        return self._session.proc.pid if self._session else None

    def _send_locked(self, session: _Session | None, message: dict[str, Any]) -> None:
        if session is None or session.ended is not None or session.proc.stdin is None:
            raise ZygoteDied(
                f"the fold runner is not running{f' ({session.ended})' if session else ''}"
            )
        try:
            session.proc.stdin.write(json.dumps(message).encode() + b"\n")
            session.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise ZygoteDied(f"the fold runner is gone: {exc}") from exc

    def run(self, key: str, spec: FoldSpec) -> Future[FoldDone]:
        """Start a fold; the future resolves with how it ended (or why it could not
        start), or fails with ZygoteDied if the zygote dies first (never stays pending)."""
        self.start()
        future: Future[FoldDone] = Future()
        with self._lock:  # the reader fails what is pending under the same lock
            session = self._session
            self._send_locked(session, {"op": "run", "key": key, "spec": spec.to_dict()})
            assert session is not None
            session.pending[key] = future
        return future

    def run_shared(
        self, key: str, folds: list[tuple[str, FoldSpec]], release_after: float | None
    ) -> tuple[list[Future[FoldDone]], Future[FoldDone]]:
        """Start one child for several folds of one submission, run in turn: a future
        for each fold's end (`not_run` when the child ended before it, or when a fold
        before it ran `release_after` seconds), and one for the child's own end (its
        processes gone). None stays pending if the zygote dies."""
        self.start()
        futures: list[Future[FoldDone]] = [Future() for _ in folds]
        child: Future[FoldDone] = Future()
        message = {"op": "run_shared", "key": key, "release_after": release_after,
                   "folds": [[k, spec.to_dict()] for k, spec in folds]}  # fmt: skip
        with self._lock:
            session = self._session
            self._send_locked(session, message)
            assert session is not None
            for (fold_key, _), future in zip(folds, futures, strict=True):
                session.pending[fold_key] = future
            session.pending[key] = child
        return futures, child

    def kill(self, key: str) -> None:
        with self._lock, contextlib.suppress(ZygoteDied):
            self._send_locked(self._session, {"op": "kill", "key": key})

    def share(self, key: str) -> None:
        """Ask the shared child `key` to give back half of its folds not started (they
        end `not_run`), to run beside it."""
        with self._lock, contextlib.suppress(ZygoteDied):
            self._send_locked(self._session, {"op": "share", "key": key})

    def running(self) -> list[str]:
        session = self._session
        return list(session.pending) if session else []

    def _read(self, session: _Session) -> None:
        assert session.proc.stdout is not None
        for raw in session.proc.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                log.warning("unreadable message from the fold runner: %r", raw[:200])
                continue
            op = message.get("op")
            key = str(message.get("key", ""))
            if op == "ready":
                session.ready.set()
            elif op == "started" and isinstance(message.get("pid"), int):
                session.groups[key] = message["pid"]
            elif op in ("done", "error"):
                with self._lock:
                    session.groups.pop(key, None)
                    future = session.pending.pop(key, None)
                if future is not None:
                    future.set_result(FoldDone.from_message(message))
        try:  # its output ended: it is dying or dead; say how, for the folds' reasons
            code = session.proc.wait(timeout=5)
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        except subprocess.TimeoutExpired:
            how = "its output closed"
        with self._lock:
            session.ended = how
            lost = list(session.pending.items())
            session.pending.clear()
        session.ready.set()  # a start() waiting on it gives up at once
        for group in session.groups.values():  # its folds, orphaned: they die with it
            with contextlib.suppress(OSError):
                os.killpg(group, signal.SIGKILL)
        if lost:
            log.error("the fold runner (pid %d) died (%s) while running %d folds",
                      session.proc.pid, how, len(lost))  # fmt: skip
        for _, future in lost:
            future.set_exception(ZygoteDied(f"the fold runner died during the fold ({how})"))

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is None:
            return
        proc = session.proc
        try:
            if proc.stdin:
                proc.stdin.write(b'{"op": "quit"}\n')
                proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
