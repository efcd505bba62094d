# ruff: noqa: E501
"""The intake's static check of the methods a workflow calls: a class that surely
lacks one is refused; one that may get it from code the check cannot see is not."""

from __future__ import annotations

import ast

import pytest

from spool.workflows import _missing_methods

CASES = {
    "all defined": ("class Classifier:\n def fit(s, X, y): pass\n def predict_proba(s, X): pass\n", []),
    "predict only": ("class Classifier:\n def fit(s, X, y): pass\n def predict(s, X): pass\n", ["predict_proba"]),
    "inherited from the file": ("class B:\n def predict_proba(s, X): pass\nclass Classifier(B):\n def fit(s, X, y): pass\n", []),
    "missing up the chain": ("class B:\n def predict(s, X): pass\nclass Classifier(B):\n def fit(s, X, y): pass\n", ["predict_proba"]),
    "explicit object base": ("class Classifier(object):\n def fit(s, X, y): pass\n", ["predict_proba"]),
    "an imported base": ("from sklearn.linear_model import LogisticRegression\nclass Classifier(LogisticRegression):\n pass\n", []),
    "a dotted base": ("import sklearn.base\nclass Classifier(sklearn.base.BaseEstimator):\n pass\n", []),
    "methods assigned": ("def f(s, X): pass\nclass Classifier:\n fit = f\n predict_proba = f\n", []),
    "__getattr__": ("class Classifier:\n def __getattr__(s, n): pass\n", []),
    "a metaclass": ("class M(type): pass\nclass Classifier(metaclass=M):\n pass\n", []),
    "rebound after": ("class Classifier:\n pass\nClassifier = make()\n", []),
    "a cycle": ("class A(Classifier): pass\nclass Classifier(A): pass\n", ["fit", "predict_proba"]),
    "used under a main guard": ("class Classifier:\n def fit(s, X, y): pass\nif __name__ == '__main__':\n Classifier().fit(1, 2)\n", ["predict_proba"]),
    "defined under a condition": ("class Classifier:\n def fit(s, X, y): pass\n if True:\n  def predict_proba(s, X): pass\n", []),
    "class under try": ("try:\n class Classifier: pass\nexcept Exception:\n pass\n", []),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_missing_methods(case):
    source, missing = CASES[case]
    assert _missing_methods(ast.parse(source), "Classifier", ("fit", "predict_proba")) == missing
