"""Test-time augmentation: views of the letterboxed pixels, and the mean of a model's outputs over them.

``tta`` (config.json's top-level "tta", ``--tta``): "none", "flip", "zoom" or "flip+zoom". The views are made
here, on the uint8 letterboxed pixels, before any backend sees them, so torch, ONNX and this file run the
same pixels. Outputs are averaged in LOGIT space: every decoding step (logit-adjustment offsets, temperatures,
multi-label logit thresholds) is defined on logits, so the mean stays a logit they apply to unchanged (a
probability mean would have to be mapped back, and a multi-label threshold fitted on logits would no longer
mean what it meant). For a softmax the logit mean is the renormalised geometric mean of the views' probabilities.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

TTA_VIEWS = ("flip", "zoom")
TTA_ZOOM = 0.875  # "zoom": the central 87.5% of the canvas scaled back up (a second, larger scale)


def tta_views(tta: str | None) -> list[tuple[bool, bool]]:
    """The views of a ``tta`` setting as ``(flipped, zoomed)`` pairs, the plain image first.

    Raises:
        ValueError: an unknown setting, naming the choices.
    """
    if tta in (None, "", "none"):
        return [(False, False)]
    parts = tta.split("+")
    if len(set(parts)) != len(parts) or any(p not in TTA_VIEWS for p in parts):
        raise ValueError(f"unknown tta {tta!r}; choose from ['none', 'flip', 'zoom', 'flip+zoom']")
    flips = [False, True] if "flip" in parts else [False]
    zooms = [False, True] if "zoom" in parts else [False]
    return [(f, z) for z in zooms for f in flips]


def tta_view(batch: np.ndarray, flipped: bool, zoomed: bool) -> np.ndarray:
    """One view of ``(N, S, S, 3)`` uint8 pixels: mirrored left-right and/or centre-zoomed by 1 / TTA_ZOOM."""
    out = batch[:, :, ::-1] if flipped else batch
    if zoomed:
        s = batch.shape[1]
        c = max(1, round(s * TTA_ZOOM))
        o = (s - c) // 2
        resize = Image.Resampling.BILINEAR
        out = np.stack(
            [
                np.asarray(Image.fromarray(np.ascontiguousarray(im[o : o + c, o : o + c])).resize((s, s), resize))
                for im in out
            ]
        )
    return np.ascontiguousarray(out)


def tta_apply(run: Any, batch: np.ndarray, tta: str | None) -> Any:
    """``run(batch)`` averaged over the views of ``tta`` (:func:`tta_views`); ``run`` returns a dict of arrays
    (logits per group) or a tuple of such dicts and arrays (logits and features), averaged alike, in float32."""
    views = tta_views(tta)
    if len(views) == 1:
        return run(batch)
    outs = [run(tta_view(batch, f, z)) for f, z in views]

    def mean(items: list[Any]) -> Any:
        if isinstance(items[0], dict):
            return {k: mean([x[k] for x in items]) for k in items[0]}
        if isinstance(items[0], tuple):
            return tuple(mean([x[i] for x in items]) for i in range(len(items[0])))
        return (np.sum(np.stack([np.asarray(x, np.float64) for x in items]), 0) / len(items)).astype(np.float32)

    return mean(outs)
