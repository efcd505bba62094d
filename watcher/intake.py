"""What happens to one drop, from the moment it is taken to its answer.

The drop is claimed into a token (`watcher.tokens`), registered (`watcher.register`) or
answered (`watcher.answers`), then its token goes. The bundle is stored under an id
taken beforehand, then the row commits, then the user is answered, then the token
goes. An answer that leaves the drop is built inside the token and moved out with one
rename. So a master killed at any instruction finds, at its next start, a token it can
finish: nothing is lost, nothing registered twice (a row remembers the token that made
it), and every drop gets one answer.
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spool import bundles, registry
from spool.errors import BundleError, BundleWaiting, DatabaseUnavailable, DatarunError
from spool.layout import Spool, escaped
from watcher import tokens
from watcher.answers import Answers, take_back
from watcher.drops import IntakeConfig, Kind, Outcome, Result
from watcher.register import Registrar
from watcher.tokens import Origin

__all__ = [
    "MAX_STARTS",
    "TRANSIENT",
    "Intake",
    "IntakeConfig",
    "Kind",
    "NotLeader",
    "Outcome",
    "Result",
    "Transient",
]

log = logging.getLogger(__name__)

TRANSIENT = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.ENOMEM}
MAX_STARTS = 5  # a drop that killed the master this often is set aside


class NotLeader(DatarunError):
    """Another watcher holds the lead now: this one must not answer anything."""


class Transient(DatarunError):
    """The machine, not the drop, is at fault (disk full, read-only): retry later."""


class Intake:
    def __init__(
        self, spool: Spool, conn: Any, config: IntakeConfig,
        still_leader: Callable[[], bool] = lambda: True,
    ) -> None:  # fmt: skip
        self.spool = spool
        self.conn = conn
        self.config = config
        self.still_leader = still_leader
        self.answers = Answers(spool, conn, config.wait_for_dataset)
        self.registrar = Registrar(spool, conn, config, self.answers)

    def take(
        self, path: Path, kind: Kind, hint: str | None = None, *, reject_reason: str = ""
    ) -> Outcome:
        """Claim a drop by renaming it into a new token, then process it."""
        claimed = tokens.claim(self.spool, path, kind, hint, reject_reason)
        return claimed if isinstance(claimed, Outcome) else self.process(claimed)

    def process(self, token: Path) -> Outcome:
        """(Re)process a token; safe to call again after a crash at any point."""
        if (token / "answer").is_dir():
            return self.answers.deliver(token)
        origin = Origin.read(token)
        take_back(token, origin)  # killed while building an answer
        drops = sorted((token / "drop").iterdir()) if (token / "drop").is_dir() else []
        if origin is None:
            if drops:
                lost = Origin(kind="submission", name=drops[0].name, source="incoming/?")
                return self.answers.rejected(
                    token, lost, "datarun lost the record of this drop while processing "
                    "it; you may drop it again",
                )  # fmt: skip
            bundles.remove(token)
            return Outcome("gone", token.name, "submission")
        if not drops:
            bundles.remove(token)
            return Outcome("gone", origin.name, origin.kind)
        if not self.still_leader():
            raise NotLeader("another watcher leads now")
        origin = tokens.restart(token, origin)
        if origin.reject_reason:
            return self.answers.rejected(token, origin, origin.reject_reason)
        if origin.starts > MAX_STARTS:
            return self.answers.rejected(
                token, origin, f"datarun stopped {MAX_STARTS} times while processing this drop; "
                "it is set aside for the admin, who finds the cause in the master's log",
            )  # fmt: skip
        return self._register(token, origin)

    def _register(self, token: Path, origin: Origin) -> Outcome:
        """Register the drop, or answer why not; a fault of ours is retried."""
        try:
            if origin.kind == "dataset":
                return self.registrar.dataset(token, origin)
            return self.registrar.submission(token, origin)
        except BundleError as exc:
            return self.answers.rejected(token, origin, str(exc))
        except BundleWaiting as exc:
            return self.answers.waiting(token, origin, str(exc))
        except (DatabaseUnavailable, NotLeader):
            raise  # keep the token; the daemon retries
        except OSError as exc:
            if exc.errno in TRANSIENT:
                tokens.save(token, origin.unstarted())  # we saw it end: not a crash of ours
                raise Transient(f"cannot process {escaped(origin.name)}: {exc}") from exc
            return self._failed(token, origin, exc)
        except Exception as exc:
            return self._failed(token, origin, exc)

    def _failed(self, token: Path, origin: Origin, exc: Exception) -> Outcome:
        origin = origin.failed()
        log.error("processing the drop %s failed (%d of %d): %s", escaped(origin.name),
                  origin.failures, self.config.max_failures, exc, exc_info=exc)  # fmt: skip
        if origin.failures >= self.config.max_failures:
            return self.answers.rejected(
                token, origin,
                f"datarun could not process this drop: {type(exc).__name__}: {exc}. This is "
                "datarun's fault, not yours: the admin finds the details in the master's "
                "log. You may drop it again.",
            )  # fmt: skip
        tokens.save(token, origin)
        return Outcome("retry", origin.name, origin.kind, str(exc))

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
