"""Scores from prediction files, computed by scikit-learn's own scorers.

A fold's prediction file holds predictions for every training row and every test row.
The scorers are handed a frozen estimator that answers `predict_proba` / `predict`
from those arrays for the rows asked (the rows are passed as X), so each score is what
`cross_validate` would compute on the same folds, to the last bit. Bagged scores, as
RAMP computes them: each validation row's predictions averaged over the folds that left
it out, each test row's over all folds.

A file is believed only once checked: its arrays' headers first (`spool.arrays`: names,
shapes, numeric dtypes and sizes, before anything is allocated), then its values
(finite; for a classifier, probabilities as scikit-learn's metrics require them: in
[0, 1], each row summing to 1 within their tolerance). A file that fails says why in
one line (`Unscorable`), and its fold fails rather than ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.metrics import get_scorer

from spool import arrays
from spool.prepare import LABELS_FILE
from watcher.fastscore import TWINS, Guarded

SPLITS = ("train", "valid", "test")


class Unscorable(Exception):
    """The prediction file is wrong; the message says how, in one line."""


@dataclass(frozen=True)
class Truth:
    """What predictions are scored against, loaded once per dataset."""

    task: str
    y_train: np.ndarray
    y_test: np.ndarray | None
    folds: dict[str, np.ndarray]
    classes: np.ndarray | None

    def rows(self, fold: int) -> tuple[np.ndarray, np.ndarray]:
        return self.folds[f"train_{fold}"], self.folds[f"valid_{fold}"]

    def width(self) -> int | None:
        return None if self.classes is None else len(self.classes)


def load_truth(store: Path, target: str, task: str) -> Truth:
    prepared = store / "prepared"
    y_train = pd.read_parquet(prepared / "train.parquet", columns=[target])[target].to_numpy()
    labels = prepared / LABELS_FILE  # the test set's target, the master's only
    if not labels.is_file() and (prepared / "test.parquet").is_file():
        labels = prepared / "test.parquet"  # stored before the labels were kept apart
    y_test = None
    if labels.is_file():
        y_test = pd.read_parquet(labels, columns=[target])[target].to_numpy()
    with np.load(prepared / "folds.npz", allow_pickle=False) as data:
        folds = {name: data[name] for name in data.files}
    classes = np.unique(y_train) if task == "classification" else None
    return Truth(task, y_train, y_test, folds, classes)


class _FrozenClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    def __init__(self, proba: np.ndarray | None = None, classes: np.ndarray | None = None):
        self.proba = proba
        self.classes = classes

    def fit(self, X: Any, y: Any) -> _FrozenClassifier:
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    @property
    def classes_(self) -> np.ndarray | None:
        return self.classes

    def predict_proba(self, X: Any) -> np.ndarray:
        assert self.proba is not None
        return np.asarray(self.proba[np.asarray(X).ravel()])

    def predict(self, X: Any) -> np.ndarray:
        assert self.classes is not None
        return np.asarray(self.classes[np.argmax(self.predict_proba(X), axis=1)])


class _FrozenRegressor(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    def __init__(self, values: np.ndarray | None = None):
        self.values = values

    def fit(self, X: Any, y: Any) -> _FrozenRegressor:
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def predict(self, X: Any) -> np.ndarray:
        assert self.values is not None
        return np.asarray(self.values[np.asarray(X).ravel()])


@cache
def _scorer(name: str) -> Any:
    return get_scorer(name)


def expected(truth: Truth) -> dict[str, tuple[int, ...]]:
    """The arrays a fold's prediction file must hold: name -> shape."""
    width = truth.width()
    out = {"train": arrays.shape_of(len(truth.y_train), width)}
    if truth.y_test is not None:
        out["test"] = arrays.shape_of(len(truth.y_test), width)
    return out


def load_predictions(path: Path, truth: Truth) -> tuple[np.ndarray, np.ndarray | None]:
    """The checked predictions of a fold's file, read no further than the expected
    arrays need; Unscorable saying what is wrong otherwise."""
    try:
        found = arrays.load(path, expected(truth))
    except arrays.ArraysRefused as exc:
        raise Unscorable(str(exc)) from None
    return check(found, truth)


def check(found: Any, truth: Truth) -> tuple[np.ndarray, np.ndarray | None]:
    """The predictions of a fold's arrays (a mapping, or an opened .npz), or
    Unscorable saying what is wrong."""
    names = set(found.files) if hasattr(found, "files") else set(found)
    out = {}
    for name, shape in expected(truth).items():
        if name not in names:
            raise Unscorable(f"the prediction file has no '{name}' array")
        out[name] = _checked(found[name], shape, name, truth.task == "classification")
    return out["train"], out.get("test")


