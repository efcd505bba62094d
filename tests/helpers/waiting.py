"""Waiting for a condition in end-to-end tests, with a message that says what for."""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Callable


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
