"""The scoring child of a RAMP kit (`watcher.scorers`): `python -m watcher.rampscore
KIT FOLDS`, scores computed with the kit's own score types.

A kit's score types and prediction type are its `problem.py`'s code: trusted, but never
run inside the master's daemon. The child answers JSON requests on stdin, one line
each on stdout. It computes exactly what ramp-test computes: per fold, each score type
on the fold's training rows, its validation rows and the test set; per submission, the
bagged scores of ramp-workflow's own `get_score_cv_bags` (valid rows combined over the
folds that held them out, test predictions over all).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

from spool import kitsandbox
from watcher.scorers import Handler, one_line, serve

Values = list[tuple[str, str, float]]  # (split, metric, value)


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
        from spool import arrays

        width = int(getattr(self.problem.Predictions, "n_columns", 0) or 0) or None
        expected = {"train": arrays.shape_of(len(self.y_train), width)}
        if self.y_test is not None:
            expected["test"] = arrays.shape_of(len(self.y_test), width)
        try:  # headers and sizes checked before anything is allocated
            found = arrays.load(path, expected)
        except arrays.ArraysRefused as exc:
            raise ValueError(str(exc)) from None
        train, test = found["train"], found.get("test")
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
        values = []
        for split, truth, pred in pairs:
            for st in self.score_types:
                value = float(st.score_function(truth, pred))
                if math.isnan(value) and not _finite(pred.y_pred):
                    # left out of the mean, a spoiled fold would let a submission
                    # choose which folds count: the fold fails instead
                    raise ValueError(f"the {split} predictions hold NaN or infinite values: "
                                     f"'{st.name}' is undefined")  # fmt: skip
                values.append((split, st.name, value))
        return values

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


def _handle(kit: _Kit, payload: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {"scores": {}, "bagged": {}}
    for job in payload.get("score", []):
        try:
            answer["scores"][str(job["id"])] = kit.fold_scores(int(job["fold"]), job["pred"])
        except Exception as exc:
            answer["scores"][str(job["id"])] = {"error": one_line(exc)}
    for sub in payload.get("bag", []):
        try:
            answer["bagged"][str(sub["id"])] = kit.bagged([(int(f), p) for f, p in sub["preds"]])
        except Exception as exc:
            answer["bagged"][str(sub["id"])] = {"error": one_line(exc)}
    if payload.get("folds"):
        answer["folds"] = {name: rows.tolist() for name, rows in kit.folds.items()}
    return answer


def _confine(options: dict[str, str], kit: Path, folds: Path) -> None:
    """The kit's code as its own user, in a root showing the kit, its folds and the
    prediction files (read-only): never root's code (spool.kitsandbox)."""
    if not options.get("run-as"):
        return
    import numpy  # noqa: F401  (loaded as root: the new root shows them too, but faster)

    with contextlib.suppress(ImportError):
        import rampwf  # noqa: F401
    uid, _, gid = options["run-as"].partition(":")
    seen = [str(kit.absolute()), str(folds.absolute().parent)]
    seen += [options["read"]] if options.get("read") else []
    try:
        kitsandbox.confine((int(uid), int(gid)), read_only=seen, hide=seen)
    except OSError as exc:  # no namespaces here (a container): as before, as root
        sys.stderr.write(f"the kit's code runs as root: {exc}\n")


def _setup(options: dict[str, str], args: list[str]) -> Handler:
    kit, folds = Path(args[0]), Path(args[1])
    _confine(options, kit, folds)
    os.chdir(kit)  # as ramp-test, which runs in the kit's folder
    return partial(_handle, _Kit(kit, folds))


def _finite(values: Any) -> bool:
    import numpy as np

    try:
        return bool(np.isfinite(np.asarray(values, dtype=float)).all())
    except (TypeError, ValueError):
        return True  # labels, not numbers: nothing to be NaN


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:], _setup))
