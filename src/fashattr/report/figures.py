"""The report's figures: matplotlib ``Figure`` objects (no pyplot state, Agg), data in, figure out.

``save`` writes each one as PNG (150 dpi, for a paper) and SVG; photo grids also as a JPEG, which
the HTML page shows (a fraction of the PNG's size for the same pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure

DPI = 150
RIGHT, WRONG = "#1a7f37", "#c62828"


def save(fig: Figure, folder: Path, name: str, photo: bool = False) -> dict[str, str]:
    """Write ``name.png`` and ``name.svg`` (and ``name.jpg`` for photo grids) into ``folder``.

    Returns:
        ``{"png", "svg"[, "jpg"], "web"}``: file names relative to ``folder``'s parent; ``web`` is the
        one the HTML page shows.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is not None:
        # Lay the figure out once and freeze it: otherwise every format saved re-runs constrained layout,
        # which costs more than drawing.
        fig.draw_without_rendering()
        fig.set_layout_engine("none")
    out = {}
    fig.savefig(folder / f"{name}.png", dpi=DPI)
    # SVG text as text (not glyph outlines): smaller, searchable, and much faster to write.
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "fashattr"}):  # stable ids: same file each run
        fig.savefig(folder / f"{name}.svg", dpi=DPI, metadata={"Date": None})
    out["png"], out["svg"] = f"{folder.name}/{name}.png", f"{folder.name}/{name}.svg"
    if photo:
        fig.savefig(folder / f"{name}.jpg", dpi=DPI, pil_kwargs={"quality": 82, "optimize": True})
        out["jpg"] = f"{folder.name}/{name}.jpg"
    out["web"] = out["jpg"] if photo else out["png"]
    return out


def curves_figure(histories: dict[str, list[dict[str, float]]], select_metric: str, groups: list[str]) -> Figure:
    """Per epoch: losses, the selection metric, and (one run) each group's average per-class accuracy
    or (several runs) the overall accuracy of each."""
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    loss_ax, metric_ax, third = fig.subplots(1, 3)
    single = len(histories) == 1
    for i, (name, rows) in enumerate(histories.items()):
        epochs = [r["epoch"] for r in rows]
        color = f"C{i % 10}"
        label = "" if single else f" {name}"
        loss_ax.plot(epochs, [r.get("train_loss", np.nan) for r in rows], "--", color=color, label="train" + label)
        loss_ax.plot(epochs, [r.get("eval_loss", np.nan) for r in rows], "-", color=color, label="selection" + label)
        metric_ax.plot(epochs, [r.get(select_metric, np.nan) for r in rows], "o-", ms=3, color=color, label=name)
        if single:
            for j, g in enumerate(groups):
                third.plot(epochs, [r.get(f"{g}/avg_class_acc", np.nan) for r in rows], color=f"C{j % 10}", label=g)
        else:
            third.plot(epochs, [r.get("overall_acc", np.nan) for r in rows], "o-", ms=3, color=color, label=name)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="training (dashed) and selection-split (solid) loss")
    metric_ax.set(xlabel="epoch", ylabel=select_metric, title=f"selection metric: {select_metric}")
    third.set(
        xlabel="epoch",
        ylabel="avg per-class accuracy" if single else "overall accuracy",
        title="per group: average per-class accuracy" if single else "overall accuracy",
    )
    for ax in (loss_ax, metric_ax, third):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def confusion_figure(classes: Sequence[str], matrix: np.ndarray, support: np.ndarray, title: str) -> Figure:
    """Row-normalised confusion (share of each true class's images), class names on both axes."""
    c = len(classes)
    share = np.divide(matrix, support[:, None], out=np.zeros(matrix.shape), where=support[:, None] > 0)
    side = max(3.4, 0.32 * c + 1.8)
    fig = Figure(figsize=(side + 0.8, side), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=max(1e-9, float(share.max(initial=0.0))))
    ax.set_xticks(range(c), [str(x) for x in classes], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(c), [f"{x} ({int(n)})" for x, n in zip(classes, support, strict=True)], fontsize=7)
    ax.set(xlabel="predicted", ylabel="true (images)", title=title)
    ax.title.set_fontsize(8)
    if c <= 12:  # numbers stay legible up to about a dozen classes
        for (i, j), v in np.ndenumerate(share):
            if matrix[i, j]:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v > 0.5 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class")
    return fig


