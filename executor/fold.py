"""One fold, inside its forked child: sandbox it, train and predict, write the results.

The child starts in the zygote's memory (libraries and dataset already loaded), then,
before touching submission code: becomes its own session and process group, sends
its output to the zygote's pipe, sets its rlimits, joins the fold's control groups
(when the machine has them), and, when the executor is root, leaves the network (an
empty namespace of its own), takes a mount namespace whose root shows only what the
fold needs (executor.mounts; the zygote already put it in a PID namespace of its own),
and drops to the sandbox user; then it moves into its work folder and replaces its
environment. It writes only into that folder (and its private /tmp, /var/tmp and
/dev/shm): `pred.npz` and `result.json`; the executor copies them out.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import resource
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from executor import mounts, workflows
from executor.messages import FoldResult, FoldSpec
from spool import linux

if TYPE_CHECKING:  # imported in the child, and only for a RAMP kit's fold
    from executor.rampfold import Kit

RESULT = "result.json"
PREDICTIONS = "pred.npz"
ROOM = ".datarun-room"  # space kept for result.json: a full disk still gets its reason
ROOM_BYTES = 256 << 10


@dataclass
class Dataset:
    train: pd.DataFrame | None  # None for a RAMP kit: its child reads the data itself
    test: pd.DataFrame | None
    folds: dict[str, np.ndarray]


def load_dataset(store: Path, kind: str = "native", target: str | None = None) -> Dataset:
    prepared = store / "prepared"
    with np.load(prepared / "folds.npz", allow_pickle=False) as folds:
        arrays = {name: folds[name] for name in folds.files}
    if kind == "ramp":  # the kit's code reads its data, in the sandboxed child only
        return Dataset(None, None, arrays)
    test = prepared / "test.parquet"
    features = pd.read_parquet(test) if test.is_file() else None
    if features is not None and target in features.columns:  # stored before labels were apart
        features = features.drop(columns=[target])  # folds never hold the test labels
    return Dataset(pd.read_parquet(prepared / "train.parquet"), features, arrays)


def isolate(spec: FoldSpec, output: int, control: tuple[int, int] | None = None) -> None:
    """Own session, output to the zygote's pipe, nothing else inherited (but a shared
    child's pipes to and from the zygote, as fds 3 and 4), a clean environment: what a
    RAMP kit's own code (trusted) may run under, before `confine`."""
    os.setsid()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(output, 1)
    os.dup2(output, 2)
    if control is not None:  # moved out of the way first: either may be 3 or 4 now
        said, answer = (os.dup(fd) for fd in control)
        os.dup2(said, CONTROL)
        os.dup2(answer, ACK)
    # the zygote's protocol pipe and other folds' pipes and logs
    os.closerange(3 if control is None else ACK + 1, 65536)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    os.environ.clear()
    os.environ.update(spec.env)
    sys.dont_write_bytecode = True


def confine(spec: FoldSpec, folds: int = 1) -> None:
    """Limits, control groups, namespaces, the sandbox user, the work folder: for
    submission code (`folds` of it in turn, in a shared child)."""
    limits = spec.limits
    isolated = limits.namespaces
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limits.cpu_seconds:  # a shared child raises the soft limit fold by fold
        cpu = int(limits.cpu_seconds)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu * folds + 5))
    if limits.memory_mb:
        # Per process, even under a memory cgroup: one allocation too large is then a
        # MemoryError the fold reports, not a kill.
        room = linux.vm_size() + int(limits.memory_mb) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (room, room))
    if limits.disk_mb and not isolated:  # without a tmpfs: per file, at least
        size = int(limits.disk_mb) * 2**20
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    for join in spec.cgroups:  # the fold's groups, before its code
        with open(join, "w", encoding="ascii") as handle:
            handle.write("0")
    if spec.uid is not None:
        linux.no_new_privs()  # no crontab, no at: nothing outlives the fold
        flags = linux.CLONE_NEWNET if limits.network == "none" else 0
        if isolated:  # its own mounts, and SysV IPC objects that go with it
            flags |= linux.CLONE_NEWNS | linux.CLONE_NEWIPC
        if flags:
            linux.unshare(flags)
        if isolated:
            mounts.enter_root(spec)
        if limits.max_processes:
            n = int(limits.max_processes)
            resource.setrlimit(resource.RLIMIT_NPROC, (n, n))
        os.setgroups([])
        assert spec.gid is not None  # given with the uid
        os.setgid(int(spec.gid))
        os.setuid(int(spec.uid))
    os.chdir(spec.work)
    _keep_room(spec.outputs)


def _keep_room(folder: str) -> None:
    """Reserve result.json's room in the fold's output folder before any submission
    code runs (a file of its own: result.json itself appears only once written)."""
    try:
        fd = os.open(os.path.join(folder, ROOM), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC,
                     0o600)  # fmt: skip
    except OSError:
        return
    try:
        os.posix_fallocate(fd, 0, ROOM_BYTES)
    except OSError:
        pass  # a filesystem without it: the room is not kept, nothing worse
    finally:
        os.close(fd)


