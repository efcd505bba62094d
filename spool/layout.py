"""The spool's folders: what users drop into, what datarun keeps, what users read.

Store paths recorded in the database are relative to the spool root, because each
machine may mount the spool somewhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from datarun.errors import DatarunError


@dataclass(frozen=True)
class Spool:
    root: Path

    @property
    def incoming_datasets(self) -> Path:
        return self.root / "incoming" / "datasets"

    @property
    def incoming_submissions(self) -> Path:
        return self.root / "incoming" / "submissions"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected"

    @property
    def waiting(self) -> Path:
        return self.root / "waiting"

    @property
    def staging(self) -> Path:
        """Drops being processed; hidden, on the spool's filesystem so renames are atomic."""
        return self.root / ".staging"

    def folders(self) -> list[Path]:
        return [
            self.incoming_datasets, self.incoming_submissions, self.store / "datasets",
            self.store / "submissions", self.predictions, self.results, self.rejected,
            self.waiting, self.staging,
        ]  # fmt: skip

    def create(self) -> list[Path]:
        """Make every folder; returns the ones that were missing. Idempotent."""
        made = []
        for folder in self.folders():
            if not folder.is_dir():
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise DatarunError(f"cannot create the spool folder {folder}: {exc}") from exc
                made.append(folder)
        # Drops are checked and prepared in here (a dataset's test labels included):
        # the master's alone.
        self.staging.chmod(0o700)
        return made

    def check(self) -> None:
        missing = [str(f) for f in self.folders() if not f.is_dir()]
        if missing:
            raise DatarunError(
                f"the spool at {self.root} is not set up ({missing[0]} is missing); "
                "run `datarun init`"
            )

    def absolute(self, relative: str) -> Path:
        return self.root / relative

    def dataset_store(self, dataset_id: int) -> str:
        return f"store/datasets/{dataset_id}"

    def submission_store(self, submission_id: int) -> str:
        return f"store/submissions/{submission_id}"

    def submission_results(self, dataset: str, label: str) -> Path:
        return self.results / dataset / label


def label(name: str, team: str, version: int) -> str:
    """How a submission is named in results folders: [team.]name.vN"""
    return f"{team + '.' if team else ''}{name}.v{version}"


def stamp(now: datetime | None = None) -> str:
    """A sortable, file-name-safe UTC time stamp."""
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")


def write_atomic(path: Path, text: str) -> None:
    """Write to a hidden temporary name, fsync, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", errors="backslashreplace") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
