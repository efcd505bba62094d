"""What the admin's read commands show (status, leaderboard, logs) and `submit`.

Data first (plain dicts, which `--json` prints as they are), then its rendering with
rich for people.
"""

from __future__ import annotations

import math
import os
import shutil
import tarfile
import zipfile
from datetime import datetime
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

from rich.console import Group
from rich.table import Table

from spool import bundles, db, leaderboards, rampkit
from spool.errors import DatarunError
from spool.layout import Spool
from spool.manifests import DATASET_MANIFEST

# what makes a bundle a dataset, for the watcher too: its manifest, or a RAMP kit's problem
DATASET_MARKERS = (DATASET_MANIFEST, rampkit.PROBLEM)


def _plain_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Decimal):
        return float(value)
    return value


def _plain(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as JSON can hold them: times as text, NaN as null, decimals as floats."""
    return [{key: _plain_value(value) for key, value in row.items()} for row in rows]


# `datarun status`: its sections and their columns, each named as in the text output and
# in `--json` alike: name -> (query, {column: the query's field}).
STATUS: dict[str, tuple[str, dict[str, str]]] = {
    "mode": ("status_mode", {
        "mode": "mode", "teams": "teams", "participants": "participants",
        "organizers": "organizers", "meaning": "meaning"}),
    "datasets": ("status_datasets", {
        "name": "name", "task": "task", "workflow": "workflow", "metrics": "metrics",
        "folds": "n_folds", "submissions": "submissions", "opens_at": "opens_at",
        "closes_at": "closes_at", "per_day": "submissions_per_day",
        "minutes_apart": "min_minutes_between", "revealed": "revealed"}),
    "submissions": ("status_progress", {
        "dataset": "dataset", "label": "label", "state": "state", "folds": "folds",
        "queued": "queued", "running": "running", "predicted": "predicted",
        "scored": "scored", "failed": "failed"}),
    "queue": ("status_queue", {
        "dataset": "dataset", "queue": "queue", "queued": "queued", "running": "running",
        "predicted": "predicted", "scored": "scored", "failed": "failed",
        "cancelled": "cancelled"}),
    "executors": ("status_executors", {
        "id": "id", "host": "host", "pid": "pid", "state": "state", "queues": "queues",
        "workers": "workers", "running": "running", "heartbeat_age": "heartbeat_age_s",
        "version": "version"}),
}  # fmt: skip
AGES = {"heartbeat_age"}  # in seconds; printed as `1.5 s`


def status(conn: db.Conn) -> dict[str, list[dict[str, Any]]]:
    """Each section's rows, keyed by the columns the text output shows."""
    out = {}
    for section, (query, columns) in STATUS.items():
        rows = _plain(db.fetch_all(conn, query))
        out[section] = [{name: row.get(field) for name, field in columns.items()} for row in rows]
    return out


def _table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[_age(row.get(c)) if c in AGES else _cell(row.get(c)) for c in columns])
    if not rows:
        table.add_row(*(["—"] + [""] * (len(columns) - 1)))
    return table


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _age(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.1f} s"


def render_status(data: dict[str, list[dict[str, Any]]]) -> Group:
    return Group(*(_table(name, data[name], list(cols)) for name, (_, cols) in STATUS.items()))


def leaderboard(conn: db.Conn, dataset: str, *, private: bool = False) -> list[dict[str, Any]]:
    """The public leaderboard's rows (without the test columns while the test scores are
    private), or with `private` every submission, every score and each team's pick."""
    phase = leaderboards.phase(conn, dataset)
    if phase is None:
        raise DatarunError(f"no dataset named {dataset!r} (see `datarun status`)")
    if private:
        return _plain(leaderboards.private(conn, dataset))
    rows = leaderboards.public(conn, dataset)
    if not phase.test_public:  # not even as empty keys: there is no test score to show
        rows = [{k: v for k, v in r.items() if k not in leaderboards.TEST_COLUMNS} for r in rows]
    return _plain(rows)


def leaderboard_phase(conn: db.Conn, dataset: str) -> leaderboards.Phase:
    return leaderboards.phase(conn, dataset) or leaderboards.OPEN


def _ranking(metric: str, direction: str, phase: leaderboards.Phase, private: bool) -> str:
    """What a leaderboard's title says of its ranking."""
    better = f"{direction} is better; no rank: failed or not yet scored"
    if private:
        return (f"private: every submission, ranked by mean validation {metric} ({better}); "
                f"final: each team's pick by its mean test {metric}")  # fmt: skip
    if phase.challenge and phase.revealed:
        return (f"each team's pick (best mean validation {metric}), ranked by its mean "
                f"test {metric} ({better})")  # fmt: skip
    if phase.challenge:
        return (f"each team's best submission, ranked by mean validation {metric} ({better}); "
                "test scores are published at close")  # fmt: skip
    return f"ranked by mean validation {metric} ({better})"


