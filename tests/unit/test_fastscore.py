"""The fast twins of scikit-learn's scorers give the very same numbers, and refuse
(ValueError) exactly the inputs their scorers refuse, hostile ones included."""

from __future__ import annotations

import math
import struct
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import get_scorer, log_loss

from spool import responses
from watcher import fastscore
from watcher.fastscore import TWINS, Guarded
from watcher.scorers import Unscorable
from watcher.scoring import Truth, _FrozenClassifier, _FrozenRegressor, check

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")

CLASSIFICATION = ["accuracy", "balanced_accuracy", "neg_log_loss"]
REGRESSION = ["neg_mean_squared_error", "neg_mean_absolute_error"]
DAMAGES = ["none", "unnormalized", "ones", "above", "negative", "nan", "inf", "width",
           "float32", "zero rows"]  # fmt: skip


def outcome(call) -> float | Exception:
    try:
        return call()
    except Exception as exc:
        return exc


def agree(ours: float | Exception, theirs: float | Exception) -> bool:
    """Both raise (ValueError on both sides, or another error on both sides), or the
    same float, bit for bit."""
    if isinstance(ours, Exception) or isinstance(theirs, Exception):
        return (isinstance(ours, Exception) and isinstance(theirs, Exception)
                and isinstance(ours, ValueError) == isinstance(theirs, ValueError))  # fmt: skip
    if math.isnan(ours) and math.isnan(theirs):
        return True
    return struct.pack("<d", ours) == struct.pack("<d", theirs)


def taken(name: str, estimator, rows: int) -> np.ndarray:
    """What the scorer `name` takes from the estimator, as the sweeper hands it to a twin."""
    method = responses.choose(name, {m for m in responses.METHODS if hasattr(estimator, m)})
    return getattr(estimator, method)(np.arange(rows))


def scorer(name: str, estimator, y: np.ndarray) -> float:
    return float(get_scorer(name)(estimator, np.arange(len(y)).reshape(-1, 1), y))


def labels_of(kind: str, n_classes: int) -> np.ndarray:
    return {"ints": np.arange(n_classes) * 3,
            "strings": np.array([f"c{i}" for i in range(n_classes)]),
            "objects": np.array([f"c{i}" for i in range(n_classes)], dtype=object),
            "floats": np.linspace(-1, 1, n_classes)}[kind]  # fmt: skip


def damaged(proba: np.ndarray, damage: str, rng: np.random.Generator) -> np.ndarray:
    rows, width = proba.shape
    if damage == "unnormalized":
        return proba * rng.uniform(0.5, 1.5, (rows, 1))
    if damage == "ones":  # the issue's predict_proba: a perfect log loss, if let through
        return np.ones_like(proba)
    if damage == "above":
        out = proba.copy()
        out[rng.integers(rows), rng.integers(width)] += rng.uniform(1e-9, 2)
        return out
    if damage == "negative":
        out = proba.copy()
        out[rng.integers(rows), rng.integers(width)] = -rng.uniform(1e-12, 1)
        return out
    if damage in ("nan", "inf"):
        out = proba.copy()
        out[rng.integers(rows), rng.integers(width)] = np.nan if damage == "nan" else -np.inf
        return out
    if damage == "width":
        new = int(rng.choice([w for w in (1, width - 1, width + 1) if w >= 1]))
        return rng.dirichlet(np.ones(new), rows)
    if damage == "float32":
        return proba.astype(np.float32)
    if damage == "zero rows":
        out = proba.copy()
        out[rng.integers(rows)] = 0.0
        return out
    return proba


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
    classes = labels_of(labels, n_classes)
    y = classes[rng.integers(0, n_classes, rows)]
    proba = rng.dirichlet(np.ones(n_classes), rows)
    if not normalized:
        proba = proba * rng.uniform(0.5, 1.0, (rows, 1))
    estimator = _FrozenClassifier(proba, classes)
    for name in CLASSIFICATION:
        ours = outcome(lambda n=name: TWINS[n](y, taken(n, estimator, rows), classes))
        assert agree(ours, outcome(lambda n=name: scorer(n, estimator, y))), name


@settings(max_examples=400, deadline=None)
@given(
    n_classes=st.integers(1, 5),
    rows=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
    labels=st.sampled_from(["ints", "strings", "objects", "floats"]),
    damage=st.sampled_from(DAMAGES),
    y_classes=st.integers(1, 5),
)
def test_classification_twins_refuse_what_scikit_learn_refuses(
    n_classes, rows, seed, labels, damage, y_classes
):
    """Hostile predictions (above 1, negative, rows not summing to 1, NaN, inf, widths
    that do not fit, float32) and label sets a fold may see: both raise, or both give
    the same float to the bit."""
    rng = np.random.default_rng(seed)
    classes = labels_of(labels, n_classes)
    y = classes[rng.integers(0, min(n_classes, y_classes), rows)]
    proba = damaged(rng.dirichlet(np.ones(n_classes), rows), damage, rng)
    estimator = _FrozenClassifier(proba, classes)
    for name in CLASSIFICATION:
        ours = outcome(lambda n=name: TWINS[n](y, taken(n, estimator, len(proba)), classes))
        theirs = outcome(lambda n=name: scorer(n, estimator, y))
        assert agree(ours, theirs), (name, damage, ours, theirs)


