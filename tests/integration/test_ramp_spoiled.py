"""A RAMP fold whose predictions hold NaN where they are scored fails, rather than
scoring NaN and being left out of the submission's mean (ramp-test's mean would be NaN):
otherwise a submission could spoil the folds it does badly on and be ranked on the rest."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from spool.rampkit import prepare
from tests.helpers.ramp import make_kit
from watcher.rampscore import _Kit


def test_nan_predictions_on_the_scored_rows_fail_the_fold(tmp_path: Path, monkeypatch):
    kit = make_kit("diabetes", tmp_path)  # RMSE: NaN in, NaN out
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    monkeypatch.chdir(kit)
    prepare(kit, prepared)
    scorer = _Kit(kit, prepared / "folds.npz")
    assert scorer.y_test is not None
    train, valid = scorer.rows(1)
    good = prepared / "good.npz"
    outside = scorer.y_train.astype(float)
    outside[np.setdiff1d(np.arange(len(outside)), np.union1d(train, valid))] = np.nan
    np.savez(good, train=outside, test=scorer.y_test.astype(float))
    assert all(np.isfinite(v) for _, _, v in scorer.fold_scores(1, os.fspath(good)))
    spoiled = scorer.y_train.astype(float)
    spoiled[valid[0]] = np.nan
    bad = prepared / "bad.npz"
    np.savez(bad, train=spoiled, test=scorer.y_test.astype(float))
    with pytest.raises(ValueError, match="valid predictions hold NaN"):
        scorer.fold_scores(1, os.fspath(bad))
