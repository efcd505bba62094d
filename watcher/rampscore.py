"""Scores of RAMP kits' folds, computed with the kit's own score types in a child.

A kit's score types and prediction type are its `problem.py`'s code: trusted, but never
run inside the master's daemon. The sweeper hands a batch to `python -m
watcher.rampscore` (a JSON request on stdin, the answer on stdout, a timeout) and the
child computes exactly what ramp-test computes: per fold, each score type on the
fold's training rows, its validation rows and the test set; per submission, the
bagged scores of ramp-workflow's own `get_score_cv_bags` (valid rows combined over
the folds that held them out, test predictions over all folds).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from datarun.errors import DatarunError
from spool.prepare import SCRUBBED

Values = list[tuple[str, str, float]]  # (split, metric, value)


class KitScoringFailed(DatarunError):
    """The kit's scoring child failed as a whole (its problem.py, a timeout)."""


def request(kit: Path, timeout: float, payload: dict[str, Any]) -> dict[str, Any]:
    """Run one request in a child; its answer (per-item errors are in the answer)."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "watcher.rampscore"], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=kit,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(json.dumps(payload).encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise KitScoringFailed(f"scoring with {kit}/problem.py took over {timeout:.0f} s") from None
    if proc.returncode != 0:
        last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["?"]
        raise KitScoringFailed(f"scoring with {kit}/problem.py failed: {last[0]}")
    answer: dict[str, Any] = json.loads(out)
    return answer


# ---- the child ------------------------------------------------------------------------


class _Kit:
    def __init__(self, kit: Path, folds_file: Path) -> None:
        import numpy as np

        from spool.rampkit import load_problem, read_data

        self.problem = load_problem(kit)
        _, self.y_train, _, self.y_test = read_data(self.problem, kit)
        self.score_types = list(self.problem.score_types)
        with np.load(folds_file, allow_pickle=False) as data:
            self.folds = {n: data[n] for n in data.files}

    def rows(self, fold: int) -> tuple[Any, Any]:
        return self.folds[f"train_{fold}"], self.folds[f"valid_{fold}"]

    def load(self, path: str) -> tuple[Any, Any]:
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as data:
                train = data["train"]
                test = data["test"] if "test" in data.files else None
        except Exception as exc:
            raise ValueError(f"cannot be read: {type(exc).__name__}: {exc}") from None
        if len(train) != len(self.y_train):
            raise ValueError(f"predictions for {len(train)} training rows; the kit has "
                             f"{len(self.y_train)}")  # fmt: skip
        if self.y_test is not None:
            if test is None:
                raise ValueError("no test predictions; the kit has a test set")
            if len(test) != len(self.y_test):
                raise ValueError(f"predictions for {len(test)} test rows; the kit has "
                                 f"{len(self.y_test)}")  # fmt: skip
        return train, test

    def fold_scores(self, fold: int, path: str) -> Values:
        """As ramp-workflow's run_submission_on_cv_fold and score_matrix."""
        P = self.problem.Predictions
        train, test = self.load(path)
        train_is, valid_is = self.rows(fold)
        pairs = [("train", P(y_true=self.y_train, fold_is=train_is),
                  P(y_pred=train, fold_is=train_is)),
                 ("valid", P(y_true=self.y_train, fold_is=valid_is),
                  P(y_pred=train, fold_is=valid_is))]  # fmt: skip
        if self.y_test is not None:
            pairs.append(("test", P(y_true=self.y_test), P(y_pred=test)))
        return [(split, st.name, float(st.score_function(truth, pred)))
                for split, truth, pred in pairs for st in self.score_types]  # fmt: skip

    def bagged(self, paths: list[tuple[int, str]]) -> Values:
        """As ramp-workflow's bag_submissions: the score of all folds combined."""
        from rampwf.utils.combine import get_score_cv_bags

        P = self.problem.Predictions
        loaded = [(fold, *self.load(path)) for fold, path in sorted(paths)]
        steps: list[tuple[str, Any, list[Any], list[Any] | None]] = [("valid", self.y_train,
                  [P(y_pred=train, fold_is=self.rows(f)[1]) for f, train, _ in loaded],
                  [self.rows(f)[1] for f, _, _ in loaded])]  # fmt: skip
        if self.y_test is not None:
            steps.append(("test", self.y_test, [P(y_pred=test) for _, _, test in loaded], None))
        out: Values = []
        for split, y_true, predictions, rows in steps:
            for st in self.score_types:
                _, scores = get_score_cv_bags(st, predictions, P(y_true=y_true),
                                              test_is_list=rows)  # fmt: skip
                out.append((split, st.name, float(scores[-1])))
        return out


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def main() -> int:
    payload = json.loads(sys.stdin.read())
    real_stdout = os.dup(1)
    os.dup2(2, 1)  # the kit's prints must not corrupt the answer
    kit = _Kit(Path(payload["kit"]), Path(payload["folds"]))
    answer: dict[str, Any] = {"scores": {}, "bagged": {}}
    for job in payload.get("score", []):
        try:
            answer["scores"][str(job["id"])] = kit.fold_scores(int(job["fold"]), job["pred"])
        except Exception as exc:
            answer["scores"][str(job["id"])] = {"error": _one_line(exc)}
    for sub in payload.get("bag", []):
        try:
            answer["bagged"][str(sub["id"])] = kit.bagged([(int(f), p) for f, p in sub["preds"]])
        except Exception as exc:
            answer["bagged"][str(sub["id"])] = {"error": _one_line(exc)}
    with os.fdopen(real_stdout, "w") as out:
        json.dump(answer, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
