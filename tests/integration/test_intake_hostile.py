"""Drops a participant makes to hurt the intake (issue 14, items 9 and 10), against a
real watcher and database: names that are not UTF-8 or hold a newline, targets that
are not finite, and a small compressed CSV that expands past the memory preparation
may use."""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spool import db
from spool.bundles import Limits
from spool.layout import Spool
from tests.conftest import drop
from tests.helpers import bundles as B
from tests.helpers.ramp import make_kit

LATIN1 = os.fsdecode(b"caf\xe9")  # a folder name whose byte 0xe9 is not UTF-8
LAYOUT = [r"REJECTED: \S.*", r"dropped as: \S.*", r"answered at: \S+", "", "What is wrong:"]


def register_iris(spool: Spool, watcher, tmp_path: Path) -> None:
    drop(B.dataset(tmp_path / "src"), spool.incoming_datasets)
    assert [o.result for o in watcher.run_once()] == ["registered"]


def rejections(spool: Spool) -> dict[str, str]:
    return {p.name: (p / "REJECTED.txt").read_text(encoding="utf-8")
            for p in spool.rejected.iterdir()}  # fmt: skip


def assert_layout(note: str) -> list[str]:
    """REJECTED.txt: one field per line, then the reasons as bullets, then what to do."""
    lines = note.splitlines()
    for pattern, line in zip(LAYOUT, lines, strict=False):
        assert re.fullmatch(pattern, line), (pattern, line, note)
    bullets = lines[len(LAYOUT) : lines.index("", len(LAYOUT))]
    assert bullets and all(b.startswith("  - ") for b in bullets), note
    assert lines[-1].startswith("What to do: ") and len(lines) == len(LAYOUT) + len(bullets) + 2
    return bullets


# ---- item 10: names ------------------------------------------------------------------


def test_a_folder_name_not_utf8_with_a_good_manifest_name_is_registered(
    spool, make_watcher, database_url, tmp_path
):
    watcher = make_watcher()
    register_iris(spool, watcher, tmp_path)
    src = B.submission(tmp_path / "src", name=LATIN1, manifest='name = "cafe"\n')
    drop(src, spool.incoming_submissions / "iris")
    [outcome] = watcher.run_once()
    assert outcome.result == "registered" and outcome.detail == "cafe.v1", outcome
    with db.connect(database_url) as conn:
        row = conn.execute("select name, drop_name from submissions").fetchone()
    assert row == {"name": "cafe", "drop_name": "caf\\xe9"}  # the bytes, said as text
    status = json.loads((spool.results / "iris" / "cafe.v1" / "status.json").read_text())
    assert status["dropped_as"] == "incoming/submissions/iris/caf\\xe9"
    assert list(spool.rejected.iterdir()) == []


def test_a_folder_name_not_utf8_that_names_the_submission_is_refused_with_how_to_rename(
    spool, make_watcher, database_url, tmp_path
):
    watcher = make_watcher()
    register_iris(spool, watcher, tmp_path)
    drop(B.submission(tmp_path / "src", name=LATIN1), spool.incoming_submissions / "iris")
    [outcome] = watcher.run_once()
    assert outcome.result == "rejected", outcome
    [(folder, note)] = rejections(spool).items()
    assert folder.endswith("_caf\\xe9")
    [bullet] = assert_layout(note)
    assert "the name 'caf\\xe9' cannot name a submission" in bullet
    assert "rename the bundle, or set 'name' in submission.toml" in bullet
    assert "datarun's fault" not in note
    assert os.listdir(spool.rejected / folder) == ["REJECTED.txt", LATIN1] or sorted(
        os.listdir(spool.rejected / folder)) == sorted(["REJECTED.txt", LATIN1])  # fmt: skip


def test_a_dataset_folder_not_utf8_is_refused_at_once(spool, make_watcher, tmp_path):
    watcher = make_watcher(settle_seconds=0.01)
    register_iris(spool, watcher, tmp_path)
    inbox = spool.incoming_submissions / LATIN1
    drop(B.submission(tmp_path / "src", manifest='name = "lr"\n'), inbox)
    os.utime(inbox, (0, 0))  # settled: trusted as a folder of bundles
    [outcome] = watcher.run_once()
    assert outcome.result == "rejected", outcome
    [note] = rejections(spool).values()
    [bullet] = assert_layout(note)
    assert "incoming/submissions/caf\\xe9/ is no dataset's folder" in bullet


