"""What a warm child costs the machine before any fold runs in it: the zygote's fork
(copying the page tables of its private memory) and the child's exit (unmapping it),
for a process holding what the zygote loads (`executor.prewarm`), against a bare
interpreter's, in the same run. `python -m bench.forks [N]` prints one JSON line; the
executor benchmark runs it in a process of its own, with the zygote's environment, so
that the benchmark's own imports do not count."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from spool.environment import child_environment


@dataclass(frozen=True)
class Forks:
    """Per fork, in seconds: the parent's time in `fork`, the child's CPU (it exits at
    once); and the parent's private memory (kB), bare and warm."""

    bare_fork: float
    bare_exit: float
    warm_fork: float
    warm_exit: float
    warm_anon_kb: int

    def line(self, folds_per_child: float) -> str:
        each = (self.warm_fork + self.warm_exit) / folds_per_child
        fork, ends, mb = self.warm_fork * 1e3, self.warm_exit * 1e3, self.warm_anon_kb >> 10
        return (f"          a warm child's floor: the zygote's fork {fork:.1f} ms + the child's "
                f"exit {ends:.1f} ms of CPU (the page tables of {mb} MB of private memory "
                f"copied, then torn down), against {self.bare_fork * 1e3:.1f} + "
                f"{self.bare_exit * 1e3:.1f} ms for a bare interpreter: {each * 1e3:.1f} ms a "
                f"fold at {folds_per_child:g} folds a child, before any sandbox")  # fmt: skip


def measure(n: int) -> tuple[float, float]:
    """(the parent's time in fork, the child's CPU) per fork, in seconds."""
    forking = exiting = 0.0
    for _ in range(n):
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        forking += time.perf_counter() - start
        _, _, usage = os.wait4(pid, 0)
        exiting += usage.ru_utime + usage.ru_stime
    return forking / n, exiting / n


def _anon_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def run(n: int = 100) -> Forks:
    """Measure in a process of its own, started as the executor starts its zygote."""
    out = subprocess.run([sys.executable, "-m", "bench.forks", str(n)], check=True,
                         capture_output=True, env=child_environment(1))  # fmt: skip
    return Forks(**json.loads(out.stdout.decode().strip().splitlines()[-1]))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    bare = measure(n)
    from executor.prewarm import prewarm

    prewarm()
    gc.freeze()  # as the zygote does before each fork
    warm = measure(n)
    print(json.dumps({"bare_fork": bare[0], "bare_exit": bare[1], "warm_fork": warm[0],
                      "warm_exit": warm[1], "warm_anon_kb": _anon_kb()}))  # fmt: skip


if __name__ == "__main__":
    main()
