"""What happens to one drop, from the moment it is taken to its answer.

    .staging/<token>/origin.json   what the drop is, where it came from, attempts
    .staging/<token>/drop/<name>   the drop as the user made it, untouched
    .staging/<token>/work/         our own copy: bundle/ (checked, hashed), prepared/
    .staging/<token>/answer/       an answer being delivered (a note beside the drop)

A token appears complete (made as `.new-<token>`, then renamed) before the drop is
renamed into it: that rename is the claim, and of two watchers one wins. The bundle
is stored under an id taken beforehand, then the row commits, then the user is
answered, then the token goes. An answer that leaves the drop is built inside the
token and moved out with one rename. So a master killed at any instruction finds,
at its next start, a token it can finish: nothing is lost, nothing registered twice
(a row remembers the token that made it), and every drop gets one answer.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from spool import bundles, rampkit, registry
from spool.bundles import Limits, shown
from spool.errors import BundleError, BundleWaiting, DatabaseUnavailable, DatarunError
from spool.layout import Spool, escaped, label, stamp, write_atomic
from spool.manifests import (
    DATASET_MANIFEST,
    MAX_MANIFEST_BYTES,
    NAME_PATTERN,
    SUBMISSION_MANIFEST,
    parse_dataset_manifest,
    parse_submission_manifest,
)
from spool.prepare import LABELS_FILE, prepare_in_child
from spool.workflows import check_submission

log = logging.getLogger(__name__)

Kind = Literal["dataset", "submission"]
Result = Literal["registered", "duplicate", "rejected", "waiting", "gone", "retry", "skipped"]
TRANSIENT = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.ENOMEM}
MAX_STARTS = 5  # a drop that killed the master this often is set aside
STORING = "storing"  # in a token: the store folder it is being stored into


class NotLeader(DatarunError):
    """Another watcher holds the lead now: this one must not answer anything."""


class Transient(DatarunError):
    """The machine, not the drop, is at fault (disk full, read-only): retry later."""


@dataclass(frozen=True)
class IntakeConfig:
    dataset_limits: Limits = field(default_factory=lambda: Limits(max_bytes=2 * 2**30))
    submission_limits: Limits = field(
        default_factory=lambda: Limits(max_bytes=50 * 2**20, max_files=2_000)
    )
    prepare_timeout: float = 300.0
    prepare_memory_mb: int | None = 4096  # beyond what the preparing child starts with
    prepare_file_mb: int | None = 4096  # the largest file preparation may write
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
    def __init__(
        self, spool: Spool, conn: Any, config: IntakeConfig,
        still_leader: Callable[[], bool] = lambda: True,
    ) -> None:  # fmt: skip
        self.spool = spool
        self.conn = conn
        self.config = config
        self.still_leader = still_leader

    # ---- claiming ---------------------------------------------------------------

    def take(
        self, path: Path, kind: Kind, hint: str | None = None, *, reject_reason: str = ""
    ) -> Outcome:
        """Claim a drop by renaming it into a new token, then process it."""
        path.with_name(path.name + bundles.MARKER).unlink(missing_ok=True)
        name = f"{stamp()}-{os.getpid()}-{next(_tokens)}"
        fresh = self.spool.staging / f".new-{name}"
        (fresh / "drop").mkdir(parents=True)
        origin = {
            "kind": kind, "hint": hint, "name": path.name, "starts": 0, "failures": 0,
            "source": _relative(path, self.spool.root), "taken_at": _now(),
            "reject_reason": reject_reason,
        }  # fmt: skip
        write_atomic(fresh / "origin.json", json.dumps(origin))
        token = self.spool.staging / name
        fresh.rename(token)
        try:
            path.rename(token / "drop" / path.name)
        except FileNotFoundError:
            bundles.remove(token)  # gone meanwhile (another watcher, or its owner)
            return Outcome("gone", path.name, kind)
        except PermissionError:
            bundles.remove(token)
            log.warning("cannot take %s: datarun needs write permission on %s", path, path.parent)
            return Outcome("skipped", path.name, kind, "permission denied")
        return self.process(token)

    # ---- processing -------------------------------------------------------------

    def process(self, token: Path) -> Outcome:
        """(Re)process a token; safe to call again after a crash at any point."""
        if (token / "answer").is_dir():
            return self._deliver(token)
        origin = _read_origin(token)
        building = token / ".answer"
        if building.is_dir():  # killed while building an answer: take the drop back
            notes = {".destination", ".waiting.json", "REJECTED.txt", "WAITING.txt"}
            for entry in building.iterdir():
                if (origin and entry.name == origin["name"]) or (
                    origin is None and entry.name not in notes
                ):
                    (token / "drop").mkdir(exist_ok=True)
                    entry.rename(token / "drop" / entry.name)
            bundles.remove(building)
        drops = sorted((token / "drop").iterdir()) if (token / "drop").is_dir() else []
        if origin is None:
            if drops:
                origin = {"kind": "submission", "hint": None, "name": drops[0].name,
                          "source": "incoming/?", "starts": 0, "failures": 0}  # fmt: skip
                return self._answer_rejected(
                    token, origin, "datarun lost the record of this drop while processing "
                    "it; you may drop it again",
                )  # fmt: skip
            bundles.remove(token)
            return Outcome("gone", token.name, "submission")
        kind: Kind = origin["kind"]
        if not drops:
            bundles.remove(token)
            return Outcome("gone", origin["name"], kind)
        if not self.still_leader():
            raise NotLeader("another watcher leads now")
        origin["starts"] = int(origin.get("starts", 0)) + 1
        write_atomic(token / "origin.json", json.dumps(origin))
        bundles.remove(token / "work")
        if origin.get("reject_reason"):
            return self._answer_rejected(token, origin, origin["reject_reason"])
        if origin["starts"] > MAX_STARTS:
            return self._answer_rejected(
                token, origin, f"datarun stopped {MAX_STARTS} times while processing this drop; "
                "it is set aside for the admin, who finds the cause in the master's log",
            )  # fmt: skip
        try:
            if kind == "dataset":
                return self._dataset(token, origin)
            return self._submission(token, origin)
        except BundleError as exc:
            return self._answer_rejected(token, origin, str(exc))
        except BundleWaiting as exc:
            return self._answer_waiting(token, origin, str(exc))
        except (DatabaseUnavailable, NotLeader):
            raise  # keep the token; the daemon retries
        except OSError as exc:
            if exc.errno in TRANSIENT:
                origin["starts"] = 0  # we saw it end: not a crash of ours
                write_atomic(token / "origin.json", json.dumps(origin))
                raise Transient(f"cannot process {escaped(origin['name'])}: {exc}") from exc
            return self._failed(token, origin, exc)
        except Exception as exc:
            return self._failed(token, origin, exc)

    def _failed(self, token: Path, origin: dict[str, Any], exc: Exception) -> Outcome:
        origin["failures"] = int(origin.get("failures", 0)) + 1
        origin["starts"] = 0  # counted as a failure, not as a crash
        log.error("processing the drop %s failed (%d of %d): %s", escaped(origin["name"]),
                  origin["failures"], self.config.max_failures, exc, exc_info=exc)  # fmt: skip
        if origin["failures"] >= self.config.max_failures:
            return self._answer_rejected(
                token, origin,
                f"datarun could not process this drop: {type(exc).__name__}: {exc}. This is "
                "datarun's fault, not yours: the admin finds the details in the master's "
                "log. You may drop it again.",
            )  # fmt: skip
        write_atomic(token / "origin.json", json.dumps(origin))
        return Outcome("retry", origin["name"], origin["kind"], str(exc))

    def _unpack(self, token: Path, origin: dict[str, Any], limits: Limits) -> Path:
        """Our own copy of the drop in work/bundle, checked on the way in."""
        drop = token / "drop" / origin["name"]
        work = token / "work"
        if drop.is_symlink():
            raise BundleError(f"{escaped(drop.name)}: is a link; drop the folder or archive itself")
        if drop.is_dir():
            return bundles.copy_folder(drop, work / "bundle", limits)
        if bundles.archive_kind(drop.name) is None:
            raise BundleError(
                f"{escaped(drop.name)}: not a bundle; drop a folder, a .zip or a .tar.gz"
            )
        root = bundles.extract(drop, work / "unpacked", limits)
        root.rename(work / "bundle")
        bundles.remove(work / "unpacked")
        return work / "bundle"

    # ---- datasets ---------------------------------------------------------------

    def _dataset(self, token: Path, origin: dict[str, Any]) -> Outcome:
        root = self._unpack(token, origin, self.config.dataset_limits)
        manifest_file = root / DATASET_MANIFEST
        if not manifest_file.is_file() and rampkit.is_kit(root):
            return self._kit(token, origin, root)
        if not manifest_file.is_file():
            raise BundleError(
                f"{DATASET_MANIFEST}: missing; a dataset bundle needs one (or, for a RAMP "
                "kit, a problem.py)"
            )
        manifest = parse_dataset_manifest(_read_small(manifest_file, MAX_MANIFEST_BYTES))
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
        if existing and existing.intake_token != token.name:
            return self._answer_duplicate(token, origin, f"dataset {existing.name!r}")
        if existing is None:
            summary = prepare_in_child(root, token / "work" / "prepared",
                                       self.config.prepare_timeout,
                                       memory_mb=self.config.prepare_memory_mb,
                                       file_mb=self.config.prepare_file_mb)  # fmt: skip
            ident = registry.next_id(self.conn, "datasets")
            store_path = self._storing(token, self.spool.dataset_store(ident))
            # Folds read the prepared features, never these: the raw files hold the test
            # rows' targets too.
            target = self._store(token / "work", store_path,
                                 private=("bundle", f"prepared/{LABELS_FILE}"))  # fmt: skip
            try:
                registry.register_dataset(
                    self.conn, id=ident, store_path=store_path, manifest=manifest,
                    content_hash=digest, summary=summary, drop_name=escaped(origin["name"]),
                    token=token.name,
                )  # fmt: skip
            except BaseException:
                bundles.remove(target)  # never committed: nothing refers to it
                raise
            log.info("registered dataset %s (%d folds)", manifest.name, summary["n_folds"])
        else:
            ident = existing.id  # committed before a crash: finish answering
        (self.spool.incoming_submissions / manifest.name).mkdir(exist_ok=True)
        (self.spool.results / manifest.name).mkdir(parents=True, exist_ok=True)
        self._forget(token)
        return Outcome("registered", origin["name"], "dataset", manifest.name, dataset_id=ident)

    def _kit(self, token: Path, origin: dict[str, Any], root: Path) -> Outcome:
        """A RAMP kit: registered under its folder's name, its submissions dropped in."""
        name = bundles.stem(origin["name"])
        if re.fullmatch(NAME_PATTERN, name) is None:
            raise BundleError(
                f"'{escaped(name)}' cannot name a dataset: a RAMP kit is named after its "
                "folder; rename the folder with up to 64 letters (a-z, A-Z), digits, '-' and "
                "'_', starting with a letter or digit"
            )
        digest = bundles.content_hash(root)
        existing = registry.dataset_by_name(self.conn, name)
        if existing and existing.content_hash != digest:
            raise BundleError(
                f"a dataset named {name!r} is already registered with other content; datasets "
                "are immutable, so give this kit's folder a new name"
            )
        if existing and existing.intake_token != token.name:
            return self._answer_duplicate(token, origin, f"dataset {existing.name!r}")
        if existing is None:
            summary = prepare_in_child(root, token / "work" / "prepared",
                                       self.config.prepare_timeout, "spool.rampkit",
                                       memory_mb=self.config.prepare_memory_mb,
                                       file_mb=self.config.prepare_file_mb)  # fmt: skip
            ident = registry.next_id(self.conn, "datasets")
            store_path = self._storing(token, self.spool.dataset_store(ident))
            target = self._store(token / "work", store_path)
            try:
                registry.register_kit(
                    self.conn, id=ident, store_path=store_path, name=name, summary=summary,
                    content_hash=digest, drop_name=escaped(origin["name"]), token=token.name,
                )  # fmt: skip
            except BaseException:
                bundles.remove(target)
                raise
            log.info("registered RAMP kit %s (%d folds)", name, summary["n_folds"])
        else:
            ident, store_path = existing.id, existing.store_path
        inbox = self.spool.incoming_submissions / name
        inbox.mkdir(exist_ok=True)
        (self.spool.results / name).mkdir(parents=True, exist_ok=True)
        self._drop_kit_submissions(self.spool.absolute(store_path) / "bundle", inbox)
        self._forget(token)
        return Outcome("registered", origin["name"], "dataset", name, dataset_id=ident)

    def _drop_kit_submissions(self, kit: Path, inbox: Path) -> None:
        """Each folder of the kit's submissions/, dropped as users drop (copy, then rename).
        Done again after a crash, a copy is answered as a duplicate, never run twice."""
        folders = sorted(p for p in (kit / "submissions").glob("*") if p.is_dir()
                         and not p.name.startswith((".", "_")))  # fmt: skip
        for folder in folders:
            target = inbox / folder.name
            if target.exists():
                log.warning("%s is already in %s; the kit's own is not dropped", folder.name,
                            inbox)  # fmt: skip
                continue
            tmp = inbox / f".{folder.name}.from-kit"
            bundles.remove(tmp)
            shutil.copytree(folder, tmp, symlinks=True, ignore=shutil.ignore_patterns(
                "training_output", "__pycache__"))  # fmt: skip
            for path in [tmp, *tmp.rglob("*")]:  # the store is read-only; the copy is theirs
                if not path.is_symlink():
                    path.chmod(0o755 if path.is_dir() else 0o644)
            tmp.rename(target)

    # ---- submissions ------------------------------------------------------------

    def _submission(self, token: Path, origin: dict[str, Any]) -> Outcome:
        root = self._unpack(token, origin, self.config.submission_limits)
        manifest_file = root / SUBMISSION_MANIFEST
        manifest = parse_submission_manifest(_read_small(manifest_file, MAX_MANIFEST_BYTES)) \
            if manifest_file.is_file() else None  # fmt: skip
        hint = origin["hint"]
        if hint and re.fullmatch(NAME_PATTERN, hint) is None:  # no dataset can have it
            raise BundleError(
                f"incoming/submissions/{escaped(hint)}/ is no dataset's folder: a dataset's "
                "name is up to 64 letters (a-z, A-Z), digits, '-' and '_'; drop the bundle "
                "into incoming/submissions/<dataset>/"
            )
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
        if re.fullmatch(NAME_PATTERN, name) is None:
            raise BundleError(
                f"the name '{escaped(name)}' cannot name a submission: use up to 64 letters "
                "(a-z, A-Z), digits, '-' and '_', starting with a letter or digit (rename the "
                f"bundle, or set 'name' in {SUBMISSION_MANIFEST})"
            )
        dataset = registry.dataset_by_name(self.conn, dataset_name)
        if dataset is None:
            raise BundleWaiting(dataset_name)
        check_submission(root, dataset.workflow, dataset.name, dataset.summary.get("files"))
        team = manifest.team if manifest else ""
        queue = manifest.priority if manifest else "low"
        digest = bundles.content_hash(root)
        found = registry.submission_by_content(self.conn, dataset.id, team, digest)
        if found and found.intake_token != token.name:
            tag = label(found.name, found.team, found.version)
            return self._answer_duplicate(
                token, origin, f"submission {tag} of {dataset.name!r}; its results are in "
                f"results/{dataset.name}/{tag}/",
            )  # fmt: skip
        if found is None:
            ident = registry.next_id(self.conn, "submissions")
            store_path = self._storing(token, self.spool.submission_store(ident))
            target = self._store(root, store_path)
            try:
                version = registry.register_submission(
                    self.conn, dataset, id=ident, store_path=store_path, name=name, team=team,
                    queue=queue, content_hash=digest, drop_name=escaped(origin["name"]),
                    manifest=manifest.model_dump() if manifest else {},
                    max_attempts=self.config.max_attempts, token=token.name,
                )  # fmt: skip
            except BaseException:
                bundles.remove(target)
                raise
        else:
            ident, version = found.id, found.version  # committed before a crash
        tag = label(name, team, version)
        status = {
            "submission": tag, "dataset": dataset.name, "id": ident, "state": "queued",
            "folds": dataset.n_folds, "queue": queue, "registered_at": _now(),
            "dropped_as": escaped(origin["source"]),
        }  # fmt: skip
        write_atomic(self.spool.submission_results(dataset.name, tag) / "status.json",
                     json.dumps(status, indent=2) + "\n")  # fmt: skip
        self._forget(token)
        log.info("registered %s of %s", tag, dataset.name)
        return Outcome("registered", origin["name"], "submission", tag,
                       submission_id=ident, dataset_id=dataset.id)  # fmt: skip

    # ---- shared steps -----------------------------------------------------------

    def _storing(self, token: Path, store_path: str) -> str:
        """Note in the token where its drop is about to be stored. Its row not being
        committed (we are here again), a folder noted by an earlier attempt that a
        crash interrupted belongs to nobody: remove it first (ids are never reused)."""
        marker = token / STORING
        if marker.is_file():
            earlier = marker.read_text(encoding="utf-8").strip()
            if earlier and earlier != store_path:
                bundles.remove(self.spool.absolute(earlier))
                log.info("removed %s, stored by an attempt that did not commit", earlier)
        write_atomic(marker, store_path)
        return store_path

    def _store(self, source: Path, store_path: str, private: tuple[str, ...] = ()) -> Path:
        """Make our checked copy read-only (the `private` parts for the master only),
        then move it to its place in store/: it arrives there as it must stay."""
        target = self.spool.absolute(store_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        bundles.freeze(source)
        for part in private:
            bundles.private(source / part)
        source.chmod(0o700)  # a folder moved to another parent must be writable (non-root)
        source.rename(target)
        target.chmod(0o555)
        return target

    def _forget(self, token: Path) -> None:
        """The drop is registered (its content is stored): remove the token, drop and all."""
        trash = token.with_name(f".trash-{token.name}")
        token.rename(trash)
        bundles.remove(trash)

    def _answer_duplicate(self, token: Path, origin: dict[str, Any], what: str) -> Outcome:
        reason = f"not run again: the same content is already registered as {what}"
        self._answer(token, origin, reason, "NOT RUN AGAIN (duplicate)", "drop.duplicate")
        return Outcome("duplicate", origin["name"], origin["kind"], what)

    def _answer_rejected(self, token: Path, origin: dict[str, Any], reason: str) -> Outcome:
        self._answer(token, origin, reason, "REJECTED", "drop.rejected")
        return Outcome("rejected", origin["name"], origin["kind"], reason)

    def _answer_waiting(self, token: Path, origin: dict[str, Any], dataset: str) -> Outcome:
        deadline = datetime.now(UTC) + timedelta(seconds=self.config.wait_for_dataset)
        state = {**origin, "dataset": dataset, "deadline": deadline.isoformat()}
        note = (
            f"WAITING: {escaped(origin['name'])}\n"
            f"This submission is for dataset {dataset!r}, which is not registered yet.\n"
            f"It will be taken as soon as that dataset arrives, and rejected if it has not\n"
            f"arrived by {deadline.isoformat(timespec='seconds')}.\n"
        )
        dest = self.spool.waiting / dataset / _answer_name(origin["name"])
        self._build(token, origin, dest, ("WAITING.txt", note), state)
        self._deliver(token)
        log.info("submission %s waits for dataset %s", escaped(origin["name"]), dataset)
        return Outcome("waiting", origin["name"], "submission", dataset)

    def _answer(
        self, token: Path, origin: dict[str, Any], reason: str, title: str, event: str
    ) -> None:
        """Move the whole drop to rejected/, beside a note saying why and what to do."""
        name = origin["name"]
        # One field per line: the drop's name escaped wherever it is shown (a name may
        # hold a newline), the reason as text PostgreSQL takes (no NUL, no lone surrogate).
        reason = reason.replace(shown(name), escaped(name)).replace("\x00", "\\x00")
        reason = reason.encode("utf-8", "backslashreplace").decode("utf-8")
        registry.record_answer(self.conn, escaped(name), reason, kind=event)
        lines = [f"  - {line}" for line in reason.splitlines() if line.strip()]
        rejected = title == "REJECTED"
        note = "\n".join([
            f"{title}: {escaped(name)}",
            f"dropped as: {escaped(origin['source'])}",
            f"answered at: {_now()}",
            "",
            "What is wrong:" if rejected else "Why:",
            *lines,
            "",
            "What to do: fix the problems above, then drop the corrected bundle again into "
            "incoming/. This folder is kept for you; datarun does not look at it again."
            if rejected else "Nothing: the earlier copy is registered.",
        ]) + "\n"  # fmt: skip
        dest = self.spool.rejected / _answer_name(name)
        self._build(token, origin, dest, ("REJECTED.txt", note), None)
        self._deliver(token)
        log.info("%s %s: %s", title.lower(), escaped(name), (reason.splitlines() or [""])[0])

    def _build(
        self, token: Path, origin: dict[str, Any], dest: Path, note: tuple[str, str],
        state: dict[str, Any] | None,
    ) -> None:  # fmt: skip
        building = token / ".answer"
        bundles.remove(building)
        building.mkdir()
        write_atomic(building / note[0], note[1])
        if state is not None:
            write_atomic(building / ".waiting.json", json.dumps(state))
        write_atomic(building / ".destination", str(dest))
        drop = token / "drop" / origin["name"]
        if drop.exists() or drop.is_symlink():
            drop.rename(building / origin["name"])
        building.rename(token / "answer")

    def _deliver(self, token: Path) -> Outcome:
        answer = token / "answer"
        dest = Path((answer / ".destination").read_text(encoding="utf-8"))
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():  # a name clash: keep both
            dest = dest.with_name(dest.name + "-" + token.name[-6:])
        answer.rename(dest)
        (dest / ".destination").unlink(missing_ok=True)
        trash = token.with_name(f".trash-{token.name}")
        token.rename(trash)
        bundles.remove(trash)
        kind: Kind = "submission"
        return Outcome("waiting" if dest.is_relative_to(self.spool.waiting) else "rejected",
                       dest.name, kind)  # fmt: skip

    # ---- waiting submissions ----------------------------------------------------

    def revisit_waiting(self) -> list[Outcome]:
        """Take waiting submissions whose dataset arrived; reject those past deadline."""
        outcomes = []
        for entry in sorted(self.spool.waiting.glob("*/*")):
            try:
                state = json.loads((entry / ".waiting.json").read_text(encoding="utf-8"))
                name, dataset = str(state["name"]), str(state["dataset"])
                deadline = datetime.fromisoformat(state["deadline"])
                hint = state.get("hint")
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being written, or not ours
            drop = entry / name
            if not drop.exists() and not drop.is_symlink():
                bundles.remove(entry)  # taken before a crash; its token finishes it
                continue
            if registry.dataset_by_name(self.conn, dataset) is not None:
                outcome = self.take(drop, "submission", hint)
            elif deadline < datetime.now(UTC):
                outcome = self.take(drop, "submission", hint, reject_reason=(
                    f"dataset {dataset!r} never arrived (waited until {state['deadline'][:19]} "
                    "UTC); check its name, or drop the dataset first"
                ))  # fmt: skip
            else:
                continue
            if outcome.result not in ("gone", "skipped"):
                bundles.remove(entry)
            outcomes.append(outcome)
        return outcomes


def _read_origin(token: Path) -> dict[str, Any] | None:
    try:
        origin = json.loads((token / "origin.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(origin, dict) or not {"kind", "name", "source"} <= set(origin):
        return None
    return origin


def _read_small(path: Path, cap: int) -> bytes:
    if path.stat().st_size > cap:
        raise BundleError(f"{path.name}: larger than {cap // 1024} KiB; a manifest is a few lines")
    return path.read_bytes()


def _answer_name(name: str) -> str:
    """stamp_name, short enough for any filesystem whatever the drop's name."""
    text = escaped(name).replace("/", "_")
    if len(text.encode()) > 100:
        digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:8]
        text = text.encode()[:90].decode("utf-8", "ignore") + "-" + digest
    return f"{stamp()}_{text}"


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