def _versions() -> dict[str, str]:
    import sklearn

    return {"python": platform.python_version(), "numpy": np.__version__,
            "pandas": pd.__version__, "scikit-learn": sklearn.__version__}  # fmt: skip


def _their_traceback(exc: BaseException, code: Path) -> str:
    """The traceback from the submission's first frame on: their code, not ours."""
    frames = traceback.extract_tb(exc.__traceback__)
    theirs = [i for i, f in enumerate(frames) if f.filename.startswith(str(code))]
    # none of theirs (a method missing, a signature that does not fit): the error alone
    shown = frames[theirs[0] :] if theirs else traceback.StackSummary()
    for frame in shown:  # their files by their own names, not our scratch folder's
        if frame.filename.startswith(str(code)):
            frame.filename = frame.filename[len(str(code)) + 1 :]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(shown)]
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


def _one_line(exc: BaseException) -> str:
    from executor.workflows import ContractError

    text = str(exc).strip().splitlines()
    if isinstance(exc, ContractError) and text:
        return text[0]  # it names the submission's file and method
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def child_main(spec: FoldSpec, data: Dataset, output: int) -> int:
    """Runs in the forked child; returns its exit code (0: predictions written)."""
    forked = time.time()
    isolate(spec, output)
    versions = _versions()
    try:
        kit = _confine_with_kit(spec)
    except KitUnreadable as unreadable:
        return _report(replace(unreadable.result, versions=versions), spec)
    result = _train_and_predict(spec, data, kit, forked=forked, sandboxed=time.time())
    return _report(replace(result, versions=versions), spec)


CONTROL = 3  # a shared child's pipe to the zygote: a line as each fold begins and ends
ACK = 4  # and the zygote's answer to each end


def child_main_shared(
    specs: list[FoldSpec], data: Dataset, output: int, control: int, ack: int
) -> int:
    """Runs in a child forked for several folds of one submission: sandboxed once, as
    for one fold, then the folds in turn, as `ramp-test` runs them in one process. The
    zygote hears `B` and `E` on the control pipe as each fold begins and ends, and the
    child waits for its answer to each `E` (by then it has the fold's output): a fold's
    log is what the child printed in between, its limits start at its `B`. Each fold
    writes into its own output folder, made afresh at its start: nothing an earlier
    fold left can stand for its results. Returns the exit code."""
    forked = time.time()
    first = specs[0]
    isolate(first, output, (control, ack))
    versions = _versions()
    try:
        kit = _confine_with_kit(first, folds=len(specs))
        unreadable = None
    except KitUnreadable as exc:
        kit, unreadable = None, exc.result
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(first.outputs, ROOM))  # each fold keeps its own
    for spec in specs:
        _said(b"B\n")
        _fresh_outputs(spec)
        _cpu_limit_from_now(spec)
        if unreadable is not None:
            result = unreadable
        else:
            os.chdir(spec.work)
            result = _train_and_predict(spec, data, kit, forked=forked, sandboxed=time.time())
        _report(replace(result, versions=versions), spec)
        _said(b"E\n")
        if not os.read(ACK, 1):
            return 0  # the zygote is gone
    return 0


def _said(line: bytes) -> None:
    sys.stdout.flush()  # what the fold printed reaches the pipe before its end does
    sys.stderr.flush()
    os.write(CONTROL, line)


def _fresh_outputs(spec: FoldSpec) -> None:
    """The fold's own output folder, empty: whatever an earlier fold put there goes."""
    out = spec.outputs
    if os.path.lexists(out):
        if os.path.isdir(out) and not os.path.islink(out):
            shutil.rmtree(out, ignore_errors=True)
        else:
            os.unlink(out)
    os.mkdir(out, 0o700)
    _keep_room(out)


def _cpu_limit_from_now(spec: FoldSpec) -> None:
    """The fold's CPU limit counts from its start (the earlier folds' time is spent)."""
    if not spec.limits.cpu_seconds:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = int(usage.ru_utime + usage.ru_stime) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used + int(spec.limits.cpu_seconds)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CPU, (min(soft, hard), hard))


class KitUnreadable(Exception):
    """A RAMP kit's problem or data could not be read: the fold fails, saying so."""

    def __init__(self, result: FoldResult) -> None:
        super().__init__(result.error)
        self.result = result


