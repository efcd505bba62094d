"""Faster twins of the commonest scikit-learn scorers, trusted only once proven equal.

A scikit-learn scorer call spends most of its time validating its inputs (half a
millisecond to a few), which bounds the sweeper at about a hundred files a second. Our
inputs are already checked, so for the commonest metrics we compute the value with the
same numpy operations scikit-learn uses, in the same order. Each twin is verified
against the real scorer on its first calls in the process (bit for bit); one that ever
differs is dropped for good and the real scorer used instead, so a future
scikit-learn that computes differently costs speed, never correctness.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
from scipy.special import xlogy

log = logging.getLogger(__name__)

CHECKS = 20  # calls compared with scikit-learn before a twin is trusted

Twin = Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]


def _labels(proba: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    assert classes is not None
    return np.asarray(classes[np.argmax(proba, axis=1)])


def _continuous(y: np.ndarray) -> bool:
    """Float labels that are not whole numbers: scikit-learn refuses them as classes."""
    return bool(np.issubdtype(y.dtype, np.floating) and np.any(y != np.floor(y)))


def accuracy(y: np.ndarray, proba: np.ndarray, classes: np.ndarray | None) -> float:
    predicted = _labels(proba, classes)
    if _continuous(y) or _continuous(predicted):
        return math.nan
    return float(np.average(y == predicted))


def balanced_accuracy(y: np.ndarray, proba: np.ndarray, classes: np.ndarray | None) -> float:
    predicted = _labels(proba, classes)
    if _continuous(y) or _continuous(predicted):
        return math.nan
    labels = np.union1d(y, predicted)
    true_index = np.searchsorted(labels, y)
    pred_index = np.searchsorted(labels, predicted)
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(matrix, (true_index, pred_index), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_class = np.diag(matrix) / matrix.sum(axis=1)
    per_class = per_class[~np.isnan(per_class)]
    return float(np.mean(per_class))


def neg_log_loss(y: np.ndarray, proba: np.ndarray, classes: np.ndarray | None) -> float:
    seen = np.unique(y)
    if _continuous(y) or len(seen) != proba.shape[1]:
        return math.nan  # scikit-learn refuses: as for every undefined score, NaN
    if proba.shape[1] == 2:  # a binary scorer sees only the positive column, and rebuilds
        positive = proba[:, 1:]
        proba = np.concatenate([1 - positive, positive], axis=1)
    onehot = (y[:, None] == seen[None, :]).astype(proba.dtype)
    eps = np.finfo(proba.dtype).eps
    clipped = np.clip(proba, eps, 1 - eps)
    loss = -np.sum(xlogy(onehot, clipped), axis=1)
    return -1 * float(np.average(loss))


def _column(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, 1)  # scikit-learn reduces regression targets as columns


def neg_mean_squared_error(y: np.ndarray, values: np.ndarray, _: np.ndarray | None) -> float:
    errors = np.average((_column(y) - _column(values)) ** 2, axis=0)
    return -1 * float(np.average(errors))


def neg_mean_absolute_error(y: np.ndarray, values: np.ndarray, _: np.ndarray | None) -> float:
    errors = np.average(np.abs(_column(values) - _column(y)), axis=0)
    return -1 * float(np.average(errors))


TWINS: dict[str, Twin] = {
    "accuracy": accuracy,
    "balanced_accuracy": balanced_accuracy,
    "neg_log_loss": neg_log_loss,
    "neg_mean_squared_error": neg_mean_squared_error,
    "neg_mean_absolute_error": neg_mean_absolute_error,
}


class Guarded:
    """A metric's twin, checked against the real scorer until it has earned trust."""

    def __init__(self, name: str, twin: Twin | None) -> None:
        self.name = name
        self.twin = twin
        self.agreed = 0

    def __call__(
        self, y: np.ndarray, predictions: np.ndarray, classes: np.ndarray | None,
        reference: Callable[[], float],
    ) -> float:  # fmt: skip
        if self.twin is None:
            return reference()
        value = self.twin(y, predictions, classes)
        if self.agreed >= CHECKS:
            return value
        expected = reference()
        same = (math.isnan(value) and math.isnan(expected)) or value == expected
        if not same:
            log.warning("the fast %s gave %r where scikit-learn gives %r: using scikit-learn's "
                        "scorer from now on", self.name, value, expected)  # fmt: skip
            self.twin = None
            return expected
        self.agreed += 1
        return value
