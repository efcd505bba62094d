"""What the zygote loads before its first fork, so that every fold's child starts warm:
the libraries folds use, imported once, and a few tiny fits run once (scikit-learn's
lazy imports and caches, the workflow code path). Forked children inherit all of it."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any


def prewarm() -> None:
    """Import what folds use, once, before any fork."""
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import sklearn
    import sklearn.ensemble
    import sklearn.linear_model
    import sklearn.model_selection
    import sklearn.pipeline
    import sklearn.preprocessing  # noqa: F401

    import executor.fold
    import executor.workflows

    try:  # RAMP kits' folds import ramp-workflow: once here, not in every child
        import rampwf  # noqa: F401

        import executor.rampfold  # noqa: F401
    except ImportError:
        pass
    _warm_up()


def _warm_up() -> None:
    """Run a few tiny fits once, so that every child starts with scikit-learn's lazy
    imports done, its caches filled and the interpreter's code warm (forked children
    inherit all of it; started cold, a fold pays it again, about as much as a small fit)."""
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 4)), columns=list("abcd"))
    y = np.arange(60) % 3
    for model in (LogisticRegression(max_iter=200), RandomForestClassifier(n_estimators=3),
                  make_pipeline(StandardScaler(), LogisticRegression())):  # fmt: skip
        model.fit(X, y).predict_proba(X)
        model.fit(X.to_numpy(), y).predict_proba(X.to_numpy())
    for regressor in (Ridge(), RandomForestRegressor(n_estimators=3)):
        regressor.fit(X, y.astype(float)).predict(X)
    np.savez(io.BytesIO(), a=np.zeros(3))
    _warm_workflows(X, y)


WARM_CLASSIFIER = """
from sklearn.linear_model import LogisticRegression


class Classifier:
    def __init__(self):
        self.model = LogisticRegression(max_iter=200)

    def fit(self, X, y):
        self.model.fit(X, y)

    def predict_proba(self, X):
        return self.model.predict_proba(X)
"""


def _warm_workflows(X: Any, y: Any) -> None:
    """The workflow code path itself (module loading, DataFrame slicing, alignment)."""
    import tempfile

    import numpy as np

    from executor import workflows

    frame = X.assign(target=y)
    with tempfile.TemporaryDirectory() as code:
        Path(code, "classifier.py").write_text(WARM_CLASSIFIER, encoding="utf-8")
        workflows.run("classifier", "classification", Path(code), train=frame, test=X,
                      target="target", train_rows=np.arange(40), classes=["0", "1", "2"],
                      seed=0, scores=["accuracy"])  # fmt: skip
    sys.modules.pop("submission_classifier", None)
    from spool import responses

    for metric in ("accuracy", "roc_auc", "neg_log_loss", "r2"):  # scorers' methods, cached
        responses.preference(metric)
