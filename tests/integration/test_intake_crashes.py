"""A master killed at any step of the intake: the next one finishes the work.

A kill is simulated by making the N-th file-system step (rename, unlink, rmdir,
mkdir, write) or the commit raise `Killed`, a BaseException no handler catches; from
then on every such step raises too, as nothing runs in a dead process. A new watcher
then runs. For every N until a run goes through untouched: the drop is registered
exactly once (or answered exactly once), nothing is left in incoming/ or .staging/.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from spool import db, layout, registry
from spool import prepare as prepare_module
from tests.conftest import drop, staged
from tests.helpers import bundles as B
from watcher import answers as answers_module
from watcher import intake as intake_module
from watcher import register as register_module
from watcher import tokens as tokens_module

pytestmark = pytest.mark.chaos


class Killed(BaseException):
    pass


class Reaper:
    """Counts the steps; kills the process at step `at`."""

    def __init__(self, at: int) -> None:
        self.at, self.steps, self.dead = at, 0, False

    def step(self) -> None:
        if self.dead:
            raise Killed("dead")
        self.steps += 1
        if self.steps == self.at:
            self.dead = True
            raise Killed(f"killed at step {self.at}")


@pytest.fixture
def kill_at():
    def arm(at: int, monkeypatch: pytest.MonkeyPatch) -> Reaper:
        reaper = Reaper(at)

        def before(real: Any) -> Any:
            def wrapped(*args, **kwargs):
                reaper.step()
                return real(*args, **kwargs)

            return wrapped

        def after(real: Any) -> Any:
            def wrapped(*args, **kwargs):
                result = real(*args, **kwargs)
                reaper.step()
                return result

            return wrapped

        monkeypatch.setattr(Path, "rename", before(Path.rename))
        monkeypatch.setattr(Path, "unlink", before(Path.unlink))
        monkeypatch.setattr(Path, "mkdir", before(Path.mkdir))
        monkeypatch.setattr(os, "unlink", before(os.unlink))
        monkeypatch.setattr(os, "rmdir", before(os.rmdir))
        # every module of the intake that writes a file
        for module in (tokens_module, answers_module, register_module):
            monkeypatch.setattr(module, "write_atomic", before(layout.write_atomic))
        for name in ("register_submission", "register_dataset"):
            monkeypatch.setattr(registry, name, after(getattr(registry, name)))
        return reaper

    return arm


def kill_then_restart(at: int, monkeypatch, kill_at, make_watcher) -> bool:
    """One master killed at step `at` (if it gets that far), then the next one's pass.
    True when the kill happened."""
    with monkeypatch.context() as patched:
        reaper = kill_at(at, patched)
        victim = make_watcher()
        try:
            victim.run_once()
            killed = False
        except Killed:
            killed = True
            assert reaper.steps == at
    victim.close()  # the dead master's session and lock go away
    restart(make_watcher)
    return killed


def restart(make_watcher) -> None:
    """The next master: one pass, then it stops (and lets go of the lock). The dead
    master's lock goes with its session, which the server may end a moment later."""
    watcher = make_watcher()
    deadline = time.monotonic() + 10
    while watcher._intake() is None:
        assert time.monotonic() < deadline, "the dead master's lead was never released"
        time.sleep(0.05)
    watcher.run_once()
    watcher.close()


def rows(url: str, table: str) -> list[dict]:
    with db.connect(url) as conn:
        return conn.execute(f"select * from {table} order by id").fetchall()


def answers(spool) -> list[Path]:
    return sorted(spool.rejected.iterdir())


def test_a_submission_survives_a_kill_at_every_step(
    spool, make_watcher, database_url, tmp_path, monkeypatch, kill_at
):
    watcher = make_watcher()
    drop(B.dataset(tmp_path / "d"), spool.incoming_datasets)
    assert [o.result for o in watcher.run_once()] == ["registered"]
    watcher.close()
    into = spool.incoming_submissions / "iris"
    at = 1
    while True:
        name = f"s{at:02d}"
        drop(B.submission(tmp_path / "src", name=name, variant=at), into)
        before = len(rows(database_url, "submissions"))
        killed = kill_then_restart(at, monkeypatch, kill_at, make_watcher)
        subs = [r for r in rows(database_url, "submissions") if r["name"] == name]
        assert len(subs) == 1, (at, subs)
        assert len(rows(database_url, "submissions")) == before + 1
        jobs = [r for r in rows(database_url, "jobs") if r["submission_id"] == subs[0]["id"]]
        assert len(jobs) == 3, at
        assert (spool.store / "submissions" / str(subs[0]["id"]) / "classifier.py").is_file()
        assert (spool.results / "iris" / f"{name}.v1" / "status.json").is_file(), at
        assert list(into.iterdir()) == [] and staged(spool) == [], at
        assert answers(spool) == [], at
        stored = {p.name for p in (spool.store / "submissions").iterdir()}
        assert stored == {str(r["id"]) for r in rows(database_url, "submissions")}, at
        if not killed:
            break
        at += 1
    assert at > 8  # the run has that many steps at least: each was a crash point


