"""Each benchmark still runs, at a tiny size. No timing is asserted here: figures are
for `python -m bench`, read by people, recorded in docs/benchmarks.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_intake_benchmark_runs():
    result = subprocess.run(
        [sys.executable, "-m", "bench", "intake", "--drops", "3", "--poll-seconds", "0.2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("rename->registered") == 2
    assert "baseline" in result.stdout


def test_the_executor_benchmark_runs():
    result = subprocess.run(
        [sys.executable, "-m", "bench", "executor", "--folds", "10", "--jobs", "200"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "folds " in result.stdout and "claims " in result.stdout


def test_the_sweep_benchmark_runs():
    result = subprocess.run(
        [sys.executable, "-m", "bench", "sweep", "--files", "20", "--samples", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "sweep " in result.stdout and "latency " in result.stdout


def test_the_ramp_benchmark_runs():
    pytest.importorskip("rampwf", reason="needs the ramp extra")
    result = subprocess.run(
        [sys.executable, "-m", "bench", "ramp", "--folds", "2", "--submissions", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ramp-test one after the other" in result.stdout and "ratio" in result.stdout
