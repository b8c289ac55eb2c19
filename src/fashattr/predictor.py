"""Load a trained run and predict: on a dataset split, or on a user's own image files.

Needs nothing but torch, timm and fashattr: the run folder's ``config.yaml`` (model and
preprocessing), ``schema.yaml`` and ``best.safetensors`` / ``last.safetensors``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fashattr.config import Config, DataConfig, load_config
from fashattr.data.images import fill_color, load_presized
from fashattr.data.prepare import load_split
from fashattr.engine.checkpoint import load_weights
from fashattr.errors import ImageError
from fashattr.evaluate import predict_scores, to_probabilities, write_submission
from fashattr.fileio import atomic_write_text
from fashattr.metrics import Metrics, compute_metrics, multi_label_positive
from fashattr.models import create_model
from fashattr.runtime import resolve_device
from fashattr.schema import Schema

log = logging.getLogger("fashattr")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


class Predictor:
    """A trained model with its schema and preprocessing.

    Example:
        >>> p = Predictor.from_run("runs/resnet18-cpu")
        >>> p.predict_files(["my_dress.jpg"])[0]["groups"]["sleeve"]
        {'class': 'sleeveless', 'index': 2, 'prob': 0.93}
    """

    def __init__(
        self, model: torch.nn.Module, schema: Schema, data: DataConfig, device: torch.device, channels_last: bool = True
    ) -> None:
        self.channels_last = channels_last
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.eval()
        self.schema, self.data, self.device = schema, data, device

    @classmethod
    def from_run(cls, run_dir: str | Path, weights: str = "best", device: str = "cpu") -> Predictor:
        """Load ``run_dir``'s ``{weights}.safetensors`` (``best`` or ``last``)."""
        run_dir = Path(run_dir)
        cfg = load_config(run_dir / "config.yaml")
        schema = Schema.load(run_dir / "schema.yaml")
        path = run_dir / f"{weights}.safetensors"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found; is {run_dir} a fashattr run folder with a finished epoch?")
        # The weights file holds every tensor: no hub download, no pretrained file needed.
        model = create_model(replace(cfg.model, pretrained=False, pretrained_file=None), schema, cfg.data.image_size)
        model.load_state_dict(load_weights(path))
        dev = resolve_device(device)
        return cls(model.to(dev), schema, cfg.data, dev, cfg.train.channels_last)

    def scores(self, images: np.ndarray, batch_size: int = 128) -> dict[str, np.ndarray]:
        """Logits per group for ``(N, S, S, 3)`` uint8 images prepared by ``load_presized``."""
        return predict_scores(
            self.model, images, self.data.mean, self.data.std, batch_size, self.device, channels_last=self.channels_last
        )

    def load(self, path: str | Path) -> np.ndarray:
        """One image file prepared exactly as the training images were (without a box)."""
        return load_presized(path, self.data.image_size, fill=fill_color(self.data.mean))

    def predict_files(self, paths: list[Path], skip_bad: bool = False) -> list[dict[str, Any]]:
        """Per image: for each group the predicted class, its index and probability
        (multi-label groups: every class with logit > 0, i.e. probability > 0.5: ``multi_label_positive``).

        Raises:
            ImageError: images cannot be decoded, unless ``skip_bad`` (then each is logged and left
                out); the message names every such file with its reason.
        """
        arrays, kept, bad = [], [], []
        for path in paths:
            try:
                arrays.append(self.load(path))
                kept.append(path)
            except ImageError as e:
                bad.append(e)
                if skip_bad:
                    log.warning("skipped %s", e)
        if bad and not skip_bad:  # every file was tried, so the error lists them all
            err = ImageError(bad[0].file, str(bad[0]).split(": ", 1)[-1])
            err.args = (f"{len(bad)} unreadable image(s) of {len(paths)}:\n" + "\n".join(map(str, bad)),)
            raise err
        if skip_bad and len(kept) < len(paths):
            log.warning("skipped %d of %d images", len(paths) - len(kept), len(paths))
        if not arrays:
            return []
        logits = self.scores(np.stack(arrays))
        probs = to_probabilities(self.schema, logits)
        results = []
        for i, path in enumerate(kept):
            groups: dict[str, Any] = {}
            for g in self.schema.groups:
                p = probs[g.name][i]
                if g.kind == "single":
                    k = int(p.argmax())
                    groups[g.name] = {"class": g.classes[k], "index": k, "prob": round(float(p[k]), 6)}
                else:
                    groups[g.name] = [
                        {"class": g.classes[k], "index": int(k), "prob": round(float(p[k]), 6)}
                        for k in np.flatnonzero(multi_label_positive(logits[g.name][i]))
                    ]
            results.append({"path": str(path), "groups": groups})
        return results


