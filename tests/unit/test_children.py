"""The zygote's bookkeeping of its children (executor.children), with real processes and
pipes: a descriptor's number, once closed, is soon another child's."""

from __future__ import annotations

import io
import os
import signal
import time
from typing import Any, cast

from executor.children import Children
from executor.messages import FoldSpec
from executor.running import Running, Shared


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


def test_folds_lent_to_an_idle_worker_say_so_and_those_given_back_after_a_long_fold_do_not():
    sent: list[dict[str, Any]] = []
    children = Children(sent.append)
    now = time.monotonic()
    folds = [(f"7.{i}", cast(FoldSpec, None)) for i in range(8)]
    shared = Shared(folds, control=-1, ack=-1, timeout=60.0, release_after=1.0, total=8)
    log = io.BytesIO()
    job = Running("7.0", os.getpid(), -1, log, 0, now + 60, now, 0, None, shared=shared)
    children.running["7+"] = job
    children.share("7+")  # an idle worker asks: the last half of the 8 left
    assert [(m["key"], m["lent"]) for m in sent] == [(f"7.{i}", True) for i in range(4, 8)]
    sent.clear()
    shared.running, shared.started = True, now - 2  # its first fold has run 2 s: long
    children.enforce_deadlines()
    assert [(m["key"], m["not_run"], m["lent"]) for m in sent] == [
        ("7.1", True, False), ("7.2", True, False), ("7.3", True, False)]  # fmt: skip
