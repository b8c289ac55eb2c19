"""A grid of sample images with their labels, optionally each above its augmented version."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def sample_grid(
    images: np.ndarray,
    titles: list[str],
    out: str | Path,
    augmented: np.ndarray | None = None,
    cols: int = 8,
    below: list[tuple[str, np.ndarray]] | None = None,
) -> Path:
    """Draw ``(N, H, W, 3)`` uint8 ``images`` with ``titles`` into a PNG at ``out``.

    With ``augmented`` (same shape), each row of originals is followed by a row of their
    augmented versions, so a reader sees exactly what the model is trained on. ``below``:
    further rows under each image, as ``(title, images)`` pairs (e.g. after background removal).
    """
    # A Figure of its own, not pyplot: no global backend switch, nothing left open in a notebook.
    from matplotlib.figure import Figure

    n = len(images)
    cols = min(cols, n)
    blocks = -(-n // cols)
    extra = [("augmented", augmented)] if augmented is not None else []
    extra += below or []
    rows_per_block = 1 + len(extra)
    fig = Figure(figsize=(1.9 * cols, 2.3 * blocks * rows_per_block))
    axes = fig.subplots(blocks * rows_per_block, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        block, col = divmod(i, cols)
        ax = axes[block * rows_per_block, col]
        ax.imshow(images[i])
        ax.set_title(titles[i], fontsize=6, loc="left")
        for k, (title, more) in enumerate(extra, 1):
            under = axes[block * rows_per_block + k, col]
            under.imshow(more[i])
            under.set_title(title, fontsize=6, loc="left")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    return out
