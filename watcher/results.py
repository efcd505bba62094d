"""Results files, where users look: results/<dataset>/<label>/ and the leaderboard.

Refreshed only for submissions whose jobs changed since their files were last written
(`jobs.updated_at` against `submissions.results_at`). Every file is written under a
temporary name and renamed, so a reader never sees half of one.

Means and standard deviations are computed once per submission (`watcher.summary`),
stored in `score_summaries`, and every file reads them back from there, as the views
and `datarun leaderboard` do: one value everywhere, to the last digit.

A master killed mid-write: a submission's files are all renamed into place before its
`results_at` commits, so an interrupted one is still "changed" and is written again.
The leaderboard is written after that commit, so nothing in the database remembers it:
a leaderboard is owed (in memory) from the moment its submissions change until it is
written, and a master that gains the lead owes every dataset's once (`recover`), and
removes the temporaries a killed one left behind.

    results/<dataset>/leaderboard.csv       ranked by the first metric's mean valid score
    results/<dataset>/leaderboard.html      the same, self-contained, with per-fold charts
                                            (in a challenge: `watcher.boards`, public)
    results/<dataset>/private/leaderboard.* every submission, every score, the picks
    results/<dataset>/folds.json            the folds, as rows of the dataset's train file
    results/<dataset>/<label>/status.json   state of each fold, errors, mean +- std, bagged
    results/<dataset>/<label>/scores.csv    fold x split x metric
    results/<dataset>/<label>/fold_<k>.log  each fold's output
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from spool import db, leaderboards
from spool.layout import (
    TEMPORARY_GRACE,
    Spool,
    label,
    remove_stale_temporaries,
    write_atomic,
    write_changed,
)
from watcher import boards, summary
from watcher.scorers import Dataset, ScoringFailed, Unscorable, Values

if TYPE_CHECKING:
    from watcher.sweeper import Sweeper

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running", "predicted")
TEMPORARIES_EVERY = 600.0  # seconds between looks for temporaries of killed writers


def _state(jobs: list[dict[str, Any]], cancelled: bool) -> str:
    states = {j["state"] for j in jobs}
    if cancelled:
        return "cancelled"
    if states & set(ACTIVE):
        return "running" if states - {"queued"} else "queued"
    return "failed" if "failed" in states else "scored"


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


class Results:
    def __init__(self, spool: Spool, database: db.Database, sweeper: Sweeper) -> None:
        self.spool = spool
        self.database = database
        self.sweeper = sweeper  # its scoring children
        self._bags: dict[int, Values | Unscorable] = {}
        self._owed: set[str] = set()  # datasets whose leaderboard may be behind
        self._next_sweep = 0.0  # time.monotonic() of the next look for stale temporaries

    def recover(self) -> None:
        """On gaining the lead: another master may have been killed while writing. Owe
        every dataset's leaderboard, and look for its temporaries at once."""
        with self.database.connection() as conn:
            names = {str(r["name"]) for r in db.fetch_all(conn, "dataset_names")}
        self._owed |= names
        self._next_sweep = 0.0
        log.info("results: every leaderboard is rewritten once (%d datasets)", len(names))

    def refresh_once(self, limit: int = 200) -> int:
        """Rewrite the files of every submission that changed, then the leaderboards
        owed; returns how many submissions."""
        self._sweep_temporaries()
        with self.database.connection() as conn:
            changed = db.fetch_all(conn, "submissions_changed", {"n": limit})
        self._bags = self._bag_all([row["id"] for row in changed])
        for row in changed:
            try:
                self._owed.add(self.write_submission(row["id"], row["changed_at"]))
            except Exception:
                log.exception("results of submission %s could not be written", row["id"])
        # A dataset closed or revealed (or made private again: the first team, a close
        # moved later) since its files were written: every file of it follows, no restart.
        due = boards.revealed_due(self.database)
        for dataset, rows in due.items():
            log.info("results of %s: written again, the test scores' visibility changed",
                     dataset)  # fmt: skip
            for row in rows:
                try:
                    self.write_submission(row["id"], row["changed_at"])
                except Exception:
                    log.exception("results of submission %s could not be written", row["id"])
        self._owed.update(due)
        for dataset in sorted(self._owed):
            try:
                self.write_leaderboard(dataset)
            except Exception:  # e.g. disk full: still owed, written at a later refresh
                log.exception("the leaderboard of %s could not be written", dataset)
            else:
                self._owed.discard(dataset)
        return len(changed)

    def _sweep_temporaries(self) -> None:
        """Remove what killed writers left in results/; soon again while some are too
        young to tell from a write in progress, else every TEMPORARIES_EVERY seconds."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        try:
            removed, kept = remove_stale_temporaries(self.spool.results)
        except OSError as exc:
            log.warning("cannot look for stale temporaries in %s: %s", self.spool.results, exc)
            removed, kept = 0, 1
        if removed:
            log.info("removed %d temporary files left by a killed writer in results/", removed)
        self._next_sweep = now + (TEMPORARY_GRACE if kept else TEMPORARIES_EVERY)

    def write_submission(self, ident: int, changed_at: datetime) -> str:
        with self.database.connection() as conn:
            sub = db.fetch_one(conn, "submission_for_results", {"id": ident})
            assert sub is not None
            jobs = db.fetch_all(conn, "submission_jobs", {"id": ident})
            scores = db.fetch_all(conn, "submission_fold_scores", {"id": ident})
            tries = db.fetch_all(conn, "submission_attempts", {"id": ident})
            phase = leaderboards.phase(conn, sub["dataset"]) or leaderboards.OPEN
        tag = label(sub["name"], sub["team"], sub["version"])
        folder = self.spool.submission_results(sub["dataset"], tag)
        state = _state(jobs, sub["cancelled_at"] is not None)
        bag = self._bagged(sub, jobs) if state == "scored" else []
        with self.database.transaction() as conn:  # computed once, here; read back by all
            db.execute(conn, "summary_clear", {"id": ident})
            db.execute_many(
                conn,
                "summary_insert",
                [{"submission_id": ident, **row} for row in summary.summarize(scores)],
            )
            stored = db.fetch_all(conn, "summary_of", {"id": ident})
        means: dict[str, dict[str, float]] = defaultdict(dict)
        stds: dict[str, dict[str, float]] = defaultdict(dict)
        # The team reads these files: in a challenge, no test score before the reveal,
        # or it could tune on the test set (the database keeps them, for organizers).
        shown = {"train", "valid", "test"} if phase.test_public else {"train", "valid"}
        scores_shown = [s for s in scores if s["split"] in shown]
        for row in stored:
            if row["split"] not in shown:
                continue
            means[row["split"]][row["metric"]] = row["mean"]
            stds[row["split"]][row["metric"]] = row["std"]
        status = {
            "submission": tag, "dataset": sub["dataset"], "id": ident, "team": sub["team"],
            "state": state, "queue": sub["queue"], "metrics": list(sub["metrics"]),
            "dropped_by": sub["owner"], "notes": list(sub["notes"]),
            "registered_at": sub["created_at"].isoformat(),
            "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "folds": [_fold(job, scores_shown, tries) for job in jobs],
            "mean": dict(means), "std": dict(stds), "test_scores_public": phase.test_public,
            "bagged": {split: {m: _number(v) for s, m, v in bag if s == split}
                       for split in ("valid", "test") if split in shown} if bag else None,
        }  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        for job in jobs:
            source = self.spool.absolute(job["log_path"]) if job["log_path"] else None
            if source is not None and source.is_file():  # capped by the executor
                write_changed(folder / f"fold_{job['fold']}.log", source.read_bytes())
        write_changed(folder / "scores.csv", _scores_csv(scores_shown))
        write_atomic(folder / "status.json", json.dumps(status, indent=2, default=str) + "\n")
        with self.database.transaction() as conn:
            db.execute_many(conn, "bagged_upsert", [
                {"submission_id": ident, "split": s, "metric": m, "value": v,
                 "n_folds": len(jobs)} for s, m, v in bag if not math.isnan(v)
            ])  # fmt: skip
            db.execute(conn, "results_written", {"id": ident, "changed_at": changed_at})
        return str(sub["dataset"])

    def _bagged(self, sub: dict[str, Any], jobs: list[dict[str, Any]]) -> Values:
        got = self._bags.pop(sub["id"], None)
        if got is None:
            preds = {sub["id"]: [(int(j["fold"]), str(self.spool.absolute(j["prediction_path"])))
                                 for j in jobs]}  # fmt: skip
            try:
                got = self.sweeper.scorers.bag(Dataset.of(sub), preds)[sub["id"]]
            except ScoringFailed as exc:
                got = Unscorable(str(exc))
        if isinstance(got, Unscorable):
            log.error("bagged scores of submission %s: %s", sub["id"], got)
            return []
        return got

    def _bag_all(self, ids: list[int]) -> dict[int, Values | Unscorable]:
        """Bagged scores of the finished submissions among `ids`: one request to each
        dataset's scoring child for all of them."""
        with self.database.connection() as conn:
            rows = db.fetch_all(conn, "submissions_to_bag", {"ids": ids})
        by_dataset: dict[str, dict[int, list[tuple[int, str]]]] = defaultdict(dict)
        datasets: dict[str, Dataset] = {}
        for r in rows:
            datasets[r["dataset_path"]] = Dataset.of(r)
            path = str(self.spool.absolute(r["prediction_path"]))
            by_dataset[r["dataset_path"]].setdefault(r["id"], []).append((int(r["fold"]), path))
        out: dict[int, Values | Unscorable] = {}
        for key, preds in by_dataset.items():
            try:
                out.update(self.sweeper.scorers.bag(datasets[key], preds))
            except ScoringFailed as exc:
                out.update(dict.fromkeys(preds, Unscorable(str(exc))))
        return out

    def write_leaderboard(self, dataset: str) -> None:
        """The dataset's public and private leaderboard files (`watcher.boards`)."""
        with self.database.connection() as conn:
            found = db.fetch_one(conn, "dataset_for_folds", {"name": dataset})
        if found is not None:
            try:
                self.publish_folds(found)
            except Exception:  # the leaderboard is still written; tried again next time
                log.exception("the folds of %s could not be published", dataset)
        boards.write(self.spool, self.database, dataset, found)

    def publish_folds(self, dataset: dict[str, Any]) -> None:
        """results/<dataset>/folds.json and the `folds` view, once per dataset: the folds
        as row numbers of the train file the organizer dropped, so that anyone holding
        that file can recompute a fold's score with scikit-learn alone."""
        path = self.spool.results / dataset["name"] / "folds.json"
        if dataset["stored"] and path.is_file():
            return
        stored = self.sweeper.scorers.folds(
            Dataset.of(
                {**dataset, "dataset_id": dataset["id"], "dataset_path": dataset["store_path"]}
            )
        )
        document = folds_document(stored, dataset)
        if document is None:
            log.warning("the folds of %s cannot be published: prepared before datarun "
                        "recorded the rows of its test split", dataset["name"])  # fmt: skip
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(document, separators=(",", ":")) + "\n")
        with self.database.transaction() as conn:
            db.execute_many(conn, "folds_insert", [
                {"dataset_id": dataset["id"], "fold": f["fold"], "train": f["train"],
                 "valid": f["valid"]} for f in document["folds"]
            ])  # fmt: skip