def test_a_name_with_a_newline_is_escaped_in_every_answer(
    spool, make_watcher, database_url, tmp_path
):
    watcher = make_watcher(submission_limits=Limits(max_bytes=2**20, max_files=40))
    register_iris(spool, watcher, tmp_path)
    bad = B.submission(tmp_path / "src", name="two\nlines")
    (bad / "classifier.py").write_text("class Classifier(:\n")  # rejected: a syntax error
    many = B.submission(tmp_path / "src", name="many\nfiles\r")
    for i in range(30):  # the folder's own name begins bundles.py's reason
        (many / f"f{i}").mkdir()
        (many / f"f{i}" / "x.txt").write_text("x")
    drop(bad, spool.incoming_submissions / "iris")
    drop(many, spool.incoming_submissions)  # for no dataset: no name in its manifest
    waiting = B.submission(tmp_path / "src", name="wait\nfor\tit",
                           manifest='dataset = "later"\nname = "w"\n')  # fmt: skip
    drop(waiting, spool.incoming_submissions)
    outcomes = sorted(o.result for o in watcher.run_once())
    assert outcomes == ["rejected", "rejected", "waiting"], outcomes
    notes = rejections(spool)
    assert len(notes) == 2
    for folder, note in notes.items():
        assert "\n" not in folder and "\r" not in folder
        assert_layout(note)
    by_name = {n.splitlines()[0]: n for n in notes.values()}
    assert set(by_name) == {"REJECTED: two\\nlines", "REJECTED: many\\nfiles\\r"}
    assert "dropped as: incoming/submissions/iris/two\\nlines" in by_name["REJECTED: two\\nlines"]
    [bullet] = assert_layout(by_name["REJECTED: many\\nfiles\\r"])
    assert bullet.startswith("  - many\\nfiles\\r: more than 40 files and folders")
    [entry] = spool.waiting.glob("later/*")
    assert "\n" not in entry.name
    note = (entry / "WAITING.txt").read_text().splitlines()
    assert note[0] == "WAITING: wait\\nfor\\tit" and note[1].startswith("This submission is for")
    with db.connect(database_url) as conn:
        events = [r["message"] for r in conn.execute("select message from events")]
    assert not [e for e in events if "two\nlines" in e or "many\nfiles" in e], events


# ---- item 10: targets ----------------------------------------------------------------


def regression(where: Path, name: str, values: list[str]) -> Path:
    root = B.dataset(where, name=name, task="regression", workflow="regressor",
                     scores='["r2"]', scheme="kfold")  # fmt: skip
    frame = pd.read_csv(root / "train.csv")
    frame["target"] = frame["target"].astype(str)
    for i, value in enumerate(values):
        frame.loc[i * 7, "target"] = value
    frame.to_csv(root / "train.csv", index=False)
    return root


def test_a_target_that_is_not_finite_is_refused(spool, make_watcher, database_url, tmp_path):
    watcher = make_watcher()
    drop(regression(tmp_path / "a", "withinf", ["inf", "-inf"]), spool.incoming_datasets)
    drop(regression(tmp_path / "b", "withbig", ["1e309"]), spool.incoming_datasets)
    drop(regression(tmp_path / "c", "finite", ["1e300"]), spool.incoming_datasets)
    outcomes = {o.name: o.result for o in watcher.run_once()}
    assert outcomes == {"withinf": "rejected", "withbig": "rejected", "finite": "registered"}
    notes = {n.splitlines()[0]: n for n in rejections(spool).values()}
    assert "target column 'target' has 2 infinite values" in notes["REJECTED: withinf"]
    assert "target column 'target' has 1 infinite values" in notes["REJECTED: withbig"]
    with db.connect(database_url) as conn:
        assert [r["name"] for r in conn.execute("select name from datasets")] == ["finite"]


# ---- item 9: preparation's memory and files ------------------------------------------


