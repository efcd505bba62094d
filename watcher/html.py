"""The HTML leaderboard: one self-contained file anyone can open from the mount.

No script, no font, no stylesheet from elsewhere: the styles are inline and each
submission's per-fold scores are a small inline SVG, all on one scale (fold k at the
same x in every row, a score at the same height, better higher), so rows compare. A
submission ranks only once every fold is scored; the page says the ranking direction
of the dataset's first metric. Everything that comes from users
(names, error messages, which are whatever their code raised) is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em; color: #1d2330; }
h1 { font-size: 1.5em; margin: 0 0 .2em; }
.meta { color: #5b6475; margin-bottom: 1.5em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .45em .7em; border-bottom: 1px solid #e3e6ec; }
th { background: #f4f6f9; font-weight: 600; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.failed td { background: #fff4f4; }
.state { font-size: .85em; padding: .1em .5em; border-radius: 1em; background: #eef1f5; }
.state.scored { background: #e3f6e8; color: #1b6b34; }
.state.failed { background: #fde2e2; color: #a11d1d; }
.state.running, .state.queued { background: #fff3d6; color: #7a5600; }
.error { color: #a11d1d; font-family: ui-monospace, monospace; font-size: .85em; }
svg { vertical-align: middle; }
th .scale { display: block; font-weight: 400; color: #5b6475; font-size: .85em; }
"""


def _num(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.4f}"


def _exact(row: dict[str, Any]) -> str:
    """The stored mean and std as attributes, every digit (the cell shows four)."""
    if row["valid_mean"] is None:
        return ""
    return f' data-mean="{row["valid_mean"]!r}" data-std="{row["valid_std"]!r}"'


def _chart(scores: dict[int, float], n_folds: int, scale: Scale) -> str:
    """One dot per scored fold, fold k always at the same x, on the page's one scale
    (better is higher), so that dots of different rows can be compared."""
    width, height, pad = 120, 24, 4
    if not scores:
        return ""
    slots = max(n_folds, max(scores) + 1)
    step = (width - 2 * pad) / (slots - 1) if slots > 1 else 0.0
    dots = []
    for fold, score in sorted(scores.items()):
        x = pad + fold * step if slots > 1 else width / 2
        y = height - pad - scale.position(score) * (height - 2 * pad)
        dots.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#3a6fd8" '
                    f'data-fold="{fold}" data-score="{score!r}">'
                    f"<title>fold {fold}: {score:.4f}</title></circle>")  # fmt: skip
    return (f'<svg class="folds" width="{width}" height="{height}" role="img" '
            f'aria-label="per-fold scores" data-low="{scale.low!r}" data-high="{scale.high!r}">'
            f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
            f'stroke="#d5dae3"/>{"".join(dots)}</svg>')  # fmt: skip


class Scale:
    """The one vertical scale of a page's charts: from the worst fold score on the page
    (bottom) to the best (top)."""

    def __init__(self, scores: list[float], lower_is_better: bool) -> None:
        self.low, self.high = (min(scores), max(scores)) if scores else (0.0, 1.0)
        self.lower_is_better = lower_is_better

    def position(self, score: float) -> float:
        """0 at the bottom (worst), 1 at the top (best); the middle when all are equal."""
        span = self.high - self.low
        if not span:
            return 0.5
        up = (score - self.low) / span
        return 1.0 - up if self.lower_is_better else up


@dataclass(frozen=True)
class Board:
    """Which leaderboard a page is: its title, what its ranking means, its columns."""

    title: str = "leaderboard"
    ranking: str = ""  # the sentence that says how rows are ranked; empty: by validation
    test: bool = True  # the test mean and bagged test columns
    picks: bool = False  # the private page: each team's pick and the final rank


def _cells(r: dict[str, Any], board: Board) -> str:
    """The score cells of a row, as the board's columns say."""
    valid = "" if r["valid_mean"] is None else f"{_num(r['valid_mean'])} ± {_num(r['valid_std'])}"
    cells = f'<td class="num valid"{_exact(r)}>{valid}</td>'
    if board.test:
        cells += f'<td class="num test">{_num(r["test_mean"])}</td>'
    cells += f'<td class="num">{_num(r["bagged_valid"])}</td>'
    if board.test:
        cells += f'<td class="num test">{_num(r["bagged_test"])}</td>'
    if board.picks:
        final = "" if r.get("final_rank") is None else str(r["final_rank"])
        cells += (f'<td class="pick">{"pick" if r.get("pick") else ""}</td>'
                  f'<td class="num final">{final}</td>')  # fmt: skip
    return cells


def _header(metric: str, span: str, board: Board) -> str:
    test = ("<th>test mean</th>", "<th>bagged test</th>") if board.test else ("", "")
    picks = "<th>team's pick</th><th>final rank</th>" if board.picks else ""
    return (
        "<table><thead><tr><th>#</th><th>submission</th><th>state</th><th>folds</th>"
        f"<th>valid {escape(metric)} (mean ± std)</th>{test[0]}<th>bagged valid</th>"
        f"{test[1]}{picks}"
        f'<th>valid score per fold<span class="scale">{escape(span)}</span></th></tr></thead>'
    )


def render(
    dataset: str,
    metric: str,
    rows: list[dict[str, Any]],
    *,
    folds: dict[str, dict[int, float]],
    errors: dict[str, str],
    updated: datetime,
    n_folds: int = 0,
    lower_is_better: bool = False,
    board: Board = Board(),  # frozen: one shared default is harmless
) -> Iterator[str]:
    """The page, in pieces to write one after the other (a board of 10,000 submissions
    is megabytes: never held whole). rows: the leaderboard view's rows; folds: label ->
    fold -> valid score; the ranking direction is the dataset's first metric's (a RAMP
    kit's RMSE: lower is better)."""
    finite = {label: {k: s for k, s in scores.items() if math.isfinite(s)}
              for label, scores in folds.items()}  # fmt: skip
    scale = Scale([s for scores in finite.values() for s in scores.values()], lower_is_better)
    stamp = updated.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    direction = "lower is better" if lower_is_better else "greater is better"
    span = (f" (folds left to right; {_num(scale.high if lower_is_better else scale.low)} "
            f"at the bottom, {_num(scale.low if lower_is_better else scale.high)} at the top)"
            if finite and any(finite.values()) else "")  # fmt: skip
    ranking = board.ranking or f"Ranked by the mean validation <b>{escape(metric)}</b> over folds"
    yield (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(dataset)} — {escape(board.title)}</title><style>{STYLE}</style>"
        f"</head><body><h1>{escape(dataset)}</h1>"
        f'<div class="meta">{ranking} (<span id="direction">{direction}</span>); a failed '
        "or unfinished submission has no rank. Updated "
        f'<time id="updated">{escape(stamp)}</time>.</div>'
        + _header(metric, span, board)
        + "<tbody>"
    )
    for r in rows:
        label = r["label"]
        error = errors.get(label)
        rank = "" if r["rank"] is None else str(r["rank"])  # failed or not scored: no rank
        yield (
            f'<tr class="{escape(r["state"])}" data-submission="{escape(label)}">'
            f'<td class="num rank">{rank}</td>'
            f"<td>{escape(label)}"
            + (f'<div class="error">{escape(error)}</div>' if error else "")
            + "</td>"
            f'<td><span class="state {escape(r["state"])}">{escape(r["state"])}</span></td>'
            f'<td class="num">{r["scored"]}/{r["folds"]}</td>'
            + _cells(r, board)
            + f"<td>{_chart(finite.get(label, {}), n_folds, scale)}</td></tr>"
        )
    yield "</tbody></table></body></html>\n"
