"""A RAMP kit's fold, in the fold's child: the kit's own workflow, called as ramp-test
calls it (`train_submission` on the fold's training rows, then `test_submission` on
the whole training set and on the test set)."""

from __future__ import annotations

import inspect
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from executor.workflows import Predictions
from spool.rampkit import load_problem, read_data


def _numbers(y_pred: Any, what: str) -> np.ndarray:
    array = np.asarray(y_pred)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"test_submission returned {what} predictions of dtype {array.dtype}; "
                        "datarun stores numeric predictions only")  # fmt: skip
    return array


@dataclass
class Kit:
    problem: ModuleType
    X_train: Any
    y_train: Any
    X_test: Any


def load(kit: Path) -> Kit:
    """The kit's problem and data, read in its folder as ramp-test reads them (trusted
    code, run before the child is confined: the sandbox user may not read the store)."""
    os.chdir(kit)
    problem = load_problem(kit)
    X_train, y_train, X_test, _ = read_data(problem, kit)
    return Kit(problem, X_train, y_train, X_test)


def run(kit: Kit, code: Path, train_rows: np.ndarray, valid_rows: np.ndarray) -> Predictions:
    X_train, y_train, X_test = kit.X_train, kit.y_train, kit.X_test
    workflow = kit.problem.workflow
    fold = (train_rows, valid_rows)
    started = time.perf_counter()
    trained = workflow.train_submission(str(code), X_train, y_train, train_rows)
    trained_at = time.perf_counter()
    params = list(inspect.signature(workflow.test_submission).parameters)
    with_fold = len(params) == 3 and params[2] == "fold"  # as ramp-test decides
    y_train_pred = (workflow.test_submission(trained, X_train, fold) if with_fold
                    else workflow.test_submission(trained, X_train))  # fmt: skip
    validated_at = time.perf_counter()
    y_test_pred = None
    if X_test is not None:
        y_test_pred = (workflow.test_submission(trained, X_test, None) if with_fold
                       else workflow.test_submission(trained, X_test))  # fmt: skip
    tested_at = time.perf_counter()
    return Predictions(
        train=_numbers(y_train_pred, "training"),
        test=None if y_test_pred is None else _numbers(y_test_pred, "test"),
        train_seconds=trained_at - started,
        valid_seconds=validated_at - trained_at,
        test_seconds=tested_at - validated_at,
    )
