"""The sweeper's work: score predicted jobs, reap silent executors.

One pass scores a batch of predicted jobs: each prediction file is checked (the
attempt in its name and metadata here; then, in the dataset's scoring child
(`watcher.scorers`), its size, members and array headers before any data is read, and
its values: finite, and a classifier's probabilities in [0, 1] with rows summing to 1)
and scored with the dataset's metrics; then, in one transaction, the scores are inserted
(once: a key per job, split and metric) and the jobs marked scored, fenced on their
attempt, so a file swept twice changes nothing. A file that cannot be scored fails its
job with the reason.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spool import db, jobs
from spool.layout import Spool
from watcher.scorers import Dataset, ScorerBroken, Scorers, Unscorable, Values

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    scored: int
    failed: int


class Sweeper:
    def __init__(
        self, spool: Spool, database: db.Database, batch: int = 500, timeout: float = 300.0
    ) -> None:
        self.spool = spool
        self.database = database
        self.batch = batch
        self.scorers = Scorers(spool.root, spool.predictions, timeout)

    def close(self) -> None:
        self.scorers.close()

    def sweep_once(self) -> SweepResult:
        self.scorers.stop_idle()
        with self.database.connection() as conn:
            rows = db.fetch_all(conn, "jobs_to_score", {"n": self.batch})
        scores: list[dict[str, Any]] = []
        scored: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        values = self._score(rows)
        for row in rows:
            got = values.get(row["id"])
            if got is None:
                continue  # its dataset's scoring child cannot start now: it stays predicted
            if isinstance(got, Unscorable):
                failed.append({"id": row["id"], "attempt": row["attempt"],
                               "error": f"predictions refused: {got}", "detail": None})  # fmt: skip
                continue
            scores += [{"job_id": row["id"], "split": split, "metric": metric, "value": value}
                       for split, metric, value in got]  # fmt: skip
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

    def _score(self, rows: list[dict[str, Any]]) -> dict[int, Values | Unscorable]:
        """job id -> values or Unscorable; one request to each dataset's scoring child.
        A dataset whose child cannot start has no entry: its jobs stay predicted."""
        out: dict[int, Values | Unscorable] = {}
        by_dataset: dict[int, list[dict[str, Any]]] = {}
        for row in rows:
            by_dataset.setdefault(row["dataset_id"], []).append(row)
        for group in by_dataset.values():
            dataset = Dataset.of(group[0])
            if self.scorers.waiting(dataset):
                continue
            todo = []
            for row in group:
                try:
                    todo.append({"id": row["id"], "fold": row["fold"],
                                 "pred": str(self._checked(row))})  # fmt: skip
                except Unscorable as exc:
                    out[row["id"]] = exc
            try:
                out.update(self.scorers.score(dataset, todo))
            except ScorerBroken:
                for job in todo:
                    out.pop(job["id"], None)
        return out


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
