"""`datarun demo`, end to end, as a newcomer runs it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from spool import db
from tests.conftest import reachable_tmp
from tests.helpers.cli import DATARUN, run


def test_the_demo_runs_and_its_leaderboard_is_the_databases(env):
    # a home whose path is longer than any terminal: piped output keeps its lines whole
    home = reachable_tmp("datarun-test-demo-") / ("a-rather-long-folder-name-" * 7) / "home"
    try:
        result = subprocess.run([*DATARUN, "demo", "--home", str(home), "--json"], env=env,
                                capture_output=True, text=True, timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        text = result.stdout
        summary = json.loads(text[text.index("{\n") :])
        assert summary["seconds"] < 120
        printed = summary["leaderboards"]
        assert {r["label"]: r["state"] for r in printed["iris"]} == {
            "ada.logreg.v1": "scored", "grace.forest.v1": "scored", "linus.broken.v1": "failed"
        }  # fmt: skip
        assert [r["state"] for r in printed["diabetes"]] == ["scored", "scored"]
        assert "AttributeError: 'LogisticRegression' object has no attribute 'fitt'" in text
        assert 'File "classifier.py", line 10, in fit' in text  # their file, by its name
        assert "leaderboard.html" in text and "All stopped" in text
        for row in printed["iris"][:2]:
            assert f"{row['valid_mean']:.4f} ± {row['valid_std']:.4f}" in text
        lines = [line.rstrip() for line in text.splitlines()]
        assert f"datarun demo in {home}: a database, a master, two executors" in lines
        assert any(line.startswith(f"All stopped; everything is kept in {home} (")
                   for line in lines)  # fmt: skip
        assert re.search(r"^\d executors running$", text, re.MULTILINE), text  # its own line
        for dataset in printed:
            assert any(line.startswith(f"{dataset} — ranked by") for line in lines), text
        assert not result.stderr, result.stderr
        env["DATARUN_HOME"] = str(home)  # the database, again: what was printed is in it
        assert run(env, "db", "up").returncode == 0
        with db.connect(run(env, "db", "url").stdout.strip()) as conn:
            for dataset, rows in printed.items():
                stored = conn.execute("select * from leaderboard where dataset = %s", [dataset])
                by_label = {r["label"]: r for r in stored}
                for row in rows:
                    assert by_label[row["label"]]["rank"] == row["rank"]
                    if row["valid_mean"] is not None:
                        assert by_label[row["label"]]["valid_mean"] == pytest.approx(
                            row["valid_mean"], rel=1e-12)  # fmt: skip
        assert (home / "spool" / "results" / "iris" / "leaderboard.html").is_file()
    finally:
        run({**env, "DATARUN_HOME": str(home)}, "db", "down")
        shutil.rmtree(home.parents[1], ignore_errors=True)


def _processes_naming(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


def test_the_demo_without_keep_leaves_nothing_behind(env):
    tmp = reachable_tmp("datarun-test-demo-tmp-")  # the demo's $TMPDIR: what it leaves there
    try:
        result = subprocess.run([*DATARUN, "demo", "--json"], env={**env, "TMPDIR": str(tmp)},
                                capture_output=True, text=True, timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        text = result.stdout
        summary = json.loads(text[text.index("{\n") :])
        assert summary["removed"] and summary["home"].startswith(f"{tmp}/datarun-demo-")
        assert "All stopped and removed" in text
        assert sorted(os.listdir(tmp)) == []
        assert _processes_naming(summary["home"]) == []  # no server, master or executor
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="the challenge demo drops as other users")
def test_the_challenge_demo_shows_teams_a_quota_and_the_reveal(env):
    """`datarun demo --challenge`: two teams whose drops are their users' files, the
    quota's refusal, a public leaderboard without test scores, then the reveal."""
    home = reachable_tmp("datarun-test-challenge-") / "home"
    try:
        result = subprocess.run([*DATARUN, "demo", "--challenge", "--home", str(home),
                                 "--json"], env=env, capture_output=True, text=True,
                                timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        text = result.stdout
        summary = json.loads(text[text.index("{\n") :])
        public = summary["leaderboards"]["iris"]
        assert sorted(r["team"] for r in public) == ["lions", "tigers"]  # one row per team
        assert all("test_mean" not in r and "bagged_test" not in r for r in public)
        [refused] = summary["refused"]
        assert "lions-forest2" in refused and "the next is accepted from" in refused
        revealed = summary["revealed"]
        assert [r["rank"] for r in revealed] == [1, 2]
        assert revealed[0]["test_mean"] >= revealed[1]["test_mean"]  # by the test score
        assert {r["label"] for r in revealed} == {r["label"] for r in summary["private"]
                                                  if r["pick"]}  # fmt: skip
        assert len(summary["private"]) == 4  # every registered submission
        status = home / "spool" / "results" / "iris" / "lions.logreg.v1" / "status.json"
        assert json.loads(status.read_text())["dropped_by"] == "61001"
    finally:
        run({**env, "DATARUN_HOME": str(home)}, "db", "down")
        shutil.rmtree(home.parent, ignore_errors=True)
