"""The pre-warmed parent: a single-threaded process that forks one child per fold.

The executor starts it once (`python -m executor.zygote`) with an environment already
scrubbed of database credentials and with thread counts set, and talks to it in JSON
lines over its stdin and stdout. It imports numpy, pandas and scikit-learn once and
keeps recently used datasets loaded, so a fold's child starts with everything in
memory (copy-on-write) and costs a fork, not a Python start-up.

It owns the children (executor.children): their output pipes (copied to each fold's
log, capped), their wall-clock deadlines (the whole process group is killed), and their
exit status and resource usage (wait4). Where the machine allows (executor.isolation),
it also makes each fold's control group (executor.cgroups: killed, read and removed
after the fold), mounts its work/ tmpfs (executor.mounts) and forks it into a PID
namespace of its own (executor.pidns). It holds no database connection and no thread,
so forking is safe. When the executor goes away (EOF on stdin) it kills every child
and exits.

This module is the protocol and the loop. Requests, one JSON object a line on stdin:
`run` (key, spec: a `FoldSpec`), `run_shared` (key, folds: [key, spec] pairs of one
submission, run in turn by one child; release_after: seconds of a fold after which
the folds not started are given back), `kill` (key, a fold's or a shared child's),
`share` (key, a shared child's: half its folds not started are given back), `ping`,
`quit`. Replies on stdout: `ready` (pid), `started` (key, pid), `done` or
`error` (a `FoldDone`: one per fold as it ends, and a shared child's own at its end),
`pong`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
from typing import Any, BinaryIO

from executor.children import CHUNK, Children
from executor.messages import FoldSpec
from executor.prewarm import prewarm


class Zygote:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.children = Children(self.send)
        self.inbuf = b""
        self.gone = False  # the executor went away (killed): stop, quietly

    def send(self, message: dict[str, Any]) -> None:
        if self.gone:
            return
        try:
            self.out.write(json.dumps(message).encode() + b"\n")
            self.out.flush()
        except BrokenPipeError:
            self.gone = True

    def handle(self, request: dict[str, Any]) -> bool:
        op = request.get("op")
        if op == "run":
            self.children.start(request["key"], FoldSpec.from_dict(request["spec"]))
        elif op == "run_shared":
            folds = [(str(key), FoldSpec.from_dict(spec)) for key, spec in request["folds"]]
            self.children.start(request["key"], folds[0][1], folds, request.get("release_after"))
        elif op == "kill":
            self.children.kill(request["key"])
        elif op == "share":
            self.children.share(request["key"])
        elif op == "ping":
            self.send({"op": "pong"})
        elif op == "quit":
            return False
        return True

    def loop(self, stdin: int, wakeup: int) -> None:
        children = self.children
        while True:
            timeout = children.seconds_to_deadline()
            watched = [stdin, wakeup, *children.watched()]
            ready, _, _ = select.select(watched, [], [], min(timeout, 1.0))
            for fd in ready:
                if fd == wakeup:
                    _drain_wakeup(wakeup)
                elif fd == stdin:
                    if not self.read_requests(stdin):
                        return
                else:
                    children.readable(fd)  # a fold's output, or a v1 group's OOM
            children.tend()
            if self.gone:
                return

    def read_requests(self, stdin: int) -> bool:
        chunk = os.read(stdin, CHUNK)
        if not chunk:
            return False  # the executor is gone
        self.inbuf += chunk
        while b"\n" in self.inbuf:
            line, self.inbuf = self.inbuf.split(b"\n", 1)
            if line.strip() and not self.handle(json.loads(line)):
                return False
        return True

    def shutdown(self) -> None:
        self.children.shutdown()


def _drain_wakeup(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _not_inherited() -> None:
    """What the executor passed us (the users' lease locks) stays ours: not held by
    the PID namespaces' inits we spawn."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, False)


def main() -> int:
    _not_inherited()
    prewarm()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the executor decides when we stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    read_wake, write_wake = os.pipe()
    os.set_blocking(read_wake, False)
    os.set_blocking(write_wake, False)
    signal.set_wakeup_fd(write_wake)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    zygote = Zygote(sys.stdout.buffer)
    zygote.send({"op": "ready", "pid": os.getpid()})
    try:
        zygote.loop(sys.stdin.fileno(), read_wake)
    finally:
        zygote.shutdown()
        if zygote.gone:  # nobody reads our stdout: no flush error at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
