"""From a config to the arrays training and evaluation need: schema, cached pixels, labels."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

from fashattr.config import ConfigError, DataConfig
from fashattr.data.cache import ImageCache, cache_images
from fashattr.data.dedup import apply_policy
from fashattr.data.formats import create_reader
from fashattr.data.table import Table, nested_holdouts, stratified_holdout
from fashattr.portable.background import background_for
from fashattr.portable.images import fill_color
from fashattr.schema import Schema

log = logging.getLogger(__name__)
HOLDOUT = "holdout"  # the split name that means "the stratified holdout carved from train_split"
TEST_HOLDOUT = "test_holdout"  # the evaluation holdout carved from train_split before HOLDOUT


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


def inference_data(cfg: DataConfig) -> DataConfig:
    """The data settings a trained model is evaluated and used with: its letterbox side is ``eval_size`` when
    set (training, and its choice of epoch, stay at ``image_size``). Every reader of a split for a trained
    model (calibrate, eval, predict, pseudo-label, report) and the bundle's preprocessing go through it."""
    if cfg.eval_size is None or cfg.eval_size == cfg.image_size:
        return cfg
    return replace(cfg, image_size=cfg.eval_size)


def cache_table(table: Table, cfg: DataConfig, progress: bool = True) -> ImageCache:
    """Decode (or reuse) the presized pixels of ``table`` with the config's preprocessing."""
    crop = cfg.bbox_crop and table.bboxes is not None
    return cache_images(
        table,
        cfg.image_size,
        crop,
        cfg.bbox_margin,
        cfg.cache_dir,
        cfg.workers,
        progress,
        cfg.on_bad_image,
        fill_color(cfg.mean),  # letterbox bars in the colour of augmentation borders
        background_for(cfg),  # None unless data.background=remove
    )


def _split(name: str, table: Table, cache: ImageCache, rows: np.ndarray) -> Split:
    """The rows of ``table`` in use, less those whose image was skipped as unreadable."""
    keep = ~np.isin(rows, list(cache.bad))
    skipped = {table.paths[r]: cache.bad[r] for r in rows[~keep]}
    if skipped:
        log.warning(
            "%s: skipped %d unreadable image(s) of %d (data.on_bad_image=skip):\n%s",
            name,
            len(skipped),
            len(rows),
            "\n".join(f"{p}: {why}" for p, why in skipped.items()),  # every one: a user fixes them all
        )
    rows = rows[keep]
    labels = None if table.labels is None else {g: v[rows] for g, v in table.labels.items()}
    return Split(name, table, cache.pixels, rows, labels, skipped)


def holdout_rows(table: Table, schema: Schema, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of ``train_split``: (training, selection holdout, test holdout).

    With ``eval_split`` set there is no selection holdout (empty); the test holdout, when
    on, is still carved from ``train_split`` and left out of training.
    """
    if cfg.eval_split is None:
        return nested_holdouts(table, schema, cfg.test_holdout, cfg.test_holdout_seed, cfg.holdout, cfg.holdout_seed)
    none = np.zeros(0, dtype=np.int64)
    if cfg.test_holdout == 0.0:
        return np.arange(len(table)), none, none
    train, test = stratified_holdout(table, schema, cfg.test_holdout, cfg.test_holdout_seed)
    return train, none, test


def load_split(cfg: DataConfig, name: str, progress: bool = True) -> tuple[Schema, Split]:
    """One split by name; ``holdout`` and ``test_holdout`` are the stratified holdouts of ``train_split``.
    Its pixels are at ``cfg.image_size``: pass :func:`inference_data` of a run's settings to read a split as the
    trained model is used."""
    if name == TEST_HOLDOUT and cfg.test_holdout == 0.0:
        raise ConfigError(
            "split 'test_holdout': this config has none (data.test_holdout is 0); "
            "train with data.test_holdout=0.1 to hold one out"
        )
    carved = name in (HOLDOUT, TEST_HOLDOUT)
    reader = create_reader(cfg.format, cfg.root, cfg.reader_options)
    schema = reader.schema()
    table = reader.read(cfg.train_split if carved else name)
    rows = np.arange(len(table))
    if carved:
        # The selection holdout as if selected on it (eval_split ignored), to evaluate it afterwards.
        _, holdout, test = holdout_rows(table, schema, replace(cfg, eval_split=None))
        rows = holdout if name == HOLDOUT else test
    return schema, _split(name, table, cache_table(table, cfg, progress), rows)


def load_train_eval(cfg: DataConfig, progress: bool = True) -> tuple[Schema, Split, Split, Split | None]:
    """The training split, the model-selection split (the holdout unless ``eval_split`` is set)
    and the test holdout (None when ``test_holdout`` is 0)."""
    reader = create_reader(cfg.format, cfg.root, cfg.reader_options)
    schema = reader.schema()
    table = reader.read(cfg.train_split)
    if table.labels is None:
        raise ValueError(f"train split {cfg.train_split!r} has no labels")
    cache = cache_table(table, cfg, progress)
    # The holdouts are drawn from every listed row, so skipping a bad image never reshuffles them.
    train_rows, eval_rows, test_rows = holdout_rows(table, schema, cfg)
    train_rows = apply_policy(table, train_rows, cfg.duplicates)  # after the holdouts: they never change
    if cfg.eval_split is None:
        evaluation = _split(HOLDOUT, table, cache, eval_rows)
    else:
        _, evaluation = load_split(cfg, cfg.eval_split, progress)
        if evaluation.labels is None:
            raise ValueError(f"eval split {cfg.eval_split!r} has no labels; model selection needs them")
    test = _split(TEST_HOLDOUT, table, cache, test_rows) if cfg.test_holdout > 0 else None
    train = _split(cfg.train_split, table, cache, train_rows)
    log.info(
        "data: %d training images, %d for model selection (%s)%s",
        len(train),
        len(evaluation),
        evaluation.name,
        f", {len(test)} in the test holdout (never trained on or selected on)" if test is not None else "",
    )
    return schema, train, evaluation, test
