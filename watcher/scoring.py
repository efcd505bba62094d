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

This runs in a native dataset's scoring child (`watcher.nativescore`), never in the
master, which imports no numerical library.
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
from sklearn.utils.metaestimators import available_if

from spool import arrays, responses
from spool.npzformat import KINDS
from spool.prepare import LABELS_FILE
from spool.responses import DECISION, PREDICT, PROBA
from watcher.fastscore import TWINS, Guarded
from watcher.scorers import Unscorable

SPLITS = ("train", "valid", "test")
Responses = dict[str, np.ndarray]  # method -> its output on every row of a split
Score = tuple[str, str, float]  # split, metric, value


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


@dataclass(frozen=True)
class Fold:
    """A fold's checked responses for the training rows and, if any, the test rows."""

    train: Responses
    test: Responses | None


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
    """Answers from a fold's stored responses, for the rows passed as X; it has only the
    methods the file holds (`predict` is the most probable class when not stored), so a
    scorer picks among them as it would among the estimator's own."""

    def __init__(self, proba: np.ndarray | None = None, classes: np.ndarray | None = None,
                 decision: np.ndarray | None = None, labels: np.ndarray | None = None):  # fmt: skip
        self.proba = proba
        self.classes = classes
        self.decision = decision
        self.labels = labels

    def fit(self, X: Any, y: Any) -> _FrozenClassifier:
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    @property
    def classes_(self) -> np.ndarray | None:
        return self.classes

    @available_if(lambda self: self.proba is not None)  # type: ignore[untyped-decorator]
    def predict_proba(self, X: Any) -> np.ndarray:
        assert self.proba is not None
        return np.asarray(self.proba[np.asarray(X).ravel()])

    @available_if(lambda self: self.decision is not None)  # type: ignore[untyped-decorator]
    def decision_function(self, X: Any) -> np.ndarray:
        assert self.decision is not None
        return np.asarray(self.decision[np.asarray(X).ravel()])

    @available_if(lambda self: self.labels is not None or self.answers())  # type: ignore[untyped-decorator]
    def predict(self, X: Any) -> np.ndarray:
        assert self.classes is not None
        rows = np.asarray(X).ravel()
        if self.labels is not None:
            return np.asarray(self.labels[rows])
        if self.proba is not None:
            return np.asarray(self.classes[np.argmax(self.proba[rows], axis=1)])
        assert self.decision is not None  # only for bagged scores, averaged over folds
        decision = self.decision[rows]
        best = (decision > 0).astype(int) if decision.ndim == 1 else np.argmax(decision, axis=1)
        return np.asarray(self.classes[best])

    def answers(self) -> bool:
        """Whether it answers anything predict can be derived from."""
        return self.proba is not None or self.decision is not None

    @classmethod
    def of(cls, split: Responses, classes: np.ndarray | None) -> _FrozenClassifier:
        return cls(split.get(PROBA), classes, split.get(DECISION), split.get(PREDICT))


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


def expected(truth: Truth) -> tuple[dict[str, tuple[int, ...]], frozenset[str]]:
    """The arrays a fold's prediction file may hold (name -> shape), and those it may
    omit (`spool.responses`)."""
    n_test = 0 if truth.y_test is None else len(truth.y_test)
    return responses.expected(truth.task, len(truth.y_train), n_test, truth.width())


def load_predictions(path: Path, truth: Truth) -> Fold:
    """The checked responses of a fold's file, read no further than the expected arrays
    need; Unscorable saying what is wrong otherwise."""
    shapes, optional = expected(truth)
    try:
        found = arrays.load(path, shapes, optional=optional)
    except arrays.ArraysRefused as exc:
        raise Unscorable(str(exc)) from None
    return check(found, truth)


