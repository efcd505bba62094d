"""Prepare a native dataset bundle: read its data, check it, split off the test set
(`spool.datafiles`), compute the CV folds once (`spool.folds`), and write them where
executors read them.

This runs in a child process (`python -m spool.prepare [--memory-mb N] [--file-mb N]
[--module spool.rampkit] BUNDLE OUT PARENT`), with a timeout, never inside a daemon:
data files are large and pandas' parsers are not ours to trust. As a fold is, the child
is limited: its memory (RLIMIT_AS: its size once its libraries are loaded, plus N MB; a
400 KB .csv.gz can expand to gigabytes) and the size of each file it writes
(RLIMIT_FSIZE). The child writes OUT/train.parquet, OUT/test.parquet and
OUT/test_labels.parquet (when there is a test set: its features, and its target apart,
so that the intake can make the labels readable by the master only), OUT/folds.npz and
OUT/summary.json, or OUT/error.txt (one problem per line) and exits 2.

How rows are split (README, "Folds anyone can reproduce", says it for users): with
`test_fraction`, `train_test_split` (shuffled, random_state=test_seed, stratified by the
target for a classification whose every class has two rows or more) keeps the training
rows in its own order; the folds are then computed on those rows by the scheme's
scikit-learn splitter (`spool.folds`), or read from the explicit folds file, whose
numbers index those rows. folds.npz holds `train_<k>` and `valid_<k>` (positions in
train.parquet) and `rows` (for each row of train.parquet, its 0-based row in the train
file as dropped), from which results/<dataset>/folds.json names the train file's rows.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spool import kitsandbox, linux
from spool.datafiles import check_data, one_line, read_data, split_test
from spool.environment import child_environment
from spool.errors import BundleError
from spool.folds import SUMMARY_FILE, compute_folds, write_prepared
from spool.manifests import DATASET_MANIFEST, parse_dataset_manifest
from spool.preparer import PreparerDied, WarmPreparer
from spool.trees import own

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

LABELS_FILE = "test_labels.parquet"
ERROR_FILE = "error.txt"
UNLIMITED = 4  # the child's exit code when it cannot set its limits: the machine's fault


def prepare_in_child(
    bundle: Path, out: Path, timeout: float, module: str = "spool.prepare", *,
    memory_mb: int | None = None, file_mb: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run the preparation (`module`: this one, or `spool.rampkit` for a RAMP kit) in a
    child with a timeout, `memory_mb` more memory than its libraries take, and no file
    larger than `file_mb`; the summary, or BundleError."""
    out.mkdir(parents=True, exist_ok=True)
    env = child_environment(threads=1)
    env["MALLOC_ARENA_MAX"] = "2"  # a thread's arena reserves 64 MB of address space
    options = [f"--memory-mb={memory_mb or 0}", f"--file-mb={file_mb or 0}"]
    ids = kitsandbox.kit_ids() if module == "spool.rampkit" else None
    if ids is not None:  # the kit's code writes `out` as the kit's user
        os.chown(out, *ids)
        options.append(f"--run-as={ids[0]}:{ids[1]}")
    argv = [*options, f"--module={module}", str(bundle), str(out)]
    try:
        try:
            returncode, stderr = _run(argv, env, timeout, warm=ids is None and
                                      module == "spool.prepare")  # fmt: skip
        finally:
            if ids is not None:  # what the kit's user wrote is the master's again
                own(out, os.geteuid(), os.getegid())
    except subprocess.TimeoutExpired:
        what = DATASET_MANIFEST if module == "spool.prepare" else "problem.py"
        raise BundleError(
            f"{what}: preparing the data took longer than {timeout:.0f} s; "
            "make the data smaller, or ask the admin to raise prepare_timeout_seconds"
        ) from None
    if (out / ERROR_FILE).is_file():
        raise BundleError((out / ERROR_FILE).read_text(encoding="utf-8").strip())
    if returncode != 0 or not (out / SUMMARY_FILE).is_file():
        last = (stderr or b"").decode("utf-8", "replace").strip().splitlines()[-1:] or ["?"]
        if returncode == UNLIMITED:  # not the dataset's fault: retried later
            raise OSError(errno.EIO, f"cannot limit the preparing process: {last[0]}")
        if memory_mb and returncode in (-signal.SIGABRT, -signal.SIGSEGV, -signal.SIGBUS):
            raise BundleError(  # native code that cannot say MemoryError aborts instead
                f"preparing the data failed (killed by signal {-returncode}), perhaps "
                f"for lack of memory: it may use {memory_mb} MB; {last[0]}"
            )
        if returncode == -signal.SIGXFSZ:
            raise BundleError(too_large(file_mb))
        raise BundleError(f"preparing the data failed (exit {returncode}): {last[0]}")
    summary: dict[str, Any] = json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
    return summary


def needs_more(memory_mb: int | None, exc: BaseException) -> str:
    """The reason a preparation that ran out of its memory is refused."""
    detail = str(exc).strip().splitlines()
    what = f"more than {memory_mb} MB" if memory_mb else "more memory than the master has"
    return (
        f"the dataset needs {what} to prepare ({detail[0] if detail else 'MemoryError'}); "
        "make the data smaller (fewer rows or columns, smaller types), or ask the admin to "
        "raise prepare_memory_mb"
    )


def too_large(file_mb: int | None) -> str:
    return (
        f"preparing the data writes a file larger than {file_mb} MB; make the data "
        "smaller, or ask the admin to raise prepare_file_mb"
    )


