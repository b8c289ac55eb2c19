"""``fashattr data show``: real samples with their labels, and what augmentation makes of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fashattr.config import Config
from fashattr.data.augment import BatchAugment
from fashattr.data.formats import create_reader
from fashattr.data.images import load_presized
from fashattr.data.table import row_labels
from fashattr.report.grid import sample_grid


def show_samples(
    cfg: Config, split: str, n: int, out: str | Path, augment: bool = False, seed: int = 0, size: int = 128
) -> Path:
    """Write a grid PNG of ``n`` seeded random images of ``split`` (root and format from ``cfg.data``),
    titled with their labels; with ``augment``, each above its version after ``cfg.augment``."""
    d = cfg.data
    reader = create_reader(d.format, d.root, d.reader_options)
    schema, table = reader.schema(), reader.read(split)
    rows = np.sort(np.random.default_rng(seed).choice(len(table), size=min(n, len(table)), replace=False))
    crop = d.bbox_crop and table.bboxes is not None
    images = np.stack(
        [
            load_presized(table.file(i), size, tuple(table.bboxes[i]) if crop else None, d.bbox_margin)  # type: ignore[index]
            for i in rows
        ]
    )
    titles = []
    for i in rows:
        labels = row_labels(table, schema, int(i)) or {}
        titles.append("\n".join([table.paths[i], *(f"{g}: {c}" for g, c in labels.items())]))
    augmented = None
    if augment:
        aug = BatchAugment(cfg.augment, d.mean, d.std, {g.name: g.num_classes for g in schema.groups})
        x, _ = aug(torch.from_numpy(images).permute(0, 3, 1, 2), {}, torch.Generator().manual_seed(seed))
        mean, std = torch.tensor(d.mean).view(1, 3, 1, 1), torch.tensor(d.std).view(1, 3, 1, 1)
        pixels = ((x * std + mean) * 255).clamp(0, 255).round().to(torch.uint8)
        augmented = pixels.permute(0, 2, 3, 1).numpy()
    return sample_grid(images, titles, out, augmented)
