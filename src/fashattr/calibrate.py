"""``fashattr calibrate RUN``: run the model over the run's selection split (images it was selected on, never
trained on), fit the decoding there (:mod:`fashattr.calibration.fit`: temperatures, multi-label thresholds,
logit adjustment for the ``accuracy`` and ``balanced`` modes) and save it as ``calibration.json``
(:mod:`fashattr.calibration.store`), which ``eval``, ``predict`` and ``export`` then apply."""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

import fashattr
from fashattr.calibration.fit import default_mode, fit_calibration
from fashattr.calibration.store import CALIBRATION, FORMAT, VERSION, read_json
from fashattr.config import load_config
from fashattr.data.formats import create_reader
from fashattr.data.prepare import HOLDOUT, TEST_HOLDOUT, holdout_rows, inference_data, load_split
from fashattr.deploy.bundle import bundle_config, model_from_config
from fashattr.deploy.runtime import TorchBackend
from fashattr.fileio import atomic_write_text
from fashattr.portable.bundle import Preprocess, file_sha256
from fashattr.portable.tta import tta_apply

log = logging.getLogger("fashattr")

__all__ = ["CALIBRATION", "calibrate_run", "training_counts"]


def training_counts(cfg: Any, schema: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The training rows exactly as training drew them (holdouts left out) and their images per class, per
    group: the prior of the logit adjustment."""
    table = create_reader(cfg.data.format, cfg.data.root, cfg.data.reader_options).read(cfg.data.train_split)
    rows = holdout_rows(table, schema, cfg.data)[0]
    return rows, table.subset(rows).class_counts(schema)


def calibrate_run(
    run_dir: str | Path,
    split: str | None = None,
    weights: str = "best",
    data_root: str | None = None,
    folds: int = 5,
    seed: int = 0,
    device: str = "cpu",
    objective: str = "nll",
    tta: str | None = None,
    default: str | None = None,
) -> dict[str, Any]:
    """Fit ``run_dir``'s decoding on its selection split and write ``run_dir/calibration.json``.

    Args:
        run_dir: a run folder written by ``fashattr train``.
        split: the labelled split to fit on; default the run's selection split (``data.eval_split``, else
            ``holdout``: the stratified holdout carved from the training split). Never ``test_holdout``.
        weights: ``best`` or ``last``.
        data_root: the dataset root, if not the one in the run's config.
        folds: cross-fitting folds for the out-of-fold metrics.
        seed: the folds' random assignment.
        device: where the model runs.
        objective: what :func:`fit_tau` optimises: ``nll`` (default) or ``metric``.
        tta: fit on test-time-augmented logits (``tta.tta_views``: ``flip``, ...), for a model that
            is evaluated and exported with the same ``--tta``; recorded as ``fitted_on.tta``.
        default: the mode every later command decodes with unless told otherwise (``accuracy`` or
            ``balanced``); None: the one the run was selected for (:func:`default_mode`).

    Returns:
        What was written.

    Raises:
        ValueError: the test holdout as ``split``, or a split without labels.
        FileNotFoundError: the run has no such weights.
    """
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    if data_root:
        cfg = replace(cfg, data=replace(cfg.data, root=data_root))
    split = split or cfg.data.eval_split or HOLDOUT
    if split == TEST_HOLDOUT:
        raise ValueError(
            "calibrate fits on the selection split, never on the test holdout (it is the honest evaluation of "
            "what calibration does); use --split holdout"
        )
    path = run_dir / f"{weights}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; is {run_dir} a fashattr run folder with a finished epoch?")
    config = bundle_config(run_dir, weights, calibration=False)
    pre = Preprocess.of(config)
    backend = TorchBackend(model_from_config(config, path), pre.mean, pre.std, device, cfg.train.channels_last)
    schema, data = load_split(inference_data(cfg.data), split, progress=cfg.train.progress)
    if data.labels is None:
        raise ValueError(f"split {split!r} has no labels to calibrate on; use the run's holdout")
    train_rows, train_counts = training_counts(cfg, schema)
    pixels = data.pixels()
    chunks: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(pixels), cfg.train.eval_batch_size):
        for g, v in tta_apply(backend.logits, pixels[i : i + cfg.train.eval_batch_size], tta).items():
            chunks.setdefault(g, []).append(v)
    logits = {g: np.concatenate(v) for g, v in chunks.items()}
    summary = read_json(run_dir / "summary.json")
    select_metric = summary.get("select_metric") or cfg.train.select_metric
    result = fit_calibration(
        schema, logits, data.labels, train_counts, folds, seed, default or default_mode(select_metric), objective
    )
    result = {
        "format": FORMAT,
        "version": VERSION,
        "fitted_on": {
            "run": run_dir.resolve().name,
            "split": split,
            "images": len(data),
            "image_size": pre.image_size,  # the size the run is used at (data.eval_size, else data.image_size)
            "train_images": len(train_rows),
            "weights": path.name,
            "weights_sha256": file_sha256(path),
            "select_metric": select_metric,
            "tta": tta or "none",
            "fashattr_version": fashattr.__version__,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
        **result,
    }
    atomic_write_text(run_dir / CALIBRATION, json.dumps(result, indent=1) + "\n")
    return result
