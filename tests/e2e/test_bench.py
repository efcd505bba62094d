"""Every benchmark still runs, at a tiny size (`python -m bench all --quick`). No
absolute time is asserted here (figures are for people, recorded in
docs/benchmarks.md); only ratios measured in the same run that show a benchmark's
point still holds, with a wide margin."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# what each benchmark's figures line starts with, and a word it must contain
LINES = {
    "deadline": ("deadline", "joblib.Parallel"),
    "intake": ("datarun", "rename->registered"),
    "firstfold": ("firstfold", "first fold running"),
    "peers": ("peers", "PGQueuer"),
    "executor": ("folds", "joblib"),
    "load": ("load", "joblib.Parallel"),
    "ramp": ("ramp", "ramp-test one after the other"),
    "sweep": ("sweep", "files/s"),
    "fairshare": ("fairshare", "first in, first out"),
    "scale": ("scale", "p99"),
    "memory": ("memory", "master peak RSS"),
}


@pytest.mark.bench
@pytest.mark.timeout(1200)
def test_every_benchmark_runs_at_a_tiny_size():
    pytest.importorskip("rampwf", reason="the RAMP benchmarks need the ramp extra")
    result = subprocess.run([sys.executable, "-m", "bench", "all", "--quick"], cwd=ROOT,
                            capture_output=True, text=True, timeout=1100)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for name, (start, word) in LINES.items():
        assert f"== {name}" in out, name
        lines = [line for line in out.splitlines() if line.lstrip().startswith(start)]
        assert lines and word in " ".join(lines), (name, out)
    assert "claims " in out and "latency " in out  # the executor's and sweep's second lines
    # the fast scorers are really used: the sweeper outruns scikit-learn's scorers in a
    # loop on the same files (about 7x here; 1x would mean every call took the scorer)
    [ratio] = re.findall(r"^sweep .* ratio ([0-9.]+)", out, re.MULTILINE)
    assert float(ratio) >= 2, out
    # fair share: another team's first fold waits about one submission, not the flood
    [fair, fifo] = re.findall(r"^fairshare .*?([0-9.]+) fold durations.*?([0-9.]+) fold durations",
                              out, re.MULTILINE)[0]  # fmt: skip
    assert float(fair) <= 2 < float(fifo), out