def folds_document(arrays: dict[str, list[int]], dataset: dict[str, Any]) -> dict[str, Any] | None:
    """What results/<dataset>/folds.json holds (README, "Folds anyone can reproduce"), from
    the stored folds (folds.npz's arrays, read by the dataset's scoring child)."""
    manifest, summary = dataset["manifest"], dataset["summary"]
    n_folds = sum(1 for key in arrays if key.startswith("valid_"))
    n_train = int(summary.get("n_train") or 0)
    out: dict[str, Any] = {"dataset": dataset["name"], "kind": dataset["kind"]}
    if dataset["kind"] == "ramp":
        rows = list(range(n_train))
        out.update(rows_of="the kit's problem.get_train_data(), in its order",
                   n_rows=n_train)  # fmt: skip
    else:
        split = manifest["data"].get("test_fraction") is not None
        if "rows" in arrays:
            rows = arrays["rows"]
        elif not split:
            rows = list(range(n_train))
        else:
            return None
        n_rows = n_train + (int(summary.get("n_test") or 0) if split else 0)
        out.update(rows_of=manifest["data"]["train"], n_rows=n_rows,
                   target=manifest["target"], columns=summary.get("columns"),
                   cv=manifest["cv"], test=manifest["data"].get("test"),
                   test_fraction=manifest["data"].get("test_fraction"),
                   test_seed=manifest["data"].get("test_seed") if split else None,
                   test_rows=sorted(set(range(n_rows)) - set(rows))
                   if split else [])  # fmt: skip
    out.update(scores=list(dataset["metrics"]), lower_is_better=dataset["lower_is_better"])
    out["folds"] = [
        {"fold": k, "train": [rows[i] for i in arrays[f"train_{k}"]],
         "valid": [rows[i] for i in arrays[f"valid_{k}"]]}
        for k in range(n_folds)
    ]  # fmt: skip
    return out


