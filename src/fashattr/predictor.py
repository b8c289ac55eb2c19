"""Load a trained run and predict: on a dataset split, or on a user's own image files.

Needs nothing but torch, timm and fashattr: the run folder's ``config.yaml`` (model and
preprocessing), ``schema.yaml`` and ``best.safetensors`` / ``last.safetensors``, or a bundle
written by ``fashattr export``. Prediction goes through ``fashattr.deploy.runtime.Runtime``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fashattr.config import Config, DataConfig, load_config
from fashattr.deploy.bundle import preprocess_of
from fashattr.deploy.output import IMAGE_SUFFIXES, PredictionWriter
from fashattr.deploy.output import expand_paths as expand_paths  # re-exported: its old home
from fashattr.deploy.runtime import Runtime, TorchBackend
from fashattr.errors import ImageError
from fashattr.fileio import atomic_write_text
from fashattr.metrics import Metrics
from fashattr.schema import Schema

log = logging.getLogger("fashattr")
__all__ = ["IMAGE_SUFFIXES", "Predictor", "eval_run", "expand_paths", "predict_split", "write_predictions"]


class Predictor:
    """A trained model with its schema and preprocessing: a thin layer over :class:`Runtime`
    (the one inference path) that keeps the list-returning API.

    Example:
        >>> p = Predictor.from_run("runs/resnet18-cpu")      # or Predictor.from_bundle("bundles/resnet18")
        >>> p.predict_files(["my_dress.jpg"])[0]["groups"]["sleeve"]
        {'class': 'sleeveless', 'index': 2, 'prob': 0.93}
    """

    def __init__(
        self, model: torch.nn.Module, schema: Schema, data: DataConfig, device: torch.device, channels_last: bool = True
    ) -> None:
        config = {
            "schema": schema.to_dict(),
            "preprocess": preprocess_of(data).to_json(),  # what the run's bundle would record
            "decoding": {"multi_label_threshold_logit": 0.0, "calibration": None, "logit_adjust": None},
        }
        backend = TorchBackend(model, data.mean, data.std, str(device), channels_last)
        self._set(Runtime(config, backend))

    def _set(self, runtime: Runtime) -> None:
        self.runtime, self.schema = runtime, runtime.schema
        backend = runtime.backend
        self.model = backend.model if isinstance(backend, TorchBackend) else None
        self.device = backend.device if isinstance(backend, TorchBackend) else torch.device("cpu")

    @classmethod
    def from_runtime(cls, runtime: Runtime) -> Predictor:
        self = cls.__new__(cls)
        self._set(runtime)
        return self

    @classmethod
    def from_run(
        cls, run_dir: str | Path, weights: str = "best", device: str = "cpu", tta: str | None = None
    ) -> Predictor:
        """Load ``run_dir``'s ``{weights}.safetensors`` (``best`` or ``last``); ``tta``: the test-time
        augmentation of every call (``flip``, ...; None: none)."""
        return cls.from_runtime(Runtime.from_run(run_dir, weights, device=device, tta=tta))

    @classmethod
    def from_bundle(cls, bundle: str | Path, backend: str = "torch", device: str = "cpu") -> Predictor:
        """Load a bundle written by ``fashattr export`` (verified against its hashes first)."""
        return cls.from_runtime(Runtime.from_bundle(bundle, backend, device))

    def scores(self, images: np.ndarray, batch_size: int = 128) -> dict[str, np.ndarray]:
        """Logits per group for ``(N, S, S, 3)`` uint8 images prepared by ``load_presized``,
        ``batch_size`` at a time (as training-time evaluation batches them)."""
        chunks: dict[str, list[np.ndarray]] = {}
        for i in range(0, len(images), batch_size):
            for g, v in self.runtime.logits(np.ascontiguousarray(images[i : i + batch_size])).items():
                chunks.setdefault(g, []).append(v)
        if not chunks:
            return {g.name: np.zeros((0, g.num_classes), np.float32) for g in self.schema.groups}
        return {g: np.concatenate(v) for g, v in chunks.items()}

    def load(self, path: str | Path) -> np.ndarray:
        """One image file prepared exactly as the training images were (without a box)."""
        return self.runtime.preprocess(path)

    def predict_files(self, paths: list[Path], skip_bad: bool = False) -> list[dict[str, Any]]:
        """Per image: for each group the predicted class, its index and probability
        (multi-label groups: every class with logit > 0, i.e. probability > 0.5: ``multi_label_positive``).
        For a stream written as it goes, use ``Runtime.predict_files``.

        Raises:
            ImageError: images cannot be decoded, unless ``skip_bad`` (then each is logged and left
                out); the message names every such file with its reason.
        """
        results, bad = [], []
        for record in self.runtime.predict_files(paths):
            if "error" in record:
                bad.append(record)
                if skip_bad:
                    log.warning("skipped %s: %s", record["path"], record["error"])
            else:
                results.append(record)
        if bad and not skip_bad:  # every file was tried, so the error lists them all
            err = ImageError(bad[0]["path"], bad[0]["error"])
            err.args = (
                f"{len(bad)} unreadable image(s) of {len(paths)}:\n"
                + "\n".join(f"{r['path']}: {r['error']}" for r in bad),
            )
            raise err
        if skip_bad and bad:
            log.warning("skipped %d of %d images", len(bad), len(paths))
        return results


def write_predictions(results: list[dict[str, Any]], schema: Schema, out: str | Path) -> None:
    """Write predictions as JSON Lines (``.jsonl``), JSON (``.json``) or CSV (``.csv``: path, then
    class and prob per group, then error)."""
    writer = PredictionWriter(out, schema)
    try:
        for r in results:
            writer.write(r)
    finally:
        writer.close()


def _run_data(run_dir: Path, data_root: str | None) -> Config:
    cfg = load_config(run_dir / "config.yaml")
    return replace(cfg, data=replace(cfg.data, root=data_root)) if data_root else cfg


def eval_run(
    run_dir: str | Path,
    split: str = "holdout",
    data_root: str | None = None,
    weights: str = "best",
    device: str = "cpu",
    decode: str | None = None,
    tta: str | None = None,
) -> Metrics:
    """Metrics of a run on a labeled split (``holdout``: the run's own stratified selection
    holdout; ``test_holdout``: its evaluation holdout, ``data.test_holdout``), decoded as ``predict``
    decodes: with the run's ``calibration.json`` when it has one (``decode``: its mode, ``none`` for the
    raw model, None for its default). ``tta``: test-time augmentation (``"flip"``, ...; None: none).
    Writes ``eval_{split}.json`` (with ``"decoding"``: the mode used, and ``"tta"``) and ``eval_{split}.txt``
    into the run folder.

    Raises:
        ValueError: an unknown decoding mode (naming the choices), or a split without labels.
    """
    from fashattr.data.prepare import inference_data, load_split  # the dataset readers: only evaluation needs them
    from fashattr.metrics import compute_metrics
    from fashattr.portable.decoding import decision_logits

    run_dir = Path(run_dir)
    cfg = _run_data(run_dir, data_root)
    predictor = Predictor.from_run(run_dir, weights, device, tta=tta)
    mode = predictor.runtime.check_decode(decode)
    _, data = load_split(inference_data(cfg.data), split, progress=cfg.train.progress)
    if data.labels is None:
        raise ValueError(f"split {split!r} has no labels to evaluate against; use `fashattr predict` for it")
    # The training-time evaluation's batch size (and its fp32), so the numbers reproduce its own.
    scores = predictor.scores(data.pixels(), cfg.train.eval_batch_size)
    scores = decision_logits(predictor.runtime.config, scores, decode)
    metrics = compute_metrics(predictor.schema, data.labels, scores)
    report = {**metrics.to_dict(), "decoding": mode, "tta": predictor.runtime.tta, "skipped_images": data.skipped}
    atomic_write_text(run_dir / f"eval_{split}.json", json.dumps(report, indent=1))
    atomic_write_text(run_dir / f"eval_{split}.txt", metrics.table() + "\n")
    return metrics


def predict_split(
    run_dir: str | Path,
    split: str,
    out: str | Path,
    data_root: str | None = None,
    weights: str = "best",
    device: str = "cpu",
    decode: str | None = None,
    tta: str | None = None,
) -> int:
    """Write the challenge file for ``split``: one line per listed image, in order, decoded with the run's
    ``calibration.json`` when it has one (``decode``, ``tta``: as in :func:`eval_run`). Returns the line count."""
    from fashattr.data.prepare import inference_data, load_split
    from fashattr.inference import write_submission
    from fashattr.portable.decoding import decision_logits

    run_dir = Path(run_dir)
    cfg = _run_data(run_dir, data_root)
    predictor = Predictor.from_run(run_dir, weights, device, tta=tta)
    predictor.runtime.check_decode(decode)
    _, data = load_split(inference_data(cfg.data), split, progress=cfg.train.progress)
    if data.skipped:  # the challenge file needs one line per listed image: nothing may be left out
        path, why = next(iter(data.skipped.items()))
        err = ImageError(data.table.root / path, why)
        err.args = (
            f"{len(data.skipped)} unreadable image(s) in split {split!r}; a submission needs every image, "
            "so data.on_bad_image=skip does not apply here:\n"
            + "\n".join(f"{data.table.root / p}: {w}" for p, w in data.skipped.items()),
        )
        raise err
    scores = decision_logits(predictor.runtime.config, predictor.scores(data.pixels()), decode)
    return write_submission(predictor.schema, scores, out)
