"""The HTML leaderboard as a person sees it: headless Chromium renders the real file."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from datarun import admin
from spool import db
from tests.conftest import drop
from tests.helpers import bundles as B
from tests.integration.test_executor import drain, hostile, register
from watcher.results import Results
from watcher.sweeper import Sweeper

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason="Chromium is not installed (.ci/run installs Debian's chromium)",
)


def chromium(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND",
         f"--user-data-dir={tmp_path / 'profile'}", *args, page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_person_sees_the_ranking_the_charts_and_the_errors(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    register(spool, make_watcher, tmp_path, {
        "good": B.CLASSIFIER, "other": B.CLASSIFIER + "\n# another\n",
        "broken": hostile("raise ValueError('<b>not bold</b> & no script')"),
    }, scores=json.dumps(["accuracy", "neg_log_loss"]))  # fmt: skip
    drain(make_executor())
    database = db.Database(database_url).open()
    sweeper = Sweeper(spool, database)
    sweeper.sweep_once()
    Results(spool, database, sweeper).refresh_once()
    sweeper.close()
    database.close()
    page = spool.results / "iris" / "leaderboard.html"
    text = page.read_text()
    assert "<script" not in text and "<link" not in text and "http" not in text  # self-contained

    dom = chromium(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    html = dom.stdout
    order = [html.index(f'data-submission="{t}"') for t in ("good.v1", "other.v1", "broken.v1")
             if f'data-submission="{t}"' in html]  # fmt: skip
    assert len(order) == 3
    assert html.index('data-submission="broken.v1"') == max(order)  # failed ranks last
    assert "&lt;b&gt;not bold&lt;/b&gt; &amp; no script" in html  # shown as text, not markup
    assert html.count("<circle") == 6  # one dot per scored fold, two good submissions
    assert 'id="updated"' in html and "±" in html

    shot = tmp_path / "shot.png"
    rendered = chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,700")
    assert rendered.returncode == 0 and shot.is_file(), rendered.stderr
    image = Image.open(shot).convert("RGB")
    colors: list[tuple[int, tuple[int, int, int]]] = image.getcolors(maxcolors=1 << 20) or []  # type: ignore[assignment]
    assert near(colors, (58, 111, 216)), "no fold dot is drawn"
    assert near(colors, (255, 244, 244)), "the failed submission's row is not tinted"
    dark = sum(n for n, c in colors if sum(c) < 200)
    assert dark > 2000, "hardly any text is drawn"


def near(colors: list[tuple[int, tuple[int, int, int]]], target: tuple[int, int, int]) -> bool:
    return any(sum(abs(a - b) for a, b in zip(c, target, strict=True)) < 30 for _, c in colors)


def circles(html: str, label: str) -> list[dict[str, float]]:
    """The dots of one submission's row: fold, score, x and y as the page draws them."""
    row = re.search(rf'<tr [^>]*data-submission="{re.escape(label)}".*?</tr>', html, re.S)
    assert row is not None, label
    found = re.finditer(r'<circle (?=[^>]*data-fold="(\d+)")(?=[^>]*data-score="([^"]+)")'
                        r'(?=[^>]*cx="([^"]+)")(?=[^>]*cy="([^"]+)")', row[0])  # fmt: skip
    return [{"fold": int(m[1]), "score": float(m[2]), "x": float(m[3]), "y": float(m[4])}
            for m in found]  # fmt: skip


def rank_cell(html: str, label: str) -> str:
    row = re.search(rf'<tr [^>]*data-submission="{re.escape(label)}".*?</tr>', html, re.S)
    assert row is not None, label
    cell = re.search(r'<td class="num rank">([^<]*)</td>', row[0])
    assert cell is not None
    return cell[1]


UNIFORM = """
import numpy as np


class Classifier:
    def fit(self, X, y):
        self.n = len(np.unique(y))

    def predict_proba(self, X):
        return np.full((len(X), self.n), 1.0 / self.n)
"""