def _checked(array: np.ndarray, shape: tuple[int, ...], name: str, proba: bool) -> np.ndarray:
    if array.shape != shape:
        raise Unscorable(f"'{name}' has shape {array.shape}, expected {shape}")
    if array.dtype.kind not in arrays.KINDS:
        raise Unscorable(f"'{name}' has type {array.dtype.str}, expected bool, integers or "
                         "floats")  # fmt: skip
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise Unscorable(f"'{name}' holds {bad} NaN or infinite values")
    if proba:
        _probabilities(array, name)
    return array.astype(float, copy=False)


def _probabilities(array: np.ndarray, name: str) -> None:
    """Refuse what scikit-learn's probabilistic metrics refuse or warn about in a
    predict_proba output (`_validate_multiclass_probabilistic_prediction`): a value
    above 1 or below 0, or a row whose sum is not 1 within rtol = sqrt(eps) of the dtype
    the metric sees (check_array keeps float32, makes anything else float64) and numpy's
    default atol. scikit-learn 1.9 only warns about such rows, and a binary scorer never
    sees them (it rebuilds the negative column from the positive one), so an output of
    ones would score a perfect log loss: the file is refused whole instead."""
    dtype: Any = np.float32 if array.dtype == np.float32 else np.float64
    values: np.ndarray = array.astype(dtype, copy=False)
    low, high = float(values.min()), float(values.max())
    for count, text in (((values > 1).sum(), "above 1"), ((values < 0).sum(), "below 0")):
        if count:
            raise Unscorable(f"'{name}' predictions are not probabilities: {int(count)} "
                             f"values {text} (from {low:.6g} to {high:.6g})")  # fmt: skip
    sums = values.sum(axis=1)
    tolerance = math.sqrt(np.finfo(dtype).eps)  # as scikit-learn computes it
    bad = ~np.isclose(sums, np.asarray(1, dtype=dtype), rtol=tolerance)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        total = float(sums[first])
        raise Unscorable(f"'{name}' predictions are not probabilities: {int(bad.sum())} rows "
                         f"do not sum to 1 (row {first} sums to {total:.17g})")  # fmt: skip


@cache
def _guarded(name: str) -> Guarded:
    return Guarded(name, TWINS.get(name))


def _score(name: str, predictions: np.ndarray, truth: Truth, rows: np.ndarray,
           y: np.ndarray) -> float:  # fmt: skip
    def reference() -> float:
        if truth.task == "classification":
            estimator: Any = _FrozenClassifier(predictions, truth.classes)
        else:
            estimator = _FrozenRegressor(predictions)
        return float(_scorer(name)(estimator, rows.reshape(-1, 1), y))

    try:
        return _guarded(name)(y, predictions[rows], truth.classes, reference)
    except ValueError:
        return math.nan  # e.g. a ROC AUC on rows of one class: undefined, not an error


def score_fold(
    truth: Truth, fold: int, train: np.ndarray, test: np.ndarray | None, metrics: list[str]
) -> list[tuple[str, str, float]]:
    """(split, metric, value) for train, valid and test rows of one fold."""
    fit_rows, valid_rows = truth.rows(fold)
    out = []
    for metric in metrics:
        out.append(
            ("train", metric, _score(metric, train, truth, fit_rows, truth.y_train[fit_rows]))
        )
        out.append(("valid", metric, _score(metric, train, truth, valid_rows,
                                            truth.y_train[valid_rows])))  # fmt: skip
        if test is not None and truth.y_test is not None:
            rows = np.arange(len(truth.y_test))
            out.append(("test", metric, _score(metric, test, truth, rows, truth.y_test)))
    return out


def bagged(
    truth: Truth, folds: dict[int, tuple[np.ndarray, np.ndarray | None]], metrics: list[str]
) -> list[tuple[str, str, float]]:
    """(split, metric, value): validation rows averaged over the folds that held them out,
    test rows over all folds."""
    if not folds:
        return []
    first = next(iter(folds.values()))[0]
    total = np.zeros_like(first)
    seen = np.zeros(len(first))
    test_sum: np.ndarray | None = None
    for fold, (train, test) in sorted(folds.items()):
        valid_rows = truth.rows(fold)[1]
        total[valid_rows] += train[valid_rows]
        seen[valid_rows] += 1
        if test is not None:
            test_sum = test.copy() if test_sum is None else test_sum + test
    rows = np.flatnonzero(seen)
    shape = (-1,) + (1,) * (total.ndim - 1)
    averaged = total.copy()
    averaged[rows] = total[rows] / seen[rows].reshape(shape)
    out = [("valid", m, _score(m, averaged, truth, rows, truth.y_train[rows])) for m in metrics]
    if test_sum is not None and truth.y_test is not None:
        mean_test = test_sum / len(folds)
        every = np.arange(len(truth.y_test))
        out += [("test", m, _score(m, mean_test, truth, every, truth.y_test)) for m in metrics]
    return out
