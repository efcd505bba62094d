"""The sweeper's work: score predicted jobs, reap silent executors.

One pass scores a batch of predicted jobs: each prediction file is checked (the
attempt in its name and metadata; then, by `watcher.scoring.load_predictions`, its
size, members and array headers before any data is read, and its values: finite, and
a classifier's probabilities in [0, 1] with rows summing to 1) and scored with the
dataset's metrics; then, in one transaction, the scores are inserted (once: a key per
job, split and metric) and the jobs marked scored, fenced on their attempt, so a file
swept twice changes nothing. A file that cannot be scored fails its job with the reason.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spool import db, jobs
from spool.layout import Spool
from watcher import rampscore
from watcher.rampscore import KitScoringFailed
from watcher.scoring import Truth, Unscorable, load_predictions, load_truth, score_fold

log = logging.getLogger(__name__)

CACHE_DATASETS = 8
KIT_BACKOFF = 60  # seconds before a kit whose scoring failed is tried again
KIT_IDLE = 300  # seconds a kit's scoring child is kept without work


@dataclass(frozen=True)
class SweepResult:
    scored: int
    failed: int


class Sweeper:
    def __init__(
        self, spool: Spool, database: db.Database, batch: int = 500, kit_timeout: float = 300.0
    ) -> None:
        self.spool = spool
        self.database = database
        self.batch = batch
        self.kit_timeout = kit_timeout
        self._truths: OrderedDict[int, Truth] = OrderedDict()
        self._kit_backoff: dict[int, float] = {}  # dataset id -> when to try its kit again
        self._scorers: dict[str, rampscore.Scorer] = {}  # dataset store path -> its child
        self._scorers_lock = threading.Lock()

    def scorer(self, dataset_path: str) -> rampscore.Scorer:
        """The kit's scoring child; children idle for KIT_IDLE seconds are stopped."""
        with self._scorers_lock:
            now = time.monotonic()
            for path, idle in list(self._scorers.items()):
                if path != dataset_path and now - idle.used > KIT_IDLE:
                    idle.close()
                    del self._scorers[path]
            found = self._scorers.get(dataset_path)
            if found is None:
                store = self.spool.absolute(dataset_path)
                found = rampscore.Scorer(store / "bundle", store / "prepared" / "folds.npz",
                                         self.kit_timeout, self.spool.predictions)  # fmt: skip
                self._scorers[dataset_path] = found
            return found

    def close(self) -> None:
        with self._scorers_lock:
            for scorer in self._scorers.values():
                scorer.close()
            self._scorers.clear()

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
        kit_values = self._score_kits([r for r in rows if r["kind"] == "ramp"])
        for row in rows:
            if row["kind"] == "ramp" and row["id"] not in kit_values:
                continue  # its kit could not be scored now: it stays predicted
            try:
                values = kit_values[row["id"]] if row["kind"] == "ramp" else self._score(row)
                if isinstance(values, Unscorable):
                    raise values
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
        for row in scored:
            forget_older_attempts(self.spool.predictions, row["id"], row["attempt"])
        return SweepResult(len(scored), len(failed))

    def _checked(self, row: dict[str, Any]) -> Path:
        """The job's prediction file, if it is this attempt's."""
        path = self.spool.absolute(row["prediction_path"] or "")
        expected = f"{row['id']}.{row['attempt']}.npz"
        if path.name != expected:
            raise Unscorable(f"the file {path.name} is not the one of this attempt ({expected})")
        meta = _metadata(path.with_suffix(".json"))
        if meta.get("job") != row["id"] or meta.get("attempt") != row["attempt"]:
            raise Unscorable("its metadata names another job or attempt")
        return path

    def _score_kits(self, rows: list[dict[str, Any]]) -> dict[int, Any]:
        """job id -> values or Unscorable, for the rows of RAMP kits (one child per kit)."""
        out: dict[int, Any] = {}
        by_dataset: dict[int, list[dict[str, Any]]] = {}
        for row in rows:
            by_dataset.setdefault(row["dataset_id"], []).append(row)
        for dataset_id, group in by_dataset.items():
            if self._kit_backoff.get(dataset_id, 0.0) > time.monotonic():
                continue
            todo = []
            for row in group:
                try:
                    todo.append({"id": row["id"], "fold": row["fold"],
                                 "pred": str(self._checked(row))})  # fmt: skip
                except Unscorable as exc:
                    out[row["id"]] = exc
            try:
                answer = self.scorer(group[0]["dataset_path"]).ask({"score": todo})
            except KitScoringFailed as exc:
                log.error("%s; its jobs stay predicted, tried again in %d s", exc, KIT_BACKOFF)
                self._kit_backoff[dataset_id] = time.monotonic() + KIT_BACKOFF
                continue
            for job in todo:
                got = answer["scores"].get(str(job["id"]))
                if isinstance(got, list):
                    out[job["id"]] = [(s, m, float(v)) for s, m, v in got]
                else:
                    out[job["id"]] = Unscorable((got or {}).get("error", "not scored"))
        return out

    def bag_kit(self, dataset_path: str, preds: dict[int, list[tuple[int, str]]]) -> dict[int, Any]:
        """Bagged scores of submissions of one RAMP kit, in one child: submission id ->
        values, or Unscorable. KitScoringFailed when the child fails as a whole."""
        answer = self.scorer(dataset_path).ask(
            {"bag": [{"id": ident, "preds": p} for ident, p in preds.items()]}
        )
        out: dict[int, Any] = {}
        for ident in preds:
            got = answer["bagged"].get(str(ident))
            out[ident] = ([(s, m, float(v)) for s, m, v in got] if isinstance(got, list)
                          else Unscorable((got or {}).get("error", "not bagged")))  # fmt: skip
        return out

    def _score(self, row: dict[str, Any]) -> list[tuple[str, str, float]]:
        truth = self.truth(row)
        # Headers, names and sizes are checked before any array is allocated: a small
        # file declaring a huge array, or a huge sparse one, is refused unread.
        preds = load_predictions(self._checked(row), truth)
        return score_fold(truth, row["fold"], preds, list(row["metrics"]))


def forget_older_attempts(folder: Path, job: int, attempt: int) -> None:
    """Files of the job's earlier attempts (an executor killed before it could report):
    once a later attempt is scored, nobody reads them."""
    for earlier in range(1, attempt):
        for ext in ("npz", "json", "log"):
            (folder / f"{job}.{earlier}.{ext}").unlink(missing_ok=True)
            for tmp in folder.glob(f".{job}.{earlier}.{ext}.*.tmp"):  # write_atomic's
                tmp.unlink(missing_ok=True)


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
