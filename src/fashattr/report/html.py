"""A self-contained HTML page: inline CSS, no script, no network; figures linked beside it.

Small helpers that escape everything they are given, so a class or file name can never break the page.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;background:#fff}
header{background:#24292f;color:#fff;padding:14px 28px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#c9d1d9}
nav{position:sticky;top:0;background:#f6f8fa;border-bottom:1px solid #d0d7de;padding:6px 28px;z-index:2}
nav a{margin-right:16px;color:#0969da;text-decoration:none}
main{padding:4px 28px 40px;max-width:1400px}
section{border-bottom:1px solid #d0d7de;padding-bottom:18px}
h2{margin-top:26px}h3{margin:18px 0 6px}
table{border-collapse:collapse;margin:8px 0;font-size:12.5px}
th,td{border:1px solid #d0d7de;padding:3px 7px;text-align:right}th{background:#f6f8fa}
td.l,th.l{text-align:left}
.note{background:#fff8c5;border:1px solid #d4a72c;padding:6px 10px;margin:8px 0;border-radius:4px}
.muted{color:#57606a;font-size:12.5px}
figure{margin:8px 0}figure img{max-width:min(100%,560px);height:auto;border:1px solid #eaeef2}
figure.wide img{max-width:100%}
figcaption{font-size:12px;color:#57606a}
.row{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}.row>div{flex:0 1 auto}
.row figure{width:480px;max-width:100%}.row figure img{width:100%}
.facts td{text-align:left}.row p{max-width:360px}
.cm td{width:22px;height:20px;padding:0;font-size:10px;text-align:center}
.cm th{font-weight:normal;font-size:11px}
.cm th.col{writing-mode:vertical-rl;transform:rotate(180deg);text-align:left;height:90px}
"""


@dataclass
class Section:
    """One section of the page: its anchor id, heading and body HTML."""

    id: str
    title: str
    body: str


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def num(v: Any, digits: int = 4) -> str:
    """A number for a table cell; '-' for None / NaN."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.{digits}f}"


def with_ci(ci: dict[str, Any] | None) -> str:
    """``0.5051 [0.4712, 0.5399]`` from a ``stats.bootstrap_ci`` entry."""
    if not ci:
        return "-"
    inner = "" if ci.get("lo") is None else f' <span class="muted">[{num(ci["lo"])}, {num(ci["hi"])}]</span>'
    return num(ci["value"]) + inner


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1, raw: bool = False) -> str:
    """An HTML table (no header row when ``header`` is empty); the first ``left`` columns left-aligned.
    Cells are escaped unless ``raw`` (then the caller has escaped them: cells holding markup like ``with_ci``)."""
    width = len(header) if header else max((len(r) for r in rows), default=0)
    cls = [' class="l"' if i < left else "" for i in range(width)]
    head = "".join(f"<th{c}>{esc(h)}</th>" for h, c in zip(header, cls[: len(header)], strict=True))
    body = []
    for row in rows:
        cells = "".join(f"<td{c}>{v if raw else esc(v)}</td>" for v, c in zip(row, cls + [""] * len(row), strict=False))
        body.append(f"<tr>{cells}</tr>")
    thead = f"<thead><tr>{head}</tr></thead>" if header else ""
    return f"<table>{thead}<tbody>{''.join(body)}</tbody></table>"


def figure(files: dict[str, str], alt: str, caption: str = "", wide: bool = False) -> str:
    """An <img> of the figure's web file with links to its PNG and SVG (``wide`` and photo grids: full width)."""
    links = " ".join(f'<a href="{esc(files[k])}">{k.upper()}</a>' for k in ("png", "svg") if k in files)
    cap = f"{esc(caption)} " if caption else ""
    cls = ' class="wide"' if wide or files["web"].endswith(".jpg") else ""
    return (
        f'<figure{cls}><img src="{esc(files["web"])}" alt="{esc(alt)}" loading="eager">'
        f"<figcaption>{cap}{links}</figcaption></figure>"
    )


def note(text: str) -> str:
    return f'<div class="note">{esc(text)}</div>'


def confusion_table(classes: Sequence[str], matrix: np.ndarray, support: np.ndarray) -> str:
    """A heat-map table of the row-normalised confusion; each cell's hover title gives the count."""
    share = np.divide(matrix, support[:, None], out=np.zeros(matrix.shape), where=support[:, None] > 0)
    head = '<th class="l">true \\ predicted</th>' + "".join(f'<th class="col">{esc(c)}</th>' for c in classes)
    rows = []
    for i, true in enumerate(classes):
        cells = []
        for j, pred in enumerate(classes):
            v = float(share[i, j])
            bg = f"rgba(9,105,218,{min(1.0, v):.3f})"
            color = "#fff" if v > 0.55 else "#1f2328"
            title = f"{true} \u2192 {pred}: {int(matrix[i, j])} of {int(support[i])} images ({v:.1%})"
            text = f"{round(100 * v)}" if matrix[i, j] else ""
            cells.append(f'<td title="{esc(title)}" style="background:{bg};color:{color}">{text}</td>')
        rows.append(f'<tr><th class="l">{esc(true)} ({int(support[i])})</th>{"".join(cells)}</tr>')
    return f'<table class="cm"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole document."""
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header><nav>{nav}</nav>"
        f"<main>{body}</main></body></html>\n"
    )
