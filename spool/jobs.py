"""Fold jobs and executors in the database: the statements executors and the reaper use.

Every completing statement is fenced by (job, attempt, executor, state = 'running'):
a late executor whose job was given back and claimed again cannot overwrite the newer
attempt; its UPDATE touches no row and it learns so from the return value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from spool import db
from spool.errors import DatarunError, Deadlock

PRIORITIES = {"high": 0, "low": 1}
JOBS_CHANNEL = "datarun_jobs"
REASON_CHARS = 500
DETAIL_CHARS = 64 * 1024
DEADLOCK_RETRIES = 3  # claimers' row locks can cross; the server breaks the cycle


def clean_text(text: object, cap: int, *, one_line: bool = False) -> str:
    """Text a fold said, made safe to store and show: valid UTF-8 without NUL (which
    PostgreSQL refuses in text), control characters escaped, at most `cap` characters."""
    raw = text if isinstance(text, str) else repr(text)
    raw = raw.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates
    if one_line:
        raw = " ".join(raw.split())
    kept = "".join(c if c.isprintable() or c in "\n\t" else f"\\x{ord(c):02x}" for c in raw)
    return kept if len(kept) <= cap else kept[: cap - 1] + "…"


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    fold: int
    attempt: int
    queue: str
    submission_id: int
    submission_path: str
    submission: str
    team: str
    version: int
    dataset_id: int
    dataset: str
    dataset_path: str
    workflow: str
    task: str | None
    kind: str
    summary: dict[str, Any]
    target: str | None
    scores: list[str] | None  # a native dataset's scikit-learn scorers
    shared: bool = False  # its submission's folds may be short: they run in one child

    @property
    def key(self) -> str:
        """How this attempt's files are named in predictions/."""
        return f"{self.id}.{self.attempt}"


@dataclass(frozen=True)
class Outcome:
    """What an executor reports for one attempt."""

    error: str | None = None
    detail: str | None = None
    exit_status: str = "ok"
    prediction_path: str | None = None
    log_path: str | None = None
    train_seconds: float | None = None
    valid_seconds: float | None = None
    test_seconds: float | None = None
    cpu_seconds: float | None = None
    peak_rss_bytes: int | None = None


def priorities(queues: list[str]) -> list[int]:
    return sorted(PRIORITIES[q] for q in queues)


def register_executor(
    conn: db.Conn, *, host: str, pid: int, queues: list[str], workers: int, version: str,
    limits: dict[str, Any],
) -> int:  # fmt: skip
    row = db.fetch_one(
        conn,
        "executor_register",
        {
            "host": host,
            "pid": pid,
            "queues": queues,
            "workers": workers,
            "version": version,
            "limits": json.dumps(limits),
        },
    )
    assert row is not None
    return int(row["id"])


def heartbeat(conn: db.Conn, executor: int, workers: int) -> set[tuple[int, int]] | None:
    """Beat, saying how many workers are alive; returns the (job, attempt) pairs still
    ours, or None if we were declared lost."""
    rows = db.fetch_all(conn, "executor_heartbeat", {"executor": executor, "workers": workers})
    if rows:
        return {(r["id"], r["attempts"]) for r in rows}
    state = db.fetch_one(conn, "executor_alive", {"executor": executor})
    if state is None or state["state"] not in ("running", "stopping"):
        return None
    return set()


@dataclass(frozen=True)
class Sharing:
    """When a claimed job's submission has short folds, up to `folds` of its queued
    folds come with it (1: never), to run in turn in one warm child, which gives back
    those it has not started once a fold takes `short_seconds`. Short: every fold done
    took under `short_seconds`; none done yet: its id is in `short` (seen here), or its
    dataset says so (`[cv] short_folds`). Never when its id is in `long` (seen here)."""

    folds: int = 1
    short_seconds: float = 1.0
    short: frozenset[int] = frozenset()
    long: frozenset[int] = frozenset()


NO_SHARING = Sharing()


