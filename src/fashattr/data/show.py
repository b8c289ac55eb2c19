"""``fashattr data show``: real samples with their labels, and what augmentation makes of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fashattr.config import Config
from fashattr.data.augment import BatchAugment
from fashattr.data.formats import create_reader
from fashattr.data.grid import sample_grid
from fashattr.data.table import row_labels
from fashattr.portable.background import Background, background_for
from fashattr.portable.images import fill_color, load_presized


@dataclass
class Samples:
    """Presized ``(N, S, S, 3)`` uint8 images, their titles, and their augmented versions (or None); with
    background removal on, ``images`` are after it and ``before`` the same photos as they are."""

    images: np.ndarray
    titles: list[str]
    augmented: np.ndarray | None
    before: np.ndarray | None = None


def draw_samples(
    cfg: Config, split: str, n: int, augment: bool = False, seed: int = 0, size: int | None = None
) -> Samples:
    """``n`` seeded random rows of ``split`` prepared exactly as training prepares them: the
    config's format, root, box crop, fill colour and (unless ``size`` is given) ``data.image_size``;
    with ``augment``, also each one after ``cfg.augment``; with ``data.background=remove``, also each one
    before the removal (``Samples.before``)."""
    d = cfg.data
    size = size or d.image_size
    reader = create_reader(d.format, d.root, d.reader_options)
    schema, table = reader.schema(), reader.read(split)
    rows = np.sort(np.random.default_rng(seed).choice(len(table), size=min(n, len(table)), replace=False))
    crop = d.bbox_crop and table.bboxes is not None
    fill = fill_color(d.mean)
    step = background_for(d)

    def load(i: int, background: Background | None) -> np.ndarray:
        box = tuple(table.bboxes[i]) if crop else None  # type: ignore[index]
        return load_presized(table.file(i), size, box, d.bbox_margin, fill, background)

    images = np.stack([load(i, step) for i in rows])
    before = np.stack([load(i, None) for i in rows]) if step is not None else None
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
    return Samples(images, titles, augmented, before)


def show_samples(
    cfg: Config, split: str, n: int, out: str | Path, augment: bool = False, seed: int = 0, size: int | None = None
) -> Path:
    """Write a grid PNG of :func:`draw_samples` (titled with their labels; with ``augment``,
    each above its version after ``cfg.augment``; with background removal on, each photo as it is above
    its version after the removal (and the augmentation of that))."""
    s = draw_samples(cfg, split, n, augment, seed, size)
    if s.before is None:
        return sample_grid(s.images, s.titles, out, s.augmented)
    method = cfg.data.background_method
    after = [(f"background removed ({method})", s.images)]
    if s.augmented is not None:
        after.append(("removed + augmented", s.augmented))
    return sample_grid(s.before, s.titles, out, below=after)