def render_leaderboard(
    dataset: str,
    rows: list[dict[str, Any]],
    phase: leaderboards.Phase = leaderboards.OPEN,
    *,
    private: bool = False,
) -> Table:
    metric = rows[0]["metric"] if rows else "score"
    direction = "lower" if rows and rows[0].get("lower_is_better") else "greater"
    table = Table(title=f"{dataset} — {_ranking(metric, direction, phase, private)}",
                  title_justify="left")  # fmt: skip
    test = private or phase.test_public
    mean = private or (phase.challenge and phase.revealed)  # the test mean ranks them
    columns = ["state", "folds", f"valid {metric}"] + (["test mean"] if mean else [])
    columns += ["bagged valid"] + (["bagged test"] if test else [])
    columns += ["pick", "final rank"] if private else []
    for column in ["rank", "submission", *columns]:
        table.add_column(column, no_wrap=column == "submission")
    for r in rows:
        valid = "" if r["valid_mean"] is None else f"{r['valid_mean']:.4f} ± {r['valid_std']:.4f}"
        rank = "" if r["rank"] is None else str(r["rank"])  # failed or not yet scored
        cells = [rank, r["label"], r["state"], f"{r['scored']}/{r['folds']}", valid]
        cells += [_cell(r["test_mean"])] if mean else []
        cells += [_cell(r["bagged_valid"])] + ([_cell(r["bagged_test"])] if test else [])
        cells += ["pick" if r["pick"] else "", _cell(r["final_rank"])] if private else []
        table.add_row(*cells)
    return table


def logs(conn: db.Conn, spool: Spool, *, job: int | None, submission: int | None) -> str:
    rows = db.fetch_all(conn, "job_logs", {"job": job, "submission": submission})
    if not rows:
        raise DatarunError("no such job or submission (see `datarun status`)")
    tries = db.fetch_all(conn, "attempts_of_jobs", {"jobs": [r["id"] for r in rows]})
    parts = []
    for r in rows:
        reason = f": {r['error']}" if r["error"] else ""
        header = (
            f"== {r['dataset']}/{r['label']} fold {r['fold']} "
            f"(job {r['id']}, attempt {r['attempts']}, {r['state']}{reason})"
        )
        mine = [t for t in tries if t["job_id"] == r["id"]]
        if mine:
            header += "\n" + "\n".join(_attempt_line(n, t) for n, t in enumerate(mine, 1))
        path = spool.absolute(r["log_path"]) if r["log_path"] else None
        if path is not None and path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
        else:
            text = "(no log yet)\n"
        # a log cut short (killed fold, capped log) may lack its last line break
        parts.append(f"{header}\n{text}" + ("" if text.endswith("\n") else "\n"))
    return "\n".join(parts)


def _attempt_line(n: int, t: dict[str, Any]) -> str:
    """`try 2: attempt 1 on host pid 12, failed (exit 1) after 0.4 s: ValueError: ...`"""
    where = f" on {t['host']} pid {t['pid']}" if t["host"] is not None else ""
    took = ""
    if t["finished_at"] is not None:
        took = f" after {(t['finished_at'] - t['claimed_at']).total_seconds():.1f} s"
    status = f" ({t['exit_status']})" if t["exit_status"] else ""
    reason = f": {t['reason']}" if t["reason"] else ""
    return f"   try {n}: attempt {t['attempt']}{where}, {t['outcome']}{status}{took}{reason}"


def submit(spool: Spool, source: Path, dataset: str | None) -> Path:
    """Copy a bundle into the spool under a hidden name, then rename it in: the watcher
    never sees half of it."""
    if not source.exists():
        raise DatarunError(f"{source} does not exist")
    is_dataset = is_dataset_bundle(source)
    if is_dataset and dataset:
        raise DatarunError(
            "--dataset names the dataset of a submission; this is a dataset bundle "
            f"(it holds {' or '.join(DATASET_MARKERS)})"
        )
    if is_dataset:
        folder = spool.incoming_datasets
    else:
        folder = spool.incoming_submissions / dataset if dataset else spool.incoming_submissions
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    if target.exists():
        raise DatarunError(f"{target} is already waiting to be taken; rename your bundle")
    hidden = folder / f".{source.name}.{os.getpid()}.partial"
    try:
        if source.is_dir():
            shutil.copytree(source, hidden, symlinks=True)
        elif bundles.archive_kind(source.name):
            shutil.copyfile(source, hidden)
        else:
            raise DatarunError(f"{source} is not a folder, a .zip or a .tar.gz")
        hidden.rename(target)
    except OSError as exc:
        bundles.remove(hidden)
        raise DatarunError(f"cannot copy {source} into the spool: {exc}") from exc
    return target


def is_dataset_bundle(source: Path) -> bool:
    """A folder or archive whose root (an archive's lone top folder, if any) holds
    dataset.toml or a RAMP kit's problem.py, as the watcher decides."""
    if source.is_dir():
        return any((source / name).is_file() for name in DATASET_MARKERS)
    try:
        names = _archive_files(source)
    except (OSError, zipfile.BadZipFile, tarfile.TarError):
        return False  # the watcher will say what is wrong with it
    parts = [PurePosixPath(n).parts for n in names if PurePosixPath(n).parts]
    tops = {p[0] for p in parts}
    lone = next(iter(tops)) if len(tops) == 1 and all(len(p) > 1 for p in parts) else None
    root = [p[1:] if lone else p for p in parts]
    return any(p == (name,) for p in root for name in DATASET_MARKERS)


def _archive_files(source: Path) -> list[str]:
    kind = bundles.archive_kind(source.name)
    if kind == "zip":
        with zipfile.ZipFile(source) as zf:
            return [i.filename for i in zf.infolist() if not i.is_dir()]
    if kind == "tar":
        with tarfile.open(source) as tf:
            return [m.name for m in tf.getmembers() if m.isfile()]
    return []