def expand_paths(items: list[str | Path]) -> list[Path]:
    """Files as given, folders expanded to the image files inside them (recursively, sorted)."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    if not out:
        raise FileNotFoundError(f"no image files found in {[str(i) for i in items]}")
    return out


def write_predictions(results: list[dict[str, Any]], schema: Schema, out: str | Path) -> None:
    """Write predictions as JSON (``.json``) or CSV (``.csv``: path, then class and prob per group)."""
    out = Path(out)
    if out.suffix == ".json":
        text = json.dumps(results, indent=1)
    elif out.suffix == ".csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["path"] + [f"{g}{s}" for g in schema.names for s in ("", "_prob")])
        for r in results:
            row = [r["path"]]
            for g in schema.groups:
                v = r["groups"][g.name]
                if g.kind == "single":
                    row += [v["class"], f"{v['prob']:.6f}"]
                else:
                    row += ["|".join(x["class"] for x in v), "|".join(f"{x['prob']:.6f}" for x in v)]
            w.writerow(row)
        text = buf.getvalue()
    else:
        raise ValueError(f"{out}: output must end in .json or .csv")
    atomic_write_text(out, text)


def _run_data(run_dir: Path, data_root: str | None) -> Config:
    cfg = load_config(run_dir / "config.yaml")
    return replace(cfg, data=replace(cfg.data, root=data_root)) if data_root else cfg


def eval_run(
    run_dir: str | Path,
    split: str = "holdout",
    data_root: str | None = None,
    weights: str = "best",
    device: str = "cpu",
) -> Metrics:
    """Metrics of a run on a labeled split (``holdout``: the run's own stratified selection
    holdout; ``test_holdout``: its evaluation holdout, ``data.test_holdout``).
    Writes ``eval_{split}.json`` and ``eval_{split}.txt`` into the run folder."""
    run_dir = Path(run_dir)
    cfg = _run_data(run_dir, data_root)
    predictor = Predictor.from_run(run_dir, weights, device)
    _, data = load_split(cfg.data, split, progress=cfg.train.progress)
    if data.labels is None:
        raise ValueError(f"split {split!r} has no labels to evaluate against; use `fashattr predict` for it")
    # The training-time evaluation's batch size (and its fp32), so the numbers reproduce its own.
    scores = predictor.scores(data.pixels(), cfg.train.eval_batch_size)
    metrics = compute_metrics(predictor.schema, data.labels, scores)
    report = {**metrics.to_dict(), "skipped_images": data.skipped}
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
) -> int:
    """Write the challenge file for ``split``: one line per listed image, in order. Returns the line count."""
    run_dir = Path(run_dir)
    cfg = _run_data(run_dir, data_root)
    predictor = Predictor.from_run(run_dir, weights, device)
    _, data = load_split(cfg.data, split, progress=cfg.train.progress)
    if data.skipped:  # the challenge file needs one line per listed image: nothing may be left out
        path, why = next(iter(data.skipped.items()))
        err = ImageError(data.table.root / path, why)
        err.args = (
            f"{len(data.skipped)} unreadable image(s) in split {split!r}; a submission needs every image, "
            "so data.on_bad_image=skip does not apply here:\n"
            + "\n".join(f"{data.table.root / p}: {w}" for p, w in data.skipped.items()),
        )
        raise err
    return write_submission(predictor.schema, predictor.scores(data.pixels()), out)