def _cell(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else repr(float(value))


def _fold(
    job: dict[str, Any], scores: list[dict[str, Any]], tries: list[dict[str, Any]]
) -> dict[str, Any]:
    mine = [s for s in scores if s["fold"] == job["fold"]]
    return {
        "fold": job["fold"], "state": job["state"], "attempts": job["attempts"],
        "error": job["error"], "traceback": job["error_detail"],
        "log": f"fold_{job['fold']}.log" if job["log_path"] else None,
        "train_seconds": job["train_seconds"], "valid_seconds": job["valid_seconds"],
        "test_seconds": job["test_seconds"], "cpu_seconds": job["cpu_seconds"],
        "peak_rss_bytes": job["peak_rss_bytes"],
        "scores": {split: {s["metric"]: _number(s["value"]) for s in mine if s["split"] == split}
                   for split in ("train", "valid", "test")},
        "history": [_attempt(t) for t in tries if t["fold"] == job["fold"]],
    }  # fmt: skip


def _attempt(row: dict[str, Any]) -> dict[str, Any]:
    """One attempt of a fold, oldest first: a retried or re-run fold keeps the reason
    of each earlier attempt here, while its `error` is the last one's."""
    where = f"{row['host']} pid {row['pid']}" if row["host"] is not None else None
    return {
        "attempt": row["attempt"], "outcome": row["outcome"], "reason": row["reason"],
        "exit_status": row["exit_status"], "executor": where,
        "claimed_at": row["claimed_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
        "cpu_seconds": row["cpu_seconds"], "peak_rss_bytes": row["peak_rss_bytes"],
    }  # fmt: skip


def _scores_csv(scores: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["fold", "split", "metric", "value"])
    for s in scores:
        writer.writerow([s["fold"], s["split"], s["metric"], _cell(s["value"])])
    return buffer.getvalue()
