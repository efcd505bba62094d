"""A worker's side of shared children (`executor.worker`): a short submission's folds,
claimed together, run in turn in one warm child; each published and completed as it
ends; those it did not start handed back. And what the worker remembers of which
submissions have short folds, for its next claims (`jobs.Sharing`)."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import replace
from pathlib import Path
from typing import Any

from executor.client import ZygoteClient, ZygoteDied
from executor.config import ExecutorConfig
from executor.messages import FoldDone, FoldSpec
from spool import jobs
from spool.jobs import ClaimedJob, Outcome

log = logging.getLogger(__name__)

Ended = tuple[ClaimedJob, Outcome]  # a fold's completion, not yet sent
SHORT_KEPT = 256  # submissions whose folds' length this executor remembers


class SharedWork:
    """Mixed into `Worker`, which owns the state and the methods declared here."""

    config: ExecutorConfig
    zygote: ZygoteClient
    _active: dict[str, tuple[ClaimedJob, Future[FoldDone] | None]]
    _active_lock: threading.Lock
    _short: OrderedDict[int, bool]  # submission id -> were its folds done here short?
    _ended: Callable[..., None]
    _fault: Callable[[ClaimedJob, Exception], None]
    _facts: Callable[[str], dict[str, Any]]
    _complete: Callable[[ClaimedJob, Outcome], None]
    _hand_back: Callable[[ClaimedJob, str], None]

    def sharing(self) -> jobs.Sharing:
        known = self._short.items()
        return jobs.Sharing(self.config.shared_folds, self.config.short_fold_seconds,
                            short=frozenset(sub for sub, short in known if short),
                            long=frozenset(sub for sub, short in known if not short))  # fmt: skip

    def _shared(self, run: list[ClaimedJob], specs: list[FoldSpec], scratch: Path,
                ended: list[Ended]) -> FoldDone | None:  # fmt: skip
        """Several folds of one submission, in turn in one child: each with an output
        folder and a log of its own, published and completed as it ends. The folds it
        did not start go back to the queue at once (not counted): after a crash, to run
        again; when a fold turned out long, to run in parallel in children of their own."""
        key = f"{run[0].key}+"
        work = Path(specs[0].work)
        specs = [replace(spec, out=str(work / f".datarun-{job.key}"),
                         log=str(scratch / f"{job.key}.log"))
                 for job, spec in zip(run, specs, strict=True)]  # fmt: skip
        folds = [(job.key, spec) for job, spec in zip(run, specs, strict=True)]
        futures, child = self.zygote.run_shared(key, folds, self.config.short_fold_seconds)
        waiting = {future: (job, spec) for job, spec, future in zip(run, specs, futures,
                                                                     strict=True)}  # fmt: skip
        with self._active_lock:
            for future, (job, _) in waiting.items():
                self._active[job.key] = (job, future)
        facts = self._facts(key)
        timeout = float(specs[0].limits.timeout) + 60  # bounds a zygote gone silent
        while waiting:
            finished, _ = wait(waiting, timeout=timeout, return_when=FIRST_COMPLETED)
            if not finished:
                self.zygote.kill(key)
                finished = set(waiting)
            for future in sorted(finished, key=lambda f: run.index(waiting[f][0])):
                job, spec = waiting.pop(future)
                try:
                    done = future.result(timeout=0)
                    if done.not_run:  # a fold before it still runs: given back as long
                        before = run.index(job)
                        self._not_run(job, running=any(
                            not f.done() for f, (j, _) in waiting.items() if run.index(j) < before
                        ))  # fmt: skip
                        continue
                    self._ended(job, facts, scratch, spec, done, ended=ended,
                                last=not waiting)  # fmt: skip
                except Exception as exc:
                    if isinstance(exc, TimeoutError):  # no word of it: as if the zygote died
                        exc = ZygoteDied("the fold runner did not report the fold's end")
                    with self._active_lock:
                        self._active.pop(job.key, None)
                    self._fault(job, exc)
                facts = self._facts(key)
        return self._child_end(key, child, ended)

    def _child_end(self, key: str, child: Future[FoldDone], ended: list[Ended]) -> FoldDone | None:
        """Wait for a shared child's end (its processes gone: then its folder and user
        may go). Its last fold's completion waits for the next claim only if the child
        ends at once: a slow end does not hold back a result."""
        try:
            return child.result(timeout=1.0)
        except TimeoutError:
            for job, outcome in ended:
                self._complete(job, outcome)
            ended.clear()
        except Exception:
            pass
        try:
            return child.result(timeout=60)
        except Exception as exc:  # silent, or dead: its user's processes are killed
            if isinstance(exc, TimeoutError):
                exc = ZygoteDied("no word of its end within a minute")
            log.error("the shared child %s did not report its end: %s", key, exc)
            self.zygote.kill(key)
            return None

    def _not_run(self, job: ClaimedJob, *, running: bool) -> None:
        """A fold its shared child did not start goes back to the queue, not counted.
        With a fold still running there, that fold is long: so are this submission's."""
        with self._active_lock:
            self._active.pop(job.key, None)
        if running:
            self._remember(job.submission_id, short=False)
        self._hand_back(job, "a fold before it in its shared child is long" if running
                        else "its shared child ended before it ran")  # fmt: skip

    def _seen(self, job: ClaimedJob, outcome: Outcome) -> None:
        """Remember whether this submission's folds are short (what its next claim asks)."""
        if outcome.error is not None or outcome.train_seconds is None:
            return
        took = outcome.train_seconds + (outcome.valid_seconds or 0) + (outcome.test_seconds or 0)
        self._remember(job.submission_id, short=took < self.config.short_fold_seconds)

    def _remember(self, submission: int, *, short: bool) -> None:
        self._short[submission] = short and self._short.get(submission, True)
        self._short.move_to_end(submission)
        while len(self._short) > SHORT_KEPT:
            self._short.popitem(last=False)
