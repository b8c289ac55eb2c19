"""What a report is drawn from: a run's weights evaluated on one split, loaded once.

``evaluate_run`` picks the weights (best, or last for a run that stopped before its end), loads the
split's cached pixels and labels, runs the model once, and counts the training split's classes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fashattr.config import DataConfig
from fashattr.errors import FashattrError
from fashattr.report.compare import RunInfo, load_run
from fashattr.schema import Schema

log = logging.getLogger("fashattr")
WEIGHTS = ("best", "last")


@dataclass
class Evaluated:
    """One run's predictions on one split, with everything the report sections need."""

    info: RunInfo
    weights: str  # "best" or "last"
    notes: list[str]  # what a reader must know about these numbers (killed run, no labels, ...)
    runtime: object  # deploy.runtime.Runtime (torch backend)
    schema: Schema
    split: str
    paths: list[str]  # the evaluated images, relative to the data root
    pixels: np.ndarray  # (N, S, S, 3) uint8 as the model saw them
    labels: dict[str, np.ndarray] | None  # None: the split has no labels
    logits: dict[str, np.ndarray]
    train_counts: dict[str, np.ndarray]  # labelled training images per class
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return (self.info.path / "summary.json").is_file()


def choose_weights(run_dir: Path, info: RunInfo, weights: str | None) -> tuple[str, list[str]]:
    """The weights file to report and the notes that say why.

    A finished run (it has summary.json) reports ``best``; one that stopped before its end (killed,
    crashed, still running) reports ``last``, its last finished epoch, as ``fashattr train --resume``
    would continue from it. ``weights`` forces one.

    Raises:
        FashattrError: no weights file at all, or the one asked for is missing.
    """
    have = [w for w in WEIGHTS if (run_dir / f"{w}.safetensors").is_file()]
    if not have:
        raise FashattrError(
            f"{run_dir}: no best.safetensors or last.safetensors; a run has weights only after its first "
            "finished epoch (train it, or resume it with `fashattr train --resume RUN`)"
        )
    if weights is not None:
        if weights not in WEIGHTS:
            raise ValueError(f"weights {weights!r}; choose from {WEIGHTS}")
        if weights not in have:
            raise FashattrError(f"{run_dir / f'{weights}.safetensors'} not found; this run has {have}")
        return weights, []
    finished = (run_dir / "summary.json").is_file()
    if finished and "best" in have:
        return "best", []
    if finished:  # best.safetensors deleted by hand: say so rather than report other weights silently
        return "last", [f"{run_dir.name} has no best.safetensors: this report uses last.safetensors."]
    epochs = info.epochs_run
    note = (
        f"{run_dir.name} stopped after epoch {epochs} of {_planned_epochs(run_dir)} (no summary.json: killed, "
        f"crashed or still running); this report uses "
    )
    if "last" in have:
        return "last", [note + f"last.safetensors, the weights of its last finished epoch ({epochs})."]
    return "best", [note + f"best.safetensors (epoch {info.best_epoch}, the best so far; no last.safetensors)."]


def _planned_epochs(run_dir: Path) -> str:
    import yaml

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    return str(cfg.get("train", {}).get("epochs", "?"))


def train_counts(d: DataConfig, schema: Schema) -> dict[str, np.ndarray]:
    """Labelled images per class in the rows the run trained on (its train split less its holdouts)."""
    from fashattr.data.formats import create_reader
    from fashattr.data.prepare import holdout_rows

    reader = create_reader(d.format, d.root, d.reader_options)
    table = reader.read(d.train_split)
    if table.labels is None:
        return {g.name: np.zeros(g.num_classes, np.int64) for g in schema.groups}
    return table.subset(holdout_rows(table, schema, d)[0]).class_counts(schema)


def evaluate_run(
    run_dir: str | Path,
    split: str = "holdout",
    data_root: str | None = None,
    weights: str | None = None,
    device: str = "cpu",
) -> Evaluated:
    """Load ``run_dir``'s weights and predict every image of ``split`` (``holdout``: the run's
    selection holdout; ``test_holdout``; or a split of the dataset, labelled or not).

    Raises:
        FashattrError: not a run folder, or no weights in it.
    """
    from fashattr.config import load_config
    from fashattr.data.prepare import inference_data, load_split
    from fashattr.deploy.runtime import Runtime
    from fashattr.predictor import Predictor

    run_dir = Path(run_dir)
    info = load_run(run_dir)
    chosen, notes = choose_weights(run_dir, info, weights)
    cfg = load_config(run_dir / "config.yaml")
    if data_root:
        cfg = replace(cfg, data=replace(cfg.data, root=data_root))
    runtime = Runtime.from_run(run_dir, chosen, device=device)
    schema, data = load_split(inference_data(cfg.data), split, progress=False)
    pixels = data.pixels()
    logits = Predictor.from_runtime(runtime).scores(pixels, cfg.train.eval_batch_size)
    if data.labels is None:
        notes.append(
            f"split {split!r} has no labels: this report shows the model's predictions and class "
            "distributions only (metrics, confusion, top losses and calibration need labels)."
        )
    if data.skipped:
        notes.append(f"{len(data.skipped)} unreadable image(s) of split {split!r} left out (listed in report.json).")
    return Evaluated(
        info=info,
        weights=chosen,
        notes=notes,
        runtime=runtime,
        schema=runtime.schema,
        split=split,
        paths=[data.table.paths[r] for r in data.rows],
        pixels=pixels,
        labels=data.labels,
        logits=logits,
        train_counts=train_counts(cfg.data, schema),
        skipped=dict(data.skipped),
    )
