"""The spool's folders: what users drop into, what datarun keeps, what users read.

Store paths recorded in the database are relative to the spool root, because each
machine may mount the spool somewhere else.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from spool.errors import DatarunError


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

    def private_results(self, dataset: str) -> Path:
        """The organizers' files of a dataset: its private leaderboard, every test score.
        Created 0700 (organizers' ACLs are added on it); never a label: those end in .vN."""
        return self.results / dataset / "private"


def label(name: str, team: str, version: int) -> str:
    """How a submission is named in results folders: [team.]name.vN"""
    return f"{team + '.' if team else ''}{name}.v{version}"


def stamp(now: datetime | None = None) -> str:
    """A sortable, file-name-safe UTC time stamp."""
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")


# `.<name>.<pid>.<thread>.tmp`: what write_atomic writes before its rename, and the
# older `.<name>[.<pid>].tmp`; nothing else in results/ is hidden and ends in .tmp.
TEMPORARY = re.compile(r"^\.(?P<name>.+?)(?:\.(?P<pid>\d+)(?:\.(?P<thread>\d+))?)?\.tmp$")
TEMPORARY_GRACE = 10.0  # seconds: a younger temporary may be another process's, mid-write


def blocking_ancestor(path: Path) -> Path | None:
    """The first existing folder above `path` that other users cannot traverse, if any."""
    for parent in reversed(path.absolute().parents):
        if not parent.exists():
            break
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            return parent
    return None


def temporary_name(path: Path) -> Path:
    """A temporary name beside `path`, unique to this thread of this process, and
    recognizable as datarun's (TEMPORARY) so that a stale one can be found later."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_native_id()}.tmp")


def write_atomic(path: Path, data: str | bytes | Iterable[str], *, mode: int = 0o666) -> None:
    """Write to this thread's temporary name, fsync, then rename into place: a reader
    sees the old file or the new one, never half of one; of two threads writing the
    same file at once, each renames a whole file of its own, and the last one stays.
    The file is created with `mode` (less the umask): 0o600 for a secret. `data` may be
    pieces of text, written as they come (a large page is never held whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    pieces = [data] if isinstance(data, str | bytes) else data
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, mode)
    except FileExistsError:  # left by a dead process whose pid and thread id we reuse
        tmp.unlink()
        fd = os.open(tmp, flags, mode)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 16) as handle:
            for piece in pieces:
                handle.write(piece if isinstance(piece, bytes)
                             else piece.encode("utf-8", "backslashreplace"))  # fmt: skip
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a write that failed (disk full) leaves nothing
        raise


def write_changed(path: Path, data: str | bytes, *, mode: int = 0o666) -> bool:
    """`write_atomic`, unless `path` already holds exactly `data`: a results pass
    rewrites a submission's files at every change of its jobs, and most of them (its
    finished folds' logs, its scores while a fold runs) have not changed; on a network
    mount each write is a synced round trip. Returns whether it wrote."""
    new = data if isinstance(data, bytes) else data.encode("utf-8", "backslashreplace")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        fd = None
    if fd is not None:
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if (stat.S_ISREG(info.st_mode) and info.st_size == len(new)
                    and handle.read(len(new) + 1) == new):  # fmt: skip
                return False
    write_atomic(path, new, mode=mode)
    return True


def remove_stale_temporaries(folder: Path, grace: float = TEMPORARY_GRACE) -> tuple[int, int]:
    """Remove the temporaries that processes killed mid-write left under `folder`.
    Those of this process, and those written less than `grace` seconds ago (perhaps by
    another master, on another host, still writing), are kept. Returns (removed, kept)."""
    removed = kept = 0
    mine = str(os.getpid())
    now = time.time()
    for current, _, files in os.walk(folder):  # links are not followed
        for name in files:
            match = TEMPORARY.match(name)
            if match is None or match["pid"] == mine:
                continue
            path = Path(current, name)
            try:
                if now - path.lstat().st_mtime < grace:
                    kept += 1
                    continue
                path.unlink()
            except FileNotFoundError:
                continue  # renamed into place, or removed, meanwhile
            removed += 1
    return removed, kept


def escaped(name: str) -> str:
    """A name as one line of text, whatever it is made of: bytes that are not UTF-8 as
    \\xNN, control, format and line-breaking characters as \\n, \\t, \\xNN, \\uNNNN,
    and the backslash itself doubled, so that the text says exactly what the name is."""
    out = []
    for char in name:  # a file name's undecodable bytes arrive as U+DC80..U+DCFF
        code = ord(char)
        if char == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char in _SHORT:
            out.append(_SHORT[char])
        elif unicodedata.category(char) in _HIDDEN:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
                       if code < 0x10000 else f"\\U{code:08x}")  # fmt: skip
        else:
            out.append(char)
    return "".join(out)


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_HIDDEN = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
