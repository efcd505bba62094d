"""Scoring children: every score is computed outside the master's process.

Prediction files are written by submissions' code and scored with numerical libraries
(scikit-learn's scorers, a kit's score types); none of that runs in the master, which
imports no numerical library at all. The sweeper and the results writer ask one
long-lived child per dataset (`python -m watcher.nativescore` for a native dataset,
`python -m watcher.rampscore` for a RAMP kit): it loads its libraries and what it
scores against once, then answers one JSON line per request. A root master confines
each child to a root of its own showing, read-only, only the prediction files (and a
kit's folder), as a user of its own (`spool.kitsandbox`), once the child has read what
only the master may read (a dataset's test labels).

A child that dies is started again at the next request; one idle for IDLE seconds is
stopped. A batch that kills its child (or outlasts the timeout) is split in halves and
asked again, so that the one file that does it fails alone, with that reason, and the
others are scored. A child that cannot start at all (a kit's problem.py that fails,
stored data that cannot be read) leaves its dataset's jobs predicted and is tried again
BACKOFF seconds later.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spool import kitsandbox
from spool.environment import child_environment
from spool.errors import DatarunError

log = logging.getLogger(__name__)

IDLE = 300.0  # seconds a child is kept without work
BACKOFF = 60.0  # seconds before a dataset whose child could not start is tried again
Values = list[tuple[str, str, float]]  # (split, metric, value)


class ScoringFailed(DatarunError):
    """A scoring child failed during a request: it died, or took too long."""


class ScorerBroken(ScoringFailed):
    """A scoring child could not start: a kit's problem.py, data that cannot be read."""


class Unscorable(DatarunError):
    """The prediction file is wrong; the message says how, in one line."""


class _Died(Exception):
    """The child went away (or answered nonsense) during an exchange."""


@dataclass(frozen=True)
class Dataset:
    """What a dataset's scoring child is started from."""

    id: int
    path: str  # its store folder, relative to the spool
    kind: str
    target: str
    task: str
    metrics: tuple[str, ...]

    @classmethod
    def of(cls, row: dict[str, Any]) -> Dataset:
        return cls(int(row["dataset_id"]), str(row["dataset_path"]), str(row["kind"]),
                   str(row["target"]), str(row["task"]), tuple(row["metrics"]))  # fmt: skip


