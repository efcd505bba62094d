"""A fold sees no dataset but its own: the executor's fold runner keeps the last few
datasets loaded and forks every fold from that memory, so a fold of one challenge must
not find another's training table (its labels) through the runner's objects."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import drop
from tests.helpers import bundles as B
from tests.integration.test_executor import drain, hostile, job_rows

# walks up its frames to the fold runner's objects, as any code may
LOOKS = """import sys
        frame, seen = sys._getframe(), set()
        while frame is not None:
            for value in list(frame.f_locals.values()):
                cache = getattr(value, 'cache', None)
                if isinstance(cache, dict):
                    seen.update(cache)
            frame = frame.f_back
        raise RuntimeError(f'datasets seen: {len(seen)}')"""


def submit(spool, watcher, where: Path, dataset: str, name: str, code: str) -> None:
    root = where / name
    root.mkdir(parents=True)
    (root / "classifier.py").write_text(code)
    drop(root, spool.incoming_submissions / dataset)
    assert [o.result for o in watcher.run_once()] == ["registered"]


def test_a_fold_finds_no_other_dataset_in_the_fold_runners_memory(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    watcher = make_watcher()
    for name in ("other", "iris"):
        drop(B.dataset(tmp_path / "d", name=name, scores='["accuracy"]'),
             spool.incoming_datasets)  # fmt: skip
        assert [o.result for o in watcher.run_once()] == ["registered"]
    executor = make_executor()
    submit(spool, watcher, tmp_path / "s", "other", "theirs", B.CLASSIFIER)
    assert drain(executor) == 3  # the other dataset is loaded in the runner now
    submit(spool, watcher, tmp_path / "s", "iris", "looks", hostile(LOOKS))
    assert drain(executor) == 3
    errors = {r["error"] for r in job_rows(database_url) if r["name"] == "looks"}
    assert errors == {"RuntimeError: datasets seen: 0"}
