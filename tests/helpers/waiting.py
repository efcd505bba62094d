"""Waiting for a condition in end-to-end tests, with a message that says what for; and
a daemon served in a thread of the test while it waits."""

from __future__ import annotations

import os
import select
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol


class Daemon(Protocol):
    def run(self, stop: threading.Event) -> None: ...


@contextmanager
def running(daemon: Daemon) -> Iterator[threading.Event]:
    """`daemon.run` in a thread for the block; stopped (and gone) at its end."""
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,), name="daemon-under-test")
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=90)
        assert not thread.is_alive()


def wait_for(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def wait_for_line(
    proc: subprocess.Popen[str], needle: str | tuple[str, ...], timeout: float, what: str
) -> str:
    """Read a process's stdout until a whole line holds `needle` (or one of them) and
    return all it printed so far. Whatever comes first (warnings, say) is read past: a
    daemon's first line is not always the one a test needs. Its stdout must not have
    been read through the file object before (this reads its descriptor)."""
    assert proc.stdout is not None
    needles = (needle,) if isinstance(needle, str) else needle
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        text = data.decode(errors="replace")
        if any(n in line for line in text.splitlines(keepends=True)[: text.count("\n")]
               for n in needles):  # fmt: skip
            return text
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out waiting for {what}; it printed:\n{text}"
        ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
        if ready:
            chunk = os.read(fd, 1 << 16)
            assert chunk, f"{what}: output closed (exit {proc.poll()}); it printed:\n{text}"
            data += chunk
