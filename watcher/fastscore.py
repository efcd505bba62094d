"""Faster twins of the commonest scikit-learn scorers, trusted only once proven equal.

A scikit-learn scorer call spends most of its time validating its inputs (half a
millisecond to a few), which bounds the sweeper at about a hundred files a second. Our
inputs are already checked, so for the commonest metrics we compute the value with the
same numpy operations scikit-learn uses, in the same order, after the same refusals:
where the scorer raises ValueError (a probability above 1 or below 0, NaN, a width
that does not fit the classes, continuous labels...), its twin raises ValueError too.
Each twin is verified against the real scorer on its first calls in the process (same
float bit for bit, or both refusing), then on one call in RECHECK for good; one that ever
differs is dropped for good and the real scorer used instead.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)

CHECKS = 20  # calls compared with scikit-learn before a twin is trusted
# and then one call in this many, for as long as the process lives: a scorer call
# costs about fifty twin calls, so this keeps the sweeper within a few percent
RECHECK = 1000

# A twin returns the scorer's value, or raises ValueError where the scorer raises one
# (the caller turns both refusals into the same undefined score).
Twin = Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]


# ---- what scikit-learn refuses, checked as it checks ----------------------------------


def _target_type(labels: np.ndarray) -> str:
    """scikit-learn's type_of_target for a 1-D array of labels; ValueError where it
    raises (a non-integral float label that is not finite)."""
    if len(labels) == 0:
        return "binary"
    if labels.dtype == object and not isinstance(labels.flat[0], str):
        return "unknown"
    if labels.dtype.kind == "f":
        with np.errstate(invalid="ignore"):  # NaN and inf cast to int64, as scikit-learn does
            integral = labels.astype(np.int64).astype(labels.dtype)
        if np.any(labels != integral):
            if not np.isfinite(labels).all():
                raise ValueError("labels contain NaN or infinity")
            return "continuous"
    return "multiclass" if len(np.unique(labels)) > 2 else "binary"


_CLASS_TYPES: dict[int, tuple[np.ndarray, str]] = {}  # id -> (the classes, their type)


def _classes_type(classes: np.ndarray) -> str:
    """The type of a dataset's classes, computed once per array (kept alive beside it,
    so an id is never reused for another array while cached)."""
    found = _CLASS_TYPES.get(id(classes))
    if found is None or found[0] is not classes:
        if len(_CLASS_TYPES) >= 64:
            _CLASS_TYPES.clear()
        found = (classes, _target_type(classes))
        _CLASS_TYPES[id(classes)] = found
    return found[1]


def _classification_targets(y: np.ndarray, predicted: np.ndarray) -> None:
    """_check_targets' refusals for label vectors: lengths, unknown or continuous
    labels, strings mixed with numbers."""
    if len(y) != len(predicted):
        raise ValueError(f"{len(y)} labels for {len(predicted)} predictions")
    if len(y) == 0:
        raise ValueError("no samples")
    for labels in (y, predicted):
        if _target_type(labels) not in ("binary", "multiclass"):
            raise ValueError("labels of an unsupported type")
    if (y.dtype.kind in "OUT") != (predicted.dtype.kind in "OUT"):
        raise ValueError("a mix of string and number labels")


def _float_array(a: np.ndarray, dtype: np.dtype | type | None = None) -> np.ndarray:
    """check_array's refusals (at most 2-D, a row, a column, finite) and its float
    dtypes (float32 kept, anything else as float64, unless `dtype` is given)."""
    if dtype is None:
        dtype = a.dtype if a.dtype in (np.float32, np.float64) else np.float64
    a = a.astype(dtype, copy=False)
    if a.ndim > 2 or a.ndim == 0:
        raise ValueError(f"an array of {a.ndim} dimensions")
    if a.shape[0] < 1 or (a.ndim == 2 and a.shape[1] < 1):
        raise ValueError(f"an empty array of shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("values NaN or infinite")
    return a


# ---- classification -----------------------------------------------------------------


def accuracy(y: np.ndarray, predicted: np.ndarray, classes: np.ndarray | None) -> float:
    _classification_targets(y, predicted)
    return float(np.average(y == predicted))


def balanced_accuracy(y: np.ndarray, predicted: np.ndarray, classes: np.ndarray | None) -> float:
    _classification_targets(y, predicted)
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
    assert classes is not None
    if _classes_type(classes) == "binary":  # the scorer passes the positive column only
        if proba.ndim != 2 or proba.shape[1] < 2:
            raise ValueError(f"predict_proba of shape {proba.shape} for two classes")
        proba = proba[:, len(classes) - 1]  # the positive class is the last one
    p = _float_array(proba)  # check_array, then scikit-learn's own probability checks
    if p.max() > 1:
        raise ValueError(f"y_prob contains values greater than 1: {p.max()}")
    if p.min() < 0:
        raise ValueError(f"y_prob contains values lower than 0: {p.min()}")
    if len(p) != len(y):
        raise ValueError(f"{len(y)} labels for {len(p)} predictions")
    if _target_type(y) not in ("binary", "multiclass"):
        raise ValueError("labels of an unsupported type")  # LabelBinarizer's refusal
    seen = np.unique(y)
    if len(seen) == 1:
        raise ValueError("y_true contains only one label")
    if p.ndim == 1:
        p = p[:, None]
    if p.shape[1] == 1:  # the positive class's: the negative one is rebuilt beside it
        p = np.concatenate([1 - p, p], axis=1)
    if len(seen) != p.shape[1]:
        raise ValueError(f"y_true and y_prob contain {len(seen)} and {p.shape[1]} classes")
    # scikit-learn's _log_loss, through array_api_compat's numpy: the same ufuncs on
    # arrays of the same dtype and C layout (clip only selects, it computes nothing)
    onehot = (y[:, None] == seen[None, :]).astype(p.dtype)
    eps = np.finfo(p.dtype).eps
    clipped = np.clip(p, eps, 1 - eps)
    with np.errstate(divide="ignore", invalid="ignore"):  # scikit-learn's _xlogy
        terms = onehot * np.log(clipped)
    terms = np.where(onehot == 0.0, np.asarray(0.0, dtype=terms.dtype), terms)
    loss = -np.sum(terms, axis=1)
    return -1 * float(np.average(loss))


# ---- regression ---------------------------------------------------------------------


def _regression_targets(y: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """_check_reg_targets' refusals and shapes: both as (rows, outputs), in the widest
    float dtype among them (float64 when neither is float)."""
    if len(y) != len(values):
        raise ValueError(f"{len(y)} targets for {len(values)} predictions")
    floats = [a.dtype for a in (y, values) if a.dtype.kind == "f"]
    dtype = np.result_type(*floats) if floats else np.dtype(np.float64)
    y, values = _float_array(y, dtype), _float_array(values, dtype)
    y = y.reshape(-1, 1) if y.ndim == 1 else y
    values = values.reshape(-1, 1) if values.ndim == 1 else values
    if y.shape[1] != values.shape[1]:
        raise ValueError(f"{y.shape[1]} outputs for {values.shape[1]} predicted")
    return y, values


def neg_mean_squared_error(y: np.ndarray, values: np.ndarray, _: np.ndarray | None) -> float:
    y, values = _regression_targets(y, values)
    errors = np.average((y - values) ** 2, axis=0)
    return -1 * float(np.average(errors))


def neg_mean_absolute_error(y: np.ndarray, values: np.ndarray, _: np.ndarray | None) -> float:
    y, values = _regression_targets(y, values)
    errors = np.average(np.abs(values - y), axis=0)
    return -1 * float(np.average(errors))


TWINS: dict[str, Twin] = {
    "accuracy": accuracy,
    "balanced_accuracy": balanced_accuracy,
    "neg_log_loss": neg_log_loss,
    "neg_mean_squared_error": neg_mean_squared_error,
    "neg_mean_absolute_error": neg_mean_absolute_error,
}


class Guarded:
    """A metric's twin, checked against the real scorer: each early call, then one in
    RECHECK, runs both, which must both refuse (ValueError) or give the same float, bit
    for bit. On a checked call the scorer's outcome is the one returned."""

    def __init__(self, name: str, twin: Twin | None) -> None:
        self.name = name
        self.twin = twin
        self.agreed = 0
        self.calls = 0

    def __call__(
        self, y: np.ndarray, predictions: np.ndarray, classes: np.ndarray | None,
        reference: Callable[[], float],
    ) -> float:  # fmt: skip
        """The score, or ValueError where scikit-learn refuses the inputs."""
        twin = self.twin
        if twin is None:
            return reference()
        self.calls += 1
        if self.agreed >= CHECKS and self.calls % RECHECK:
            return twin(y, predictions, classes)
        try:
            expected: float | ValueError = reference()
        except ValueError as exc:
            expected = exc
        try:
            value: float | Exception = twin(y, predictions, classes)
        except Exception as exc:  # a twin's other errors are disagreements, not crashes
            value = exc
        if same(value, expected):
            self.agreed += 1
        else:
            log.warning("the fast %s gave %s where scikit-learn gives %s: using scikit-learn's "
                        "scorer from now on", self.name, _shown(value),
                        _shown(expected))  # fmt: skip
            self.twin = None
        if isinstance(expected, ValueError):
            raise expected
        return expected


def same(a: float | Exception, b: float | Exception) -> bool:
    """Both refused (ValueError), or the same float to the bit (any NaN equal)."""
    if isinstance(a, Exception) or isinstance(b, Exception):
        return isinstance(a, ValueError) and isinstance(b, ValueError)
    if math.isnan(a) and math.isnan(b):
        return True
    return struct.pack("<d", a) == struct.pack("<d", b)


def _shown(outcome: float | Exception) -> str:
    if isinstance(outcome, Exception):
        return f"{type(outcome).__name__} ({str(outcome)[:100]})"
    return repr(outcome)