def _completion(job: ClaimedJob, outcome: Outcome) -> dict[str, Any]:
    failed = outcome.error is not None
    return {
        "id": job.id, "attempt": job.attempt,
        "error": clean_text(outcome.error, REASON_CHARS, one_line=True) if failed else None,
        "detail": clean_text(outcome.detail, DETAIL_CHARS)
        if failed and outcome.detail is not None else None,
        "prediction_path": outcome.prediction_path, "log_path": outcome.log_path,
        "train": outcome.train_seconds, "valid": outcome.valid_seconds,
        "test": outcome.test_seconds, "cpu": outcome.cpu_seconds,
        "peak": outcome.peak_rss_bytes,
        "exit_status": clean_text(outcome.exit_status, 100, one_line=True)
        if failed else outcome.exit_status,
    }  # fmt: skip


SETTLE_ARRAYS = {"ids": "id", "attempts": "attempt", "errors": "error", "details": "detail",
                 "prediction_paths": "prediction_path", "log_paths": "log_path",
                 "train": "train", "valid": "valid", "test": "test", "cpu": "cpu",
                 "peak": "peak", "exit_statuses": "exit_status"}  # fmt: skip


@dataclass(frozen=True)
class Settled:
    refused: list[ClaimedJob]  # completions fenced off: no longer ours
    claimed: list[ClaimedJob]


def settle(
    conn: db.Conn, executor: int, ended: list[tuple[ClaimedJob, Outcome]],
    queues: list[str], n: int, *, known: dict[int, dict[str, Any]] | None = None,
    sharing: Sharing = NO_SHARING,
) -> Settled:  # fmt: skip
    """Complete the attempts that `ended` (each fenced on its own attempt) and claim up
    to `n` next jobs (plus their short submissions' folds, see Sharing), in one
    statement: one round trip, one transaction. `known` caches what each submission's
    folds need to know."""
    rows = [_completion(job, outcome) for job, outcome in ended]
    params: dict[str, Any] = {k: [r[v] for r in rows] for k, v in SETTLE_ARRAYS.items()}
    params.update(executor=executor, priorities=priorities(queues), n=max(0, n),
                  share=max(1, sharing.folds), short_seconds=sharing.short_seconds,
                  short=sorted(sharing.short), long=sorted(sharing.long))  # fmt: skip
    if not rows and n <= 0:
        return Settled([], [])
    # the statement without sharing plans in 0.4 ms, with it 0.7: it is the common one
    name = "jobs_settle_shared" if sharing.folds > 1 and n > 0 else "jobs_settle"
    for retry in range(DEADLOCK_RETRIES, -1, -1):
        try:
            found = db.fetch_all(conn, name, params)
            break
        except Deadlock:  # rolled back whole (one statement in autocommit): run it again
            if retry == 0 or not conn.autocommit:
                raise
    completed = {r["id"] for r in found if r["kind"] == "completed"}
    refused = [job for job, _ in ended if job.id not in completed]
    cache = {} if known is None else known
    claimed = []
    for row in sorted((r for r in found if r["kind"] == "claimed"), key=lambda r: r["id"]):
        info = cache.get(row["submission_id"])
        if info is None:
            info = db.fetch_one(conn, "submission_info", {"submission_id": row["submission_id"]})
            assert info is not None
            cache[row["submission_id"]] = info
        del row["kind"]
        claimed.append(ClaimedJob(**{**info, **row}))
    return Settled(refused, claimed)


def claim(
    conn: db.Conn, executor: int, queues: list[str], n: int,
    known: dict[int, dict[str, Any]] | None = None, *, sharing: Sharing = NO_SHARING,
) -> list[ClaimedJob]:  # fmt: skip
    """Claim up to n jobs (and, with `sharing`, their short submissions' folds)."""
    return settle(conn, executor, [], queues, n, known=known, sharing=sharing).claimed


def complete(conn: db.Conn, job: ClaimedJob, executor: int, outcome: Outcome) -> bool:
    """Mark the attempt predicted or failed; False when it is no longer ours (fenced)."""
    return not settle(conn, executor, [(job, outcome)], [], 0).refused


