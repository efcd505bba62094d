"""A worker's side of shared children (`executor.worker`): a short submission's folds,
claimed together, run in turn in one warm child; each published and completed as it
ends; those it did not start handed back; half of what it has left lent to a worker
here with nothing to claim. And what the worker remembers of which submissions have
short folds, for its next claims (`jobs.Sharing`)."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from executor.client import ZygoteClient, ZygoteDied
from executor.config import ExecutorConfig
from executor.messages import FoldDone, FoldSpec
from spool import jobs
from spool.jobs import ClaimedJob, Outcome

log = logging.getLogger(__name__)

Ended = tuple[ClaimedJob, Outcome]  # a fold's completion, not yet sent
Waiting = dict[Future[FoldDone], tuple[ClaimedJob, FoldSpec]]  # a shared child's folds
SHORT_KEPT = 256  # submissions whose folds' length this executor remembers
LEND_SECONDS = 0.25  # fold time worth a child of its own, for a worker that has nothing


@dataclass
class Lendable:
    """A shared child running here, as a worker with nothing to claim sees it."""

    key: str
    futures: list[Future[FoldDone]]
    began: float
    last_wall: float | None = None  # its last fold's, once one ended
    asked: float | None = None  # when it was asked to give folds back

    def pending(self) -> int:
        return sum(not future.done() for future in self.futures)

    def worth(self, now: float) -> float:
        """The fold time it would give back (half of its folds left, the one running
        included), each as long as its last fold (or the time it has run so far)."""
        if self.asked is not None and now - self.asked < 1.0:
            return 0.0
        each = self.last_wall if self.last_wall is not None else now - self.began
        return self.pending() // 2 * each


class SharedWork:
    """Mixed into `Worker`, which owns the state and the methods declared here."""

    config: ExecutorConfig
    zygote: ZygoteClient
    _active: dict[str, tuple[ClaimedJob, Future[FoldDone] | None]]
    _active_lock: threading.Lock
    _short: OrderedDict[int, bool]  # submission id -> were its folds done here short?
    _lendable: dict[str, Lendable]  # shared children running here (under _active_lock)
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
        again; when a fold turned out long, to run in parallel in children of their own;
        when a worker here has nothing to claim, half of those not started, to run beside
        it (`_borrow`)."""
        key = f"{run[0].key}+"
        work = Path(specs[0].work)
        specs = [replace(spec, out=str(work / f".datarun-{job.key}"),
                         log=str(scratch / f"{job.key}.log"))
                 for job, spec in zip(run, specs, strict=True)]  # fmt: skip
        folds = [(job.key, spec) for job, spec in zip(run, specs, strict=True)]
        futures, child = self.zygote.run_shared(key, folds, self.config.short_fold_seconds)
        lendable = Lendable(key, futures, time.monotonic())
        waiting = {future: (job, spec) for job, spec, future in zip(run, specs, futures,
                                                                     strict=True)}  # fmt: skip
        with self._active_lock:
            for future, (job, _) in waiting.items():
                self._active[job.key] = (job, future)
            self._lendable[key] = lendable
        try:
            self._follow(run, waiting, lendable, scratch, ended)
        finally:
            with self._active_lock:
                self._lendable.pop(key, None)
        return self._child_end(key, child, ended)

    def _follow(self, run: list[ClaimedJob], waiting: Waiting, lendable: Lendable, scratch: Path,
                ended: list[Ended]) -> None:  # fmt: skip
        """Each fold of a shared child, as it ends, in order: published and completed,
        or given back."""
        key = lendable.key
        facts = self._facts(key)
        timeout = float(waiting[lendable.futures[0]][1].limits.timeout) + 60  # a silent zygote
        while waiting:
            finished, _ = wait(waiting, timeout=timeout, return_when=FIRST_COMPLETED)
            if not finished:
                self.zygote.kill(key)
                finished = set(waiting)
            for future in sorted(finished, key=lambda f: run.index(waiting[f][0])):
                job, spec = waiting.pop(future)
                try:
                    done = future.result(timeout=0)
                    if done.not_run:  # a fold before it still runs: long, or lent
                        before = run.index(job)
                        self._not_run(job, lent=done.lent, running=any(
                            not f.done() for f, (j, _) in waiting.items() if run.index(j) < before
                        ))  # fmt: skip
                        continue
                    lendable.last_wall = done.wall_seconds
                    self._ended(job, facts, scratch, spec, done, ended=ended,
                                last=not waiting)  # fmt: skip
                except Exception as exc:
                    if isinstance(exc, TimeoutError):  # no word of it: as if the zygote died
                        exc = ZygoteDied("the fold runner did not report the fold's end")
                    with self._active_lock:
                        self._active.pop(job.key, None)
                    self._fault(job, exc)
                facts = self._facts(key)

    def _borrow(self) -> bool:
        """This worker has nothing to claim: the shared child here with the most fold
        time left (worth a child of its own) is asked to give back half of what it has
        left, its last folds, to run beside it. True if one was asked."""
        now = time.monotonic()
        with self._active_lock:
            best = max(self._lendable.values(), key=lambda r: r.worth(now), default=None)
            if best is None or best.worth(now) < LEND_SECONDS:
                return False
            best.asked = now
        log.info("an idle worker asks the shared child %s for half of its folds left",
                 best.key)  # fmt: skip
        self.zygote.share(best.key)
        return True

    def _lending(self) -> bool:
        """A shared child here has 2 folds left or more: an idle worker looks again soon."""
        with self._active_lock:
            return any(r.pending() >= 2 for r in self._lendable.values())

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

    def _not_run(self, job: ClaimedJob, *, running: bool, lent: bool = False) -> None:
        """A fold its shared child did not start goes back to the queue, not counted.
        Lent to an idle worker, it runs beside the child. Otherwise, with a fold still
        running there, that fold is long: so are this submission's."""
        with self._active_lock:
            self._active.pop(job.key, None)
        if running and not lent:
            self._remember(job.submission_id, short=False)
        why = ("lent to an idle worker" if lent else "a fold before it in its shared child is long"
               if running else "its shared child ended before it ran")  # fmt: skip
        self._hand_back(job, why)

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