class Child:
    """One scoring child. Thread-safe; a request that times out or finds the child dead
    kills it, and the next starts a new one."""

    def __init__(self, argv: list[str], cwd: Path, timeout: float, name: str) -> None:
        self.argv, self.cwd, self.timeout, self.name = argv, cwd, timeout, name
        self.used = time.monotonic()
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._buffer = b""

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def ask(self, payload: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.used = time.monotonic()
            try:
                if self._proc is not None:
                    try:
                        return self._exchange(self._proc, payload)
                    except _Died:  # it died since the last request: once more, with a new one
                        self._kill()
                proc = self._start()
                try:
                    return self._exchange(proc, payload)
                except _Died as exc:
                    raise ScoringFailed(f"{self.name} failed: {exc}") from None
            except ScoringFailed:
                self._kill()
                raise
            finally:
                self.used = time.monotonic()

    def _exchange(self, proc: subprocess.Popen[bytes], payload: dict[str, Any]) -> dict[str, Any]:
        try:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(payload).encode() + b"\n")
            proc.stdin.flush()
            answer: dict[str, Any] = json.loads(self._line(proc, self.timeout))
        except (OSError, ValueError) as exc:
            raise _Died(str(exc)) from None
        return answer

    def _start(self) -> subprocess.Popen[bytes]:
        """A new child, once it says it is ready; ScorerBroken if it cannot be."""
        self._proc = subprocess.Popen(
            [sys.executable, "-m", *self.argv],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=child_environment(threads=1), cwd=self.cwd, start_new_session=True,
        )  # fmt: skip
        self._buffer = b""
        try:
            said = json.loads(self._line(self._proc, self.timeout))
        except ScoringFailed as exc:
            raise ScorerBroken(f"{self.name} could not start: {exc}") from None
        except (_Died, OSError, ValueError) as exc:
            raise ScorerBroken(f"{self.name} could not start: {exc}") from None
        if not isinstance(said, dict) or not said.get("ready"):
            why = said.get("fatal") if isinstance(said, dict) else None
            raise ScorerBroken(f"{self.name} could not start: {why or said}")
        return self._proc

    def _line(self, proc: subprocess.Popen[bytes], timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ScoringFailed(f"{self.name} took over {timeout:.0f} s")
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


def child_for(store: Path, dataset: Dataset, predictions: Path, timeout: float) -> Child:
    """The child that scores `dataset`, confined when the master is root."""
    ids = kitsandbox.kit_ids()
    confined = [] if ids is None else [f"--run-as={ids[0]}:{ids[1]}",
                                       f"--read={predictions.absolute()}"]  # fmt: skip
    folds = store / "prepared" / "folds.npz"
    if dataset.kind == "ramp":
        argv = ["watcher.rampscore", *confined, str(store / "bundle"), str(folds)]
        return Child(argv, store / "bundle", timeout, f"scoring with {store}/bundle/problem.py")
    argv = ["watcher.nativescore", *confined, str(store), dataset.target, dataset.task]
    return Child(argv, store, timeout, f"the scoring child of {store.name}")


class Scorers:
    """The scoring children of the datasets with work, one per dataset."""

    def __init__(self, spool_root: Path, predictions: Path, timeout: float = 300.0) -> None:
        self.root, self.predictions, self.timeout = spool_root, predictions, timeout
        self._children: dict[str, Child] = {}  # dataset store path -> its child
        self._backoff: dict[str, float] = {}  # dataset store path -> when to try again
        self._lock = threading.Lock()

    def child(self, dataset: Dataset) -> Child:
        with self._lock:
            found = self._children.get(dataset.path)
            if found is None:
                store = self.root / dataset.path
                found = child_for(store, dataset, self.predictions, self.timeout)
                self._children[dataset.path] = found
            found.used = time.monotonic()  # in use: stop_idle leaves it alone
            return found

    def waiting(self, dataset: Dataset) -> bool:
        """Whether the dataset's child failed to start less than BACKOFF seconds ago."""
        return self._backoff.get(dataset.path, 0.0) > time.monotonic()

    def stop_idle(self) -> int:
        """Stop the children without work for IDLE seconds; how many were stopped."""
        now = time.monotonic()
        with self._lock:
            idle = [p for p, c in self._children.items() if now - c.used > IDLE]
            stopped = [self._children.pop(p) for p in idle]
        for child in stopped:
            child.close()
        return len(stopped)

    def close(self) -> None:
        with self._lock:
            children, self._children = list(self._children.values()), {}
        for child in children:
            child.close()

    def ask(self, dataset: Dataset, payload: dict[str, Any]) -> dict[str, Any]:
        """One request; ScorerBroken also puts the dataset in backoff, and is raised at
        once while it lasts (a broken kit's child is not started again at each pass)."""
        if self.waiting(dataset):
            raise ScorerBroken(f"the scoring child of {dataset.path} could not start a "
                               "moment ago; tried again later")  # fmt: skip
        try:
            return self.child(dataset).ask(payload)
        except ScorerBroken as exc:
            log.error("%s; its work waits, tried again in %d s", exc, BACKOFF)
            self._backoff[dataset.path] = time.monotonic() + BACKOFF
            raise

    def score(self, dataset: Dataset, todo: list[dict[str, Any]]) -> dict[int, Values | Unscorable]:
        """job id -> its (split, metric, value), or why its file cannot be scored, for
        todo's jobs ({"id", "fold", "pred"}). ScorerBroken when the child cannot start."""
        return self._split(dataset, "score", "scores", todo)

    def bag(
        self, dataset: Dataset, preds: dict[int, list[tuple[int, str]]]
    ) -> dict[int, Values | Unscorable]:
        """Bagged scores of submissions: submission id -> values, or why not."""
        todo = [{"id": ident, "preds": p} for ident, p in preds.items()]
        return self._split(dataset, "bag", "bagged", todo)

    def folds(self, dataset: Dataset) -> dict[str, list[int]]:
        """The dataset's stored folds (folds.npz: train_k, valid_k, and rows if kept)."""
        answer = self.ask(dataset, {"folds": True})
        return {str(k): [int(i) for i in v] for k, v in answer["folds"].items()}

    def _split(self, dataset: Dataset, verb: str, key: str, todo: list[dict[str, Any]],
               ) -> dict[int, Values | Unscorable]:  # fmt: skip
        if not todo:
            return {}
        try:
            answer = self.ask(dataset, {verb: todo, "metrics": list(dataset.metrics)})
        except ScorerBroken:
            raise
        except ScoringFailed as exc:
            if len(todo) == 1:  # this file alone stops the child
                log.warning("%s: %s %s stopped it", exc, verb, todo[0]["id"])
                return {int(todo[0]["id"]): Unscorable(f"scoring it stopped datarun's scoring "
                                                       f"child ({exc})")}  # fmt: skip
            half = len(todo) // 2
            return {**self._split(dataset, verb, key, todo[:half]),
                    **self._split(dataset, verb, key, todo[half:])}  # fmt: skip
        out: dict[int, Values | Unscorable] = {}
        for job in todo:
            got = answer.get(key, {}).get(str(job["id"]))
            if isinstance(got, list):
                out[int(job["id"])] = [(str(s), str(m), float(v)) for s, m, v in got]
            else:
                why = (got or {}).get("error") or f"no answer from the scoring child ({verb})"
                out[int(job["id"])] = Unscorable(str(why))
        return out


# ---- the children's side ------------------------------------------------------------


def one_line(exc: BaseException) -> str:
    """What a child answers for a file it could not score."""
    if isinstance(exc, Unscorable):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


Handler = Callable[[dict[str, Any]], dict[str, Any]]


def serve(argv: list[str], setup: Callable[[dict[str, str], list[str]], Handler]) -> int:
    """A scoring child's main: `setup(options, arguments)` (the `--name=value` options
    and the rest) loads what it scores against and confines the child, then each JSON
    line on stdin gets the handler's answer on one line of stdout. A score may be NaN
    (one class in a fold): Python's json writes and reads it."""
    options = {k: v for k, _, v in (a[2:].partition("=") for a in argv if a.startswith("--"))}
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what the libraries or a kit print must not corrupt the answers
    try:
        handle = setup(options, [a for a in argv if not a.startswith("--")])
    except Exception as exc:
        answers.write(json.dumps({"fatal": one_line(exc)}) + "\n")
        answers.flush()
        return 1
    answers.write(json.dumps({"ready": True}) + "\n")
    answers.flush()
    for line in sys.stdin:
        answers.write(json.dumps(handle(json.loads(line))) + "\n")
        answers.flush()
    return 0