@settings(max_examples=150, deadline=None)
@given(rows=st.integers(1, 80), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([1e-3, 1.0, 1e6]))  # fmt: skip
def test_regression_twins_equal_scikit_learn(rows, seed, scale):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=rows) * scale
    values = y + rng.normal(size=rows) * scale
    for name in REGRESSION:
        assert TWINS[name](y, values, None) == scorer(name, _FrozenRegressor(values), y), name


@settings(max_examples=200, deadline=None)
@given(rows=st.integers(1, 40), seed=st.integers(0, 2**32 - 1),
       damage=st.sampled_from(["none", "nan", "inf", "y inf", "y nan", "column", "two columns",
                               "float32", "ints", "int y"]))  # fmt: skip
def test_regression_twins_refuse_what_scikit_learn_refuses(rows, seed, damage):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=rows) * 10
    values = y + rng.normal(size=rows)
    if damage in ("nan", "inf"):
        values[rng.integers(rows)] = np.nan if damage == "nan" else np.inf
    elif damage in ("y inf", "y nan"):  # a target holding inf (issue 14, item 10)
        y[rng.integers(rows)] = np.inf if damage == "y inf" else np.nan
    elif damage == "column":
        values = values.reshape(-1, 1)
    elif damage == "two columns":
        values = np.stack([values, values], axis=1)
    elif damage == "float32":
        values = values.astype(np.float32)
    elif damage == "ints":
        values = np.round(values).astype(np.int64)
    elif damage == "int y":
        y = np.round(y).astype(np.int64)
    estimator = _FrozenRegressor(values)
    for name in REGRESSION:
        ours = outcome(lambda n=name: TWINS[n](y, values, None))
        theirs = outcome(lambda n=name: scorer(n, estimator, y))
        assert agree(ours, theirs), (name, damage, ours, theirs)


def test_the_fast_log_loss_refuses_probabilities_above_1_once_trusted(monkeypatch):
    """The issue's case: trusted after its checks, the twin gave about 0 for values
    above 1; it refuses now, as log_loss does."""
    monkeypatch.setattr(fastscore, "CHECKS", 0)
    guarded = Guarded("neg_log_loss", TWINS["neg_log_loss"])
    classes, y = np.arange(3), np.array([0, 1, 2, 1])
    with pytest.raises(ValueError, match="greater than 1"):
        guarded(y, np.full((4, 3), 1.5), classes, lambda: pytest.fail("not asked"))
    binary = np.array([[0.2, 1.2], [0.5, 0.5]])
    with pytest.raises(ValueError, match="greater than 1"):
        guarded(np.array([0, 1]), binary, np.arange(2), lambda: pytest.fail("not asked"))


def test_a_twin_that_disagrees_is_dropped_for_good(caplog):
    guarded = Guarded("accuracy", lambda y, p, c: 0.5)
    assert guarded(np.zeros(2), np.zeros((2, 2)), np.arange(2), lambda: 1.0) == 1.0
    assert guarded.twin is None
    assert guarded(np.zeros(2), np.zeros((2, 2)), np.arange(2), lambda: 0.25) == 0.25
    assert "using scikit-learn's scorer from now on" in caplog.text


def test_a_twin_that_scores_what_scikit_learn_refuses_is_dropped(caplog):
    def refuses() -> float:
        raise ValueError("y_prob contains values greater than 1")

    guarded = Guarded("neg_log_loss", lambda y, p, c: -2.2e-16)
    with pytest.raises(ValueError, match="greater than 1"):
        guarded(np.zeros(2), np.ones((2, 2)), np.arange(2), refuses)
    assert guarded.twin is None and "ValueError" in caplog.text
    both = Guarded("neg_log_loss", lambda y, p, c: (_ for _ in ()).throw(ValueError("no")))
    with pytest.raises(ValueError, match="greater than 1"):  # scikit-learn's own error
        both(np.zeros(2), np.ones((2, 2)), np.arange(2), refuses)
    assert both.twin is not None and both.agreed == 1


def test_agreement_is_to_the_bit():
    assert fastscore.same(0.1, 0.1) and fastscore.same(math.nan, -math.nan)
    assert not fastscore.same(0.0, -0.0)
    assert not fastscore.same(0.1, 0.1 + 2**-56 * 2)
    assert fastscore.same(ValueError("a"), ValueError("b"))
    assert not fastscore.same(ValueError("a"), 1.0)
    assert not fastscore.same(TypeError("a"), ValueError("b"))


@pytest.mark.parametrize("name", sorted(TWINS))
def test_every_twin_names_a_real_scorer(name):
    assert get_scorer(name) is not None


# ---- the check of a fold's file, against scikit-learn's own ----------------------------


