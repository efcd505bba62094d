"""Memory (issue 10): peak RSS of `datarun master` with `--submissions` registered
submissions, and RSS of an idle `datarun executor` parent, as real processes.

The master starts on an empty spool (its idle peak is the baseline), then the
submissions are dropped (one dataset of 3 folds: three jobs each) and registered by
it, and it writes their results; its peak RSS (VmHWM) is read once every
submission's status.json exists. The executor starts with 2 workers and is read after
it has registered and idled for 3 s: its parent only, the zygote (which holds numpy,
pandas and scikit-learn for the folds) is reported beside it. Targets: <= 200 MB each.
The idle times are options (a quick run shortens them); the master's is counted from
its start and the executor's from its registration, and neither ends before the
process is up (the master's watcher and sweeper connected, the executor's zygote
forked). Where the master's memory grows is read from its /proc/PID/smaps, by kind of
mapping, idle and when its RSS was highest (sampled twice a second); its children (the
warm preparer, the dataset's scoring child that published its folds) are reported
apart. Targets (issue 18): idle <= 80 MB,
peak <= 110 MB with 10,000 submissions.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    Bed,
    connected,
    idle_until,
    settle,
    testbed,
    wait,
    write_dataset,
    write_submission,
)
from spool import db

MB = 2**20


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def start(bed: Bed, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATARUN_")}
    env.update(DATARUN_HOME=str(bed.spool.root.parent / "home"), DATARUN_SPOOL=str(bed.spool.root),
               DATARUN_DATABASE_URL=bed.url)  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", "datarun", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def count(bed: Bed, sql: str) -> int:
    with db.connect(bed.url) as conn:
        row = conn.execute(sql).fetchone()
        return int(row["n"]) if row else 0


def breakdown(pid: int) -> dict[str, float]:
    """A process's resident memory by kind of mapping, in MB (/proc/PID/smaps): its
    libraries' code and data, the main malloc heap, 1 MiB anonymous blocks (Python's
    object arenas), larger anonymous regions (threads' malloc arenas, big buffers)."""
    kinds: dict[str, float] = {}
    kind = "other"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):
            low, high = (int(x, 16) for x in fields[0].split("-"))
            name = fields[5] if len(fields) > 5 else ""
            if name.startswith("/"):
                kind = "libraries"
            elif name in ("[heap]", "[stack]"):
                kind = name.strip("[]")
            else:
                kind = "python arenas" if high - low <= MB else "other anonymous"
        elif fields[0] == "Rss:":
            kinds[kind] = kinds.get(kind, 0.0) + int(fields[1]) / 1024
    return kinds


def children(pid: int) -> dict[str, float]:
    """RSS in MB of a master's children, by what they are (its warm preparer, its
    scoring children)."""
    out: dict[str, float] = {}
    for child in every_child(pid):
        argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        name = argv[2].decode() if len(argv) > 2 and argv[1] == b"-m" else "other"
        out[name] = out.get(name, 0.0) + status_kb(child, "VmRSS") / 1024
    return out


def every_child(pid: int) -> list[int]:
    """The children of every thread of the process (each thread has its own list)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def zygotes(pid: int) -> list[int]:
    return [int(child) for child in
            Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]  # fmt: skip


class Highest(threading.Thread):
    """Where a process's memory is when its RSS is highest, sampled twice a second."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.stop = pid, threading.Event()
        self.rss, self.kinds = 0, breakdown(pid)

    def run(self) -> None:
        while not self.stop.wait(0.5):
            rss = status_kb(self.pid, "VmRSS")
            if rss > self.rss:
                self.rss, self.kinds = rss, breakdown(self.pid)


@dataclass
class Master:
    idle: float  # MB
    peak: float
    children: dict[str, float]  # what -> MB
    idle_kinds: dict[str, float]  # where its RSS is, idle and at its highest
    peak_kinds: dict[str, float]


