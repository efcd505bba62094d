"""Registration: our checked copy of a drop, stored and committed as a dataset, a RAMP
kit or a submission; content already registered is answered as a duplicate.

Every registration takes the same steps: hash, look for the same content, (prepare),
take an id, store the copy under it, commit the row, and remove the stored copy if the
row does not commit. A row that did commit before a crash names the token that made it:
then the steps are not taken again, only the ones after.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from spool import bundles, rampkit, registry
from spool.bundles import Limits
from spool.errors import BundleError, BundleWaiting
from spool.layout import Spool, escaped, label, write_atomic
from spool.manifests import (
    DATASET_MANIFEST,
    MAX_MANIFEST_BYTES,
    NAME_PATTERN,
    SUBMISSION_MANIFEST,
    SubmissionManifest,
    parse_dataset_manifest,
    parse_submission_manifest,
)
from spool.prepare import LABELS_FILE, prepare_in_child
from spool.workflows import check_submission
from watcher import admission, sharing, tokens
from watcher.answers import Answers
from watcher.drops import IntakeConfig, Outcome, now
from watcher.tokens import Origin

log = logging.getLogger(__name__)

T = TypeVar("T")


class RegistersDataset(Protocol):
    """`registry.register_dataset` or `register_kit`, what only one of them takes bound."""

    def __call__(
        self, conn: Any, *, id: int, store_path: str, summary: dict[str, Any],
        content_hash: str, drop_name: str, token: str,
    ) -> None: ...  # fmt: skip


@dataclass(frozen=True)
class NewDataset:
    """What differs between a native dataset and a RAMP kit on the way to their row."""

    name: str
    what: str  # in the log: "dataset" or "RAMP kit"
    named_by: str  # where the name comes from, first in a name conflict's message
    renamed: str  # what the dropper renames to resolve the conflict
    preparer: str  # the module that prepares it in a child
    private: tuple[str, ...]  # parts of the stored copy for the master only
    register: RegistersDataset
    drops_submissions: bool  # the kit's own submissions/ are dropped in


@dataclass(frozen=True)
class Registrar:
    spool: Spool
    conn: Any
    config: IntakeConfig
    answers: Answers  # for a drop whose content is already registered

    def _unpack(self, token: Path, origin: Origin, limits: Limits) -> Path:
        """Our own copy of the drop in work/bundle, checked on the way in."""
        drop = token / "drop" / origin.name
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

    def _commit(
        self, token: Path, table: Literal["datasets", "submissions"], source: Path,
        private: tuple[str, ...], register: Callable[[int, str], T],
    ) -> tuple[int, str, T]:  # fmt: skip
        """Take an id, store `source` under it, then commit its row with `register(id,
        store path)`; a row that does not commit leaves no stored copy behind."""
        ident = registry.next_id(self.conn, table)
        folder = self.spool.dataset_store if table == "datasets" else self.spool.submission_store
        store_path = tokens.storing(self.spool, token, folder(ident))
        target = tokens.store(self.spool, source, store_path, private)
        try:
            registered = register(ident, store_path)
        except BaseException:
            bundles.remove(target)  # never committed: nothing refers to it
            raise
        return ident, store_path, registered

    # ---- datasets ---------------------------------------------------------------

    def dataset(self, token: Path, origin: Origin) -> Outcome:
        # Before anything is read: a kit's problem.py runs on this machine.
        admission.admit_dataset(admission.dropper(self.conn, token / "drop" / origin.name))
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
        new = NewDataset(
            name=manifest.name, what="dataset", named_by=f"{DATASET_MANIFEST}: name: ",
            renamed="this one", preparer="spool.prepare",
            # Folds read the prepared features, never these: the raw files hold the test
            # rows' targets too.
            private=("bundle", f"prepared/{LABELS_FILE}"),
            register=partial(registry.register_dataset, manifest=manifest),
            drops_submissions=False,
        )  # fmt: skip
        return self._register_dataset(token, origin, root, new)

    def _kit(self, token: Path, origin: Origin, root: Path) -> Outcome:
        """A RAMP kit: registered under its folder's name, its submissions dropped in."""
        name = bundles.stem(origin.name)
        if re.fullmatch(NAME_PATTERN, name) is None:
            raise BundleError(
                f"'{escaped(name)}' cannot name a dataset: a RAMP kit is named after its "
                "folder; rename the folder with up to 64 letters (a-z, A-Z), digits, '-' and "
                "'_', starting with a letter or digit"
            )
        new = NewDataset(
            name=name, what="RAMP kit", named_by="", renamed="this kit's folder",
            preparer="spool.rampkit", private=(),
            register=partial(registry.register_kit, name=name), drops_submissions=True,
        )  # fmt: skip
        return self._register_dataset(token, origin, root, new)

    def _register_dataset(
        self, token: Path, origin: Origin, root: Path, new: NewDataset
    ) -> Outcome:
        digest = bundles.content_hash(root)
        existing = registry.dataset_by_name(self.conn, new.name)
        if existing and existing.content_hash != digest:
            raise BundleError(
                f"{new.named_by}a dataset named {new.name!r} is already registered with other "
                f"content; datasets are immutable, so give {new.renamed} a new name"
            )
        if existing and existing.intake_token != token.name:
            return self.answers.duplicate(token, origin, f"dataset {existing.name!r}")
        if existing is None:
            summary = prepare_in_child(root, token / "work" / "prepared",
                                       self.config.prepare_timeout, new.preparer,
                                       memory_mb=self.config.prepare_memory_mb,
                                       file_mb=self.config.prepare_file_mb)  # fmt: skip
            ident, store_path, _ = self._commit(
                token, "datasets", token / "work", new.private,
                lambda ident, store_path: new.register(
                    self.conn, id=ident, store_path=store_path, summary=summary,
                    content_hash=digest, drop_name=escaped(origin.name), token=token.name,
                ),
            )  # fmt: skip
            log.info("registered %s %s (%d folds)", new.what, new.name, summary["n_folds"])
        else:
            ident, store_path = existing.id, existing.store_path  # committed before a crash
        inbox = self.spool.incoming_submissions / new.name
        inbox.mkdir(exist_ok=True)
        (self.spool.results / new.name).mkdir(parents=True, exist_ok=True)
        sharing.dataset_opened(self.spool, self.conn, new.name)
        if new.drops_submissions:
            _drop_kit_submissions(self.spool.absolute(store_path) / "bundle", inbox)
        tokens.forget(token)
        return Outcome("registered", origin.name, "dataset", new.name, dataset_id=ident)

    # ---- submissions ------------------------------------------------------------

    def submission(self, token: Path, origin: Origin) -> Outcome:
        who = admission.dropper(self.conn, token / "drop" / origin.name)
        admission.admit_dropper(who)
        root = self._unpack(token, origin, self.config.submission_limits)
        manifest, dataset_name, name = _submission_names(root, origin)
        admitted = admission.admit_submission(who, manifest)
        team, queue = admitted.team, admitted.queue
        dataset = registry.dataset_by_name(self.conn, dataset_name)
        if dataset is None:
            raise BundleWaiting(dataset_name)
        check_submission(root, dataset.workflow, dataset.name, dataset.summary.get("files"))
        digest = bundles.content_hash(root)
        found = registry.submission_by_content(self.conn, dataset.id, team, digest)
        if found and found.intake_token != token.name:
            tag = label(found.name, found.team, found.version)
            return self.answers.duplicate(
                token, origin, f"submission {tag} of {dataset.name!r}; its results are in "
                f"results/{dataset.name}/{tag}/",
            )  # fmt: skip
        if found is None:
            admission.admit_now(self.conn, who, dataset, team)
            ident, _, version = self._commit(
                token, "submissions", root, (),
                lambda ident, store_path: registry.register_submission(
                    self.conn, dataset, id=ident, store_path=store_path, name=name, team=team,
                    queue=queue, content_hash=digest, drop_name=escaped(origin.name),
                    manifest=manifest.model_dump() if manifest else {},
                    max_attempts=self.config.max_attempts, token=token.name,
                    owner=admitted.owner,
                ),
            )  # fmt: skip
        else:
            ident, version = found.id, found.version  # committed before a crash
        tag = label(name, team, version)
        status = {
            "submission": tag, "dataset": dataset.name, "id": ident, "state": "queued",
            "team": team, "folds": dataset.n_folds, "queue": queue, "registered_at": now(),
            "dropped_as": escaped(origin.source), "dropped_by": who.user,
            "notes": list(admitted.owner.notes),
        }  # fmt: skip
        folder = self.spool.submission_results(dataset.name, tag)
        sharing.submission_folder(self.spool, self.conn, folder, team, who.challenge)
        write_atomic(folder / "status.json", json.dumps(status, indent=2) + "\n")
        tokens.forget(token)
        log.info("registered %s of %s", tag, dataset.name)
        return Outcome("registered", origin.name, "submission", tag,
                       submission_id=ident, dataset_id=dataset.id)  # fmt: skip


def _submission_names(root: Path, origin: Origin) -> tuple[SubmissionManifest | None, str, str]:
    """The manifest (if any), the dataset's name and the submission's name, checked."""
    manifest_file = root / SUBMISSION_MANIFEST
    manifest = parse_submission_manifest(_read_small(manifest_file, MAX_MANIFEST_BYTES)) \
        if manifest_file.is_file() else None  # fmt: skip
    hint = origin.hint
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
    name = manifest.name if manifest and manifest.name else bundles.stem(origin.name)
    if re.fullmatch(NAME_PATTERN, name) is None:
        raise BundleError(
            f"the name '{escaped(name)}' cannot name a submission: use up to 64 letters "
            "(a-z, A-Z), digits, '-' and '_', starting with a letter or digit (rename the "
            f"bundle, or set 'name' in {SUBMISSION_MANIFEST})"
        )
    return manifest, dataset_name, name


def _drop_kit_submissions(kit: Path, inbox: Path) -> None:
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


def _read_small(path: Path, cap: int) -> bytes:
    if path.stat().st_size > cap:
        raise BundleError(f"{path.name}: larger than {cap // 1024} KiB; a manifest is a few lines")
    return path.read_bytes()
