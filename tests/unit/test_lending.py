"""What an idle worker sees of a shared child (executor.sharedwork.Lendable): the fold
time half of its folds left would take elsewhere, never worth asking for twice in a row."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from executor.messages import FoldDone
from executor.sharedwork import LEND_SECONDS, Lendable


def child(pending: int, done: int = 0, **kwargs) -> Lendable:
    futures: list[Future[FoldDone]] = [Future() for _ in range(pending + done)]
    for future in futures[:done]:
        future.set_result(FoldDone("k"))
    return Lendable("k+", futures, began=100.0, **kwargs)


def test_half_of_what_is_left_each_as_long_as_the_last_fold():
    assert child(6, done=2, last_wall=0.5).worth(now=101.0) == 3 * 0.5
    assert child(5, last_wall=0.5).worth(now=101.0) == 2 * 0.5  # the running one stays


def test_before_any_fold_ended_the_time_it_has_run_stands_for_a_fold():
    worth = child(8).worth(now=100.25)
    assert worth == pytest.approx(4 * 0.25) and worth >= LEND_SECONDS


def test_tiny_folds_and_a_last_fold_are_never_worth_a_child():
    assert child(5, done=3, last_wall=0.015).worth(now=101.0) < LEND_SECONDS
    assert child(1, done=7, last_wall=5.0).worth(now=101.0) == 0


def test_a_child_just_asked_is_not_asked_again_for_a_second():
    lendable = child(6, last_wall=0.5, asked=100.5)
    assert lendable.worth(now=101.0) == 0
    assert lendable.worth(now=101.6) == 3 * 0.5
