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

from spool import responses


@dataclass
class Predictions:
    """A RAMP kit's fold: its predictions' arrays."""

    train: np.ndarray
    test: np.ndarray | None
    train_seconds: float
    valid_seconds: float
    test_seconds: float


@dataclass
class Responses:
    """A native fold: each method's output (`spool.responses`) on every row."""

    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray] | None
    train_seconds: float
    valid_seconds: float
    test_seconds: float

    def arrays(self, task: str) -> dict[str, np.ndarray]:
        """The prediction file's members."""
        out = {responses.member("train", m, task): a for m, a in self.train.items()}
        for method, values in (self.test or {}).items():
            out[responses.member("test", method, task)] = values
        return out


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
    """fit / respond of one workflow over DataFrames. A `get_estimator()` estimator
    answers every method the dataset's scorers take from it (`spool.responses`), as
    `cross_validate` would call them; the other workflows answer `predict_proba` for a
    classification, as RAMP scores them, and `predict` for a regression."""

    def __init__(self, workflow: str, task: str, code: Path, *, classes: list[str],
                 seed: int, scores: list[str]) -> None:  # fmt: skip
        self.workflow, self.task, self.code = workflow, task, code
        self.classes, self.seed, self.scores = classes, seed, scores

    def fit(self, X: pd.DataFrame, y: pd.Series) -> None:
        w = self.workflow
        self.y_fit = y
        if w == "estimator":
            self.file = "estimator.py"
            self.model = _make(self.code, self.file, "get_estimator")
            _call(self.model, "fit", self.file, X, y)
            self.methods = self._methods()
            return
        if w in ("classifier", "regressor"):
            self.file = f"{w}.py"
            self.model = _make(self.code, self.file, "Classifier" if w == "classifier"
                               else "Regressor")  # fmt: skip
            _call(self.model, "fit", self.file, X.to_numpy(), y.to_numpy())
            return
        self.fe = _make(self.code, "feature_extractor.py", "FeatureExtractor")
        if w.endswith("calibrator"):
            fit_rows, calib_rows = _calibration_split(y, self.seed)
            X_fit, y_fit = X.iloc[fit_rows], y.iloc[fit_rows]
        else:
            X_fit, y_fit = X, y
        _call(self.fe, "fit", "feature_extractor.py", X_fit, y_fit)
        kind = "classifier" if "classifier" in w else "regressor"
        self.file = f"{kind}.py"
        self.model = _make(self.code, self.file, kind.capitalize())
        _call(self.model, "fit", self.file, self._features(X_fit), y_fit.to_numpy())
        self.y_fit = y_fit
        if w.endswith("calibrator"):
            self.calibrator = _make(self.code, "calibrator.py", "Calibrator")
            raw = _call(self.model, "predict_proba", self.file,
                        self._features(X.iloc[calib_rows]))  # fmt: skip
            _call(self.calibrator, "fit", "calibrator.py", raw, y.iloc[calib_rows].to_numpy())

    def _features(self, X: pd.DataFrame) -> Any:
        return _call(self.fe, "transform", "feature_extractor.py", X)

    def _methods(self) -> set[str]:
        """What the fitted estimator must answer: each score's own method (MissingResponse
        naming the score when it has none), and predict_proba whenever it has one, for
        the bagged scores."""
        if self.task == "regression":
            return {responses.PREDICT}
        available = {m for m in responses.METHODS if hasattr(self.model, m)}
        if responses.DECISION in available and not self._same_classes():
            available.discard(responses.DECISION)  # its columns are not the dataset's
        owner = f"the estimator {type(self.model).__name__}"
        methods = {responses.choose(m, available, owner) for m in self.scores}
        return methods | ({responses.PROBA} & available)

    def _same_classes(self) -> bool:
        seen = getattr(self.model, "classes_", None)
        return seen is not None and [str(c) for c in seen] == self.classes

    def respond(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        w = self.workflow
        if w in ("classifier", "regressor"):
            features: Any = X.to_numpy()
        elif w == "estimator":
            features = X
        else:
            features = self._features(X)
        if self.task == "regression":
            values = np.asarray(_call(self.model, "predict", self.file, features))
            if values.dtype != np.float32:  # float32 stays, as the scorer would see it
                values = values.astype(float)
            return {responses.PREDICT: values.reshape(len(X))}
        if w == "estimator":
            return {m: self._response(m, features, len(X)) for m in sorted(self.methods)}
        proba = _call(self.model, "predict_proba", self.file, features)
        if w.endswith("calibrator"):
            proba = _call(self.calibrator, "predict_proba", "calibrator.py", proba)
        return {responses.PROBA: _align(proba, self.model, self.y_fit, self.classes)}

    def _response(self, method: str, X: Any, rows: int) -> np.ndarray:
        out = getattr(self.model, method)(X)
        if method == responses.PROBA:
            return _align(out, self.model, self.y_fit, self.classes)
        if method == responses.PREDICT:
            return _indices(out, self.classes, rows)
        out = np.asarray(out)
        if out.dtype.kind not in "iuf":
            raise ValueError(f"decision_function returned {out.dtype} values; expected numbers")
        out = out.astype(np.float32 if out.dtype == np.float32 else float, copy=False)
        width = None if len(self.classes) == 2 else len(self.classes)
        if out.shape != ((rows,) if width is None else (rows, width)):
            raise ValueError(f"decision_function returned shape {out.shape} for {rows} rows "
                             f"and {len(self.classes)} classes")  # fmt: skip
        return out


class ContractError(Exception):
    """The submission does not answer what its workflow calls; the message names the
    file, the class or function, and the method."""


ARGUMENTS = {"fit": "X, y", "get_estimator": ""}  # how the workflows call each


def _make(code: Path, file: str, name: str) -> Any:
    """`name()` from the submission's `file`: the class instantiated, or get_estimator()
    called."""
    module = load_module(code, file)
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ContractError(f"{file} does not define {name}, which the workflow calls")
    try:
        return factory()
    except TypeError as exc:
        if _at_the_call(exc):
            raise ContractError(f"{file}: {name}() cannot be called without arguments: "
                                f"{exc}") from None  # fmt: skip
        raise


def _call(obj: Any, method: str, file: str, *args: Any) -> Any:
    """obj.method(*args) as the workflow calls it; a method that is missing, or that
    does not take these arguments, is a ContractError naming the file and the method."""
    bound = getattr(obj, method, None)
    signature = f"{type(obj).__name__}.{method}({ARGUMENTS.get(method, 'X')})"
    if not callable(bound):
        raise ContractError(f"{file}: {type(obj).__name__} has no method {method}; the "
                            f"workflow calls {signature}")  # fmt: skip
    try:
        return bound(*args)
    except TypeError as exc:
        if _at_the_call(exc):
            raise ContractError(f"{file}: the workflow calls {signature}, which fails: "
                                f"{exc}") from None  # fmt: skip
        raise


def _at_the_call(exc: BaseException) -> bool:
    """Raised by the call itself (arguments that do not fit the signature), not by
    code it ran: the traceback ends in the calling frame."""
    tb = exc.__traceback__
    return tb is not None and tb.tb_next is None


def _indices(labels: Any, classes: list[str], rows: int) -> np.ndarray:
    """predict's labels as indices into the dataset's classes (the file holds numbers)."""
    labels = np.asarray(labels)
    if labels.shape != (rows,):
        raise ValueError(f"predict returned shape {labels.shape} for {rows} rows")
    found = pd.Index(classes).get_indexer(labels.astype(str))
    if (found < 0).any():
        unknown = labels[np.flatnonzero(found < 0)[0]]
        raise ValueError(f"the model predicts class {str(unknown)!r}, unknown to the dataset")
    return np.asarray(found, dtype=np.int64)


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
    scores: list[str],
) -> Responses:
    X, y = train.drop(columns=[target]), train[target]
    model = _Model(workflow, task, code, classes=classes, seed=seed, scores=scores)
    start = time.perf_counter()
    model.fit(X.iloc[train_rows], y.iloc[train_rows])
    fitted = time.perf_counter()
    pred_train = model.respond(X)
    predicted = time.perf_counter()
    pred_test = model.respond(test) if test is not None else None
    done = time.perf_counter()
    return Responses(pred_train, pred_test, fitted - start, predicted - fitted, done - predicted)
