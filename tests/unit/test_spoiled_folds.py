"""A fold whose score scikit-learn's scorer refuses because of the predictions fails;
only a score the truth itself leaves undefined is left out of a submission's mean.
Otherwise a submission could spoil the folds it does badly on and be ranked on the rest."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spool.responses import PREDICT, PROBA
from watcher.scorers import Unscorable
from watcher.scoring import Fold, Truth, score_fold

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")
FOLDS = {"train_0": np.arange(0, 6), "valid_0": np.arange(6, 12)}


def regression(y: np.ndarray) -> Truth:
    return Truth("regression", y, None, FOLDS, None)


def classification(y: np.ndarray) -> Truth:
    return Truth("classification", y, None, FOLDS, np.unique(y))


@pytest.mark.parametrize(("metric", "spoiled"), [
    ("neg_mean_squared_log_error", -2.0),  # below -1: no log
    ("neg_mean_poisson_deviance", -0.5),  # below 0
    ("neg_mean_gamma_deviance", 0.0),  # not positive
])  # fmt: skip
def test_a_regression_value_the_scorer_refuses_fails_the_fold(metric: str, spoiled: float):
    y = np.linspace(1.0, 3.0, 12)
    predictions = y.copy()
    predictions[8] = spoiled
    with pytest.raises(Unscorable, match=metric):
        score_fold(regression(y), 0, Fold({PREDICT: predictions}, None), [metric])


def test_probabilities_the_ovr_auc_refuses_fail_the_fold():
    y = np.array([0, 1, 2] * 4)
    proba = np.full((12, 3), 1 / 3, dtype=np.float32)
    proba[:, 0] += np.float32(2e-4)  # rows summing to 1 within datarun's check, not AUC's
    with pytest.raises(Unscorable, match="roc_auc_ovr"):
        score_fold(classification(y), 0, Fold({PROBA: proba}, None), ["roc_auc_ovr"])


def test_a_score_the_truth_leaves_undefined_is_nan_whatever_the_predictions():
    y = np.array([0, 1, 0, 1, 0, 1, 1, 1, 1, 1, 1, 1])  # validation rows of one class
    proba = np.tile([0.3, 0.7], (12, 1))
    scores = score_fold(classification(y), 0, Fold({PROBA: proba}, None), ["roc_auc"])
    assert [split for split, _, value in scores if math.isnan(value)] == ["valid"]
