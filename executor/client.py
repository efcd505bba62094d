"""The executor's side of the zygote: start it, send it folds, wait for their ends."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
from concurrent.futures import Future
from typing import IO, Any

from datarun.errors import DatarunError

log = logging.getLogger(__name__)

# Never inherited by the zygote, hence by fold code.
SECRET_PREFIXES = ("DATARUN_", "PG")


class ZygoteDied(DatarunError):
    """The pre-warmed parent exited; the folds it ran are lost."""


def scrubbed_environment(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(SECRET_PREFIXES)}
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                 "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):  # fmt: skip
        env[name] = str(threads)
    return env


class ZygoteClient:
    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending: dict[str, Future[dict[str, Any]]] = {}
        self._ready = threading.Event()
        # The sandbox users' lease locks: the zygote holds them too, so a user is not
        # leased again while an old zygote (its executor killed) may still fork as it.
        self.pass_fds: tuple[int, ...] = ()

    def start(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return
            self._ready.clear()
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "executor.zygote"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                env=scrubbed_environment(self.threads), cwd="/", start_new_session=True,
                pass_fds=self.pass_fds,
            )  # fmt: skip
            assert self._proc.stdout is not None
            threading.Thread(target=self._read, args=(self._proc.stdout,), daemon=True,
                             name="zygote-reader").start()  # fmt: skip
        if not self._ready.wait(timeout=120):
            raise ZygoteDied("the fold runner did not start within 120 s")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _send(self, message: dict[str, Any]) -> None:
        with self._lock:
            if self._proc is None or self._proc.stdin is None or self._proc.poll() is not None:
                raise ZygoteDied("the fold runner is not running")
            try:
                self._proc.stdin.write(json.dumps(message).encode() + b"\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError) as exc:
                raise ZygoteDied(f"the fold runner is gone: {exc}") from exc

    def run(self, key: str, spec: dict[str, Any]) -> Future[dict[str, Any]]:
        """Start a fold; the future resolves with the zygote's `done` message."""
        self.start()
        future: Future[dict[str, Any]] = Future()
        self._pending[key] = future
        try:
            self._send({"op": "run", "key": key, "spec": spec})
        except ZygoteDied:
            self._pending.pop(key, None)
            raise
        return future

    def kill(self, key: str) -> None:
        with contextlib.suppress(ZygoteDied):
            self._send({"op": "kill", "key": key})

    def running(self) -> list[str]:
        return list(self._pending)

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            try:
                message = json.loads(raw)
            except ValueError:
                log.warning("unreadable message from the fold runner: %r", raw[:200])
                continue
            op = message.get("op")
            if op == "ready":
                self._ready.set()
            elif op in ("done", "error"):
                future = self._pending.pop(message.get("key", ""), None)
                if future is not None:
                    future.set_result(message)
        for key, future in list(self._pending.items()):  # EOF: the zygote died
            self._pending.pop(key, None)
            future.set_exception(ZygoteDied("the fold runner exited during the fold"))

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
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
