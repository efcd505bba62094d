"""Each submission's mean and standard deviation over folds: computed here, once, and
stored (`score_summaries`), so that every output (status.json, leaderboard.csv, the
HTML page, the views, `datarun leaderboard`) shows the same float to the last digit.

The standard deviation is the population one (ddof=0), as ramp-test prints it
(`rampwf.utils.scoring.mean_score_matrix`: numpy's `std(axis=0)` over the folds). The
arithmetic is numpy's for that reduction, written out so that nothing depends on
numpy's pairwise summation (which it uses for a contiguous 1-D sum of 9 values or
more): the scores are added in fold order, one after the other.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """(mean, population std) of fold scores, summed in the order given (fold order)."""
    scores = [float(v) for v in values]
    if not scores:
        raise ValueError("no fold score to summarize")
    total = 0.0
    for v in scores:
        total += v
    mean = total / len(scores)
    squares = 0.0
    for v in scores:
        d = v - mean
        squares += d * d
    return mean, math.sqrt(squares / len(scores))


def summarize(scores: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows of `score_summaries` from fold scores (fold, split, metric, value) of scored
    folds. An undefined score (NaN: a ROC AUC on rows of one class) is left out, so
    `n_folds` counts the folds whose score is defined."""
    groups: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for s in scores:
        value = s["value"]
        if value is not None and not math.isnan(value):
            groups[(s["split"], s["metric"])].append((int(s["fold"]), float(value)))
    rows = []
    for (split, metric), folds in sorted(groups.items()):
        mean, std = mean_std(v for _, v in sorted(folds))
        if math.isnan(mean):  # inf and -inf among the folds: nothing to rank on
            continue
        rows.append({"split": split, "metric": metric, "n_folds": len(folds),
                     "mean": mean, "std": std})  # fmt: skip
    return rows
