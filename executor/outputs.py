"""A fold's files: its scratch folder before, and its published results after.

The scratch folder belongs to root (when the executor is root) and holds `code/`
(a read-only copy of the submission) and `work/` (the only place the fold may write).
Whatever the fold left in `work/` is untrusted: files are opened without following
links, must be regular files, and are size-capped, before anything is copied out.
Published files are written under a temporary name, fsynced, then renamed into
`predictions/`: `<job>.<attempt>.npz`, `.log` and `.json` (the metadata, last).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import stat
import tempfile
from pathlib import Path
from typing import Any

from executor import SANDBOX_FAILED
from executor.config import ExecutorConfig
from executor.messages import FoldDone, FoldLimits, FoldResult, FoldSpec
from spool import arrays, linux, responses
from spool.bundles import freeze, remove
from spool.jobs import DETAIL_CHARS, REASON_CHARS, ClaimedJob, Outcome, clean_text
from spool.layout import Spool, write_atomic

PREDICTIONS = "pred.npz"  # as executor.fold writes it (not imported: it brings pandas)
RAMP_COLUMNS = 1024  # a RAMP kit's prediction width is its own: bound it by the rows
MAX_RESULT = 1 * 2**20


SCRATCH_PREFIX = "datarun-fold-"


def make_scratch(
    job: ClaimedJob, spool: Spool, parent: Path | None, ids: tuple[int, int] | None
) -> Path:
    """The fold's folder: its user may enter it (not list it), read `code/` (through
    its group: other folds may not) and write in `work/` alone."""
    # The executor's pid in the name: a later executor removes what a killed one left.
    prefix = f"{SCRATCH_PREFIX}{os.getpid()}-{job.key}-"
    scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    scratch.chmod(0o711 if ids else 0o700)
    code = scratch / "code"
    shutil.copytree(spool.absolute(job.submission_path), code, symlinks=True)
    freeze(code)
    work = scratch / "work"
    work.mkdir(mode=0o700)
    if ids is not None:
        os.chown(work, ids[0], -1)
        for path in [code, *code.rglob("*")]:
            if not path.is_symlink():
                os.chown(path, -1, ids[1])
                path.chmod(path.stat().st_mode & ~0o007)
    return scratch


def _read_untrusted(work: Path, name: str, cap: int) -> bytes | None:
    """The file `name` of the fold's work folder, if it is a regular file within `cap`."""
    try:
        folder = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
    except OSError:
        return None
    finally:
        os.close(folder)
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > cap:
            return None
        return handle.read(cap + 1)[:cap]


def _read_predictions(job: ClaimedJob, work: Path) -> tuple[bytes | None, str | None]:
    """The fold's pred.npz, read no further than the arrays its dataset expects need:
    its bytes, or why it was refused. Nothing larger is read or copied."""
    summary = job.summary
    n_train, n_test = int(summary.get("n_train") or 0), int(summary.get("n_test") or 0)
    if job.kind == "ramp" or not n_train:
        cap = (n_train + n_test) * 8 * RAMP_COLUMNS + 2**20
        data = _read_untrusted(work, PREDICTIONS, cap)
        why = f"the fold's predictions file is missing, not a file, or over {cap} bytes"
        return data, None if data is not None else why
    width = len(summary["classes"]) if summary.get("classes") else None
    expected, optional = responses.expected(job.task, n_train, n_test, width, job.workflow)
    try:
        folder = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        return None, f"the fold's work folder cannot be read: {exc.strerror}"
    try:
        return arrays.read_bytes(PREDICTIONS, expected, dir_fd=folder, optional=optional), None
    except arrays.ArraysRefused as exc:
        return None, f"the fold's predictions were refused: {exc}"
    finally:
        os.close(folder)


def _publish(folder: Path, name: str, data: bytes) -> Path:
    target = folder / name
    write_atomic(target, data)
    return target


def _reason(done: FoldDone, result: FoldResult | None, limits: FoldLimits, log_tail: str) -> str:
    """One line saying why a fold failed."""
    if done.start_error is not None:
        return f"the fold could not start: {done.start_error}"
    if done.timed_out:
        return f"timeout after {limits.timeout:g} s"
    if done.killed:
        return "stopped: the job was cancelled or given back"
    if done.oom:  # the fold's control group: all its processes and tmpfs files
        return (
            f"memory limit of {limits.memory_mb} MB exceeded (the fold's "
            "processes together, their shared memory and temporary files included)"
        )
    if result is not None and result.error:
        return result.error[:500]
    if done.disk_full:
        return f"disk limit of {limits.disk_mb} MB exceeded in work/"
    code = done.exit_code
    if code is not None and code < 0:
        if -code == signal.SIGXCPU and limits.cpu_seconds:
            return f"CPU time limit of {limits.cpu_seconds:g} s exceeded"
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown"
        return f"killed by signal {-code} ({name})"
    if code == SANDBOX_FAILED and log_tail:
        return f"the fold's sandbox could not be set up: {log_tail}"
    return f"exited with code {code} before writing its predictions"