def distribution_figure(
    classes: Sequence[str], train: np.ndarray, evaluated: np.ndarray, evaluated_label: str, title: str
) -> Figure:
    """Share of images per class in the training split beside the evaluated split (or its predictions)."""
    c = len(classes)
    fig = Figure(figsize=(5.2, max(2.2, 0.24 * c + 1.0)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(c)
    for offset, counts, label, color in ((-0.2, train, "train", "C0"), (0.2, evaluated, evaluated_label, "C1")):
        total = max(1, int(np.sum(counts)))
        ax.barh(y + offset, np.asarray(counts) / total, height=0.4, color=color, label=f"{label} (n={total})")
    ax.set_yticks(y, [str(x) for x in classes], fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="share of labels", title=title)
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7)
    ax.grid(axis="x", alpha=0.3)
    return fig


def mosaic_figure(
    tiles: Sequence[np.ndarray], captions: Sequence[tuple[str, str]], cols: int, tile: int = 144, lines: int = 3
) -> Figure:
    """Images in a grid, each under its caption ``(text, colour)``: one bitmap drawn once, pixel for
    pixel at ``DPI`` (no resampling), with the captions as text. Dozens of small axes would cost
    seconds per save; this costs a fraction of one."""
    from PIL import Image

    n = len(tiles)
    cols = max(1, min(cols, n))
    rows = max(1, -(-n // cols))
    cap_h, pad = 13 * lines + 4, 6
    cell_w, cell_h = tile + pad, tile + cap_h + pad
    canvas = np.full((rows * cell_h, cols * cell_w, 3), 255, np.uint8)
    height, width = canvas.shape[:2]
    fig = Figure(figsize=(width / DPI, height / DPI))
    for k, (img, (text, color)) in enumerate(zip(tiles, captions, strict=True)):
        r, c = divmod(k, cols)
        y, x = r * cell_h + cap_h, c * cell_w + pad // 2
        canvas[y : y + tile, x : x + tile] = np.asarray(
            Image.fromarray(img).resize((tile, tile), Image.Resampling.BILINEAR)
        )
        fig.text(x / width, 1 - (y - 2) / height, text, fontsize=5.5, color=color, va="bottom", linespacing=1.15)
    fig.figimage(canvas, origin="upper")  # placed pixel for pixel at DPI: nothing to resample
    return fig


def image_grid_figure(images: np.ndarray, titles: list[str], colors: list[str], cols: int = 8) -> Figure:
    """Thumbnails with a caption each (true / predicted / probability), caption colour per image."""
    return mosaic_figure(list(images), list(zip(titles, colors, strict=True)), cols)


def gradcam_figure(
    images: np.ndarray,
    overlays: dict[str, np.ndarray],
    captions: dict[str, list[tuple[str, bool]]],
    row_titles: list[str],
) -> Figure:
    """One row per image: the image, then one Grad-CAM overlay per group captioned with its
    ``(text, right)`` (green when right, red when wrong)."""
    tiles, caps = [], []
    for i in range(len(images)):
        tiles.append(images[i])
        caps.append((row_titles[i], "black"))
        for g, maps in overlays.items():
            text, right = captions[g][i]
            tiles.append(maps[i])
            caps.append((text, RIGHT if right else WRONG))
    return mosaic_figure(tiles, caps, cols=len(overlays) + 1, tile=120, lines=2)


def reliability_figure(curves: dict[str, dict[str, Any]]) -> Figure:
    """One reliability diagram per group: accuracy against confidence per bin, before and after
    temperature scaling, with the diagonal of perfect calibration. ``curves[group]`` holds
    ``before``/``after`` (``calibration.reliability`` dicts) and ``temperature``."""
    n = len(curves)
    cols = min(3, n)
    rows = -(-n // cols)
    fig = Figure(figsize=(3.4 * cols, 3.1 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes[n:]:
        ax.axis("off")
    for ax, (group, c) in zip(axes, curves.items(), strict=False):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        lines = [("before", "C3", "before"), ("after", "C0", f"after (T={c['temperature']:.2f})")]
        if "saved" in c:
            lines.append(("saved", "C2", f"calibration.json (T={c['saved_temperature']:.2f})"))
        for key, color, label in lines:
            r = c[key]
            pts = [(x, y) for x, y in zip(r["confidence"], r["accuracy"], strict=True) if x is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, "o-", ms=3, color=color, label=f"{label}: ECE {r['ece']:.3f}")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=group)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="upper left")
    return fig


def deltas_figure(deltas: dict[str, tuple[list[str], list[float | None]]], title: str) -> Figure:
    """Per group, each class's recall change (percentage points), one horizontal bar per class."""
    total = sum(len(c) for c, _ in deltas.values())
    fig = Figure(figsize=(6, max(2.5, 0.2 * total + 0.5 * len(deltas))), layout="constrained")
    ax = fig.subplots()
    labels, values = [], []
    for group, (classes, d) in deltas.items():
        for c, v in zip(classes, d, strict=True):
            labels.append(f"{group}: {c}")
            values.append(np.nan if v is None else 100 * v)
    y = np.arange(len(labels))
    ax.barh(y, values, color=[RIGHT if v >= 0 else WRONG for v in np.nan_to_num(values)])
    ax.set_yticks(y, labels, fontsize=6)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set(xlabel="recall change (points)", title=title)
    ax.title.set_fontsize(8)
    ax.grid(axis="x", alpha=0.3)
    return fig
