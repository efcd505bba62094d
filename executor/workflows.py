"""The native workflows, as the old Datarun ran them; this code runs in the fold's child.

Each trains on the fold's training rows and predicts the full training set and the
test set (as ramp-test does), so the sweeper scores train and valid rows from one
array. Classifiers' probabilities are laid out in the dataset's class order whatever
classes a fold happened to see.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class Predictions:
    train: np.ndarray
    test: np.ndarray | None
    train_seconds: float
    valid_seconds: float
    test_seconds: float


def load_module(folder: Path, filename: str) -> ModuleType:
    """Import a submission file under a private name (two folds never share modules)."""
    path = folder / filename
    name = f"submission_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {filename}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _align(proba: Any, model: Any, y_fit: pd.Series, classes: list[str]) -> np.ndarray:
    """Columns of `proba` in the dataset's class order; classes the model never saw get 0."""
    proba = np.asarray(proba)
    # float32 stays float32: the master checks rows sum to 1 within float32's tolerance,
    # as scikit-learn does, which a cast to float64 would tighten
    proba = proba.astype(np.float32 if proba.dtype == np.float32 else float, copy=False)
    if proba.ndim != 2:
        raise ValueError(f"predict_proba returned shape {proba.shape}; expected (rows, classes)")
    seen = getattr(model, "classes_", None)
    if seen is None:
        seen = np.unique(y_fit.to_numpy())
    seen_names = [str(c) for c in seen]
    if proba.shape[1] != len(seen_names):
        if proba.shape[1] == len(classes):
            return np.asarray(proba)
        raise ValueError(
            f"predict_proba returned {proba.shape[1]} columns for {len(seen_names)} classes"
        )
    out = np.zeros((proba.shape[0], len(classes)), dtype=proba.dtype)
    for j, name in enumerate(seen_names):
        if name not in classes:
            raise ValueError(f"the model predicts class {name!r}, unknown to the dataset")
        out[:, classes.index(name)] = proba[:, j]
    return out


class _Model:
    """fit / predict of one workflow over DataFrames; predict gives proba or values."""

    def __init__(self, workflow: str, task: str, code: Path, classes: list[str], seed: int):
        self.workflow, self.task, self.code = workflow, task, code
        self.classes, self.seed = classes, seed

    def fit(self, X: pd.DataFrame, y: pd.Series) -> None:
        w = self.workflow
        self.y_fit = y
        if w == "estimator":
            self.model = load_module(self.code, "estimator.py").get_estimator()
            self.model.fit(X, y)
            return
        if w in ("classifier", "regressor"):
            cls = "Classifier" if w == "classifier" else "Regressor"
            self.model = getattr(load_module(self.code, f"{w}.py"), cls)()
            self.model.fit(X.to_numpy(), y.to_numpy())
            return
        self.fe = load_module(self.code, "feature_extractor.py").FeatureExtractor()
        if w.endswith("calibrator"):
            fit_rows, calib_rows = _calibration_split(y, self.seed)
            X_fit, y_fit = X.iloc[fit_rows], y.iloc[fit_rows]
        else:
            X_fit, y_fit = X, y
        self.fe.fit(X_fit, y_fit)
        kind = "classifier" if "classifier" in w else "regressor"
        module = load_module(self.code, f"{kind}.py")
        self.model = getattr(module, kind.capitalize())()
        self.model.fit(self.fe.transform(X_fit), y_fit.to_numpy())
        self.y_fit = y_fit
        if w.endswith("calibrator"):
            self.calibrator = load_module(self.code, "calibrator.py").Calibrator()
            raw = self.model.predict_proba(self.fe.transform(X.iloc[calib_rows]))
            self.calibrator.fit(raw, y.iloc[calib_rows].to_numpy())

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        w = self.workflow
        if w in ("classifier", "regressor"):
            features: Any = X.to_numpy()
        elif w == "estimator":
            features = X
        else:
            features = self.fe.transform(X)
        if self.task == "regression":
            return np.asarray(self.model.predict(features), dtype=float).reshape(len(X))
        proba = self.model.predict_proba(features)
        if w.endswith("calibrator"):
            proba = self.calibrator.predict_proba(proba)
        return _align(proba, self.model, self.y_fit, self.classes)


def _calibration_split(y: pd.Series, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A held-out tenth of the fold's training rows for the calibrator."""
    from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

    splitter: Any = StratifiedShuffleSplit(n_splits=1, test_size=0.1, random_state=seed)
    try:
        fit_rows, calib_rows = next(splitter.split(np.zeros(len(y)), y))
    except ValueError:  # a class too rare to stratify
        splitter = ShuffleSplit(n_splits=1, test_size=0.1, random_state=seed)
        fit_rows, calib_rows = next(splitter.split(np.zeros(len(y))))
    return fit_rows, calib_rows


def run(
    workflow: str,
    task: str,
    code: Path,
    *,
    train: pd.DataFrame,
    test: pd.DataFrame | None,
    target: str,
    train_rows: np.ndarray,
    classes: list[str],
    seed: int,
) -> Predictions:
    X, y = train.drop(columns=[target]), train[target]
    model = _Model(workflow, task, code, classes, seed)
    start = time.perf_counter()
    model.fit(X.iloc[train_rows], y.iloc[train_rows])
    fitted = time.perf_counter()
    pred_train = model.predict(X)
    predicted = time.perf_counter()
    pred_test = model.predict(test) if test is not None else None
    done = time.perf_counter()
    return Predictions(pred_train, pred_test, fitted - start, predicted - fitted, done - predicted)
