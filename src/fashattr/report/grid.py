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
) -> Path:
    """Draw ``(N, H, W, 3)`` uint8 ``images`` with ``titles`` into a PNG at ``out``.

    With ``augmented`` (same shape), each row of originals is followed by a row of their
    augmented versions, so a reader sees exactly what the model is trained on.
    """
    # A Figure of its own, not pyplot: no global backend switch, nothing left open in a notebook.
    from matplotlib.figure import Figure

    n = len(images)
    cols = min(cols, n)
    blocks = -(-n // cols)
    rows_per_block = 2 if augmented is not None else 1
    fig = Figure(figsize=(1.9 * cols, 2.3 * blocks * rows_per_block))
    axes = fig.subplots(blocks * rows_per_block, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        block, col = divmod(i, cols)
        ax = axes[block * rows_per_block, col]
        ax.imshow(images[i])
        ax.set_title(titles[i], fontsize=6, loc="left")
        if augmented is not None:
            below = axes[block * rows_per_block + 1, col]
            below.imshow(augmented[i])
            below.set_title("augmented", fontsize=6, loc="left")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    return out
