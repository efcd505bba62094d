"""A warm process that prepares native datasets, so that a registration does not pay
2 s of starting Python and importing scikit-learn, pandas and numpy each time.

As the executor's zygote does for folds: `python -m spool.preparer PARENT` imports them
once, then for each request forks a child that runs `spool.prepare.main` (its limits,
its own process group) and reports the child's pid at once, then its exit status. The
master's side (`WarmPreparer.run`) kills the child's group on a timeout, as it would a
child of its own, and falls back to a fresh `python -m spool.prepare` when the warm
process cannot start or dies. Idle for IDLE seconds, it exits (the next preparation
starts another). RAMP kits keep a fresh child: their `problem.py` imports what it likes
and runs as another user in namespaces of its own.

Protocol (`python -m spool.preparer PARENT IDLE`): one JSON line in (`{"argv": [...],
"stderr": a path to write it}`; the argv of `python -m spool.prepare` but its parent,
which is this process), two out
(`{"pid": N}`, then `{"status": exit code, negative for a signal}`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import IO, Any

log = logging.getLogger(__name__)

STARTUP_TIMEOUT = 60.0
IDLE = 300.0  # seconds without a request before the warm process exits (its 190 MB back)
MARGIN = 5.0  # the master's side starts a new one a little before, rather than race it


class PreparerDied(Exception):
    """The warm process is gone or answers nonsense: use a fresh child."""


class WarmPreparer:
    """The master's handle on its warm preparer; one request at a time. The warm process
    exits by itself after `idle` seconds without a request: a master that prepares
    nothing for a while holds none of its memory, and the next preparation starts it."""

    def __init__(self, idle: float = IDLE) -> None:
        self.idle = idle
        self._proc: subprocess.Popen[bytes] | None = None
        self._used = 0.0  # time.monotonic() of the last request's end
        self._lock = threading.Lock()

    def run(self, argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, bytes]:
        """`spool.prepare`'s exit code (negative: killed by that signal) and its stderr;
        raises subprocess.TimeoutExpired (the child killed) or PreparerDied."""
        with self._lock:
            proc = self._started(env)
            import tempfile

            with tempfile.TemporaryFile() as err:
                try:
                    assert proc.stdin is not None
                    line = json.dumps({"argv": argv, "stderr": f"/proc/{os.getpid()}/fd/"
                                       f"{err.fileno()}"})  # fmt: skip
                    proc.stdin.write(line.encode() + b"\n")
                    proc.stdin.flush()
                    pid = int(self._answer(proc, STARTUP_TIMEOUT)["pid"])
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    self._stop()
                    raise PreparerDied(f"the warm preparer failed: {exc}") from exc
                try:
                    status = self._answer(proc, timeout)["status"]
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                    self._answer(proc, STARTUP_TIMEOUT)
                    raise
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                    self._stop()
                    raise PreparerDied(f"the warm preparer failed: {exc}") from exc
                finally:
                    self._used = time.monotonic()
                err.seek(0)
                return int(status), err.read()

    def _started(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        if time.monotonic() - self._used > self.idle - MARGIN:
            self._stop()  # it exits by itself about now: never send it a request then
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "spool.preparer", str(os.getpid()), str(self.idle)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env, start_new_session=True, bufsize=0,  # unbuffered: select sees each line
        )  # fmt: skip
        return self._proc

    def _answer(self, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            raise subprocess.TimeoutExpired("spool.preparer", timeout)
        line = proc.stdout.readline()
        if not line:
            raise OSError("the warm preparer exited")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def close(self) -> None:
        with self._lock:
            self._stop()


# ---- the warm process --------------------------------------------------------------


def serve(parent: int, requests: IO[bytes], answers: IO[bytes], idle: float = IDLE) -> None:
    import numpy  # noqa: F401  (what each child would import: once, here)
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import sklearn.model_selection  # noqa: F401

    from spool import prepare

    # No parquet is written here: pyarrow's thread pool starts at its first use, and
    # threads do not survive a fork; each child warms it (`prepare.confine`).
    prepare.die_with_parent(parent)
    while select.select([requests], [], [], idle)[0]:  # one request at a time: no buffer
        line = requests.readline()
        if not line:
            return
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the child: a preparation as `python -m spool.prepare` makes one
            _child(request, prepare.main)
        answers.write(json.dumps({"pid": pid}).encode() + b"\n")
        answers.flush()
        _, status = os.waitpid(pid, 0)
        answers.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode()
                      + b"\n")  # fmt: skip
        answers.flush()


def _child(request: dict[str, Any], main: Any) -> None:
    code = 1
    try:
        os.setsid()  # its own group: a timeout kills all it started
        fd = os.open(request["stderr"], os.O_WRONLY | os.O_APPEND)
        os.dup2(fd, 2)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        code = main([*request["argv"], str(os.getppid())])  # dies with us
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.stdin.buffer, sys.stdout.buffer, float(sys.argv[2]))
