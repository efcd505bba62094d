"""The HTML leaderboard as a person sees it: headless Chromium renders the real file."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from spool import db
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