def _too_large(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and (
        exc.errno == errno.EFBIG or "file too large" in str(exc).lower()
    )


def prepare(bundle: Path, out: Path) -> dict[str, Any]:
    """The child's work; raises BundleError for anything the organizer must fix."""
    import numpy as np

    m = parse_dataset_manifest((bundle / DATASET_MANIFEST).read_bytes())
    # Row i of the frame is row i of the train file (a Parquet file's own index aside).
    train = check_data(read_data(bundle, m.data.train), m, m.data.train).reset_index(drop=True)
    test: pd.DataFrame | None = None
    if m.data.test is not None:
        test = check_data(read_data(bundle, m.data.test), m, m.data.test, is_test=True)
        absent = [c for c in train.columns if c not in test.columns]
        if absent:
            raise BundleError(f"{m.data.test}: lacks columns of the training data: {absent[:8]}")
        test = test[list(train.columns)]
    else:
        train, test = split_test(train, m)
    rows = train.index.to_numpy(dtype=np.int64)  # each training row's row in the train file
    train = train.reset_index(drop=True)
    folds = compute_folds(train, m, bundle)
    try:
        train.to_parquet(out / "train.parquet", index=False)
        if test is not None:
            test.drop(columns=[m.target]).to_parquet(out / "test.parquet", index=False)
            test[[m.target]].to_parquet(out / LABELS_FILE, index=False)
    except MemoryError:
        raise
    except Exception as exc:
        if _too_large(exc):
            raise
        raise BundleError(f"{m.data.train}: a column mixes types: {one_line(exc)}") from None
    y = train[m.target]
    summary = {
        "n_train": len(train),
        "n_test": 0 if test is None else len(test),
        "n_folds": len(folds),
        "columns": [str(c) for c in train.columns if c != m.target],
        # in the order scikit-learn gives `classes_` (sorted values), as names
        "classes": [str(c) for c in np.unique(y.to_numpy())]
        if m.task == "classification"
        else None,
    }
    # rows: how results/<dataset>/folds.json names rows of the train file
    write_prepared(out, folds, summary, rows=rows)
    return summary


def die_with_parent(parent: int) -> None:
    """A master killed by SIGKILL must not leave us writing into a folder it reuses."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(3)


def confine(memory_mb: int, file_mb: int) -> None:
    """The fold's kind of limits: memory beyond what the libraries take once loaded and
    warmed up (pyarrow reserves its pools at first use), and the largest file written
    (a write past it fails with EFBIG instead of killing us with SIGXFSZ)."""
    import io

    import numpy  # noqa: F401
    import pandas as pd
    import sklearn.model_selection  # noqa: F401

    buffer = io.BytesIO()
    pd.DataFrame({"a": [0]}).to_parquet(buffer)
    pd.read_parquet(io.BytesIO(buffer.getvalue()))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_mb:
        room = linux.vm_size() + memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (room, room))
    if file_mb:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb * 2**20, file_mb * 2**20))


_warm = WarmPreparer()  # a native dataset's preparation forks from it (spool.preparer)


def _run(argv: list[str], env: dict[str, str], timeout: float, *, warm: bool) -> tuple[int, bytes]:
    """`python -m spool.prepare ARGV PARENT`'s exit code and stderr: forked from the warm
    preparer, or (a kit, or no warm preparer) a fresh child; TimeoutExpired when killed."""
    if warm:
        try:
            return _warm.run(argv, env, timeout)
        except PreparerDied as exc:
            log.warning("%s; preparing in a fresh child", exc)
    proc = subprocess.Popen(
        [sys.executable, "-m", "spool.prepare", *argv, str(os.getpid())],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=env, start_new_session=True,
    )  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=timeout)
    finally:  # a timeout, or our own end: the child's whole group goes
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, stderr or b""


def _prepare_in_this(module: str, bundle: Path, out: Path) -> None:
    if module == "spool.rampkit":
        from spool import rampkit

        os.chdir(bundle)  # as ramp-test, which runs in the kit's folder
        rampkit.prepare(bundle, out)
    else:
        prepare(bundle, out)


def main(argv: list[str]) -> int:
    options = {k: v for k, _, v in (a[2:].partition("=") for a in argv if a.startswith("--"))}
    args = [a for a in argv if not a.startswith("--")]
    memory_mb, file_mb = int(options.get("memory-mb") or 0), int(options.get("file-mb") or 0)
    bundle, out = Path(args[0]), Path(args[1])
    if len(args) > 2:
        die_with_parent(int(args[2]))
    try:
        confine(memory_mb, file_mb)
    except OSError as exc:  # e.g. no /proc to measure our size: never run unlimited
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        return UNLIMITED
    if options.get("run-as"):  # a kit: its problem.py as its own user, in its own root
        uid, _, gid = options["run-as"].partition(":")
        ids, mine = (int(uid), int(gid)), str(out.absolute())
        try:
            kitsandbox.confine(ids, read_only=[str(bundle.absolute())], writable=[mine],
                               hide=[mine])  # fmt: skip
        except OSError as exc:  # no namespaces here (a container): as before, as root
            sys.stderr.write(f"the kit's code runs as root: {exc}\n")
    reserve = bytearray(1 << 20)  # freed to report a MemoryError
    try:
        _prepare_in_this(options.get("module", "spool.prepare"), bundle, out)
    except MemoryError as exc:
        del reserve
        return _refuse(out, needs_more(memory_mb, exc))
    except BundleError as exc:  # a kit's own code's errors come wrapped in one
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, MemoryError):
            del reserve
            return _refuse(out, needs_more(memory_mb, cause))
        return _refuse(out, too_large(file_mb) if _too_large(cause or exc) else str(exc))
    except OSError as exc:
        if not _too_large(exc):
            raise
        return _refuse(out, too_large(file_mb))
    return 0


def _refuse(out: Path, reason: str) -> int:
    (out / ERROR_FILE).unlink(missing_ok=True)  # perhaps cut short at the file cap
    (out / ERROR_FILE).write_text(reason + "\n", encoding="utf-8")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
