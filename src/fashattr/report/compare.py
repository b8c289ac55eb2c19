"""Compare runs: one table (recipe, parameters, MB, holdout metrics per group, wall time) and
one PNG of their per-epoch curves overlaid."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fashattr.errors import FashattrError


@dataclass
class RunInfo:
    path: Path
    name: str
    recipe: str
    backbone: str
    image_size: int  # the side it trained at (data.image_size)
    used_at: int  # the side it is evaluated and used at (data.eval_size, else data.image_size)
    parameters: int
    weights_mb: float  # best.safetensors on disk, in 10^6 bytes
    wall_s: float
    best_epoch: int
    epochs_run: int
    select_metric: str
    best: dict[str, float]  # the best epoch's metrics
    history: list[dict[str, float]]  # metrics.csv, one row per epoch
    # the best weights on the test holdout (summary.json), which selection never saw; empty if none
    test: dict[str, float] = field(default_factory=dict)


def load_run(path: str | Path) -> RunInfo:
    """Read a finished (or stopped) run folder written by ``fashattr train``."""
    path = Path(path)
    for needed in ("config.yaml", "metrics.csv"):
        if not (path / needed).is_file():
            raise FashattrError(f"{path}: no {needed}; not a run folder written by `fashattr train`")
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    with open(path / "metrics.csv", newline="") as f:
        history = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
    summary_file = path / "summary.json"
    test: dict[str, float] = {}
    if summary_file.is_file():  # finished
        summary = json.loads(summary_file.read_text())
        best, best_epoch, wall = summary["best"], summary["best_epoch"], summary["wall_s"]
        test = summary.get("test_holdout", {})
        parameters, select = summary["parameters"], summary["select_metric"]
    else:  # still running or killed: the best so far by its selection metric
        select = cfg["train"]["select_metric"]
        sign = 1 if cfg["train"].get("select_mode", "max") == "max" else -1
        best = max(history, key=lambda r: sign * r[select] if select in r else -math.inf, default={})
        best_epoch, wall, parameters = int(best.get("epoch", 0)), sum(r.get("epoch_s", 0) for r in history), 0
    weights = path / "best.safetensors"
    return RunInfo(
        path=path,
        name=path.name,
        recipe=cfg.get("recipe") or path.name,
        backbone=cfg["model"]["backbone"],
        image_size=cfg["data"]["image_size"],
        used_at=cfg["data"].get("eval_size") or cfg["data"]["image_size"],
        parameters=parameters,
        weights_mb=weights.stat().st_size / 1e6 if weights.is_file() else 0.0,
        wall_s=wall,
        best_epoch=best_epoch,
        epochs_run=len(history),
        select_metric=select,
        best=best,
        history=history,
        test=test,
    )


def _groups(runs: list[RunInfo]) -> list[str]:
    """Group names with a per-group average per-class accuracy in every run, in first-run order."""
    first = [k.removesuffix("/avg_class_acc") for k in runs[0].best if k.endswith("/avg_class_acc")]
    return [g for g in first if all(f"{g}/avg_class_acc" in r.best for r in runs)]


def compare_rows(runs: list[RunInfo]) -> list[dict[str, object]]:
    """One flat row per run: what the table, the CSV and the JSON show."""
    groups = _groups(runs)
    tested = any(r.test for r in runs)
    rows = []
    for r in runs:
        row: dict[str, object] = {
            "run": r.name,
            "recipe": r.recipe.split(" (")[0],
            "backbone": r.backbone,
            "size": r.image_size,
            # The selection-holdout columns are read at "size" (per epoch, in training); the test-holdout
            # ones and every later use of the model at "used_at" (data.eval_size).
            "used_at": r.used_at,
            "params_m": round(r.parameters / 1e6, 2),
            "mb": round(r.weights_mb, 1),
            "avg_class_acc": r.best.get("avg_class_acc"),
            "overall_acc": r.best.get("overall_acc"),
        }
        if tested:  # the unbiased numbers: the best weights on the test holdout
            row["test_avg_class_acc"] = r.test.get("avg_class_acc")
            row["test_overall_acc"] = r.test.get("overall_acc")
        row.update({g: r.best.get(f"{g}/avg_class_acc") for g in groups})
        row.update({"best_epoch": f"{r.best_epoch}/{r.epochs_run}", "wall_s": round(r.wall_s)})
        rows.append(row)
    return rows


def compare_table(runs: list[RunInfo]) -> str:
    """A plain-text table, best average per-class accuracy first (on the test holdout when the
    runs have one, else on the selection holdout); group columns are each group's holdout
    average per-class accuracy at the run's best epoch."""
    rows = compare_rows(runs)
    key = "test_avg_class_acc" if "test_avg_class_acc" in rows[0] else "avg_class_acc"
    rows = sorted(rows, key=lambda r: -float(r[key] or 0))  # type: ignore[arg-type]
    columns = list(rows[0])

    def cell(v: object) -> str:
        return "-" if v is None else f"{v:.4f}" if isinstance(v, float) and v <= 1.0 else str(v)

    widths = {c: max(len(c), *(len(cell(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(f"{c:<{widths[c]}}" for c in columns)]
    lines += ["  ".join(f"{cell(r[c]):<{widths[c]}}" for c in columns) for r in rows]
    return "\n".join(lines)


def plot_curves(runs: list[RunInfo], out: str | Path, metric: str = "avg_class_acc") -> Path:
    """``metric`` and the train / holdout losses per epoch, one line per run."""
    # A Figure of its own, not pyplot: no global backend switch, nothing left open in a notebook.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2)
    for i, r in enumerate(runs):
        epochs = [h["epoch"] for h in r.history]
        color = f"C{i % 10}"
        left.plot(epochs, [h.get(metric) for h in r.history], marker="o", ms=3, color=color, label=r.name)
        right.plot(epochs, [h.get("train_loss") for h in r.history], color=color, ls="--")
        right.plot(epochs, [h.get("eval_loss") for h in r.history], color=color, label=r.name)
    left.set(xlabel="epoch", ylabel=metric, title=f"holdout {metric}")
    right.set(xlabel="epoch", ylabel="loss", title="holdout loss (solid), training loss (dashed)")
    left.legend(fontsize=7)
    left.grid(alpha=0.3)
    right.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out