def test_only_finished_submissions_rank_and_dots_share_one_scale(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    """A failed and a not yet run submission have no rank anywhere; fold k's dot is at the
    same x in every row, and one score at the same height, even in a row missing folds."""
    watcher = make_watcher()
    drop(B.dataset(tmp_path / "d", n_splits=7), spool.incoming_datasets)
    assert [o.result for o in watcher.run_once()] == ["registered"]
    prepared = next((spool.store / "datasets").iterdir()) / "prepared"
    with np.load(prepared / "folds.npz") as folds:
        sizes = [len(folds[f"train_{k}"]) for k in range(7)]
    assert sizes[-1] != sizes[0]  # folds of two sizes: a way to fail some of them
    partial = B.CLASSIFIER.replace(
        "    def fit(self, X, y):\n",
        f"    def fit(self, X, y):\n        if len(X) == {sizes[-1]}:\n"
        "            raise ValueError('not this fold')\n",
    )
    for name, code in {"good": B.CLASSIFIER, "uniform": UNIFORM, "partial": partial}.items():
        (tmp_path / "s" / name).mkdir(parents=True)
        (tmp_path / "s" / name / "classifier.py").write_text(code)
        drop(tmp_path / "s" / name, spool.incoming_submissions / "iris")
    assert {o.result for o in watcher.run_once()} == {"registered"}
    drain(make_executor())
    (tmp_path / "s" / "later").mkdir()
    (tmp_path / "s" / "later" / "classifier.py").write_text(B.CLASSIFIER + "\n# later\n")
    drop(tmp_path / "s" / "later", spool.incoming_submissions / "iris")
    assert [o.result for o in watcher.run_once()] == ["registered"]  # queued, never run
    database = db.Database(database_url).open()
    sweeper = Sweeper(spool, database)
    sweeper.sweep_once()
    Results(spool, database, sweeper).refresh_once()
    sweeper.close()
    ranks = {"good.v1": 1, "uniform.v1": 2, "partial.v1": None, "later.v1": None}
    with database.connection() as conn:
        rows = admin.leaderboard(conn, "iris")  # what `datarun leaderboard` reads and shows
    database.close()
    shown = {r["label"]: r["rank"] for r in rows}
    console = Console(width=200, file=io.StringIO())
    console.print(admin.render_leaderboard("iris", rows))
    printed = console.file.getvalue()  # type: ignore[attr-defined]
    assert "greater is better" in printed
    for label, rank in ranks.items():
        (line,) = [x for x in printed.splitlines() if f" {label} " in x]
        assert re.match(rf"\W*{rank or ''}\W*{re.escape(label)} ", line), line
    assert shown == ranks
    with open(spool.results / "iris" / "leaderboard.csv") as handle:
        board = {r["submission"]: r["rank"] for r in csv.DictReader(handle)}
    assert board == {k: "" if v is None else str(v) for k, v in ranks.items()}

    dom = chromium(spool.results / "iris" / "leaderboard.html", tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    html = dom.stdout
    assert {label: rank_cell(html, label) for label in ranks} == board
    assert re.search(r'id="direction">greater is better<', html)
    dots = {label: circles(html, label) for label in ("good.v1", "uniform.v1", "partial.v1")}
    kept = [k for k in range(7) if sizes[k] != sizes[-1]]  # the folds it did not fail
    assert [d["fold"] for d in dots["partial.v1"]] == kept
    where = {d["fold"]: d["x"] for d in dots["good.v1"]}
    assert len(where) == 7 and len(set(where.values())) == 7
    for row in dots.values():
        for d in row:
            assert d["x"] == where[d["fold"]]  # fold k in one column in every row
    every = [d for row in dots.values() for d in row]
    top, bottom = min(every, key=lambda d: d["y"]), max(every, key=lambda d: d["y"])
    assert top["score"] > bottom["score"]  # better is higher
    for d in every:  # one linear scale for the page
        expected = bottom["y"] + (d["score"] - bottom["score"]) * (top["y"] - bottom["y"]) / (
            top["score"] - bottom["score"])  # fmt: skip
        assert abs(d["y"] - expected) < 0.11, d


@pytest.mark.skipif(importlib.util.find_spec("rampwf") is None, reason="needs the ramp extra")
def test_a_kit_whose_first_score_is_lower_is_better_says_so(
    spool, make_watcher, make_executor, database_url, tmp_path
):
    from tests.helpers.ramp import make_kit

    drop(make_kit("diabetes", tmp_path / "kit"), spool.incoming_datasets)  # first score: RMSE
    watcher = make_watcher()
    watcher.run_once()
    assert {o.result for o in watcher.run_once()} == {"registered"}  # its two submissions
    drain(make_executor())
    database = db.Database(database_url).open()
    sweeper = Sweeper(spool, database)
    while sweeper.sweep_once().scored:
        pass
    Results(spool, database, sweeper).refresh_once()
    sweeper.close()
    database.close()
    dom = chromium(spool.results / "diabetes" / "leaderboard.html", tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    html = dom.stdout
    assert re.search(r'id="direction">lower is better<', html)
    assert "greater is better" not in html
    labels = re.findall(r'data-submission="([^"]+)"', html)
    assert len(labels) == 2 and [rank_cell(html, label) for label in labels] == ["1", "2"]
    first, second = (circles(html, label) for label in labels)
    # the lower RMSE ranks first and its dots are drawn higher
    assert statistics.fmean(d["score"] for d in first) < statistics.fmean(
        d["score"] for d in second)  # fmt: skip
    assert statistics.fmean(d["y"] for d in first) < statistics.fmean(d["y"] for d in second)
