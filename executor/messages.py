"""What crosses the executor's process boundaries, typed.

- `FoldSpec` (with its `FoldLimits`): what a fold needs. The executor builds it
  (executor.worker), sends it to the zygote in a JSON line (`to_dict` in
  executor.client, `from_dict` in executor.zygote), and the fold's child reads it
  (executor.fold) after the fork, as it was.
- `FoldDone`: how a fold ended, as the zygote saw it (the `done` line: exit status,
  resource use, limits hit), or why it could not start it (the `error` line).
  Built in executor.children, read back by executor.client; the executor reads it
  (executor.worker, executor.outputs).
- `FoldResult`: what the fold's child says of itself in `result.json` (executor.fold
  writes it; executor.outputs reads it back, checking every field: the submission's
  code may have written it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from executor.isolation import Isolation


@dataclass(frozen=True)
class FoldLimits:
    """A fold's limits and isolation (also stored in `executors.limits`)."""

    timeout: float  # hard: wall clock, the process group is killed
    cpu_seconds: float | None  # soft: RLIMIT_CPU
    memory_mb: int | None
    max_processes: int
    log_bytes: int
    disk_mb: int | None
    network: str  # "host" (kept) or "none" (a namespace of its own)
    isolation: Isolation | None  # what this machine gives folds, probed at start

    @property
    def namespaces(self) -> bool:
        """Mount and PID namespaces, work/ on a tmpfs."""
        return self.isolation is not None and self.isolation.namespaces

    def to_dict(self) -> dict[str, Any]:
        return {"timeout": self.timeout, "cpu_seconds": self.cpu_seconds,
                "memory_mb": self.memory_mb, "max_processes": self.max_processes,
                "log_bytes": self.log_bytes, "disk_mb": self.disk_mb, "network": self.network,
                "isolation": self.isolation.as_dict() if self.isolation else None}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FoldLimits:
        isolation = data.get("isolation")
        return cls(
            timeout=data["timeout"], cpu_seconds=data.get("cpu_seconds"),
            memory_mb=data.get("memory_mb"), max_processes=data["max_processes"],
            log_bytes=data["log_bytes"], disk_mb=data.get("disk_mb"), network=data["network"],
            isolation=Isolation.from_dict(isolation) if isolation else None,
        )  # fmt: skip


@dataclass(frozen=True)
class FoldSpec:
    """What a fold's child needs: its data, its submission, its folders, its user,
    its limits and its environment."""

    dataset_path: str  # absolute, on this machine
    kind: str  # "native" or "ramp"
    workflow: str
    task: str | None  # a native dataset's (a RAMP kit has none)
    target: str | None
    fold: int
    classes: tuple[str, ...]
    scores: tuple[str, ...]  # a native dataset's scikit-learn scorers
    code: str  # the submission's read-only copy
    work: str  # the only folder the fold may write in
    log: str  # its output, written by the zygote
    uid: int | None  # its sandbox user (a root executor), else None
    gid: int | None
    limits: FoldLimits
    hide: tuple[str, ...]  # never shown to a fold, whatever folder its Python lives in
    env: dict[str, str]  # its whole environment
    cgroups: tuple[str, ...] = ()  # the files it writes to join its control groups (zygote)
    # where it writes pred.npz and result.json (None: `work`); in a child shared by
    # several folds, a folder of each fold's own, made afresh when the fold starts
    out: str | None = None

    @property
    def outputs(self) -> str:
        return self.out or self.work

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "limits": self.limits.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FoldSpec:
        return cls(
            dataset_path=data["dataset_path"], kind=data["kind"], workflow=data["workflow"],
            task=data.get("task"), target=data.get("target"), fold=data["fold"],
            classes=tuple(data["classes"]), scores=tuple(data["scores"]),
            code=data["code"], work=data["work"], log=data["log"],
            uid=data.get("uid"), gid=data.get("gid"),
            limits=FoldLimits.from_dict(data["limits"]), hide=tuple(data["hide"]),
            env=dict(data["env"]), cgroups=tuple(data.get("cgroups") or ()),
            out=data.get("out"),
        )  # fmt: skip


@dataclass(frozen=True)
class FoldDone:
    """How a fold ended, as the zygote saw it; or, with `start_error`, why the zygote
    could not start it (then nothing was measured: every measure is None)."""

    key: str
    start_error: str | None = None
    exit_code: int | None = None  # negative: killed by that signal
    timed_out: bool = False
    killed: bool = False  # stopped by the executor: cancelled or given back
    cpu_seconds: float | None = None
    peak_rss_kb: int | None = None  # its largest process (rusage)
    base_rss_kb: int | None = None  # the zygote's own, which the child started with
    minor_faults: int | None = None
    wall_seconds: float | None = None
    log_bytes: int | None = None
    log_dropped: int | None = None
    # The fold as a whole, from its control group (None without one): its peak memory
    # (every process, its tmpfs files and shared memory included), and whether it ran
    # out of it; and whether its work/ tmpfs ended full.
    memory_peak_bytes: int | None = None
    oom: bool = False
    disk_full: bool = False
    # A fold of a shared child that never started: the child ended first (an earlier
    # fold crashed it, or it was stopped). Not the fold's fault: it is handed back.
    # `lent`: given to a worker here that had nothing to run.
    not_run: bool = False
    lent: bool = False

    @property
    def ended(self) -> bool:
        """The zygote saw the fold's end (its processes are gone)."""
        return self.start_error is None

    def to_message(self) -> dict[str, Any]:
        if self.start_error is not None:
            return {"op": "error", "key": self.key, "message": self.start_error}
        measures = {k: v for k, v in asdict(self).items() if k not in ("key", "start_error")}
        return {"op": "done", "key": self.key, **measures}

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> FoldDone:
        key = str(message.get("key", ""))
        if message.get("op") == "error":
            return cls(key, start_error=str(message.get("message")))
        return cls(
            key, exit_code=message.get("exit_code"),
            timed_out=bool(message.get("timed_out")), killed=bool(message.get("killed")),
            cpu_seconds=message.get("cpu_seconds"), peak_rss_kb=message.get("peak_rss_kb"),
            base_rss_kb=message.get("base_rss_kb"), minor_faults=message.get("minor_faults"),
            wall_seconds=message.get("wall_seconds"), log_bytes=message.get("log_bytes"),
            log_dropped=message.get("log_dropped"),
            memory_peak_bytes=message.get("memory_peak_bytes"), oom=bool(message.get("oom")),
            disk_full=bool(message.get("disk_full")), not_run=bool(message.get("not_run")),
            lent=bool(message.get("lent")),
        )  # fmt: skip


@dataclass(frozen=True)
class FoldResult:
    """The fold's own account, in `result.json`: whether it wrote its predictions, or
    why not (one line, and the traceback from the submission's first frame)."""

    ok: bool = False
    error: str | None = None
    traceback: str | None = None
    train_seconds: float | None = None
    valid_seconds: float | None = None
    test_seconds: float | None = None
    versions: dict[str, str] | None = None  # python, numpy, pandas, scikit-learn
    phases: dict[str, float] = field(default_factory=dict)  # written, not read back

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
