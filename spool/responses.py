"""What a fold's prediction file holds: the estimator's responses that the dataset's
scorers ask for, and which response each scorer is given.

`cross_validate` hands each scorer the response scikit-learn's scorer asks for, in its
order of preference among those the estimator has: `roc_auc` and `average_precision`
take `decision_function` before `predict_proba`, `accuracy` takes `predict`,
`neg_log_loss` `predict_proba`. A fold stores each of them, under these names:

- `train` / `test`: `predict_proba` in the dataset's class order (classification; absent
  when the estimator has none), or `predict` (regression);
- `train_decision_function` / `test_decision_function`: `(rows,)` for two classes,
  `(rows, classes)` for more, stored when a scorer prefers it and the estimator has it;
- `train_predict` / `test_predict`: `predict`, as indices into the dataset's classes,
  stored when a scorer asks for it (classification, `estimator` workflow).

The other native workflows and RAMP kits give probabilities only (`predict_proba`), as
RAMP scores them: their `predict` is the most probable class.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from functools import cache

from spool import arrays

PROBA, DECISION, PREDICT = "predict_proba", "decision_function", "predict"
METHODS = (PREDICT, PROBA, DECISION)


class MissingResponse(ValueError):
    """A scorer needs a method the estimator does not have; the message names both."""


def member(split: str, method: str, task: str | None) -> str:
    """The prediction file's array holding `method`'s output on `split` rows."""
    primary = PREDICT if task == "regression" else PROBA
    return split if method == primary else f"{split}_{method}"


def parse(name: str, task: str | None) -> tuple[str, str]:
    """(split, method) of a prediction file's array: `member`'s inverse."""
    split, _, method = name.partition("_")
    return split, method or (PREDICT if task == "regression" else PROBA)


@cache
def preference(metric: str) -> tuple[str, ...]:
    """The methods scikit-learn's scorer `metric` may call, most preferred first."""
    from sklearn.metrics import get_scorer  # light callers (the executor daemon) never ask

    wanted = getattr(get_scorer(metric), "_response_method", PREDICT)
    return (wanted,) if isinstance(wanted, str) else tuple(wanted)


def choose(metric: str, available: Collection[str], owner: str = "the estimator") -> str:
    """The method `metric`'s scorer calls among `available`, as scikit-learn chooses;
    MissingResponse naming the metric and what it needs otherwise."""
    wanted = preference(metric)
    for method in wanted:
        if method in available:
            return method
    has = ", ".join(m for m in METHODS if m in available) or "none of them"
    raise MissingResponse(f"the score {metric} needs {' or '.join(wanted)}, which "
                          f"{owner} does not have (it has {has})")  # fmt: skip


def needed(metrics: Iterable[str], available: Collection[str]) -> set[str]:
    """The methods a fold must store so that every metric's scorer finds its own."""
    return {choose(m, available) for m in metrics}


def expected(
    task: str | None,
    n_train: int,
    n_test: int,
    n_classes: int | None,
    workflow: str = "estimator",
) -> tuple[dict[str, tuple[int, ...]], frozenset[str]]:
    """The arrays a native fold's file may hold (name -> shape) and those it may omit.
    Only an `estimator` gives more than probabilities or values, which then must be
    there."""
    splits = {"train": n_train, **({"test": n_test} if n_test else {})}
    if task == "regression" or not n_classes or workflow != "estimator":
        width = None if task == "regression" else (n_classes or None)
        return {s: arrays.shape_of(n, width) for s, n in splits.items()}, frozenset()
    decision_width = None if n_classes == 2 else n_classes
    out: dict[str, tuple[int, ...]] = {}
    for split, rows in splits.items():
        out[split] = arrays.shape_of(rows, n_classes)
        out[member(split, DECISION, task)] = arrays.shape_of(rows, decision_width)
        out[member(split, PREDICT, task)] = arrays.shape_of(rows, None)
    return out, frozenset(out)
