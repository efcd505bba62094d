"""The zygote's bookkeeping of its children (executor.children), with real processes and
pipes: a descriptor's number, once closed, is soon another child's."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from executor.children import Children
from executor.running import Running


def child(children: Children, key: str, *, exits: bool) -> Running:
    """A real child with an output pipe, tracked as the zygote tracks a fold's."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        if not exits:
            time.sleep(60)
        os._exit(0)
    os.close(write_end)
    os.set_blocking(read_end, False)
    now = time.monotonic()
    job = Running(key, pid, read_end, open(os.devnull, "wb"), 1 << 20, now + 60, now, 0, None)  # noqa: SIM115
    children._track(job, None, None, 60.0, None)
    return job


def test_a_child_whose_output_ended_before_its_exit_ends_though_its_pipe_number_is_reused():
    sent: list[dict[str, Any]] = []
    children = Children(sent.append)
    first = child(children, "first", exits=True)
    deadline = time.monotonic() + 10
    while first.pipe in children.by_pipe:  # its output ends; it is not reaped yet
        assert time.monotonic() < deadline
        children.drain(first.pipe)
        time.sleep(0.01)
    second = child(children, "second", exits=False)  # started in between
    try:
        assert second.pipe == first.pipe  # the number closed is the next one given
        while not any(m["key"] == "first" and m["op"] == "done" for m in sent):
            assert time.monotonic() < deadline, "the first child's end was never reported"
            children.reap()
            time.sleep(0.01)
        assert children.by_pipe.get(second.pipe) is second  # and its pipe is left alone
        children.enforce_deadlines()
        assert children.by_pipe.get(second.pipe) is second
    finally:
        os.kill(second.pid, signal.SIGKILL)
        children.shutdown()
