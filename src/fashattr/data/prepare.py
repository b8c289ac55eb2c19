"""From a config to the arrays training and evaluation need: schema, cached pixels, labels."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from fashattr.config import DataConfig
from fashattr.data.cache import ImageCache, cache_images
from fashattr.data.formats import create_reader
from fashattr.data.table import Table, stratified_holdout
from fashattr.schema import Schema

log = logging.getLogger(__name__)
HOLDOUT = "holdout"  # the split name that means "the stratified holdout carved from train_split"


@dataclass
class Split:
    """Cached pixels of a whole split, the rows of it in use, and their labels (indexed like rows)."""

    name: str
    table: Table
    images: np.ndarray
    rows: np.ndarray
    labels: dict[str, np.ndarray] | None
    skipped: dict[str, str] = field(default_factory=dict)  # image path -> why it was left out

    def __len__(self) -> int:
        return len(self.rows)

    def pixels(self) -> np.ndarray:
        """The pixels of just the rows in use (a copy)."""
        return self.images[self.rows]


def cache_table(table: Table, cfg: DataConfig, progress: bool = True) -> ImageCache:
    """Decode (or reuse) the presized pixels of ``table`` with the config's preprocessing."""
    crop = cfg.bbox_crop and table.bboxes is not None
    return cache_images(
        table, cfg.image_size, crop, cfg.bbox_margin, cfg.cache_dir, cfg.workers, progress, cfg.on_bad_image
    )


def _split(name: str, table: Table, cache: ImageCache, rows: np.ndarray) -> Split:
    """The rows of ``table`` in use, less those whose image was skipped as unreadable."""
    keep = ~np.isin(rows, list(cache.bad))
    skipped = {table.paths[r]: cache.bad[r] for r in rows[~keep]}
    if skipped:
        log.warning(
            "%s: skipped %d unreadable image(s) of %d (data.on_bad_image=skip): %s",
            name,
            len(skipped),
            len(rows),
            "; ".join(f"{p}: {why}" for p, why in list(skipped.items())[:10]),
        )
    rows = rows[keep]
    labels = None if table.labels is None else {g: v[rows] for g, v in table.labels.items()}
    return Split(name, table, cache.pixels, rows, labels, skipped)


def holdout_rows(table: Table, schema: Schema, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    return stratified_holdout(table, schema, cfg.holdout, cfg.holdout_seed)


def load_split(cfg: DataConfig, name: str, progress: bool = True) -> tuple[Schema, Split]:
    """One split by name; ``holdout`` is the stratified holdout of ``train_split``."""
    reader = create_reader(cfg.format, cfg.root, cfg.reader_options)
    schema = reader.schema()
    table = reader.read(cfg.train_split if name == HOLDOUT else name)
    rows = np.arange(len(table))
    if name == HOLDOUT:
        rows = holdout_rows(table, schema, cfg)[1]
    return schema, _split(name, table, cache_table(table, cfg, progress), rows)


def load_train_eval(cfg: DataConfig, progress: bool = True) -> tuple[Schema, Split, Split]:
    """The training split and the model-selection split (the holdout unless ``eval_split`` is set)."""
    reader = create_reader(cfg.format, cfg.root, cfg.reader_options)
    schema = reader.schema()
    table = reader.read(cfg.train_split)
    if table.labels is None:
        raise ValueError(f"train split {cfg.train_split!r} has no labels")
    cache = cache_table(table, cfg, progress)
    if cfg.eval_split is None:
        # The holdout is drawn from every listed row, so skipping a bad image never reshuffles it.
        train_rows, eval_rows = holdout_rows(table, schema, cfg)
        evaluation = _split(HOLDOUT, table, cache, eval_rows)
    else:
        _, evaluation = load_split(cfg, cfg.eval_split, progress)
        if evaluation.labels is None:
            raise ValueError(f"eval split {cfg.eval_split!r} has no labels; model selection needs them")
        train_rows = np.arange(len(table))
    train = _split(cfg.train_split, table, cache, train_rows)
    log.info("data: %d training images, %d for model selection (%s)", len(train), len(evaluation), evaluation.name)
    return schema, train, evaluation
