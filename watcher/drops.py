"""What the intake's parts share: its settings and what became of a drop."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from spool.bundles import Limits

# what an answer folder holds besides the drop itself: the notes datarun writes
NOTES = frozenset({".destination", ".waiting.json", "REJECTED.txt", "WAITING.txt"})

Kind = Literal["dataset", "submission"]
Result = Literal["registered", "duplicate", "rejected", "waiting", "gone", "retry", "skipped"]


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


def now() -> str:
    """The time written in origin.json, answers and status files."""
    return datetime.now(UTC).isoformat(timespec="seconds")