def test_a_rejection_survives_a_kill_at_every_step(
    spool, make_watcher, database_url, tmp_path, monkeypatch, kill_at
):
    watcher = make_watcher()
    drop(B.dataset(tmp_path / "d"), spool.incoming_datasets)
    watcher.run_once()
    watcher.close()
    into = spool.incoming_submissions / "iris"
    at = 1
    while True:
        name = f"bad{at:02d}"
        bad = B.submission(tmp_path / "src", name=name)
        (bad / "classifier.py").write_text("class Nope:\n    pass\n")
        drop(bad, into)
        killed = kill_then_restart(at, monkeypatch, kill_at, make_watcher)
        mine = [p for p in answers(spool) if p.name.endswith(f"_{name}")]
        assert len(mine) == 1, (at, mine)
        assert (mine[0] / "REJECTED.txt").is_file(), at
        assert (mine[0] / name / "classifier.py").is_file(), at  # the drop, whole
        assert list(into.iterdir()) == [] and staged(spool) == [], at
        if not killed:
            break
        at += 1
    assert rows(database_url, "submissions") == []


def prepare_here(bundle: Path, out: Path, timeout: float, module: str = "spool.prepare",
                 **limits: Any) -> dict[str, Any]:  # fmt: skip
    """The preparation, in this process: the same code as in the child, without the
    2.5 s of starting one and importing scikit-learn at each of the 60 preparations
    (its child is tested by test_intake_hostile and every registration elsewhere). Its
    own file steps count as kill points too: a master killed while preparing."""
    out.mkdir(parents=True, exist_ok=True)
    return prepare_module.prepare(bundle, out)


def test_a_dataset_survives_a_kill_at_every_step(
    spool, make_watcher, database_url, tmp_path, monkeypatch, kill_at
):
    monkeypatch.setattr(register_module, "prepare_in_child", prepare_here)
    at = 1
    while True:
        name = f"d{at:02d}"
        drop(B.dataset(tmp_path / "src", name=name), spool.incoming_datasets)
        killed = kill_then_restart(at, monkeypatch, kill_at, make_watcher)
        mine = [r for r in rows(database_url, "datasets") if r["name"] == name]
        assert len(mine) == 1, (at, mine)
        stored = spool.store / "datasets" / str(mine[0]["id"])
        assert (stored / "prepared" / "folds.npz").is_file(), at
        assert (stored / "bundle" / "dataset.toml").is_file(), at
        assert (spool.incoming_submissions / name).is_dir(), at
        assert list(spool.incoming_datasets.iterdir()) == [] and staged(spool) == [], at
        assert answers(spool) == [], at
        ids = {str(r["id"]) for r in rows(database_url, "datasets")}
        assert {p.name for p in (spool.store / "datasets").iterdir()} == ids, at  # no orphan
        if not killed:
            break
        at += 1
    assert at > 8, at


def test_a_drop_that_keeps_killing_the_master_is_set_aside(
    spool, make_watcher, database_url, tmp_path, monkeypatch
):
    watcher = make_watcher()
    drop(B.dataset(tmp_path / "d"), spool.incoming_datasets)
    watcher.run_once()
    watcher.close()
    drop(B.submission(tmp_path / "s", name="bomb"), spool.incoming_submissions / "iris")

    def out_of_memory(*args: Any, **kwargs: Any) -> None:
        raise Killed("the kernel's OOM killer")

    for _ in range(intake_module.MAX_STARTS):
        with monkeypatch.context() as patched:
            patched.setattr(register_module, "check_submission", out_of_memory)
            victim = make_watcher()
            with pytest.raises(Killed):
                victim.run_once()
            victim.close()
    restart(make_watcher)
    [note] = answers(spool)
    assert (
        "datarun stopped 5 times while processing this drop" in (note / "REJECTED.txt").read_text()
    )
    assert (note / "bomb" / "classifier.py").is_file()
    assert staged(spool) == []