RESULT_TEXT = {"error": REASON_CHARS, "traceback": DETAIL_CHARS}
RESULT_SECONDS = ("train_seconds", "valid_seconds", "test_seconds")


def parse_result(raw: bytes | None) -> tuple[FoldResult | None, str | None]:
    """The fold's result.json, which its own code could have written: every field is
    checked for its type before anything reads it. (result, why it is malformed)."""
    if raw is None:
        return None, None
    try:
        loaded = json.loads(raw)
    except ValueError:
        return None, "the fold's result file is not valid JSON"
    if not isinstance(loaded, dict):
        return None, "the fold's result file is not a JSON object"
    text: dict[str, str | None] = {}
    for name, cap in RESULT_TEXT.items():
        value = loaded.get(name)
        if value is not None and not isinstance(value, str):
            return None, f"the fold's result file is malformed: {name} is not text"
        one_line = name == "error"  # NUL, lone surrogates and such, out before use
        text[name] = clean_text(value, cap, one_line=one_line) if value is not None else None
    seconds: dict[str, float | None] = {}
    for name in RESULT_SECONDS:
        value = loaded.get(name)
        if value is not None and not (
            isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0
        ):  # fmt: skip
            return None, f"the fold's result file is malformed: {name} is not a duration"
        seconds[name] = None if value is None else float(value)
    versions = loaded.get("versions")
    if not (isinstance(versions, dict) and all(
        isinstance(k, str) and isinstance(v, str) and len(k) + len(v) < 200
        for k, v in versions.items()
    )):  # fmt: skip
        versions = None
    return FoldResult(
        ok=loaded.get("ok") is True, error=text["error"], traceback=text["traceback"],
        train_seconds=seconds["train_seconds"], valid_seconds=seconds["valid_seconds"],
        test_seconds=seconds["test_seconds"],
        versions=dict(list(versions.items())[:20]) if versions is not None else None,
    ), None  # fmt: skip


def collect(
    job: ClaimedJob, scratch: Path, done: FoldDone, *, limits: FoldLimits,
    spool: Spool, executor: dict[str, Any], out: Path | None = None, log: Path | None = None,
) -> Outcome:  # fmt: skip
    """Publish what the fold produced and say how it went: its files from `out` (its
    work folder unless it had a folder of its own, in a shared child), its log `log`."""
    out = out or scratch / "work"
    log = log or scratch / "fold.log"
    result, predictions = _what_it_left(job, out, done)
    ok = predictions is not None
    error = None if ok else _reason(done, result, limits, _last_line(log))
    theirs = result.traceback if error and result is not None else None
    folder = spool.predictions
    log_path = _publish_log(folder / f"{job.key}.log", log, error, theirs)
    npz = _publish(folder, f"{job.key}.npz", predictions) if predictions is not None else None
    peak, own, group = _memory(done)
    meta = {
        "job": job.id, "attempt": job.attempt, "dataset": job.dataset,
        "submission": job.submission, "team": job.team, "version": job.version,
        "fold": job.fold, **executor,
        "wall_seconds": done.wall_seconds, "cpu_seconds": done.cpu_seconds,
        "peak_rss_bytes": peak, "fold_rss_bytes": own,
        "memory_measured_by": "cgroup" if group is not None else "rusage",
        "exit_code": done.exit_code, "timed_out": done.timed_out,
        "log_bytes": done.log_bytes, "log_dropped": done.log_dropped,
        "error": error, "traceback": theirs,
        "train_seconds": result.train_seconds if result else None,
        "valid_seconds": result.valid_seconds if result else None,
        "test_seconds": result.test_seconds if result else None,
        "versions": result.versions if result else None,
    }  # fmt: skip
    _publish(folder, f"{job.key}.json", json.dumps(meta, indent=2).encode())

    def relative(path: Path | None) -> str | None:
        return path.relative_to(spool.root).as_posix() if path else None

    return Outcome(
        error=error,
        detail=theirs,
        exit_status="ok" if ok else _status(done),
        prediction_path=relative(npz),
        log_path=relative(log_path),
        train_seconds=result.train_seconds if ok and result else None,
        valid_seconds=result.valid_seconds if ok and result else None,
        test_seconds=result.test_seconds if ok and result else None,
        cpu_seconds=done.cpu_seconds,
        peak_rss_bytes=group if group is not None else peak,
    )


