"""The sweeper's work: score predicted jobs, reap silent executors.

One pass scores a batch of predicted jobs: each prediction file is checked (the
attempt in its name and metadata, shapes, types, finite values) and scored with the
dataset's metrics; then, in one transaction, the scores are inserted (once: a key per
job, split and metric) and the jobs marked scored, fenced on their attempt, so a file
swept twice changes nothing. A file that cannot be scored fails its job with the reason.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spool import db, jobs
from spool.layout import Spool
from watcher.scoring import Truth, Unscorable, check, load_truth, score_fold

log = logging.getLogger(__name__)

CACHE_DATASETS = 8


@dataclass(frozen=True)
class SweepResult:
    scored: int
    failed: int


class Sweeper:
    def __init__(self, spool: Spool, database: db.Database, batch: int = 500) -> None:
        self.spool = spool
        self.database = database
        self.batch = batch
        self._truths: OrderedDict[int, Truth] = OrderedDict()

    def truth(self, row: dict[str, Any]) -> Truth:
        found = self._truths.get(row["dataset_id"])
        if found is None:
            found = load_truth(self.spool.absolute(row["dataset_path"]), row["target"],
                               row["task"])  # fmt: skip
            self._truths[row["dataset_id"]] = found
            while len(self._truths) > CACHE_DATASETS:
                self._truths.popitem(last=False)
        self._truths.move_to_end(row["dataset_id"])
        return found

    def sweep_once(self) -> SweepResult:
        with self.database.connection() as conn:
            rows = db.fetch_all(conn, "jobs_to_score", {"n": self.batch})
        scores: list[dict[str, Any]] = []
        scored: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for row in rows:
            try:
                values = self._score(row)
            except Unscorable as exc:
                failed.append({"id": row["id"], "attempt": row["attempt"],
                               "error": f"predictions refused: {exc}", "detail": None})  # fmt: skip
                continue
            scores += [{"job_id": row["id"], "split": split, "metric": metric, "value": value}
                       for split, metric, value in values]  # fmt: skip
            scored.append({"id": row["id"], "attempt": row["attempt"]})
        if rows:
            with self.database.transaction() as conn:
                db.execute_many(conn, "score_insert", scores)
                db.execute_many(conn, "job_scored", scored)
                db.execute_many(conn, "job_unscorable", failed)
        for row in failed:
            log.info("job %s: %s", row["id"], row["error"])
        return SweepResult(len(scored), len(failed))

    def _score(self, row: dict[str, Any]) -> list[tuple[str, str, float]]:
        truth = self.truth(row)
        path = self.spool.absolute(row["prediction_path"] or "")
        expected = f"{row['id']}.{row['attempt']}.npz"
        if path.name != expected:
            raise Unscorable(f"the file {path.name} is not the one of this attempt ({expected})")
        meta = _metadata(path.with_suffix(".json"))
        if meta.get("job") != row["id"] or meta.get("attempt") != row["attempt"]:
            raise Unscorable("its metadata names another job or attempt")
        try:
            with np.load(path, allow_pickle=False) as arrays:
                train, test = check(arrays, truth)
        except Unscorable:
            raise
        except Exception as exc:  # a truncated or foreign file
            raise Unscorable(f"cannot be read: {type(exc).__name__}: {exc}") from exc
        return score_fold(truth, row["fold"], train, test, list(row["metrics"]))


def _metadata(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Unscorable(f"its metadata {path.name} cannot be read: {exc}") from exc
    return data if isinstance(data, dict) else {}


def reap_once(database: db.Database, lease_seconds: float) -> int:
    """Give back (or fail) the jobs of executors silent for longer than the lease."""
    with database.connection() as conn:
        rows = jobs.reap(conn, lease_seconds)
    for row in rows:
        log.warning("job %s of a silent executor is now %s", row["id"], row["state"])
    return len(rows)
