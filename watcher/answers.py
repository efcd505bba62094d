"""The answers to a drop that is not registered: rejected (what is wrong, what to do), a
duplicate (where the earlier copy is), or waiting for its dataset.

An answer is built inside the token as `.answer/` (the note, where it goes, and the
drop itself), renamed to `answer/` when complete, then moved out with one rename:
a master killed while building takes the drop back; killed later, it delivers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from spool import bundles, registry
from spool.bundles import shown
from spool.layout import Spool, escaped, stamp, write_atomic
from watcher import sharing, tokens
from watcher.drops import NOTES, Kind, Outcome, now
from watcher.tokens import Origin

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answers:
    spool: Spool
    conn: Any
    wait_for_dataset: float  # seconds a submission waits for its dataset

    def duplicate(self, token: Path, origin: Origin, what: str) -> Outcome:
        reason = f"not run again: the same content is already registered as {what}"
        self._answer(token, origin, reason, "NOT RUN AGAIN (duplicate)", "drop.duplicate")
        return Outcome("duplicate", origin.name, origin.kind, what)

    def rejected(self, token: Path, origin: Origin, reason: str) -> Outcome:
        self._answer(token, origin, reason, "REJECTED", "drop.rejected")
        return Outcome("rejected", origin.name, origin.kind, reason)

    def waiting(self, token: Path, origin: Origin, dataset: str) -> Outcome:
        deadline = datetime.now(UTC) + timedelta(seconds=self.wait_for_dataset)
        state = {**origin.record(), "dataset": dataset, "deadline": deadline.isoformat()}
        note = (
            f"WAITING: {escaped(origin.name)}\n"
            f"This submission is for dataset {dataset!r}, which is not registered yet.\n"
            f"It will be taken as soon as that dataset arrives, and rejected if it has not\n"
            f"arrived by {deadline.isoformat(timespec='seconds')}.\n"
        )
        dest = self.spool.waiting / dataset / _answer_name(origin.name)
        self._build(token, origin, dest, ("WAITING.txt", note), state)
        self.deliver(token)
        log.info("submission %s waits for dataset %s", escaped(origin.name), dataset)
        return Outcome("waiting", origin.name, "submission", dataset)

    def _answer(self, token: Path, origin: Origin, reason: str, title: str, event: str) -> None:
        """Move the whole drop to rejected/, beside a note saying why and what to do."""
        name = origin.name
        # One field per line: the drop's name escaped wherever it is shown (a name may
        # hold a newline), the reason as text PostgreSQL takes (no NUL, no lone surrogate).
        reason = reason.replace(shown(name), escaped(name)).replace("\x00", "\\x00")
        reason = reason.encode("utf-8", "backslashreplace").decode("utf-8")
        registry.record_answer(self.conn, escaped(name), reason, kind=event)
        lines = [f"  - {line}" for line in reason.splitlines() if line.strip()]
        rejected = title == "REJECTED"
        note = "\n".join([
            f"{title}: {escaped(name)}",
            f"dropped as: {escaped(origin.source)}",
            f"answered at: {now()}",
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
        self.deliver(token)
        log.info("%s %s: %s", title.lower(), escaped(name), (reason.splitlines() or [""])[0])

    def _build(
        self, token: Path, origin: Origin, dest: Path, note: tuple[str, str],
        state: dict[str, Any] | None,
    ) -> None:  # fmt: skip
        building = token / ".answer"
        bundles.remove(building)
        building.mkdir()
        write_atomic(building / note[0], note[1])
        if state is not None:
            write_atomic(building / ".waiting.json", json.dumps(state))
        write_atomic(building / ".destination", str(dest))
        drop = token / "drop" / origin.name
        if drop.exists() or drop.is_symlink():
            drop.rename(building / origin.name)
        building.rename(token / "answer")

    def deliver(self, token: Path) -> Outcome:
        """Move a built answer to its destination, then forget the token."""
        answer = token / "answer"
        dest = Path((answer / ".destination").read_text(encoding="utf-8"))
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():  # a name clash: keep both
            dest = dest.with_name(dest.name + "-" + token.name[-6:])
        sharing.answer_folder(self.conn, answer)  # before it is where others look
        answer.rename(dest)
        (dest / ".destination").unlink(missing_ok=True)
        tokens.forget(token)
        kind: Kind = "submission"
        return Outcome("waiting" if dest.is_relative_to(self.spool.waiting) else "rejected",
                       dest.name, kind)  # fmt: skip


def take_back(token: Path, origin: Origin | None) -> None:
    """Killed while building an answer: put the drop back in drop/, drop the rest."""
    building = token / ".answer"
    if not building.is_dir():
        return
    for entry in building.iterdir():
        if (origin is not None and entry.name == origin.name) or (
            origin is None and entry.name not in NOTES
        ):
            (token / "drop").mkdir(exist_ok=True)
            entry.rename(token / "drop" / entry.name)
    bundles.remove(building)


def _answer_name(name: str) -> str:
    """stamp_name, short enough for any filesystem whatever the drop's name."""
    text = escaped(name).replace("/", "_")
    if len(text.encode()) > 100:
        digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:8]
        text = text.encode()[:90].decode("utf-8", "ignore") + "-" + digest
    return f"{stamp()}_{text}"
