"""python -m bench NAME [options]  (python -m bench NAME --help for its options)."""

from __future__ import annotations

import sys

from bench import executor, intake, ramp, sweep

BENCHMARKS = {"intake": intake.main, "executor": executor.main, "sweep": sweep.main,
              "ramp": ramp.main}  # fmt: skip


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in {*BENCHMARKS, "all"}:
        print(__doc__.strip())
        print("benchmarks: " + ", ".join(BENCHMARKS) + ", all")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    names = list(BENCHMARKS) if argv[0] == "all" else [argv[0]]
    for name in names:
        print(f"== {name}")
        BENCHMARKS[name](argv[1:] if argv[0] != "all" else [])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
