"""Registration of datasets and submissions: each in one transaction.

A submission's row, its version, one queued job per fold, an event and the NOTIFY
that wakes executors commit together, or not at all. The same content dropped again
by the same team for the same dataset is recognised, not registered twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from datarun.errors import BundleError, Conflict
from spool import db
from spool.layout import Spool
from spool.manifests import DatasetManifest


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


@dataclass(frozen=True)
class Registered:
    id: int
    version: int
    n_jobs: int
    store_path: str


@dataclass(frozen=True)
class Duplicate:
    """The same content is registered already; nothing new is run."""

    id: int
    name: str
    team: str
    version: int
    store_path: str


def dataset_by_name(conn: db.Conn, name: str) -> DatasetRow | None:
    rows = db.fetch_as(conn, DatasetRow, "dataset_by_name", {"name": name})
    return rows[0] if rows else None


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
    spool: Spool,
    *,
    manifest: DatasetManifest,
    content_hash: str,
    summary: dict[str, Any],
    drop_name: str,
) -> Registered | Duplicate:
    existing = dataset_by_name(conn, manifest.name)
    if existing is not None:
        if existing.content_hash == content_hash:
            return Duplicate(existing.id, existing.name, "", 1, existing.store_path)
        raise BundleError(
            f"dataset.toml: name: a dataset named {manifest.name!r} is already registered with "
            "other content; datasets are immutable, so give this one a new name"
        )
    try:
        with conn.transaction():
            row = db.fetch_one(
                conn,
                "dataset_insert",
                {
                    "name": manifest.name,
                    "kind": "native",
                    "task": manifest.task,
                    "workflow": manifest.workflow,
                    "metrics": manifest.scores,
                    "n_folds": summary["n_folds"],
                    "content_hash": content_hash,
                    "manifest": manifest.model_dump_json(),
                    "summary": json.dumps(summary),
                    "drop_name": drop_name,
                },
            )
            assert row is not None
            store_path = spool.dataset_store(row["id"])
            db.execute(conn, "dataset_set_store", {"id": row["id"], "store_path": store_path})
            _event(
                conn,
                "dataset.registered",
                f"dataset {manifest.name} registered from {drop_name}",
                dataset_id=row["id"],
            )
    except Conflict as exc:
        if exc.constraint == "datasets_content_hash_key":
            raise BundleError(
                "the same data is already registered under another dataset name"
            ) from None
        raise
    return Registered(row["id"], 1, 0, store_path)


def register_submission(
    conn: db.Conn,
    spool: Spool,
    dataset: DatasetRow,
    *,
    name: str,
    team: str,
    queue: str,
    content_hash: str,
    manifest: dict[str, Any],
    drop_name: str,
    max_attempts: int,
) -> Registered | Duplicate:
    with conn.transaction():
        dup = db.fetch_one(
            conn,
            "submission_by_content",
            {"dataset_id": dataset.id, "team": team, "content_hash": content_hash},
        )
        if dup is not None:
            return Duplicate(dup["id"], dup["name"], dup["team"], dup["version"], dup["store_path"])
        row = db.fetch_one(
            conn,
            "submission_insert",
            {
                "dataset_id": dataset.id,
                "name": name,
                "team": team,
                "queue": queue,
                "content_hash": content_hash,
                "manifest": json.dumps(manifest),
                "drop_name": drop_name,
            },
        )
        assert row is not None
        store_path = spool.submission_store(row["id"])
        db.execute(conn, "submission_set_store", {"id": row["id"], "store_path": store_path})
        db.execute(
            conn,
            "jobs_create",
            {
                "submission_id": row["id"],
                "queue": queue,
                "max_attempts": max_attempts,
                "n_folds": dataset.n_folds,
            },
        )
        db.execute(conn, "jobs_notify", {"queue": queue})
        _event(
            conn,
            "submission.registered",
            f"submission {team + '/' if team else ''}{name} v{row['version']} of "
            f"{dataset.name}: {dataset.n_folds} fold jobs queued ({queue})",
            dataset_id=dataset.id,
            submission_id=row["id"],
        )
    return Registered(row["id"], row["version"], dataset.n_folds, store_path)


def record_rejection(conn: db.Conn, drop: str, reason: str, kind: str = "drop.rejected") -> None:
    _event(conn, kind, f"{drop}: {reason.splitlines()[0]}", detail={"reason": reason})
