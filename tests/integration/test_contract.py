"""A submission that passes the intake's static check but does not answer what its
workflow calls fails each fold with one line naming its file and method, and a
traceback of its own frames (none of datarun's)."""

from __future__ import annotations

from tests.integration.test_executor import drain, job_rows, register

INHERITS = """\
from sklearn.svm import LinearSVC


class Classifier(LinearSVC):
    pass
"""
NARROW_FIT = """\
from sklearn.linear_model import LogisticRegression


class Classifier:
    def fit(self, X):
        return self

    def predict_proba(self, X):
        return LogisticRegression().predict_proba(X)
"""
THEIR_ERROR = """\
import numpy as np


def helper(X):
    return np.log(X) / 0 + undefined_name


class Classifier:
    def fit(self, X, y):
        return self

    def predict_proba(self, X):
        return helper(X)
"""
NEEDS_ARGUMENTS = """\
class Classifier:
    def __init__(self, depth):
        self.depth = depth

    def fit(self, X, y):
        return self

    def predict_proba(self, X):
        return X
"""


def test_a_broken_contract_names_the_file_and_the_method(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    submissions = {"inherits": INHERITS, "narrowfit": NARROW_FIT, "theirs": THEIR_ERROR,
                   "args": NEEDS_ARGUMENTS}  # fmt: skip
    register(spool, make_watcher, tmp_path, submissions)
    drain(make_executor())
    rows = {r["name"]: r for r in job_rows(database_url)}  # one fold of each is enough
    assert {r["state"] for r in job_rows(database_url)} == {"failed"}
    want = {
        "inherits": "classifier.py: Classifier has no method predict_proba; the workflow calls "
                    "Classifier.predict_proba(X)",
        "narrowfit": "classifier.py: the workflow calls Classifier.fit(X, y), which fails: "
                     "Classifier.fit() takes 2 positional arguments but 3 were given",
        "args": "classifier.py: Classifier() cannot be called without arguments: "
                "Classifier.__init__() missing 1 required positional argument: 'depth'",
        "theirs": "NameError: name 'undefined_name' is not defined",
    }  # fmt: skip
    for name, reason in want.items():
        row = rows[name]
        assert row["error"] == reason, (name, row["error"])
        detail = row["error_detail"]
        assert "executor/" not in detail and "workflows.py" not in detail, (name, detail)
        assert detail.rstrip().splitlines()[-1].endswith(reason.split(": ", 1)[-1]), detail
    theirs = rows["theirs"]["error_detail"]
    assert 'File "classifier.py", line 5, in helper' in theirs, theirs
    assert 'File "classifier.py", line 13, in predict_proba' in theirs, theirs
