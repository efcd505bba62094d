"""RAMP kits as dataset bundles: `problem.py` + `data/` (+ `submissions/`), read with
ramp-workflow (the `ramp` extra).

A kit's code is the organizer's: trusted, but it runs only in child processes with a
timeout. Here, `python -m spool.rampkit KIT OUT PARENT` imports `problem.py`, reads
the training and test data, runs `get_cv` once, and writes OUT/folds.npz and
OUT/summary.json (the score types, the workflow's files, the sizes), or OUT/error.txt
with what went wrong and the kit's own traceback. The executor and the sweeper import
the same `problem.py` the same way, through `load_problem`, which first gives pandas the
strings of a plain environment (`plain_strings`).
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from spool.errors import BundleError
from spool.folds import write_prepared

PROBLEM = "problem.py"
RAMP_EXTRA = "RAMP kits need ramp-workflow: pip install 'datarun[ramp]'"


def is_kit(root: Path) -> bool:
    return (root / PROBLEM).is_file()


def plain_strings() -> None:
    """Strings as pandas stores them where ramp-workflow and scikit-learn alone are
    installed: in Python, not in Arrow arrays.

    datarun requires pyarrow, and with it pandas 3 reads a string column into an Arrow
    array, which ramp-workflow's workflows cannot index (SKLearnPipeline, Estimator:
    "only integer scalar arrays can be converted to a scalar index"); without pyarrow
    the same `str` dtype is backed by Python objects, and ramp-test passes. Called in
    the kit's child processes only (preparing, a fold, scoring), before the kit's code
    runs: native datasets keep pandas' defaults."""
    import pandas as pd

    pd.set_option("mode.string_storage", "python")


def load_problem(kit: Path) -> ModuleType:
    """Import a kit's problem.py as ramp-test does (its external_imports/ on the path),
    in a plain environment's pandas (`plain_strings`)."""
    import importlib.util

    plain_strings()
    extra = kit / "external_imports"
    if extra.is_dir() and str(extra) not in sys.path:
        sys.path.append(str(extra))
    spec = importlib.util.spec_from_file_location("problem", kit / PROBLEM)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {kit / PROBLEM}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def element_files(workflow: Any) -> list[str]:
    """The files a submission needs: element names, `.py` added where there is no suffix."""
    names = getattr(workflow, "element_names", None) or []
    return [n if "." in n else f"{n}.py" for n in names]


def read_data(problem: ModuleType, kit: Path) -> tuple[Any, Any, Any, Any]:
    """X_train, y_train, X_test, y_test as ramp-test reads them (test may be None)."""
    X_train, y_train = problem.get_train_data(path=str(kit))
    X_test, y_test = None, None
    if hasattr(problem, "get_test_data"):
        X_test, y_test = problem.get_test_data(path=str(kit))
    return X_train, y_train, X_test, y_test


def kit_traceback(exc: BaseException, kit: Path) -> str:
    """The traceback from the kit's first frame on, its files named relative to it."""
    frames = traceback.extract_tb(exc.__traceback__)
    theirs = [i for i, f in enumerate(frames) if f.filename.startswith(str(kit))]
    shown = frames[theirs[0] :] if theirs else frames
    for frame in shown:
        if frame.filename.startswith(str(kit)):
            frame.filename = frame.filename[len(str(kit)) + 1 :]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(shown)]
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def prepare(kit: Path, out: Path) -> dict[str, Any]:
    import numpy as np

    try:
        import rampwf  # noqa: F401
    except ImportError:
        raise BundleError(f"{PROBLEM}: {RAMP_EXTRA} on the master and the runners") from None
    step = f"importing {PROBLEM}"
    try:
        problem = load_problem(kit)
        step = "reading the data (get_train_data, get_test_data)"
        X_train, y_train, _, y_test = read_data(problem, kit)
        step = "computing the folds (get_cv)"
        folds = [(np.asarray(t, dtype=np.int64), np.asarray(v, dtype=np.int64))
                 for t, v in problem.get_cv(X_train, y_train)]  # fmt: skip
        step = "reading score_types and workflow"
        score_types = list(problem.score_types)
        scores = [{"name": str(st.name), "lower_is_better": bool(st.is_lower_the_better),
                   "precision": int(getattr(st, "precision", 2))}
                  for st in score_types]  # fmt: skip
        files = element_files(problem.workflow)
        problem.Predictions  # noqa: B018 (a kit without it cannot be scored)
    except Exception as exc:
        raise BundleError(
            f"{PROBLEM}: failed while {step}: {_one_line(exc)}\n{kit_traceback(exc, kit)}"
        ) from None
    n_train = len(y_train)
    problems = []
    if not folds:
        problems.append(f"{PROBLEM}: get_cv gave no fold")
    for i, (t, v) in enumerate(folds):
        rows = np.concatenate([t, v])
        if len(t) == 0 or len(v) == 0 or rows.min() < 0 or rows.max() >= n_train:
            problems.append(f"{PROBLEM}: get_cv: fold {i} has an empty part, or rows outside "
                            f"0..{n_train - 1}")  # fmt: skip
    if not scores:
        problems.append(f"{PROBLEM}: score_types is empty; list at least one score type")
    if len({s["name"] for s in scores}) != len(scores):
        problems.append(f"{PROBLEM}: score_types: two score types have the same name")
    if not files:
        problems.append(f"{PROBLEM}: the workflow names no submission file (element_names)")
    if problems:
        raise BundleError("\n".join(problems))
    summary = {
        "kind": "ramp",
        "title": str(getattr(problem, "problem_title", "")),
        "workflow": type(problem.workflow).__name__,
        "files": files,
        "scores": scores,
        "n_train": n_train,
        "n_test": 0 if y_test is None else len(y_test),
        "n_folds": len(folds),
        "classes": None,
    }
    write_prepared(out, folds, summary)
    return summary


def main(argv: list[str]) -> int:
    from spool.prepare import ERROR_FILE, die_with_parent

    kit, out = Path(argv[0]), Path(argv[1])
    if len(argv) > 2:
        die_with_parent(int(argv[2]))
    os.chdir(kit)  # as ramp-test, which runs in the kit's folder
    try:
        prepare(kit, out)
    except BundleError as exc:
        (out / ERROR_FILE).write_text(str(exc) + "\n", encoding="utf-8")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
