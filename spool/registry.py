"""Registration of datasets and submissions: each in one transaction, committed last.

The intake takes an id first (`next_id`), stores the bundle under it, then commits
the row. A submission's row, its version, one queued job per fold, an event and the
NOTIFY that wakes executors commit together, or not at all: an executor never sees a
job whose files are not in place. Each row remembers the staging token that made it,
so a master restarted after a crash recognises its own work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from spool import db
from spool.errors import BundleError, Conflict
from spool.jobs import PRIORITIES
from spool.manifests import RULES, DatasetManifest, Rules


@dataclass(frozen=True)
class DatasetRow:
    id: int
    name: str
    kind: str
    task: str | None
    workflow: str
    metrics: list[str]
    n_folds: int
    content_hash: str
    store_path: str
    intake_token: str | None
    summary: dict[str, Any]
    opens_at: datetime | None = None
    closes_at: datetime | None = None
    submissions_per_day: int | None = None
    min_minutes_between: int | None = None

    def rules(self) -> Rules:
        return Rules(**{key: getattr(self, key) for key in RULES})


@dataclass(frozen=True)
class Owner:
    """Who dropped a submission, and what the intake told them on accepting it."""

    uid: int | None = None
    name: str | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SubmissionRow:
    id: int
    name: str
    team: str
    version: int
    store_path: str
    intake_token: str | None


def dataset_by_name(conn: db.Conn, name: str) -> DatasetRow | None:
    rows = db.fetch_as(conn, DatasetRow, "dataset_by_name", {"name": name})
    return rows[0] if rows else None


def submission_by_content(
    conn: db.Conn, dataset_id: int, team: str, content_hash: str
) -> SubmissionRow | None:
    params = {"dataset_id": dataset_id, "team": team, "content_hash": content_hash}
    rows = db.fetch_as(conn, SubmissionRow, "submission_by_content", params)
    return rows[0] if rows else None


def next_id(conn: db.Conn, table: str) -> int:
    row = db.fetch_one(conn, "next_id", {"table": table})
    assert row is not None
    return int(row["id"])


def _event(conn: db.Conn, kind: str, message: str, **ids: Any) -> None:
    db.execute(
        conn,
        "event_insert",
        {
            "kind": kind,
            "dataset_id": ids.get("dataset_id"),
            "submission_id": ids.get("submission_id"),
            "message": message,
            "detail": json.dumps(ids.get("detail", {})),
        },
    )
    payload = json.dumps({"kind": kind, **{k: v for k, v in ids.items() if k != "detail"}})
    db.execute(conn, "event_notify", {"payload": payload})


def register_dataset(
    conn: db.Conn,
    *,
    id: int,
    store_path: str,
    manifest: DatasetManifest,
    content_hash: str,
    summary: dict[str, Any],
    drop_name: str,
    token: str,
) -> None:
    try:
        with conn.transaction():
            db.execute(
                conn,
                "dataset_insert",
                {
                    "id": id,
                    "name": manifest.name,
                    "kind": "native",
                    "task": manifest.task,
                    "workflow": manifest.workflow,
                    "metrics": manifest.scores,
                    "n_folds": summary["n_folds"],
                    "content_hash": content_hash,
                    "store_path": store_path,
                    "manifest": manifest.model_dump_json(),
                    "summary": json.dumps(summary),
                    "drop_name": drop_name,
                    "intake_token": token,
                    "lower_is_better": False,
                    **manifest.rules().model_dump(),
                },
            )
            message = f"dataset {manifest.name} registered from {drop_name}"
            _event(conn, "dataset.registered", message, dataset_id=id)
    except Conflict as exc:
        if exc.constraint == "datasets_content_hash_key":
            raise BundleError("the same data is already registered under another name") from None
        if exc.constraint == "datasets_name_key":
            raise BundleError(
                f"dataset.toml: name: a dataset named {manifest.name!r} is already registered"
            ) from None
        raise


def register_kit(
    conn: db.Conn,
    *,
    id: int,
    store_path: str,
    name: str,
    summary: dict[str, Any],
    content_hash: str,
    drop_name: str,
    token: str,
) -> None:
    """A RAMP kit: its score types are the metrics, the first one ranks."""
    scores = summary["scores"]
    try:
        with conn.transaction():
            db.execute(conn, "dataset_insert", {
                "id": id, "name": name, "kind": "ramp", "task": None,
                "workflow": f"ramp:{summary['workflow']}",
                "metrics": [s["name"] for s in scores], "n_folds": summary["n_folds"],
                "content_hash": content_hash, "store_path": store_path,
                "manifest": json.dumps({"title": summary.get("title", "")}),
                "summary": json.dumps(summary), "drop_name": drop_name,
                "intake_token": token, "lower_is_better": scores[0]["lower_is_better"],
                **Rules().model_dump(),  # a kit has no dataset.toml: `datarun dataset set`
            })  # fmt: skip
            _event(conn, "dataset.registered", f"RAMP kit {name} registered from {drop_name}",
                   dataset_id=id)  # fmt: skip
    except Conflict as exc:
        if exc.constraint == "datasets_content_hash_key":
            raise BundleError("the same kit is already registered under another name") from None
        if exc.constraint == "datasets_name_key":
            raise BundleError(f"a dataset named {name!r} is already registered") from None
        raise


def create_jobs(conn: db.Conn, submission_id: int, *, team: str, queue: str,
                max_attempts: int, n_folds: int) -> None:  # fmt: skip
    """One job per fold, queued at the submission's turn among its team's (fair share)."""
    db.execute(conn, "jobs_create", {
        "submission_id": submission_id, "queue": queue, "priority": PRIORITIES[queue],
        "team": team, "max_attempts": max_attempts, "n_folds": n_folds,
    })  # fmt: skip


def register_submission(
    conn: db.Conn,
    dataset: DatasetRow,
    *,
    id: int,
    store_path: str,
    name: str,
    team: str,
    queue: str,
    content_hash: str,
    manifest: dict[str, Any],
    drop_name: str,
    max_attempts: int,
    token: str,
    owner: Owner = Owner(),
) -> int:
    """Commit the submission and its fold jobs; returns its version."""
    with conn.transaction():
        row = db.fetch_one(
            conn,
            "submission_insert",
            {
                "id": id,
                "dataset_id": dataset.id,
                "name": name,
                "team": team,
                "queue": queue,
                "content_hash": content_hash,
                "store_path": store_path,
                "manifest": json.dumps(manifest),
                "drop_name": drop_name,
                "intake_token": token,
                "owner_uid": owner.uid,
                "owner": owner.name,
                "notes": list(owner.notes),
            },
        )
        assert row is not None
        create_jobs(conn, id, team=team, queue=queue, max_attempts=max_attempts,
                    n_folds=dataset.n_folds)  # fmt: skip
        db.execute(conn, "jobs_notify", {"queue": queue})
        _event(
            conn,
            "submission.registered",
            f"submission {team + '/' if team else ''}{name} v{row['version']} of "
            f"{dataset.name}: {dataset.n_folds} fold jobs queued ({queue})",
            dataset_id=dataset.id,
            submission_id=id,
        )
    return int(row["version"])


def record_answer(conn: db.Conn, drop: str, reason: str, kind: str) -> None:
    _event(conn, kind, f"{drop}: {reason.splitlines()[0]}", detail={"reason": reason})
