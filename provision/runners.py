"""The runners file: one runner machine a line, like the old Datarun's list_runners.txt.

    # address              workers  queues     hard(s)  soft(s)
    ada@runner-1.lab:22    2        high,low   3600     3000
    runner-2.lab           4        low        7200

address is [user@]host[:port]; workers, queues and the time limits are optional
(defaults: 2, high,low, the master's fold_timeout_seconds, none). `#` starts a comment.
"""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spool.errors import DatarunError

ADDRESS = re.compile(r"^(?:(?P<user>[A-Za-z_][A-Za-z0-9_.-]*)@)?(?P<host>[A-Za-z0-9_.-]+)"
                     r"(?::(?P<port>\d{1,5}))?$")  # fmt: skip
QUEUES = re.compile(r"^(high|low)(,(high|low))?$")


class RunnersFileError(DatarunError):
    """A line of the runners file is wrong; the message names it."""


@dataclass(frozen=True)
class Runner:
    user: str
    host: str
    port: int
    workers: int = 2
    queues: str = "high,low"
    hard_seconds: float | None = None
    soft_seconds: float | None = None

    @property
    def name(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def parse(text: str, origin: str = "runners file") -> list[Runner]:
    runners: list[Runner] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        runner = _line(line, f"{origin} line {number}")
        if runner.name in seen:
            raise RunnersFileError(f"{origin} line {number}: {runner.name} is listed twice")
        seen.add(runner.name)
        runners.append(runner)
    if not runners:
        raise RunnersFileError(
            f"{origin}: no runner listed (one `user@host workers queues` a line)"
        )
    return runners


def _line(line: str, where: str) -> Runner:
    fields = line.split()
    if len(fields) > 5:
        raise RunnersFileError(
            f"{where}: {len(fields)} fields; expected address [workers] [queues] [hard] [soft]"
        )
    match = ADDRESS.match(fields[0])
    if not match:
        raise RunnersFileError(f"{where}: {fields[0]!r} is not an address ([user@]host[:port])")
    port = int(match.group("port") or 22)
    if not 1 <= port <= 65535:
        raise RunnersFileError(f"{where}: port {port} is out of range")
    workers = _number(fields, 1, where, "workers", int, default=2)
    if workers is None or not 1 <= workers <= 256:
        raise RunnersFileError(f"{where}: workers must be between 1 and 256")
    queues = fields[2] if len(fields) > 2 else "high,low"
    if not QUEUES.match(queues):
        raise RunnersFileError(f"{where}: queues {queues!r}: expected high, low or high,low")
    hard = _number(fields, 3, where, "hard time limit", float)
    soft = _number(fields, 4, where, "soft time limit", float)
    for value, what in ((hard, "hard"), (soft, "soft")):
        if value is not None and value <= 0:
            raise RunnersFileError(f"{where}: the {what} time limit must be positive")
    if hard is not None and soft is not None and soft > hard:
        raise RunnersFileError(f"{where}: the soft time limit ({soft:g} s) exceeds the hard one")
    return Runner(match.group("user") or getpass.getuser(), match.group("host"), port,
                  workers, queues, hard, soft)  # fmt: skip


def _number(
    fields: list[str], i: int, where: str, what: str, kind: type, *, default: object = None
) -> Any:
    if len(fields) <= i:
        return default
    try:
        return kind(fields[i])
    except ValueError:
        raise RunnersFileError(f"{where}: {what} {fields[i]!r} is not a number") from None


def load(path: Path) -> list[Runner]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RunnersFileError(f"cannot read the runners file {path}: {exc}") from exc
    return parse(text, path.name)