def master_peak(submissions: int, idle_seconds: float = 5.0) -> Master:
    """The master's idle and peak RSS, where it is, and its children's."""
    with testbed() as bed:
        master = start(bed, "master")
        started = time.monotonic()
        try:
            # up: its sweeper's pool open, its watcher watching (it connects in its first
            # pass, after its observer has started)
            wait(lambda: {"datarun watcher", "datarun sweeper"} <= connected(bed), 120,
                 "the master")  # fmt: skip
            idle_until(started, idle_seconds)
            idle = status_kb(master.pid, "VmHWM") / 1024
            idle_kinds = breakdown(master.pid)
            top = Highest(master.pid)
            top.start()
            settle(write_dataset(bed.spool.root / "src", "iris", 3)).rename(
                bed.spool.incoming_datasets / "iris"
            )
            wait(lambda: count(bed, "select count(*) as n from datasets") == 1, 120, "dataset")
            src = bed.spool.root / "subs"
            made = [settle(write_submission(src, f"s{i:05d}", i)) for i in range(submissions)]
            into = bed.spool.incoming_submissions / "iris"
            for path in made:
                path.rename(into / path.name)
            wait(lambda: count(bed, "select count(*) as n from submissions") == submissions,
                 3600, "registrations")  # fmt: skip
            results = bed.spool.results / "iris"
            wait(lambda: sum(1 for _ in results.glob("*/status.json")) == submissions,
                 3600, "results")  # fmt: skip
            peak = status_kb(master.pid, "VmHWM") / 1024
            top.stop.set()
            top.join()
            found = Master(idle, peak, children(master.pid), idle_kinds, top.kinds)
        finally:
            master.terminate()
            master.wait(timeout=60)
    return found


def executor_rss(idle_seconds: float = 3.0) -> tuple[float, float]:
    with testbed() as bed:
        executor = start(bed, "executor", "--workers", "2")
        try:
            wait(lambda: count(bed, "select count(*) as n from executors") == 1, 120, "executor")
            registered = time.monotonic()
            # it warms its zygote before it registers: registered, the zygote is there
            wait(lambda: bool(zygotes(executor.pid)), 120, "the zygote")
            idle_until(registered, idle_seconds)
            parent = status_kb(executor.pid, "VmRSS") / 1024
            zygote = sum(status_kb(pid, "VmRSS") for pid in zygotes(executor.pid)) / 1024
        finally:
            executor.terminate()
            executor.wait(timeout=60)
    return parent, zygote


def bare_python() -> float:
    out = subprocess.run([sys.executable, "-c", "import psycopg; print(open('/proc/self/status')"
                          ".read().split('VmRSS:')[1].split()[0])"], capture_output=True,
                         text=True, check=True)  # fmt: skip
    return int(out.stdout) / 1024


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m bench memory", description=__doc__)
    parser.add_argument("--submissions", type=int, default=10_000)
    parser.add_argument("--master-idle-seconds", type=float, default=5.0,
                        help="from the master's start to its idle figure")  # fmt: skip
    parser.add_argument("--executor-idle-seconds", type=float, default=3.0,
                        help="from the executor's registration to its figure")  # fmt: skip
    args = parser.parse_args(argv)
    m = master_peak(args.submissions, args.master_idle_seconds)
    parent, zygote = executor_rss(args.executor_idle_seconds)
    bare = bare_python()
    per = 1000 / args.submissions
    growth = ", ".join(f"{k} {(m.peak_kinds.get(k, 0) - m.idle_kinds.get(k, 0)) * per:+.1f}"
                       for k in sorted(m.peak_kinds))  # fmt: skip
    kids = ", ".join(f"{k} {v:.0f} MB" for k, v in sorted(m.children.items())) or "none"
    print(f"memory    master peak RSS with {args.submissions:,} submissions {m.peak:.0f} MB "
          f"(idle {m.idle:.0f} MB, ratio {m.peak / m.idle:.2f}, growth "
          f"{(m.peak - m.idle) * per:.1f} MB per 1,000 submissions); its children apart: "
          f"{kids}; idle executor parent {parent:.0f} MB (its zygote {zygote:.0f} MB); bare "
          f"Python with psycopg {bare:.0f} MB (targets: master idle <= 80 MB "
          f"{'met' if m.idle <= 80 else 'MISSED'}, peak <= 110 MB "
          f"{'met' if m.peak <= 110 else 'MISSED'}, executor <= 200 MB "
          f"{'met' if parent <= 200 else 'MISSED'})")  # fmt: skip
    print(
        f"memory    where the master's RSS grew to its highest, MB per 1,000 submissions: "
        f"{growth}; idle, MB: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(m.idle_kinds.items()))
    )
    return {"master_peak_mb": m.peak, "master_idle_mb": m.idle, "executor_mb": parent,
            "zygote_mb": zygote, **{f"child_{k}_mb": v for k, v in m.children.items()}}  # fmt: skip


if __name__ == "__main__":
    main()
