"""A torch model over cached uint8 images: logits per group, in batches (training-time evaluation, quantisation
checks, distillation), probabilities, and the challenge submission file. Scoring a run on a split is
:func:`fashattr.predictor.eval_run`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fashattr.data.augment import normalize
from fashattr.data.loader import BatchLoader
from fashattr.device import autocast
from fashattr.fileio import atomic_write_text
from fashattr.schema import Schema


@torch.no_grad()
def predict_scores(
    model: torch.nn.Module,
    images: np.ndarray,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    batch_size: int = 128,
    device: torch.device | None = None,
    amp: torch.dtype | None = None,
    channels_last: bool = False,
    tta: str | None = None,
) -> dict[str, np.ndarray]:
    """Logits per group for ``(N, H, W, 3)`` uint8 ``images``, in order; ``tta`` (``"flip"``, ...) averages
    them over the views of ``tta.tta_apply``, the one TTA of every inference path."""
    if tta not in (None, "none"):
        from fashattr.portable.tta import tta_apply

        def plain(view: np.ndarray) -> dict[str, np.ndarray]:
            return predict_scores(model, view, mean, std, batch_size, device, amp, channels_last)

        return tta_apply(plain, images, tta)
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks: dict[str, list[np.ndarray]] = {}
    for pixels, _ in BatchLoader(images, None, batch_size).batches():
        x = normalize(pixels.to(device, non_blocking=True), mean, std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            out = model(x)
        for g, logits in out.items():
            chunks.setdefault(g, []).append(logits.float().cpu().numpy())
    model.train(was_training)
    return {g: np.concatenate(v) for g, v in chunks.items()}


def to_probabilities(schema: Schema, scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Softmax for single-label groups, sigmoid for multi-label groups."""
    out = {}
    for g in schema.groups:
        s = scores[g.name].astype(np.float64)
        if g.kind == "single":
            e = np.exp(s - s.max(1, keepdims=True))
            out[g.name] = e / e.sum(1, keepdims=True)
        else:
            out[g.name] = 1.0 / (1.0 + np.exp(-s))
    return out


def write_submission(schema: Schema, scores: dict[str, np.ndarray], path: str | Path) -> int:
    """The challenge file: one line per image, in order, one class index per group.

    Returns the number of lines written. Only single-label schemas have this format.
    """
    if any(g.kind != "single" for g in schema.groups):
        raise ValueError("the submission format needs single-label groups only; use JSON/CSV output")
    preds = np.stack([scores[g.name].argmax(1) for g in schema.groups], axis=1)
    text = "".join(" ".join(str(int(v)) for v in row) + "\n" for row in preds)
    atomic_write_text(path, text)
    return len(preds)
