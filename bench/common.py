"""What the benchmarks share: a throw-away embedded server and spool, bundle writers."""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from datarun.embedded import EmbeddedServer
from spool import migrate
from spool.layout import Spool

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
# variant {variant}
"""

DATASET = """\
name = "{name}"
target = "target"
task = "classification"
workflow = "classifier"
scores = ["accuracy"]
[data]
train = "train.csv"
test_fraction = 0.2
[cv]
scheme = "stratified_kfold"
n_splits = {folds}
"""


@dataclass
class Bed:
    """A running embedded server with a migrated database and an empty spool."""

    server: EmbeddedServer
    spool: Spool

    @property
    def url(self) -> str:
        return self.server.url()


@contextmanager
def testbed() -> Iterator[Bed]:
    base = Path(tempfile.mkdtemp(prefix="datarun-bench-", dir="/tmp"))
    base.chmod(0o755)
    server = EmbeddedServer(base / "home", port=55433)
    try:
        server.up()
        migrate.migrate(server.url())
        spool = Spool(base / "spool")
        spool.create()
        yield Bed(server, spool)
    finally:
        server.down()
        shutil.rmtree(base, ignore_errors=True)


def write_dataset(where: Path, name: str = "iris", folds: int = 3) -> Path:
    from sklearn.datasets import load_iris

    root = where / name
    root.mkdir(parents=True)
    load_iris(as_frame=True).frame.to_csv(root / "train.csv", index=False)
    (root / "dataset.toml").write_text(DATASET.format(name=name, folds=folds))
    return root


def write_submission(where: Path, name: str, variant: int) -> Path:
    root = where / name
    root.mkdir(parents=True)
    (root / "classifier.py").write_text(CLASSIFIER.format(variant=variant))
    return root


def settle(path: Path, seconds: float = 3600) -> Path:
    past = time.time() - seconds
    for p in [path, *path.rglob("*")]:
        os.utime(p, (past, past))
    return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"
