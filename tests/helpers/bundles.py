"""Build dataset and submission bundles for tests, from data shipped with scikit-learn."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

from sklearn.datasets import load_diabetes, load_iris

DATASET_TOML = """\
name = "{name}"
target = "{target}"
task = "{task}"
workflow = "{workflow}"
scores = {scores}

[data]
train = "train.csv"
{test}

[cv]
scheme = "{scheme}"
n_splits = {n_splits}
"""

CLASSIFIER = """\
from sklearn.linear_model import LogisticRegression


class Classifier:
    def __init__(self):
        self.model = LogisticRegression(max_iter=500)

    def fit(self, X, y):
        self.model.fit(X, y)
        return self

    def predict_proba(self, X):
        return self.model.predict_proba(X)
"""

REGRESSOR = """\
from sklearn.linear_model import Ridge


class Regressor:
    def __init__(self):
        self.model = Ridge()

    def fit(self, X, y):
        self.model.fit(X, y)
        return self

    def predict(self, X):
        return self.model.predict(X)
"""

ESTIMATOR = """\
from sklearn.ensemble import RandomForestClassifier


def get_estimator():
    return RandomForestClassifier(n_estimators={n})
"""


def dataset(
    where: Path,
    name: str = "iris",
    *,
    task: str = "classification",
    workflow: str = "classifier",
    scores: str = '["accuracy", "neg_log_loss"]',
    scheme: str = "stratified_kfold",
    n_splits: int = 3,
    test: str = "test_fraction = 0.2",
    folder: str | None = None,
) -> Path:
    root = where / (folder or name)
    root.mkdir(parents=True)
    frame = (load_iris if task == "classification" else load_diabetes)(as_frame=True).frame
    target = "target"
    frame.to_csv(root / "train.csv", index=False)
    (root / "dataset.toml").write_text(DATASET_TOML.format(
        name=name, target=target, task=task, workflow=workflow, scores=scores,
        scheme=scheme, n_splits=n_splits, test=test,
    ))  # fmt: skip
    return root


def submission(
    where: Path,
    name: str = "logreg",
    *,
    workflow: str = "classifier",
    manifest: str | None = None,
    variant: int = 0,
) -> Path:
    root = where / name
    root.mkdir(parents=True)
    if workflow == "classifier":
        (root / "classifier.py").write_text(CLASSIFIER + f"\n# variant {variant}\n")
    elif workflow == "regressor":
        (root / "regressor.py").write_text(REGRESSOR + f"\n# variant {variant}\n")
    elif workflow == "estimator":
        (root / "estimator.py").write_text(ESTIMATOR.format(n=10 + variant))
    if manifest is not None:
        (root / "submission.toml").write_text(manifest)
    return root


def zip_folder(folder: Path, archive: Path, *, top: bool = True) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder.parent if top else folder)
            zf.write(path, rel.as_posix())
    return archive


def tar_folder(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname=folder.name)
    return archive