def _what_it_left(
    job: ClaimedJob, work: Path, done: FoldDone
) -> tuple[FoldResult | None, bytes | None]:
    """The fold's own account, and its predictions only if it ended well and says so
    (read no further than its dataset expects): a malformed account or refused
    predictions become the reason the fold failed."""
    result, malformed = parse_result(_read_untrusted(work, "result.json", MAX_RESULT))
    if malformed:
        result = FoldResult(error=malformed)
    if not (done.ended and done.exit_code == 0 and result is not None and result.ok):
        return result, None
    predictions, refused = _read_predictions(job, work)
    if predictions is None:
        return FoldResult(error=refused), None
    return result, predictions


def _publish_log(target: Path, output: Path, error: str | None, theirs: str | None) -> Path:
    """The fold's log in predictions/: a failure's reason and traceback first, then
    what the fold printed (as the zygote capped it)."""
    with open(target, "wb") as handle:
        if error:
            said = f"{error}\n{(theirs or '').rstrip()}\n\n--- the fold's output ---\n"
            handle.write(said.encode())
        try:
            with open(output, "rb") as source:
                shutil.copyfileobj(source, handle)
        except OSError:
            pass
    return target


def _memory(done: FoldDone) -> tuple[int | None, int | None, int | None]:
    """(the largest process's peak, the fold's own peak above what it was forked
    with, the whole fold's peak from its control group, if it had one), in bytes."""
    base = int(done.base_rss_kb or 0) * 1024
    peak = int(done.peak_rss_kb or 0) * 1024 or None
    group = done.memory_peak_bytes  # the fold's control group: all its processes
    own = group if group is not None else (max(0, peak - base) if peak else None)
    return peak, own, group


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - 1000))
            text = handle.read().decode(errors="replace")
            lines = [x for x in text.strip().splitlines() if not x.startswith("[datarun:")]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _status(done: FoldDone) -> str:
    if done.timed_out:
        return "timeout"
    code = done.exit_code
    if code is not None and code < 0:
        return f"signal {-code}"
    return f"exit {code}"


def discard(job: ClaimedJob, spool: Spool) -> None:
    """A fenced attempt's files: the job belongs to a newer attempt now."""
    for suffix in ("npz", "json", "log"):
        (spool.predictions / f"{job.key}.{suffix}").unlink(missing_ok=True)


def clean(scratch: Path) -> None:
    """Remove a scratch folder, whatever the fold left in it (a tree deeper than
    PATH_MAX, folders made unreadable, links): bundles.remove, which works relative to
    open folders, without recursion, a few descriptors at a time, never following links."""
    remove(scratch)


def clean_stale(parent: Path | None) -> list[Path]:
    """Remove the scratch folders of executors that died without cleaning up."""
    removed = []
    for path in Path(parent or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        owner = path.name[len(SCRATCH_PREFIX) :].split("-", 1)[0]
        if not owner.isdigit() or linux.pid_alive(int(owner)):
            continue
        if path.lstat().st_uid != os.geteuid() or path.is_symlink():
            continue  # not an executor's: a fold may make such names in /tmp
        try:
            remove(path)
        except OSError:
            continue  # another executor's clean-up got there first
        removed.append(path)
    return removed


def fold_spec(
    job: ClaimedJob, scratch: Path, ids: tuple[int, int] | None, spool: Spool,
    config: ExecutorConfig,
) -> FoldSpec:  # fmt: skip
    """What the fold's child needs, for this attempt in this scratch folder."""
    threads = str(config.threads)
    return FoldSpec(
        dataset_path=str(spool.absolute(job.dataset_path)),
        kind=job.kind, workflow=job.workflow, task=job.task, target=job.target,
        fold=job.fold, classes=tuple(job.summary.get("classes") or ()),
        scores=tuple(job.scores or ()),
        code=str(scratch / "code"), work=str(scratch / "work"),
        log=str(scratch / "fold.log"),
        uid=ids[0] if ids else None, gid=ids[1] if ids else None,
        limits=config.limits(),
        # never shown to a fold, whatever folder its Python lives in
        hide=(str(spool.root), str(scratch.parent)),
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(scratch / "work"),
             "TMPDIR": str(scratch / "work"), "LANG": "C.UTF-8",
             "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
             "MKL_NUM_THREADS": threads},
    )  # fmt: skip


def has_room(folder: Path) -> bool:
    """Whether 64 KiB can be written and synced in `folder` (a full disk: no)."""
    try:
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"\0" * 65536)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError:
        return False
    return True