def truth_of(n_classes: int, rows: int) -> Truth:
    y = np.arange(rows) % n_classes
    return Truth("classification", y, None, {}, np.arange(n_classes))


def sklearn_objects(proba: np.ndarray) -> bool:
    """Whether log_loss, given these probabilities as they are, raises or warns that
    they are not probabilities (the full columns: labels given, nothing reduced)."""
    k = proba.shape[1]
    y = np.arange(len(proba)) % k
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        try:
            log_loss(y, proba, labels=np.arange(k))
        except UserWarning as exc:
            return "do not sum to one" in str(exc)
        except ValueError:
            return True
    return False


@settings(max_examples=400, deadline=None)
@given(n_classes=st.integers(2, 6), rows=st.integers(1, 30), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from(["float64", "float32"]),
       exponent=st.floats(-10, -2), sign=st.sampled_from([-1, 1]),
       damage=st.sampled_from(["scale one row", "scale all", "none", "ones", "above",
                               "negative", "nan"]))  # fmt: skip
def test_the_file_check_refuses_what_log_loss_refuses_or_warns_about(
    n_classes, rows, seed, dtype, exponent, sign, damage
):
    """Near the tolerance (row sums off by 1e-10 to 1e-2, float64 and float32): a fold's
    probabilities are refused exactly when scikit-learn's log_loss, handed them whole,
    raises or warns that they do not sum to one."""
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(n_classes), rows).astype(dtype)
    factor = np.asarray(1 + sign * 10.0**exponent, dtype=dtype)
    if damage == "scale one row":
        proba[rng.integers(rows)] *= factor
    elif damage == "scale all":
        proba = proba * factor
    elif damage != "none":
        proba = damaged(proba, damage, rng).astype(dtype)
    truth = truth_of(n_classes, rows)
    try:
        check({"train": proba}, truth)
        refused = False
    except Unscorable as exc:
        refused = True
        assert "\n" not in str(exc)
    assert refused == sklearn_objects(proba), (damage, proba.sum(axis=1))


def test_the_issues_all_ones_are_refused_with_the_reason():
    truth = truth_of(3, 4)
    with pytest.raises(Unscorable) as info:
        check({"train": np.ones((4, 3))}, truth)
    assert str(info.value) == ("'train' predictions are not probabilities: 4 rows do not sum "
                               "to 1 (row 0 sums to 3)")  # fmt: skip
    with pytest.raises(Unscorable, match=r"2 values above 1 \(from 0 to 1.5\)"):
        check({"train": np.array([[0, 1.5, 0], [1.5, 0, 0], [1, 0, 0], [0, 0, 1]])}, truth)


def confident(rng: np.random.Generator, rows: int, n_classes: int, scale: float,
              dtype: str) -> np.ndarray:  # fmt: skip
    """predict_proba as models give it: a softmax of logits, confident when `scale` is
    large (many values round to 0 or 1), in the model's float type."""
    logits = rng.normal(size=(rows, n_classes)) * scale
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(dtype)


@settings(max_examples=80, deadline=None)
@given(n_classes=st.integers(2, 6), rows=st.integers(30, 3000), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([0.3, 3.0, 40.0]), dtype=st.sampled_from(["float64", "float32"]),
       labels=st.sampled_from(["ints", "strings"]))  # fmt: skip
def test_twins_equal_scikit_learn_on_what_models_output(n_classes, rows, seed, scale, dtype,
                                                         labels):  # fmt: skip
    """Thousands of rows of model-like probabilities, float32 included (kept float32 by
    the sweeper, as check_array keeps it): the same float to the bit."""
    rng = np.random.default_rng(seed)
    classes = labels_of(labels, n_classes)
    proba = confident(rng, rows, n_classes, scale, dtype)
    y = classes[np.argmax(proba + rng.normal(size=proba.shape) * 0.3, axis=1)]
    estimator = _FrozenClassifier(proba, classes)
    for name in CLASSIFICATION:
        ours = outcome(lambda n=name: TWINS[n](y, taken(n, estimator, rows), classes))
        theirs = outcome(lambda n=name: scorer(n, estimator, y))
        assert agree(ours, theirs), (name, ours, theirs)


def test_a_trusted_twin_is_still_checked_one_call_in_n(caplog):
    """A twin that agrees at first and differs later (other data, other rows) is caught
    within RECHECK calls, and scikit-learn's value is used from then on."""
    calls = 0

    def drifting(y, predicted, classes) -> float:
        nonlocal calls
        calls += 1
        return 1.0 if calls <= fastscore.CHECKS + 3 else 0.5

    guarded = Guarded("accuracy", drifting)
    args = (np.zeros(2), np.zeros(2), np.arange(2))
    values = [guarded(*args, lambda: 1.0) for _ in range(fastscore.CHECKS + 3 * fastscore.RECHECK)]
    assert guarded.twin is None
    assert 0 < values.count(0.5) < fastscore.RECHECK
    assert values[-fastscore.RECHECK :] == [1.0] * fastscore.RECHECK
    assert "using scikit-learn's scorer from now on" in caplog.text