def check(found: Any, truth: Truth) -> Fold:
    """The responses of a fold's arrays (a mapping, or an opened .npz), by split and
    method, or Unscorable saying what is wrong."""
    names = set(found.files) if hasattr(found, "files") else set(found)
    shapes, optional = expected(truth)
    unknown = sorted(names - set(shapes))
    if unknown:
        raise Unscorable(f"the prediction file has an unexpected array {unknown[0][:80]!r}")
    splits: dict[str, Responses] = {"train": {}, "test": {}}
    for name, shape in shapes.items():
        if name not in names:
            if name not in optional:
                raise Unscorable(f"the prediction file has no '{name}' array")
            continue
        split, method = responses.parse(name, truth.task)
        splits[split][method] = _checked(found[name], shape, name, truth, method)
    if truth.task == "classification" and not splits["train"]:
        raise Unscorable("the prediction file holds no predictions for the training rows")
    return Fold(splits["train"], splits["test"] if truth.y_test is not None else None)


def _checked(array: np.ndarray, shape: tuple[int, ...], name: str, truth: Truth,
             method: str) -> np.ndarray:  # fmt: skip
    if array.shape != shape:
        raise Unscorable(f"'{name}' has shape {array.shape}, expected {shape}")
    if array.dtype.kind not in KINDS:
        raise Unscorable(f"'{name}' has type {array.dtype.str}, expected bool, integers or "
                         "floats")  # fmt: skip
    if truth.task == "classification" and method == PREDICT:
        return _labels(array, name, truth)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise Unscorable(f"'{name}' holds {bad} NaN or infinite values")
    if truth.task == "classification" and method == PROBA:
        _probabilities(array, name)
    # float32 stays float32, as scikit-learn's check_array keeps it: the scorer then
    # computes in float32, as it would in cross_validate
    return array if array.dtype in (np.float32, np.float64) else array.astype(np.float64)


def _labels(array: np.ndarray, name: str, truth: Truth) -> np.ndarray:
    """Stored `predict` output: indices into the dataset's classes, as class labels."""
    assert truth.classes is not None
    if array.dtype.kind not in "iu":
        raise Unscorable(f"'{name}' has type {array.dtype.str}, expected class indices "
                         "(integers)")  # fmt: skip
    outside = (array < 0) | (array >= len(truth.classes))
    if outside.any():
        raise Unscorable(f"'{name}' holds {int(outside.sum())} indices outside the "
                         f"{len(truth.classes)} classes")  # fmt: skip
    return np.asarray(truth.classes[array.astype(np.intp)])


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


def _score(name: str, split: Responses, truth: Truth, rows: np.ndarray, y: np.ndarray) -> float:
    """The scorer `name` on `rows`, given the response scikit-learn's scorer would take
    among those stored; Unscorable when none of them is one it takes."""
    method = _method(name, frozenset(split), truth.task)
    if truth.task == "classification":
        estimator: Any = _FrozenClassifier.of(split, truth.classes)
    else:
        estimator = _FrozenRegressor(split[PREDICT])

    def reference() -> float:
        return float(_scorer(name)(estimator, rows.reshape(-1, 1), y))

    guarded = _guarded(name)
    try:
        if guarded.twin is None:
            return reference()
        return guarded(y, getattr(estimator, method)(rows), truth.classes, reference)
    except ValueError as exc:
        if _defined(name, truth, rows, y):  # the file's values, not the truth: its fault
            why = " ".join(str(exc).split())[:200]
            raise Unscorable(f"scikit-learn's '{name}' refuses these predictions: {why}") from None
        return math.nan  # e.g. a ROC AUC on rows of one class: undefined, not an error


