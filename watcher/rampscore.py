"""Scores of RAMP kits' folds, computed with the kit's own score types in a child.

A kit's score types and prediction type are its `problem.py`'s code: trusted, but never
run inside the master's daemon. The sweeper keeps one child per kit with work, `python
-m watcher.rampscore KIT FOLDS` (JSON requests on stdin, one answer line each on
stdout, each with a timeout). The child computes exactly what ramp-test computes: per
fold, each score type on the fold's training rows, its validation rows and the test
set; per submission, the bagged scores of ramp-workflow's own `get_score_cv_bags`
(valid rows combined over the folds that held them out, test predictions over all).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from spool import kitsandbox
from spool.environment import child_environment
from spool.errors import DatarunError

Values = list[tuple[str, str, float]]  # (split, metric, value)


class KitScoringFailed(DatarunError):
    """The kit's scoring child failed as a whole (its problem.py, a timeout)."""


class _Died(Exception):
    """The child went away (or answered nonsense) during an exchange."""


class Scorer:
    """One kit's scoring child, kept while the kit has work: it imports ramp-workflow and
    reads the kit's data once, then answers one JSON line per request. Thread-safe; a
    request that times out or finds the child dead kills it, and the next starts anew."""

    def __init__(
        self, kit: Path, folds: Path, timeout: float, predictions: Path | None = None
    ) -> None:
        self.kit, self.folds, self.timeout = kit, folds, timeout
        self.predictions = predictions  # where the files it is asked about live
        self.used = time.monotonic()
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._buffer = b""

    def ask(self, payload: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.used = time.monotonic()
            if self._proc is not None:
                try:
                    return self._exchange(self._proc, payload)
                except _Died:  # it died since the last request: once more, with a new one
                    self._kill()
                except KitScoringFailed:
                    self._kill()
                    raise
            try:
                return self._exchange(self._start(), payload)
            except _Died as exc:
                self._kill()
                raise KitScoringFailed(
                    f"scoring with {self.kit}/problem.py failed: {exc}"
                ) from None
            except KitScoringFailed:
                self._kill()
                raise

    def _exchange(self, proc: subprocess.Popen[bytes], payload: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        try:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(payload).encode() + b"\n")
            proc.stdin.flush()
            answer: dict[str, Any] = json.loads(self._line(proc, deadline))
        except (OSError, ValueError) as exc:
            raise _Died(str(exc)) from None
        if "fatal" in answer:
            raise KitScoringFailed(f"scoring with {self.kit}/problem.py failed: {answer['fatal']}")
        return answer

    def _start(self) -> subprocess.Popen[bytes]:
        env = child_environment(threads=1)
        ids = kitsandbox.kit_ids()
        confined = [] if ids is None else [f"--run-as={ids[0]}:{ids[1]}"]
        if ids is not None and self.predictions is not None:
            confined.append(f"--read={self.predictions.absolute()}")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "watcher.rampscore", *confined, str(self.kit), str(self.folds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env, cwd=self.kit, start_new_session=True,
        )  # fmt: skip
        self._buffer = b""
        return self._proc

    def _line(self, proc: subprocess.Popen[bytes], deadline: float) -> bytes:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KitScoringFailed(
                    f"scoring with {self.kit}/problem.py took over {self.timeout:.0f} s"
                )
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise _Died(f"the child died (exit {proc.wait()})")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _kill(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
            for pipe in (self._proc.stdin, self._proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):  # unflushed bytes to a dead child
                        pipe.close()
            self._proc = None

    def close(self) -> None:
        with self._lock:
            self._kill()


# ---- the child ------------------------------------------------------------------------


class _Kit:
    def __init__(self, kit: Path, folds_file: Path) -> None:
        import numpy as np

        from spool.rampkit import load_problem, read_data

        self.problem = load_problem(kit)
        _, self.y_train, _, self.y_test = read_data(self.problem, kit)
        self.score_types = list(self.problem.score_types)
        with np.load(folds_file, allow_pickle=False) as data:
            self.folds = {n: data[n] for n in data.files}

    def rows(self, fold: int) -> tuple[Any, Any]:
        return self.folds[f"train_{fold}"], self.folds[f"valid_{fold}"]

    def load(self, path: str) -> tuple[Any, Any]:
        from spool import arrays

        width = int(getattr(self.problem.Predictions, "n_columns", 0) or 0) or None
        expected = {"train": arrays.shape_of(len(self.y_train), width)}
        if self.y_test is not None:
            expected["test"] = arrays.shape_of(len(self.y_test), width)
        try:  # headers and sizes checked before anything is allocated
            found = arrays.load(path, expected)
        except arrays.ArraysRefused as exc:
            raise ValueError(str(exc)) from None
        train, test = found["train"], found.get("test")
        if len(train) != len(self.y_train):
            raise ValueError(f"predictions for {len(train)} training rows; the kit has "
                             f"{len(self.y_train)}")  # fmt: skip
        if self.y_test is not None:
            if test is None:
                raise ValueError("no test predictions; the kit has a test set")
            if len(test) != len(self.y_test):
                raise ValueError(f"predictions for {len(test)} test rows; the kit has "
                                 f"{len(self.y_test)}")  # fmt: skip
        return train, test

    def fold_scores(self, fold: int, path: str) -> Values:
        """As ramp-workflow's run_submission_on_cv_fold and score_matrix."""
        P = self.problem.Predictions
        train, test = self.load(path)
        train_is, valid_is = self.rows(fold)
        pairs = [("train", P(y_true=self.y_train, fold_is=train_is),
                  P(y_pred=train, fold_is=train_is)),
                 ("valid", P(y_true=self.y_train, fold_is=valid_is),
                  P(y_pred=train, fold_is=valid_is))]  # fmt: skip
        if self.y_test is not None:
            pairs.append(("test", P(y_true=self.y_test), P(y_pred=test)))
        return [(split, st.name, float(st.score_function(truth, pred)))
                for split, truth, pred in pairs for st in self.score_types]  # fmt: skip

    def bagged(self, paths: list[tuple[int, str]]) -> Values:
        """As ramp-workflow's bag_submissions: the score of all folds combined."""
        from rampwf.utils.combine import get_score_cv_bags

        P = self.problem.Predictions
        loaded = [(fold, *self.load(path)) for fold, path in sorted(paths)]
        steps: list[tuple[str, Any, list[Any], list[Any] | None]] = [("valid", self.y_train,
                  [P(y_pred=train, fold_is=self.rows(f)[1]) for f, train, _ in loaded],
                  [self.rows(f)[1] for f, _, _ in loaded])]  # fmt: skip
        if self.y_test is not None:
            steps.append(("test", self.y_test, [P(y_pred=test) for _, _, test in loaded], None))
        out: Values = []
        for split, y_true, predictions, rows in steps:
            for st in self.score_types:
                _, scores = get_score_cv_bags(st, predictions, P(y_true=y_true),
                                              test_is_list=rows)  # fmt: skip
                out.append((split, st.name, float(scores[-1])))
        return out


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _handle(kit: _Kit, payload: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {"scores": {}, "bagged": {}}
    for job in payload.get("score", []):
        try:
            answer["scores"][str(job["id"])] = kit.fold_scores(int(job["fold"]), job["pred"])
        except Exception as exc:
            answer["scores"][str(job["id"])] = {"error": _one_line(exc)}
    for sub in payload.get("bag", []):
        try:
            answer["bagged"][str(sub["id"])] = kit.bagged([(int(f), p) for f, p in sub["preds"]])
        except Exception as exc:
            answer["bagged"][str(sub["id"])] = {"error": _one_line(exc)}
    return answer


def _confine(options: dict[str, str], kit: Path, folds: Path) -> None:
    """The kit's code as its own user, in a root showing the kit, its folds and the
    prediction files (read-only): never root's code (spool.kitsandbox)."""
    if not options.get("run-as"):
        return
    import numpy  # noqa: F401  (loaded as root: the new root shows them too, but faster)

    with contextlib.suppress(ImportError):
        import rampwf  # noqa: F401
    uid, _, gid = options["run-as"].partition(":")
    seen = [str(kit.absolute()), str(folds.absolute().parent)]
    seen += [options["read"]] if options.get("read") else []
    try:
        kitsandbox.confine((int(uid), int(gid)), read_only=seen, hide=seen)
    except OSError as exc:  # no namespaces here (a container): as before, as root
        sys.stderr.write(f"the kit's code runs as root: {exc}\n")


def main(argv: list[str]) -> int:
    options = {k: v for k, _, v in (a[2:].partition("=") for a in argv if a.startswith("--"))}
    argv = [a for a in argv if not a.startswith("--")]
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # the kit's prints must not corrupt the answers
    try:
        _confine(options, Path(argv[0]), Path(argv[1]))
        os.chdir(argv[0])  # as ramp-test, which runs in the kit's folder
        kit = _Kit(Path(argv[0]), Path(argv[1]))
    except Exception as exc:
        answers.write(json.dumps({"fatal": _one_line(exc)}) + "\n")
        answers.flush()
        return 1
    for line in sys.stdin:
        answers.write(json.dumps(_handle(kit, json.loads(line))) + "\n")
        answers.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
