"""What happens to one drop, from the moment it is taken to its answer.

A drop is first renamed out of `incoming/` into `.staging/<token>/drop/` (atomic: of two
watchers, one wins), then unpacked and checked, registered in one transaction, and
finally renamed into `store/`. Every step can be repeated: a master killed at any point
finds the token at its next start and finishes the work, so a drop is registered once
or answered once, never lost. Every answer is a file: the store entry and
`results/<dataset>/<label>/status.json`, or `rejected/<stamp>_<name>/REJECTED.txt`, or
`waiting/<dataset>/<stamp>_<name>/WAITING.txt`.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from datarun.errors import BundleError, BundleWaiting, DatabaseError
from spool import bundles, db, registry
from spool.bundles import Limits
from spool.layout import Spool, label, stamp, write_atomic
from spool.manifests import (
    DATASET_MANIFEST,
    NAME_PATTERN,
    SUBMISSION_MANIFEST,
    parse_dataset_manifest,
    parse_submission_manifest,
)
from spool.prepare import prepare_in_child
from spool.workflows import check_submission

log = logging.getLogger(__name__)

Kind = Literal["dataset", "submission"]
Result = Literal["registered", "duplicate", "rejected", "waiting", "gone", "retry"]


@dataclass(frozen=True)
class IntakeConfig:
    dataset_limits: Limits = field(default_factory=lambda: Limits(max_bytes=2 * 2**30))
    submission_limits: Limits = field(
        default_factory=lambda: Limits(max_bytes=50 * 2**20, max_files=2_000)
    )
    prepare_timeout: float = 300.0
    wait_for_dataset: float = 7 * 24 * 3600.0
    max_attempts: int = 3
    max_failures: int = 3  # internal errors on one drop before it is rejected


@dataclass(frozen=True)
class Outcome:
    result: Result
    name: str
    kind: Kind
    detail: str = ""
    submission_id: int | None = None
    dataset_id: int | None = None


_tokens = itertools.count()


class Intake:
    def __init__(self, spool: Spool, conn: db.Conn, config: IntakeConfig) -> None:
        self.spool = spool
        self.conn = conn
        self.config = config

    # ---- entry points -----------------------------------------------------------

    def take(self, path: Path, kind: Kind, dataset_hint: str | None = None) -> Outcome:
        """Claim a drop by renaming it into staging, then process it."""
        token = self.spool.staging / f"{stamp()}-{os.getpid()}-{next(_tokens)}"
        (token / "drop").mkdir(parents=True)
        origin = {
            "kind": kind, "hint": dataset_hint, "name": path.name, "failures": 0,
            "source": _relative(path, self.spool.root), "taken_at": _now_iso(),
        }  # fmt: skip
        write_atomic(token / "origin.json", json.dumps(origin))
        try:
            path.rename(token / "drop" / path.name)
        except FileNotFoundError:
            bundles.remove(token)  # gone meanwhile (another watcher, or its owner)
            return Outcome("gone", path.name, kind)
        path.with_name(path.name + bundles.MARKER).unlink(missing_ok=True)
        inner_marker = token / "drop" / path.name / bundles.MARKER
        if inner_marker.is_file() and not inner_marker.is_symlink():
            inner_marker.unlink()
        return self.process(token)

    def process(self, token: Path) -> Outcome:
        """(Re)process a staging token; safe to call again after a crash at any point."""
        origin = json.loads((token / "origin.json").read_text(encoding="utf-8"))
        kind: Kind = origin["kind"]
        name: str = origin["name"]
        drop = token / "drop" / name
        kept = token / "store" / ("bundle" if kind == "dataset" else "")
        if not drop.exists() and kept.is_dir():
            kept.rename(drop)  # moved before a crash: put it back and start over
        for stale in (token / "unpacked", token / "store"):
            bundles.remove(stale)
        if not drop.exists() and not drop.is_symlink():
            bundles.remove(token)
            return Outcome("gone", name, kind)
        try:
            if kind == "dataset":
                return self._dataset(token, drop, origin)
            return self._submission(token, drop, origin)
        except BundleError as exc:
            return self.reject(token, origin, str(exc))
        except BundleWaiting as exc:
            return self._wait(token, origin, str(exc))
        except DatabaseError:
            raise  # the database is away: keep the token, the daemon retries
        except Exception as exc:
            origin["failures"] += 1
            log.exception("processing the drop %s failed (%d)", name, origin["failures"])
            if origin["failures"] >= self.config.max_failures:
                return self.reject(
                    token, origin,
                    f"datarun could not process this drop: {type(exc).__name__}: {exc}. "
                    "This is datarun's fault, not yours: the admin finds the details in the "
                    "master's log. You may drop it again.",
                )  # fmt: skip
            write_atomic(token / "origin.json", json.dumps(origin))
            return Outcome("retry", name, kind, str(exc))

    # ---- datasets ---------------------------------------------------------------

    def _dataset(self, token: Path, drop: Path, origin: dict[str, Any]) -> Outcome:
        root = self._unpack(token, drop, self.config.dataset_limits)
        manifest_file = root / DATASET_MANIFEST
        if not manifest_file.is_file():
            hint = (
                " (a RAMP kit? its problem.py is not supported yet)"
                if (root / "problem.py").is_file()
                else ""
            )
            raise BundleError(f"{DATASET_MANIFEST}: missing; a dataset bundle needs one{hint}")
        manifest = parse_dataset_manifest(manifest_file.read_bytes())
        for rel in filter(None, (manifest.data.train, manifest.data.test, manifest.cv.folds_file)):
            if not (root / rel).is_file():
                raise BundleError(f"{DATASET_MANIFEST}: data: file {rel!r} is not in the bundle")
        digest = bundles.content_hash(root)
        existing = registry.dataset_by_name(self.conn, manifest.name)
        if existing and existing.content_hash != digest:
            raise BundleError(
                f"{DATASET_MANIFEST}: name: a dataset named {manifest.name!r} is already "
                "registered with other content; datasets are immutable, so give this one a new name"
            )
        if existing and self._stored(existing.store_path):
            return self._duplicate(token, origin, f"dataset {existing.name!r}", existing.id)
        store = token / "store"
        summary = prepare_in_child(root, store / "prepared", self.config.prepare_timeout)
        root.rename(store / "bundle")
        outcome = registry.register_dataset(
            self.conn, self.spool, manifest=manifest, content_hash=digest, summary=summary,
            drop_name=origin["name"],
        )  # fmt: skip
        self._finish(token, outcome.store_path)
        (self.spool.incoming_submissions / manifest.name).mkdir(exist_ok=True)
        (self.spool.results / manifest.name).mkdir(parents=True, exist_ok=True)
        log.info("registered dataset %s (%d folds)", manifest.name, summary["n_folds"])
        return Outcome("registered", origin["name"], "dataset", manifest.name,
                       dataset_id=outcome.id)  # fmt: skip

    # ---- submissions ------------------------------------------------------------

    def _submission(self, token: Path, drop: Path, origin: dict[str, Any]) -> Outcome:
        root = self._unpack(token, drop, self.config.submission_limits)
        manifest = parse_submission_manifest((root / SUBMISSION_MANIFEST).read_bytes()) \
            if (root / SUBMISSION_MANIFEST).is_file() else None  # fmt: skip
        hint = origin["hint"]
        dataset_name = manifest.dataset if manifest and manifest.dataset else hint
        if manifest and manifest.dataset and hint and manifest.dataset != hint:
            raise BundleError(
                f"{SUBMISSION_MANIFEST}: dataset: says {manifest.dataset!r}, but the bundle was "
                f"dropped into incoming/submissions/{hint}/; make them agree"
            )
        if not dataset_name:
            raise BundleError(
                "no dataset named: drop the bundle into incoming/submissions/<dataset>/, or set "
                f"'dataset' in {SUBMISSION_MANIFEST}"
            )
        name = manifest.name if manifest and manifest.name else bundles.stem(origin["name"])
        if not _valid_name(name):
            raise BundleError(
                f"the name {name!r} cannot name a submission: use up to 64 letters, digits, "
                f"'-' and '_', starting with a letter or digit (rename the bundle, or set "
                f"'name' in {SUBMISSION_MANIFEST})"
            )
        dataset = registry.dataset_by_name(self.conn, dataset_name)
        if dataset is None:
            raise BundleWaiting(dataset_name)
        check_submission(root, dataset.workflow, dataset.name)
        team = manifest.team if manifest else ""
        queue = manifest.priority if manifest else "low"
        digest = bundles.content_hash(root)
        dup = db.fetch_one(
            self.conn,
            "submission_by_content",
            {"dataset_id": dataset.id, "team": team, "content_hash": digest},
        )
        if dup is not None and self._stored(dup["store_path"]):
            return self._duplicate(
                token, origin,
                f"submission {label(dup['name'], dup['team'], dup['version'])} of "
                f"{dataset.name!r}; its results are in results/{dataset.name}/"
                f"{label(dup['name'], dup['team'], dup['version'])}/",
                dup["id"],
            )  # fmt: skip
        root.rename(token / "store")
        outcome = registry.register_submission(
            self.conn, self.spool, dataset, name=name, team=team, queue=queue,
            content_hash=digest, manifest=manifest.model_dump() if manifest else {},
            drop_name=origin["name"], max_attempts=self.config.max_attempts,
        )  # fmt: skip
        self._finish(token, outcome.store_path)
        tag = label(name, team, outcome.version)
        write_atomic(
            self.spool.submission_results(dataset.name, tag) / "status.json",
            json.dumps({
                "submission": tag, "dataset": dataset.name, "id": outcome.id,
                "state": "queued", "folds": dataset.n_folds, "queue": queue,
                "registered_at": _now_iso(), "dropped_as": origin["source"],
            }, indent=2) + "\n",
        )  # fmt: skip
        log.info("registered %s of %s", tag, dataset.name)
        return Outcome("registered", origin["name"], "submission", tag,
                       submission_id=outcome.id, dataset_id=dataset.id)  # fmt: skip

    # ---- shared steps -----------------------------------------------------------

    def _unpack(self, token: Path, drop: Path, limits: Limits) -> Path:
        if drop.is_symlink():
            raise BundleError(f"{drop.name}: is a link; drop the folder or archive itself")
        if drop.is_dir():
            bundles.check_folder(drop, limits)
            return drop
        if bundles.archive_kind(drop.name) is None:
            raise BundleError(f"{drop.name}: not a bundle; drop a folder, a .zip or a .tar.gz")
        if drop.stat().st_size > limits.max_bytes:
            raise BundleError(f"{drop.name}: the archive is larger than the cap")
        return bundles.extract(drop, token / "unpacked", limits)

    def _stored(self, store_path: str) -> bool:
        return bool(store_path) and self.spool.absolute(store_path).is_dir()

    def _finish(self, token: Path, store_path: str) -> None:
        target = self.spool.absolute(store_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # a crash after the rename, before the token went away
            bundles.remove(token / "store")
        else:
            bundles.freeze(token / "store")
            (token / "store").rename(target)
        bundles.remove(token)

    def _duplicate(self, token: Path, origin: dict[str, Any], what: str, ident: int) -> Outcome:
        self.reject(
            token, origin,
            f"not run again: the same content is already registered as {what}",
            title="NOT RUN AGAIN (duplicate)", event="drop.duplicate",
        )  # fmt: skip
        return Outcome("duplicate", origin["name"], origin["kind"], what, submission_id=ident)

    def reject(
        self, token: Path, origin: dict[str, Any], reason: str,
        title: str = "REJECTED", event: str = "drop.rejected",
    ) -> Outcome:  # fmt: skip
        """Move the whole drop to rejected/ with REJECTED.txt saying why and what to do."""
        name = origin["name"]
        dest = self.spool.rejected / f"{stamp()}_{name}"
        dest.mkdir(parents=True)
        source = token / "drop" / name
        if source.exists() or source.is_symlink():
            source.rename(dest / name)
        lines = [f"  - {line}" for line in reason.splitlines() if line.strip()]
        text = "\n".join([
            f"{title}: {name}",
            f"dropped as: {origin['source']}",
            f"answered at: {_now_iso()}",
            "",
            "What is wrong:" if title == "REJECTED" else "Why:",
            *lines,
            "",
            "What to do: fix the problems above, then drop the corrected bundle again into "
            "incoming/. This folder is kept for you; datarun does not look at it again."
            if title == "REJECTED" else "Nothing: the earlier copy is registered.",
        ]) + "\n"  # fmt: skip
        write_atomic(dest / "REJECTED.txt", text)
        try:
            registry.record_rejection(self.conn, name, reason, kind=event)
        except DatabaseError:
            log.warning("could not record the rejection of %s in the database", name)
        bundles.remove(token)
        log.info("%s %s: %s", title.lower(), name, reason.splitlines()[0])
        return Outcome("rejected" if title == "REJECTED" else "duplicate", name, origin["kind"],
                       reason)  # fmt: skip

    def _wait(self, token: Path, origin: dict[str, Any], dataset: str) -> Outcome:
        name = origin["name"]
        dest = self.spool.waiting / dataset / f"{stamp()}_{name}"
        dest.mkdir(parents=True)
        (token / "drop" / name).rename(dest / name)
        deadline = datetime.now(UTC) + timedelta(seconds=self.config.wait_for_dataset)
        state = {**origin, "dataset": dataset, "deadline": deadline.isoformat()}
        write_atomic(dest / ".waiting.json", json.dumps(state))
        write_atomic(dest / "WAITING.txt", (
            f"WAITING: {name}\n"
            f"This submission is for dataset {dataset!r}, which is not registered yet.\n"
            f"It will be taken as soon as that dataset arrives, and rejected if it has not\n"
            f"arrived by {deadline.isoformat(timespec='seconds')}.\n"
        ))  # fmt: skip
        bundles.remove(token)
        log.info("submission %s waits for dataset %s", name, dataset)
        return Outcome("waiting", name, "submission", dataset)

    def revisit_waiting(self) -> list[Outcome]:
        """Take waiting submissions whose dataset arrived; reject those past deadline."""
        outcomes = []
        for entry in sorted(self.spool.waiting.glob("*/*")):
            try:
                state = json.loads((entry / ".waiting.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # being written, or not ours
            drop = entry / state["name"]
            if not drop.exists() and not drop.is_symlink():
                bundles.remove(entry)  # taken before a crash; the token finishes it
                continue
            if registry.dataset_by_name(self.conn, state["dataset"]) is not None:
                outcome = self.take(drop, "submission", state["hint"])
                if outcome.result != "gone":
                    bundles.remove(entry)
                outcomes.append(outcome)
            elif datetime.fromisoformat(state["deadline"]) < datetime.now(UTC):
                token = self.spool.staging / f"{stamp()}-{os.getpid()}-{next(_tokens)}"
                (token / "drop").mkdir(parents=True)
                drop.rename(token / "drop" / state["name"])
                bundles.remove(entry)
                outcomes.append(self.reject(
                    token, state,
                    f"dataset {state['dataset']!r} never arrived (waited until "
                    f"{state['deadline'][:19]} UTC); check its name, or drop the dataset first",
                ))  # fmt: skip
        return outcomes


def _valid_name(name: str) -> bool:
    return re.fullmatch(NAME_PATTERN, name) is not None


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
