"""The scoring child of a native dataset (`watcher.scorers`): `python -m
watcher.nativescore STORE TARGET TASK`.

It reads what predictions are scored against once (the training target, the test
labels that only the master's user may read, the folds), loads scikit-learn's scorers,
and only then, when started by a root master, confines itself: a root of its own
showing the prediction files read-only, no network, the kits' user. Then it answers one
JSON line per request on stdin: a batch of folds to score (`watcher.scoring`), a batch
of submissions to bag, or the stored folds.
"""

from __future__ import annotations

import contextlib
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

from spool import kitsandbox
from watcher import scoring
from watcher.scorers import Handler, one_line, serve


def handle(truth: scoring.Truth, payload: dict[str, Any]) -> dict[str, Any]:
    metrics = [str(m) for m in payload.get("metrics", [])]
    answer: dict[str, Any] = {"scores": {}, "bagged": {}}
    for job in payload.get("score", []):
        try:
            preds = scoring.load_predictions(Path(job["pred"]), truth)
            got: Any = scoring.score_fold(truth, int(job["fold"]), preds, metrics)
        except Exception as exc:
            got = {"error": one_line(exc)}
        answer["scores"][str(job["id"])] = got
    for sub in payload.get("bag", []):
        try:
            folds = {int(f): scoring.load_predictions(Path(p), truth) for f, p in sub["preds"]}
            got = scoring.bagged(truth, folds, metrics)
        except Exception as exc:
            got = {"error": one_line(exc)}
        answer["bagged"][str(sub["id"])] = got
    if payload.get("folds"):
        answer["folds"] = {name: rows.tolist() for name, rows in truth.folds.items()}
    return answer


def _confine(options: dict[str, str], store: Path) -> None:
    if not options.get("run-as"):
        return
    uid, _, gid = options["run-as"].partition(":")
    seen = [options["read"]] if options.get("read") else []
    try:
        kitsandbox.confine((int(uid), int(gid)), read_only=seen,
                           hide=[str(store.absolute()), *seen])  # fmt: skip
    except OSError as exc:  # no namespaces here (a container): as the master's user
        sys.stderr.write(f"the scoring child runs unconfined: {exc}\n")


def _setup(options: dict[str, str], args: list[str]) -> Handler:
    store, target, task = args
    truth = scoring.load_truth(Path(store), target, task)
    _confine(options, Path(store))
    with contextlib.suppress(OSError):
        os.chdir("/")
    return partial(handle, truth)


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:], _setup))