def requeue(conn: db.Conn, job_id: int, attempt: int, executor: int, error: str) -> str | None:
    """The machine failed this attempt, not the fold: it counts, and the job runs again
    (or fails, saying why, after its last). Returns the job's new state, None if fenced."""
    params = {"id": job_id, "attempt": attempt, "executor": executor,
              "error": clean_text(error, REASON_CHARS - 40, one_line=True),
              "exit_status": "executor error"}  # fmt: skip
    with conn.transaction():
        row = db.fetch_one(conn, "job_requeue", params)
        if row is not None and row["state"] == "queued":
            db.execute(conn, "jobs_notify", {"queue": row["queue"]})
    return None if row is None else str(row["state"])


def hand_back(conn: db.Conn, job: ClaimedJob, executor: int) -> bool:
    params = {"id": job.id, "attempt": job.attempt, "executor": executor}
    with conn.transaction():
        done = db.execute(conn, "job_hand_back", params) == 1
        if done:
            db.execute(conn, "jobs_notify", {"queue": job.queue})
    return done


def hand_back_orphan(conn: db.Conn, job_id: int, attempt: int, executor: int) -> str | None:
    """A job running in the database but nowhere here (its completion lost, a worker
    gone): its attempt counts, so a fold that keeps breaking the executor side fails."""
    reason = "its executor lost track of the fold (a completion lost, or a worker that died)"
    return requeue(conn, job_id, attempt, executor, reason)


def stopping(conn: db.Conn, executor: int) -> None:
    db.execute(conn, "executor_stopping", {"executor": executor})


def stopped(conn: db.Conn, executor: int) -> None:
    db.execute(conn, "executor_stopped", {"executor": executor})


def reap(conn: db.Conn, lease_seconds: float) -> list[dict[str, Any]]:
    """Declare silent executors lost and give their jobs back (or fail them)."""
    with conn.transaction():
        db.fetch_all(conn, "executors_mark_lost", {"lease_seconds": lease_seconds})
        rows = db.fetch_all(conn, "jobs_reap", {})  # {}: the %% in its format() apply
        for queue in sorted({r["queue"] for r in rows if r["state"] == "queued"}):
            db.execute(conn, "jobs_notify", {"queue": queue})
    return rows


def retry(
    conn: db.Conn, *, job: int | None = None, submission: int | None = None,
    dataset: str | None = None,
) -> list[int]:  # fmt: skip
    """Queue failed jobs again with fresh attempts; returns their ids."""
    with conn.transaction():
        if job is not None:
            rows = db.fetch_all(conn, "retry_job", {"id": job})
        elif submission is not None:
            rows = db.fetch_all(conn, "retry_submission", {"id": submission})
        else:
            rows = db.fetch_all(conn, "retry_dataset", {"dataset": dataset})
        for queue in sorted({r["queue"] for r in rows}):
            db.execute(conn, "jobs_notify", {"queue": queue})
    return [r["id"] for r in rows]


def prioritize(conn: db.Conn, submission: int, queue: str) -> list[int]:
    """Move a submission to another queue (organizers' call): its waiting folds take a
    turn there. Returns the jobs moved."""
    if queue not in PRIORITIES:
        raise DatarunError(f"no queue {queue!r}: expected one of {', '.join(PRIORITIES)}")
    with conn.transaction():
        params = {"id": submission, "queue": queue, "priority": PRIORITIES[queue]}
        rows = db.fetch_all(conn, "submission_prioritize", params)
        if rows:
            db.execute(conn, "jobs_notify", {"queue": queue})
    return [r["id"] for r in rows]


def cancel(conn: db.Conn, submission: int) -> dict[str, int]:
    """Cancel a submission: queued jobs never run, running ones stop at their executor's
    next heartbeat (it no longer finds them among its jobs)."""
    rows = db.fetch_all(conn, "cancel_submission", {"id": submission})
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return counts


def find_submission(conn: db.Conn, spec: str) -> int | None:
    """A submission by id, or as dataset/label (e.g. iris/ada.logreg.v2)."""
    if spec.isdigit():
        return int(spec)
    dataset, _, tag = spec.partition("/")
    row = db.fetch_one(conn, "submission_by_label", {"dataset": dataset, "label": tag})
    return None if row is None else int(row["id"])