def gzip_bomb(where: Path, name: str, mb: int) -> Path:
    """A dataset whose train.csv.gz is under a megabyte and expands to `mb` MB."""
    root = B.dataset(where, name=name, folder=name)
    (root / "train.csv").unlink()
    row = (",".join(["0"] * 50) + ",1\n").encode()
    with gzip.open(root / "train.csv.gz", "wb", compresslevel=9) as handle:
        handle.write((",".join(f"c{i}" for i in range(50)) + ",target\n").encode())
        handle.write(b"0," * 50 + b"0\n")  # two classes
        chunk = row * 20_000
        for _ in range(mb * 2**20 // len(chunk)):
            handle.write(chunk)
    text = (root / "dataset.toml").read_text().replace('"train.csv"', '"train.csv.gz"')
    (root / "dataset.toml").write_text(text)
    return root


def test_a_gzip_bomb_is_refused_for_its_memory_and_a_good_dataset_still_registers(
    spool, make_watcher, database_url, tmp_path
):
    watcher = make_watcher(prepare_memory_mb=256)
    bomb = gzip_bomb(tmp_path / "src", "bomb", 200)
    assert bomb.joinpath("train.csv.gz").stat().st_size < 2**20
    drop(bomb, spool.incoming_datasets)
    drop(B.dataset(tmp_path / "src"), spool.incoming_datasets)
    outcomes = {o.name: o.result for o in watcher.run_once()}
    assert outcomes == {"bomb": "rejected", "iris": "registered"}, outcomes
    [note] = rejections(spool).values()
    [bullet] = assert_layout(note)
    assert bullet.startswith("  - the dataset needs more than 256 MB to prepare ("), note
    assert "prepare_memory_mb" in bullet
    with db.connect(database_url) as conn:
        assert [r["name"] for r in conn.execute("select name from datasets")] == ["iris"]
    assert not list(spool.staging.glob("[!.]*"))


def test_a_prepared_file_past_its_cap_is_refused(spool, make_watcher, database_url, tmp_path):
    watcher = make_watcher(prepare_file_mb=1)
    root = B.dataset(tmp_path / "src", name="wide", task="regression", workflow="regressor",
                     scores='["r2"]', scheme="kfold")  # fmt: skip
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40_000, 5)), columns=[f"x{i}" for i in range(5)])
    frame["target"] = rng.normal(size=len(frame))
    frame.to_csv(root / "train.csv", index=False)  # its parquet: about 2 MB of noise
    drop(root, spool.incoming_datasets)
    [outcome] = watcher.run_once()
    assert outcome.result == "rejected", outcome
    [note] = rejections(spool).values()
    [bullet] = assert_layout(note)
    assert "preparing the data writes a file larger than 1 MB" in bullet
    assert "prepare_file_mb" in bullet


def test_a_ramp_kit_is_prepared_under_the_same_limits(spool, make_watcher, tmp_path):
    pytest.importorskip("rampwf")
    watcher = make_watcher(prepare_memory_mb=256, prepare_file_mb=1)
    greedy, writer = (
        "    hoard = bytearray(2**30)\n",
        "    open('/tmp/x', 'wb').write(bytes(2**21))\n",
    )
    for name, line in [("greedy", greedy), ("writer", writer)]:
        kit = make_kit("iris", tmp_path / name).rename(tmp_path / name / name)
        code = (kit / "problem.py").read_text()
        (kit / "problem.py").write_text(code.replace("def get_cv(X, y):\n",
                                                     "def get_cv(X, y):\n" + line))  # fmt: skip
        drop(kit, spool.incoming_datasets)
    outcomes = {o.name: o.result for o in watcher.run_once()}
    assert outcomes == {"greedy": "rejected", "writer": "rejected"}, outcomes
    notes = {n.splitlines()[0]: n for n in rejections(spool).values()}
    [greedy] = assert_layout(notes["REJECTED: greedy"])
    assert greedy.startswith("  - the dataset needs more than 256 MB to prepare ("), greedy
    [writer] = assert_layout(notes["REJECTED: writer"])
    assert "preparing the data writes a file larger than 1 MB" in writer