def _confine_with_kit(spec: FoldSpec, folds: int = 1) -> Kit | None:
    """Confine the child; for a RAMP kit, load its problem and data (None otherwise).
    A kit's problem.py is the organizer's code, but not root's: with namespaces its
    folder is in the fold's own root, so it runs confined, as the fold's user. Without
    them the sandbox user may not reach the store, so it runs before confine."""
    ramp = spec.kind == "ramp"
    late = ramp and spec.limits.namespaces
    kit = None
    if ramp and not late:
        try:
            kit = _load_kit(spec)
        except BaseException as exc:
            confine(spec, folds)  # into the work folder, where the result is written
            raise KitUnreadable(_kit_failed(exc)) from exc
    confine(spec, folds)
    if late:
        try:
            kit = _load_kit(spec)
        except BaseException as exc:
            raise KitUnreadable(_kit_failed(exc)) from exc
    return kit


def _train_and_predict(
    spec: FoldSpec, data: Dataset, kit: Kit | None, *, forked: float, sandboxed: float
) -> FoldResult:
    """Run the submission on the fold and save its predictions: how it went."""
    code = Path(spec.code)
    reserve = bytearray(256 << 10)  # freed to report a MemoryError
    try:
        predictions, arrays = _predict(spec, data, kit)
        os.chdir(spec.work)  # wherever the submission moved
        np.savez(os.path.join(spec.outputs, PREDICTIONS), **arrays)  # type: ignore[arg-type]
        phases = {"forked_at": forked, "sandbox": sandboxed - forked,
                  "saved": time.time() - sandboxed}  # fmt: skip
        return FoldResult(
            ok=True, train_seconds=predictions.train_seconds,
            valid_seconds=predictions.valid_seconds, test_seconds=predictions.test_seconds,
            phases=phases,
        )  # fmt: skip
    except MemoryError:
        del reserve
        return FoldResult(error=f"memory limit of {spec.limits.memory_mb} MB exceeded",
                          traceback="MemoryError")  # fmt: skip
    except BaseException as exc:
        theirs = _their_traceback(exc, code)
        sys.stderr.write(theirs)
        return FoldResult(error=_disk_reason(exc, spec) or _one_line(exc), traceback=theirs)


def _predict(
    spec: FoldSpec, data: Dataset, kit: Kit | None
) -> tuple[workflows.Predictions | workflows.Responses, dict[str, np.ndarray]]:
    """The kit's workflow or the native one, on this fold: (their timings, the arrays
    of the predictions file)."""
    fold = int(spec.fold)
    code = Path(spec.code)
    if kit is not None:
        from executor import rampfold

        rows = data.folds[f"train_{fold}"], data.folds[f"valid_{fold}"]
        kit_predictions = rampfold.run(kit, code, *rows)
        arrays: dict[str, np.ndarray] = {"train": kit_predictions.train}
        if kit_predictions.test is not None:
            arrays["test"] = kit_predictions.test
        return kit_predictions, arrays
    assert data.train is not None
    assert spec.task is not None and spec.target is not None  # a native dataset has both
    responses = workflows.run(
        spec.workflow, spec.task, code, train=data.train, test=data.test,
        target=spec.target, train_rows=data.folds[f"train_{fold}"],
        classes=list(spec.classes), seed=fold, scores=list(spec.scores),
    )  # fmt: skip
    return responses, responses.arrays(spec.task)


def _load_kit(spec: FoldSpec) -> Kit:
    from executor import rampfold

    return rampfold.load(Path(spec.dataset_path) / "bundle")


def _kit_failed(exc: BaseException) -> FoldResult:
    """Within the `except` that caught `exc` (its traceback is the one being handled)."""
    detail = traceback.format_exc()
    sys.stderr.write(detail)
    return FoldResult(error=f"the RAMP kit's data could not be read: {_one_line(exc)}",
                      traceback=detail)  # fmt: skip


def _disk_reason(exc: BaseException, spec: FoldSpec) -> str | None:
    """A full work folder or private /tmp (ENOSPC), or a file past RLIMIT_FSIZE (EFBIG),
    said as the fold's disk limit."""
    disk = spec.limits.disk_mb
    if not disk or not isinstance(exc, OSError):
        return None
    if exc.errno == errno.ENOSPC and spec.limits.namespaces:
        return (f"disk limit of {disk} MB exceeded (work/, or /tmp, /var/tmp and /dev/shm "
                f"together): {_one_line(exc)}")  # fmt: skip
    if exc.errno == errno.EFBIG:
        return f"disk limit of {disk} MB exceeded (one file): {_one_line(exc)}"
    return None


def _report(result: FoldResult, spec: FoldSpec) -> int:
    """Write result.json in the fold's output folder (wherever the submission left the
    cwd); the exit code."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.chdir(spec.work)
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(spec.outputs, ROOM))  # its room is now result.json's
        with open(os.path.join(spec.outputs, RESULT), "w", encoding="utf-8") as handle:
            json.dump(result.to_dict(), handle)
    except OSError as exc:
        sys.stderr.write(f"\n{type(exc).__name__}: {exc} (writing {RESULT})\n")
        return 1
    return 0 if result.ok else 1
