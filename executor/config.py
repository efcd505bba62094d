"""What an executor is told: its workers, queues, timings, and each fold's limits."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from executor.isolation import Isolation
from executor.messages import FoldLimits


@dataclass(frozen=True)
class ExecutorConfig:
    workers: int = 2
    queues: tuple[str, ...] = ("high", "low")
    heartbeat_seconds: float = 5.0
    lease_seconds: float = 30.0
    poll_seconds: float = 2.0
    timeout_seconds: float = 3600.0  # hard: wall clock, the process group is killed
    cpu_seconds: float | None = None  # soft: RLIMIT_CPU
    memory_mb: int | None = 4096
    max_processes: int = 64
    log_mb: float = 10.0
    threads: int = 1
    stop_grace_seconds: float = 30.0
    scratch: Path | None = None
    network: bool = False  # folds keep the network (else, as root: a namespace of their own)
    name: str | None = None  # how this executor is listed (default: the host name)
    # work/, and /tmp, /var/tmp and /dev/shm together: a tmpfs of this size each (with
    # namespaces), else the largest file a fold may write (RLIMIT_FSIZE)
    disk_mb: int | None = 1024
    # control groups and namespaces: probed at start unless given (a test's fallback)
    isolation: Isolation | None = None
    # A submission whose folds are short (its longest fold done took under
    # short_fold_seconds) has up to shared_folds of its queued folds claimed together,
    # run in turn in one warm child (1: a child per fold, always).
    shared_folds: int = 8
    short_fold_seconds: float = 1.0

    def limits(self) -> FoldLimits:
        return FoldLimits(
            timeout=self.timeout_seconds, cpu_seconds=self.cpu_seconds,
            memory_mb=self.memory_mb, max_processes=self.max_processes,
            log_bytes=int(self.log_mb * 2**20), disk_mb=self.disk_mb,
            network="host" if self.network or os.geteuid() != 0 else "none",
            isolation=self.isolation,
        )  # fmt: skip
