"""Distillation of an ensemble of runs into one model: the teachers' soft targets, computed once per image.

With ``loss.distill_from: [RUN, ...]`` every training image gets, per group, the mean over the teachers of
their softened probabilities (softmax of logits / T for single-label groups, sigmoid of logits / T per class
for multi-label ones; T = ``loss.distill_temperature``). They are computed once, before the first step, from
each teacher's ``best.safetensors`` on the training pixels, and saved in the run folder
(``distill_targets.npz``), so a resumed run reads them back instead of running the teachers again. They ride
along with the labels through the batch loader (key ``distill:<group>``) and mixup / cutmix mix them like
the images; ``losses.distill_term`` turns them into the loss.

A teacher must have been trained on the same split with the same holdouts (``data`` format, train_split,
test_holdout and its seed, holdout and its seed, eval_split): a teacher that trained on the student's test
or selection holdout would leak it. It must also see the same pixels (image_size, bbox crop, mean).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from fashattr.config import Config, ConfigError, load_config
from fashattr.schema import Schema

log = logging.getLogger(__name__)
PREFIX = "distill:"  # target key of a group's soft targets
CACHE = "distill_targets.npz"
SAME_SPLIT = ("format", "train_split", "eval_split", "test_holdout", "test_holdout_seed", "holdout", "holdout_seed")
SAME_PIXELS = ("image_size", "bbox_crop", "bbox_margin", "mean", "std")


def check_teacher(cfg: Config, teacher: Path) -> None:
    """Refuse a teacher whose data split or pixels differ from the student's, naming the key.

    Raises:
        ConfigError: not a run folder, or a differing key.
    """
    if not (teacher / "config.yaml").is_file() or not (teacher / "best.safetensors").is_file():
        raise ConfigError(f"loss.distill_from: {teacher} is not a finished run folder (config.yaml, best.safetensors)")
    t = load_config(teacher / "config.yaml").data
    for key in (*SAME_SPLIT, *SAME_PIXELS):
        mine, theirs = getattr(cfg.data, key), getattr(t, key)
        if mine != theirs:
            why = "would leak the student's holdouts" if key in SAME_SPLIT else "sees other pixels"
            raise ConfigError(f"loss.distill_from: {teacher} has data.{key}={theirs!r}, this run {mine!r}: it {why}")


def soften(schema: Schema, logits: dict[str, np.ndarray], temperature: float) -> dict[str, np.ndarray]:
    """Probabilities at ``temperature``: softmax(z / T) (single-label), sigmoid(z / T) (multi-label), float32."""
    out = {}
    for g in schema.groups:
        z = logits[g.name].astype(np.float64) / temperature
        if g.kind == "single":
            e = np.exp(z - z.max(1, keepdims=True))
            out[g.name] = (e / e.sum(1, keepdims=True)).astype(np.float32)
        else:
            out[g.name] = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    return out


def _key(teachers: list[Path], temperature: float, pixels: np.ndarray) -> str:
    h = hashlib.sha256(f"{temperature}|{pixels.shape}".encode())
    for t in teachers:
        h.update(str(t.resolve()).encode())
        h.update(hashlib.sha256((t / "best.safetensors").read_bytes()).digest())
    h.update(hashlib.sha256(np.ascontiguousarray(pixels).data).digest())
    return h.hexdigest()


def teacher_targets(
    cfg: Config, schema: Schema, pixels: np.ndarray, run_dir: Path, batch_size: int = 128, device: str = "cpu"
) -> dict[str, np.ndarray]:
    """``{"distill:<group>": (N, C) float32}``: the teachers' mean softened probabilities for ``pixels`` (the
    training images, in loader row order), read from ``run_dir/distill_targets.npz`` when it holds them
    for these teachers, weights, temperature and pixels, else computed and saved there."""
    from fashattr.fileio import atomic_write
    from fashattr.predictor import Predictor

    teachers = [Path(t) for t in cfg.loss.distill_from]
    for t in teachers:
        check_teacher(cfg, t)
    temperature = cfg.loss.distill_temperature
    key = _key(teachers, temperature, pixels)
    cache = run_dir / CACHE
    if cache.is_file():
        with np.load(cache) as z:
            if str(z["key"]) == key:
                log.info("distillation: soft targets read from %s", cache)
                return {f"{PREFIX}{g.name}": z[g.name] for g in schema.groups}
    total: dict[str, np.ndarray] = {}
    for t in teachers:
        predictor = Predictor.from_run(t, "best", device)
        if predictor.schema.to_dict() != schema.to_dict():
            raise ConfigError(f"loss.distill_from: {t} has another schema than this run's data")
        probs = soften(schema, predictor.scores(pixels, batch_size), temperature)
        for g, p in probs.items():
            total[g] = total.get(g, 0.0) + p.astype(np.float64)
    mean = {g: (v / len(teachers)).astype(np.float32) for g, v in total.items()}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, key=np.array(key), **mean)  # type: ignore[arg-type]

    atomic_write(cache, write)
    log.info(
        "distillation: soft targets of %d teacher(s) at T=%g for %d images", len(teachers), temperature, len(pixels)
    )
    return {f"{PREFIX}{g}": v for g, v in mean.items()}
