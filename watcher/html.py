"""The HTML leaderboard: one self-contained file anyone can open from the mount.

No script, no font, no stylesheet from elsewhere: the styles are inline and each
submission's per-fold scores are a small inline SVG. Everything that comes from users
(names, error messages, which are whatever their code raised) is escaped.
"""

from __future__ import annotations

import math
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
"""


def _num(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.4f}"


def _chart(scores: list[float], low: float, high: float) -> str:
    """One dot per fold, on a shared scale for the whole table."""
    width, height, pad = 120, 24, 4
    if not scores:
        return ""
    span = (high - low) or 1.0
    dots = []
    step = (width - 2 * pad) / max(1, len(scores) - 1) if len(scores) > 1 else 0
    for i, score in enumerate(scores):
        x = pad + i * step if len(scores) > 1 else width / 2
        y = height - pad - (score - low) / span * (height - 2 * pad)
        dots.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#3a6fd8">'
                    f"<title>fold {i}: {score:.4f}</title></circle>")  # fmt: skip
    return (f'<svg class="folds" width="{width}" height="{height}" role="img" '
            f'aria-label="per-fold scores">'
            f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
            f'stroke="#d5dae3"/>{"".join(dots)}</svg>')  # fmt: skip


def render(
    dataset: str,
    metric: str,
    rows: list[dict[str, Any]],
    *,
    folds: dict[str, list[float]],
    errors: dict[str, str],
    updated: datetime,
) -> str:
    """rows: the leaderboard view's rows; folds: label -> valid scores by fold."""
    finite = [s for scores in folds.values() for s in scores if not math.isnan(s)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    body = []
    for r in rows:
        label = r["label"]
        valid = "" if r["valid_mean"] is None else (
            f"{_num(r['valid_mean'])} ± {_num(r['valid_std'])}"
        )  # fmt: skip
        error = errors.get(label)
        body.append(
            f'<tr class="{escape(r["state"])}" data-submission="{escape(label)}">'
            f'<td class="num">{r["rank"]}</td>'
            f"<td>{escape(label)}"
            + (f'<div class="error">{escape(error)}</div>' if error else "")
            + "</td>"
            f'<td><span class="state {escape(r["state"])}">{escape(r["state"])}</span></td>'
            f'<td class="num">{r["scored"]}/{r["folds"]}</td>'
            f'<td class="num valid">{valid}</td>'
            f'<td class="num">{_num(r["test_mean"])}</td>'
            f'<td class="num">{_num(r["bagged_valid"])}</td>'
            f'<td class="num">{_num(r["bagged_test"])}</td>'
            f"<td>{_chart([s for s in folds.get(label, []) if not math.isnan(s)], low, high)}</td>"
            "</tr>"
        )
    stamp = updated.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(dataset)} — leaderboard</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(dataset)}</h1>"
        f'<div class="meta">Ranked by the mean validation <b>{escape(metric)}</b> over folds '
        f'(greater is better). Updated <time id="updated">{escape(stamp)}</time>.</div>'
        "<table><thead><tr><th>#</th><th>submission</th><th>state</th><th>folds</th>"
        f"<th>valid {escape(metric)} (mean ± std)</th><th>test mean</th><th>bagged valid</th>"
        "<th>bagged test</th><th>valid score per fold</th></tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table></body></html>\n"
    )
