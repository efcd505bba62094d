"""The fast twins of scikit-learn's scorers give the very same numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import get_scorer

from watcher.fastscore import TWINS, Guarded
from watcher.scoring import _FrozenClassifier, _FrozenRegressor

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CLASSIFICATION = ["accuracy", "balanced_accuracy", "neg_log_loss"]
REGRESSION = ["neg_mean_squared_error", "neg_mean_absolute_error"]


def reference(name: str, estimator, y: np.ndarray) -> float:
    try:
        return float(get_scorer(name)(estimator, np.arange(len(y)).reshape(-1, 1), y))
    except ValueError:
        return math.nan


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@settings(max_examples=150, deadline=None)
@given(
    n_classes=st.integers(2, 5),
    rows=st.integers(1, 60),
    seed=st.integers(0, 2**32 - 1),
    labels=st.sampled_from(["ints", "strings", "floats"]),
    normalized=st.booleans(),
)
def test_classification_twins_equal_scikit_learn(n_classes, rows, seed, labels, normalized):
    rng = np.random.default_rng(seed)
    classes = {"ints": np.arange(n_classes) * 3, "strings": np.array([f"c{i}" for i in
               range(n_classes)]), "floats": np.linspace(-1, 1, n_classes)}[labels]  # fmt: skip
    y = classes[rng.integers(0, n_classes, rows)]
    proba = rng.dirichlet(np.ones(n_classes), rows)
    if not normalized:
        proba = proba * rng.uniform(0.5, 1.0, (rows, 1))
    estimator = _FrozenClassifier(proba, classes)
    for name in CLASSIFICATION:
        assert same(TWINS[name](y, proba, classes), reference(name, estimator, y)), name


@settings(max_examples=150, deadline=None)
@given(rows=st.integers(1, 80), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([1e-3, 1.0, 1e6]))  # fmt: skip
def test_regression_twins_equal_scikit_learn(rows, seed, scale):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=rows) * scale
    values = y + rng.normal(size=rows) * scale
    for name in REGRESSION:
        assert TWINS[name](y, values, None) == reference(name, _FrozenRegressor(values), y), name


def test_a_twin_that_disagrees_is_dropped_for_good(caplog):
    guarded = Guarded("accuracy", lambda y, p, c: 0.5)
    assert guarded(np.zeros(2), np.zeros((2, 2)), np.arange(2), lambda: 1.0) == 1.0
    assert guarded.twin is None
    assert guarded(np.zeros(2), np.zeros((2, 2)), np.arange(2), lambda: 0.25) == 0.25
    assert "using scikit-learn's scorer from now on" in caplog.text


@pytest.mark.parametrize("name", sorted(TWINS))
def test_every_twin_names_a_real_scorer(name):
    assert get_scorer(name) is not None