def _defined(name: str, truth: Truth, rows: np.ndarray, y: np.ndarray) -> bool:
    """Whether `name` has a score on these rows at all: a perfect prediction of them
    gets one. A score undefined by the truth alone is left out of the mean; one the
    scorer refuses for the file's values fails the fold, or a submission could choose
    which folds count by spoiling the others."""
    size = int(rows.max()) + 1 if len(rows) else 0
    estimator: Any
    if truth.task == "classification":
        assert truth.classes is not None
        index = np.searchsorted(truth.classes, y).clip(0, len(truth.classes) - 1)
        labels = np.empty(size, dtype=truth.classes.dtype)
        labels[rows] = truth.classes[index]
        proba = np.zeros((size, len(truth.classes)))
        proba[rows, index] = 1.0
        decision = proba if len(truth.classes) > 2 else proba[:, -1] * 2 - 1
        estimator = _FrozenClassifier(proba, truth.classes, decision, labels)
    else:
        values = np.zeros(size)
        values[rows] = y
        estimator = _FrozenRegressor(values)
    try:
        _scorer(name)(estimator, rows.reshape(-1, 1), y)
    except (ValueError, TypeError):
        return False
    return True


@cache
def _method(name: str, stored: frozenset[str], task: str) -> str:
    """The method the scorer `name` calls on a frozen estimator holding `stored`: the
    stored ones, and predict wherever a class can be derived (`_FrozenClassifier`)."""
    available = set(stored)
    if task == "classification" and stored & {PROBA, DECISION}:
        available.add(PREDICT)
    try:
        return responses.choose(name, available, "the prediction file")
    except responses.MissingResponse as exc:
        raise Unscorable(str(exc)) from None


def score_fold(truth: Truth, fold: int, preds: Fold, metrics: list[str]) -> list[Score]:
    """(split, metric, value) for train, valid and test rows of one fold."""
    fit_rows, valid_rows = truth.rows(fold)
    out = []
    for metric in metrics:
        out.append(("train", metric, _score(metric, preds.train, truth, fit_rows,
                                            truth.y_train[fit_rows])))  # fmt: skip
        out.append(("valid", metric, _score(metric, preds.train, truth, valid_rows,
                                            truth.y_train[valid_rows])))  # fmt: skip
        if preds.test is not None and truth.y_test is not None:
            rows = np.arange(len(truth.y_test))
            out.append(("test", metric, _score(metric, preds.test, truth, rows, truth.y_test)))
    return out


def bagged(truth: Truth, folds: dict[int, Fold], metrics: list[str]) -> list[Score]:
    """(split, metric, value): validation rows averaged over the folds that held them out,
    test rows over all folds. Probabilities and decision values are averaged (in
    float64); a class label is the most probable class of the averages, so a score of
    an estimator that has neither gets no bagged value."""
    if not folds:
        return []
    valid: Responses = {}
    seen = np.zeros(len(truth.y_train))
    test: Responses = {}
    for fold, preds in sorted(folds.items()):
        valid_rows = truth.rows(fold)[1]
        seen[valid_rows] += 1
        for method, values in _averageable(preds.train, truth).items():
            total = valid.setdefault(method, np.zeros(values.shape))
            total[valid_rows] += values[valid_rows]
        for method, values in _averageable(preds.test or {}, truth).items():
            test[method] = test.get(method, 0) + values
    rows = np.flatnonzero(seen)
    for total in valid.values():
        total[rows] /= seen[rows].reshape((-1,) + (1,) * (total.ndim - 1))
    out = _bag_scores("valid", valid, truth, rows, y=truth.y_train, metrics=metrics)
    if truth.y_test is not None:
        test = {method: total / len(folds) for method, total in test.items()}
        every = np.arange(len(truth.y_test))
        out += _bag_scores("test", test, truth, every, y=truth.y_test, metrics=metrics)
    return out


def _averageable(split: Responses, truth: Truth) -> Responses:
    if truth.task == "regression":
        return {m: v.astype(np.float64) for m, v in split.items()}
    return {m: v.astype(np.float64) for m, v in split.items() if m in (PROBA, DECISION)}


def _bag_scores(name: str, split: Responses, truth: Truth, rows: np.ndarray, *,
                y: np.ndarray, metrics: list[str]) -> list[Score]:  # fmt: skip
    if not split:
        return []
    out = []
    for metric in metrics:
        try:
            out.append((name, metric, _score(metric, split, truth, rows, y[rows])))
        except Unscorable:
            continue  # e.g. the score takes predict_proba and the estimator has none
    return out
