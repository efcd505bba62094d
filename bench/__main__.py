"""python -m bench NAME [options]   one benchmark (python -m bench NAME --help)
python -m bench all [--quick]      every benchmark, in the order of docs/benchmarks.md

--quick runs each at a tiny size, to prove it still runs (CI does this); its figures
mean nothing. It starts one database server for all (a database each), where a full
run gives each testbed a server of its own."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from collections.abc import Callable

from bench import (
    deadline,
    executor,
    fairshare,
    firstfold,
    intake,
    memory,
    peers,
    ramp,
    scale,
    sweep,
)
from bench.common import shared_server

Main = Callable[[list[str]], dict[str, float]]

# name: (its main, the arguments of a quick run)
BENCHMARKS: dict[str, tuple[Main, list[str]]] = {
    # what a user waits for: first in docs/benchmarks.md
    "deadline": (
        deadline.main,
        [
            "--submissions",
            "6",
            "--teams",
            "3",
            "--broken-every",
            "3",
            "--rows",
            "400",
            "--trees",
            "5",
        ],
    ),
    "intake": (intake.main, ["--drops", "3", "--poll-seconds", "0.2"]),
    "firstfold": (firstfold.main, ["--drops", "1"]),
    "peers": (peers.main, ["--jobs", "200"]),
    "executor": (executor.main, ["--folds", "5", "--jobs", "200"]),
    "load": (
        ramp.load_main,
        ["--folds", "2", "--submissions", "1", "--trees", "5", "--idle-seconds", "0"],
    ),
    "ramp": (ramp.main, ["--folds", "2", "--submissions", "1", "--idle-seconds", "0"]),
    # 100 files: well past the twins' checks (their first 20 calls, 7 files), so the
    # sweeper's ratio to scikit-learn's scorers stays far above test_bench's 2
    "sweep": (sweep.main, ["--files", "100", "--samples", "1"]),
    "fairshare": (fairshare.main, ["--flood", "50"]),
    "scale": (scale.main, ["--queued", "2000", "--claims", "100"]),
    "memory": (
        memory.main,
        ["--submissions", "20", "--master-idle-seconds", "0", "--executor-idle-seconds", "0"],
    ),
}


def machine() -> str:
    cores = len(os.sched_getaffinity(0))
    return f"{platform.machine()}, {cores} cores, Python {platform.python_version()}"


def main(argv: list[str]) -> int:
    name = argv[0] if argv else ""
    if name in ("-h", "--help") or name not in {*BENCHMARKS, "all"}:
        print(__doc__.strip())
        print("benchmarks: " + ", ".join(BENCHMARKS) + ", all")
        return 0 if name in ("-h", "--help") else 2
    if name != "all":
        print(f"== {name}")
        BENCHMARKS[name][0](argv[1:])
        return 0
    quick = "--quick" in argv[1:]
    print(
        f"# datarun benchmarks{' (quick: sizes too small to mean anything)' if quick else ''}"
        f" on {machine()}"
    )
    # quick: one server for all, a database each (a full run starts one per testbed)
    with shared_server() if quick else contextlib.nullcontext():
        for each, (run, tiny) in BENCHMARKS.items():
            start = time.monotonic()
            print(f"== {each}", flush=True)
            run(tiny if quick else [])
            print(f"   ({time.monotonic() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
