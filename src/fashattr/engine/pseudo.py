"""Self-training: a teacher run labels unlabeled images; the confident labels become extra training rows.

``fashattr pseudo-label RUN --splits val,test --threshold 0.9 --out pseudo.json`` writes the file; training
with ``data.pseudo_labels=pseudo.json`` adds its images to the training rows. Per image and group:

- single-label group: the teacher's top class when its probability is >= the group's threshold, else unknown;
- multi-label group: per class, 1 when p >= threshold, 0 when p <= 1 - threshold, else unknown.

An unknown label (-1) is masked by the loss exactly like a missing label (``losses.GroupLoss``), so a group
below its threshold teaches nothing for that image. The training split (and so both holdouts carved from
it) and the selection split are never labeled here, and a file naming any of their images is refused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fashattr.config import ConfigError, DataConfig, load_config
from fashattr.data.dedup import file_digests
from fashattr.data.prepare import HOLDOUT, TEST_HOLDOUT, Split, cache_table, inference_data, load_split
from fashattr.data.table import UNKNOWN, Table
from fashattr.fileio import atomic_write_text
from fashattr.schema import Schema

log = logging.getLogger(__name__)
FORMAT = "fashattr-pseudo-labels"
VERSION = 1


def resolve_thresholds(value: float | dict[str, float], schema: Schema) -> dict[str, float]:
    """One confidence threshold per group from a number or a ``{group: threshold}`` mapping (others: 0.9)."""
    if isinstance(value, int | float):
        out = dict.fromkeys(schema.names, float(value))
    else:
        unknown = sorted(set(value) - set(schema.names))
        if unknown:
            raise ValueError(f"thresholds name unknown groups {unknown}; groups are {schema.names}")
        out = {g: float(value.get(g, 0.9)) for g in schema.names}
    for g, t in out.items():
        if not 0.5 <= t <= 1.0:
            raise ValueError(f"threshold of group {g!r} is {t}; it must be in [0.5, 1]")
    return out


def threshold_labels(
    schema: Schema, probs: dict[str, np.ndarray], thresholds: dict[str, float]
) -> dict[str, np.ndarray]:
    """Pseudo-labels from probabilities (see the module docstring): single-label ``(N,)`` int64 class or -1;
    multi-label ``(N, C)`` int8 0/1 or -1."""
    out: dict[str, np.ndarray] = {}
    for g in schema.groups:
        p, t = probs[g.name], thresholds[g.name]
        if g.kind == "single":
            top = p.argmax(1)
            out[g.name] = np.where(p.max(1) >= t, top, UNKNOWN).astype(np.int64)
        else:
            y = np.full(p.shape, UNKNOWN, dtype=np.int8)
            y[p >= t] = 1
            y[p <= 1.0 - t] = 0
            out[g.name] = y
    return out


def threshold_check(
    schema: Schema, probs: dict[str, np.ndarray], truth: dict[str, np.ndarray], thresholds: dict[str, float]
) -> dict[str, dict[str, Any]]:
    """How the pseudo-labels of ``probs`` would fare where the labels are known (the selection split): per group,
    the share of labels kept at its threshold (``coverage``; multi-label: of image-class entries) and how many of
    them are right (``precision``; None when none is kept). Missing true labels (-1) are left out of both."""
    out: dict[str, dict[str, Any]] = {}
    labels = threshold_labels(schema, probs, thresholds)
    for g in schema.groups:
        y, known = labels[g.name], truth[g.name] >= 0
        kept = (y >= 0) & known
        right = int((y[kept] == truth[g.name][kept]).sum())
        out[g.name] = {
            "threshold": thresholds[g.name],
            "coverage": round(float(kept.sum() / max(int(known.sum()), 1)), 4),
            "precision": round(right / int(kept.sum()), 4) if kept.any() else None,
        }
    return out


def protected_splits(cfg: DataConfig) -> set[str]:
    """Splits that never receive pseudo-labels: training, selection, and the holdouts carved from training."""
    return {s for s in (cfg.train_split, cfg.eval_split, HOLDOUT, TEST_HOLDOUT) if s}


def pseudo_label(
    run_dir: str | Path,
    splits: list[str] | None,
    threshold: float | dict[str, float],
    out: str | Path,
    weights: str = "best",
    device: str = "cpu",
    tta: str | None = None,
    data_root: str | None = None,
) -> dict[str, Any]:
    """Label ``splits`` (default: the run's ``data.unlabeled_splits``) with the run's model; write ``out``.
    ``data_root``: the dataset's root, if not the one in the run's config.

    Returns:
        The file's content (``images``: ``{"split", "path", "labels"}`` per image; ``kept``: per group, how
        many images got a label; ``selection_check``: per group, the coverage and precision the thresholds give
        on the run's selection split, where the labels are known: ``threshold_check``).

    Raises:
        ConfigError: no splits, or a protected split (training, selection, holdouts) among them.
    """
    from fashattr.inference import to_probabilities
    from fashattr.predictor import Predictor

    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    if data_root:
        cfg = replace(cfg, data=replace(cfg.data, root=data_root))
    splits = list(splits or cfg.data.unlabeled_splits)
    if not splits:
        raise ConfigError(f"no splits to label: pass --splits or set data.unlabeled_splits in {run_dir}/config.yaml")
    bad = sorted(protected_splits(cfg.data) & set(splits))
    if bad:
        raise ConfigError(
            f"split(s) {bad} are the run's training/selection data or holdouts carved from them; "
            "they are never pseudo-labeled"
        )
    predictor = Predictor.from_run(run_dir, weights, device, tta=tta)
    schema = predictor.schema
    thresholds = resolve_thresholds(threshold, schema)
    # The thresholds tried where the answers are known: the selection split the run chose its epoch on (never
    # the test holdout), so a user can choose them for precision and coverage before training on the file.
    selection = cfg.data.eval_split or HOLDOUT
    _, held = load_split(inference_data(cfg.data), selection, progress=cfg.train.progress)
    assert held.labels is not None
    check = threshold_check(
        schema,
        to_probabilities(schema, predictor.scores(held.pixels(), cfg.train.eval_batch_size)),
        held.labels,
        thresholds,
    )
    log.info(
        "on the selection split (%s, %d labelled images) these thresholds keep, per group: %s",
        selection,
        len(held),
        "; ".join(
            f"{g} {c['coverage']:.0%} at {'-' if c['precision'] is None else format(c['precision'], '.1%')} precision"
            for g, c in check.items()
        ),
    )
    images: list[dict[str, Any]] = []
    kept = dict.fromkeys(schema.names, 0)
    for split in splits:
        _, data = load_split(inference_data(cfg.data), split, progress=cfg.train.progress)
        scores = predictor.scores(data.pixels(), cfg.train.eval_batch_size)
        labels = threshold_labels(schema, to_probabilities(schema, scores), thresholds)
        for k, row in enumerate(data.rows):
            entry: dict[str, Any] = {}
            for g in schema.groups:
                y = labels[g.name][k]
                entry[g.name] = int(y) if g.kind == "single" else [int(v) for v in y]
                kept[g.name] += int(y >= 0) if g.kind == "single" else int((y >= 0).any())
            images.append({"split": split, "path": data.table.paths[row], "labels": entry})
    result = {
        "format": FORMAT,
        "version": VERSION,
        "teacher": run_dir.resolve().name,
        "weights": weights,
        "tta": predictor.runtime.tta,
        "splits": splits,
        "thresholds": thresholds,
        "selection_check": {"split": selection, "images": len(held), "groups": check},
        "kept": kept,
        "images": images,
    }
    atomic_write_text(out, json.dumps(result, indent=0))
    log.info("pseudo-labels for %d images of %s written to %s; labeled per group: %s", len(images), splits, out, kept)
    return result


def read_pseudo_labels(path: str | Path, schema: Schema, cfg: DataConfig) -> tuple[list[str], dict[str, np.ndarray]]:
    """The image paths and labels of a pseudo-label file, checked against the schema and the protected splits.

    Raises:
        ConfigError: naming the file and the problem (not such a file, a protected split, a wrong label).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"data.pseudo_labels: {path}: not readable: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"data.pseudo_labels: {path} is not a {FORMAT} file (write it with `fashattr pseudo-label`)")
    bad = sorted(protected_splits(cfg) & set(data.get("splits", [])))
    if bad:
        raise ConfigError(f"data.pseudo_labels: {path} labels split(s) {bad}, which this config trains or selects on")
    paths, labels = [], {g.name: [] for g in schema.groups}  # type: ignore[var-annotated]
    for i, img in enumerate(data["images"]):
        paths.append(img["path"])
        for g in schema.groups:
            y = img["labels"].get(g.name)
            ok = (
                isinstance(y, int) and -1 <= y < g.num_classes
                if g.kind == "single"
                else isinstance(y, list) and len(y) == g.num_classes and all(v in (-1, 0, 1) for v in y)
            )
            if not ok:
                raise ConfigError(f"data.pseudo_labels: {path}: image {i} ({img['path']}): bad {g.name!r} label {y!r}")
            labels[g.name].append(y)
    arrays = {
        g.name: np.asarray(labels[g.name], dtype=np.int64 if g.kind == "single" else np.int8) for g in schema.groups
    }
    return paths, arrays


def add_pseudo_labels(
    train: Split,
    cfg: DataConfig,
    schema: Schema,
    progress: bool = True,
    holdouts: list[Split | None] | None = None,
    soft_targets: bool = False,
) -> Split:
    """``train`` with the images of ``cfg.pseudo_labels`` appended (pixels decoded through the cache).

    An image with no group above its threshold is left out (it would teach nothing), unless ``soft_targets``
    (the run distils, ``loss.distill_from``): the teachers' soft targets then teach on it, as in Noisy Student.

    An image of the file whose bytes equal an image of ``holdouts`` (the selection and test holdouts: another
    split may hold an exact copy of one, as the FashionDataset's test split does of a train image) is left
    out, with a warning naming both: a holdout image must never be trained on, not even as a copy.

    Raises:
        ConfigError: the file names an image of the training split (the test and selection holdouts
            included), naming it.
    """
    assert cfg.pseudo_labels is not None and train.labels is not None
    if cfg.bbox_crop:  # the file holds no boxes; training rows cropped and pseudo rows whole would disagree
        raise ConfigError("data.pseudo_labels does not support data.bbox_crop yet; train with data.bbox_crop=false")
    paths, labels = read_pseudo_labels(cfg.pseudo_labels, schema, cfg)
    listed = set(train.table.paths)
    clash = [p for p in paths if p in listed]
    if clash:
        raise ConfigError(
            f"data.pseudo_labels: {cfg.pseudo_labels} labels {len(clash)} image(s) of split {cfg.train_split!r} "
            f"(its holdouts included), e.g. {clash[0]}: never pseudo-label them"
        )
    table = Table(root=train.table.root, paths=paths, labels=labels, split="pseudo")
    cache = cache_table(table, cfg, progress)
    held = {}
    for split in holdouts or []:
        if split is not None and len(split):
            files = [split.table.file(int(r)) for r in split.rows]
            held.update({d: f for d, f in zip(file_digests(files), files, strict=True) if d is not None})
    copies = {i: held[d] for i, d in enumerate(file_digests(table.files())) if d in held}
    for i, f in copies.items():
        log.warning("pseudo-labels: %s is an exact copy of holdout image %s; left out", table.file(i), f)
    # An image with no group above its threshold teaches nothing: it would only cost a forward pass.
    known = np.zeros(len(paths), dtype=bool)
    for g in schema.groups:
        y = labels[g.name]
        known |= (y >= 0) if y.ndim == 1 else (y >= 0).any(1)
    usable = [i for i in range(len(paths)) if (known[i] or soft_targets) and i not in copies]
    keep = np.array([i for i in usable if i not in cache.bad], dtype=np.int64)
    if len(keep) < len(usable):
        log.warning("pseudo-labels: %d unreadable image(s) left out", len(usable) - len(keep))
    if not known.all():
        log.info(
            "pseudo-labels: %d of %d images have no label above its threshold; %s",
            (~known).sum(),
            len(paths),
            "kept for the teachers' soft targets (loss.distill_from)" if soft_targets else "left out",
        )
    images = np.concatenate([train.pixels(), cache.pixels[keep]])
    merged = {g: np.concatenate([train.labels[g], labels[g][keep]]) for g in train.labels}
    both = Table(
        root=train.table.root,
        paths=[train.table.paths[r] for r in train.rows] + [paths[i] for i in keep],
        labels=merged,
        split=f"{train.name}+pseudo",
    )
    log.info("pseudo-labels: %d images added to %d training images (%s)", len(keep), len(train), cfg.pseudo_labels)
    return Split(both.split, both, images, np.arange(len(images)), merged, dict(train.skipped))
