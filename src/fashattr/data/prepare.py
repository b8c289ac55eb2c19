"""From a config to the arrays training and evaluation need: schema, cached pixels, labels."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from fashattr.config import DataConfig
from fashattr.data.cache import build_cache
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

    def __len__(self) -> int:
        return len(self.rows)

    def pixels(self) -> np.ndarray:
        """The pixels of just the rows in use (a copy)."""
        return self.images[self.rows]


def cache_table(table: Table, cfg: DataConfig, progress: bool = True) -> np.ndarray:
    """Decode (or reuse) the presized pixels of ``table`` with the config's preprocessing."""
    crop = cfg.bbox_crop and table.bboxes is not None
    return build_cache(table, cfg.image_size, crop, cfg.bbox_margin, cfg.cache_dir, cfg.workers, progress)


def holdout_rows(table: Table, schema: Schema, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    return stratified_holdout(table, schema, cfg.holdout, cfg.holdout_seed)


def load_split(cfg: DataConfig, name: str, progress: bool = True) -> tuple[Schema, Split]:
    """One split by name; ``holdout`` is the stratified holdout of ``train_split``."""
    reader = create_reader(cfg.format, cfg.root)
    schema = reader.schema()
    table = reader.read(cfg.train_split if name == HOLDOUT else name)
    rows = np.arange(len(table))
    if name == HOLDOUT:
        rows = holdout_rows(table, schema, cfg)[1]
    images = cache_table(table, cfg, progress)
    labels = None if table.labels is None else {g: v[rows] for g, v in table.labels.items()}
    return schema, Split(name, table, images, rows, labels)


def load_train_eval(cfg: DataConfig, progress: bool = True) -> tuple[Schema, Split, Split]:
    """The training split and the model-selection split (the holdout unless ``eval_split`` is set)."""
    reader = create_reader(cfg.format, cfg.root)
    schema = reader.schema()
    table = reader.read(cfg.train_split)
    if table.labels is None:
        raise ValueError(f"train split {cfg.train_split!r} has no labels")
    images = cache_table(table, cfg, progress)
    if cfg.eval_split is None:
        train_rows, eval_rows = holdout_rows(table, schema, cfg)
        evaluation = Split(HOLDOUT, table, images, eval_rows, {g: v[eval_rows] for g, v in table.labels.items()})
    else:
        _, evaluation = load_split(cfg, cfg.eval_split, progress)
        if evaluation.labels is None:
            raise ValueError(f"eval split {cfg.eval_split!r} has no labels; model selection needs them")
        train_rows = np.arange(len(table))
    train = Split(cfg.train_split, table, images, train_rows, {g: v[train_rows] for g, v in table.labels.items()})
    log.info("data: %d training images, %d for model selection (%s)", len(train), len(evaluation), evaluation.name)
    return schema, train, evaluation
