"""A dropper who changes its drop while the master works on it gets nothing that is not
its own (issue 14, item 2).

The dropper keeps its folder open and, timed by inotify (tests/helpers/swapper.py, a
process of its own), swaps sub-folders for links to a folder only root may read, while
the master copies the drop (mode "copy") or removes it once registered ("remove"). A
master that re-resolves paths after checking them copies the root-only file into the
store, or empties and chmods the link's target. Each drop must end registered (with
its own files only) or rejected with a reason, and the root-only folders stay whole.
"""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from spool.bundles import MARKER
from spool.layout import Spool
from tests.conftest import age, drop
from tests.helpers import bundles as B
from tests.helpers.waiting import wait_for_line
from watcher.intake import Outcome

pytestmark = pytest.mark.chaos

REPO = Path(__file__).resolve().parents[2]
DROPS = 30
TIME_BOUND = 45.0  # seconds for all drops; fewer are made on a slow machine
FANOUT, DEPTH, FILES = 2, 3, 12  # 14 folders of 12 files each, plus classifier.py


def hostile_drop(where: Path, name: str, serial: int) -> Path:
    root = B.submission(where, name=name, variant=serial)  # unique content: never a duplicate
    (root / MARKER).touch()  # complete at once: the watcher takes it without looking inside
    folders = [root]
    for _level in range(DEPTH):
        folders = [folder / f"d{k}" for folder in folders for k in range(FANOUT)]
        for folder in folders:
            folder.mkdir()
            for k in range(FILES):
                (folder / f"f{k:02d}.txt").write_text(f"{name} {folder.relative_to(root)} {k}\n")
    return root


def root_only(where: Path, secret: str) -> Path:
    folder = where / f"root-only-{secret}"
    folder.mkdir(mode=0o700)
    (folder / "secret.txt").write_text(secret)
    (folder / "secret.txt").chmod(0o600)
    return folder


def start_swapper(source: Path, target: Path, hold: Path, mode: str, skip: int):
    swapper = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.swapper", str(source), str(target), str(hold),
         mode, str(skip)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for_line(swapper, "ready", 60, "the swapper to be ready")
    return swapper


def stop_swapper(swapper) -> dict:
    out, _ = swapper.communicate(timeout=30)
    return json.loads(out.strip().splitlines()[-1])


def answer_for(watcher, name: str, passes: int = 6) -> Outcome | None:
    """Run the watcher until this drop is registered or answered (an error is retried)."""
    for _ in range(passes):
        for outcome in watcher.run_once():
            if outcome.name == name and outcome.result in ("registered", "rejected"):
                return outcome
    return None


def secrets_in(top: Path, secrets: set[str]) -> list[str]:
    """Regular files under top (links never followed) holding any of the secrets."""
    found = []
    for folder, _dirs, files in os.walk(top):  # does not follow links
        for name in files:
            path = Path(folder, name)
            if not stat.S_ISREG(path.lstat().st_mode):
                continue
            text = path.read_bytes()
            found += [f"{path}: {s}" for s in secrets if s.encode() in text]
    return found


def intact(folder: Path, secret: str) -> bool:
    st = folder.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_mode & 0o777 != 0o700 or st.st_uid != 0:
        return False
    return [p.name for p in folder.iterdir()] == ["secret.txt"] and (
        (folder / "secret.txt").read_text() == secret
    )


def test_swapping_folders_for_links_during_copy_and_removal_gets_nothing(
    spool: Spool, make_watcher, tmp_path: Path
):
    watcher = make_watcher()
    drop(B.dataset(tmp_path / "iris-src"), spool.incoming_datasets)
    assert [o.result for o in watcher.run_once()] == ["registered"]
    rng = random.Random(14)
    hold = tmp_path / "held"
    hold.mkdir()
    victims: dict[str, Path] = {}
    results: list[tuple[str, str, Outcome | None, dict]] = []
    started = time.monotonic()
    for serial in range(DROPS):
        if time.monotonic() - started > TIME_BOUND:
            break
        mode = ("copy", "flip", "remove")[serial % 3]
        name = f"race{serial:02d}"
        secret = f"SECRET-{uuid.uuid4().hex}"
        victims[secret] = root_only(tmp_path, secret)
        source = age(hostile_drop(tmp_path / "src", name, serial))  # before: age() opens it
        skip = {"copy": rng.randrange(0, 3), "flip": rng.randrange(0, 100), "remove": 0}[mode]
        swapper = start_swapper(source, victims[secret], hold, mode, skip)
        try:
            source.rename(spool.incoming_submissions / "iris" / name)  # the drop: one rename
            outcome = answer_for(watcher, name)
        finally:
            swaps = stop_swapper(swapper)  # closing its stdin stops it
        results.append((name, mode, outcome, swaps))

    assert len(results) >= 20, f"only {len(results)} drops in {TIME_BOUND} s"
    for mode in ("copy", "flip", "remove"):
        assert sum(s["swaps"] for _, m, _, s in results if m == mode) > 0, f"no swap in {mode}"
    leaks = secrets_in(spool.root, set(victims))
    damaged = [str(folder) for secret, folder in victims.items() if not intact(folder, secret)]
    unanswered = [name for name, _, outcome, _ in results if outcome is None]
    assert (leaks, damaged, unanswered) == ([], [], []), (
        f"{len(leaks)} root-only files reached the spool ({leaks[:2]}); {len(damaged)} "
        f"root-only folders were changed ({damaged[:2]}); {len(unanswered)} drops of "
        f"{len(results)} were neither registered nor rejected ({unanswered[:5]})"
    )
    for name, _mode, outcome, _swaps in results:
        if outcome.result == "rejected":
            [answer] = spool.rejected.glob(f"*_{name}")
            note = (answer / "REJECTED.txt").read_text()
            assert "What is wrong:" in note and "datarun's fault" not in note, note
        else:
            stored = spool.store / "submissions" / str(outcome.submission_id)
            assert (stored / "classifier.py").is_file()
    assert list(spool.staging.iterdir()) == [] or all(
        p.name.startswith(".") for p in spool.staging.iterdir()
    )
    assert list((spool.incoming_submissions / "iris").iterdir()) == []
    print({r: sum(o.result == r for _, _, o, _ in results) for r in ("registered", "rejected")})
