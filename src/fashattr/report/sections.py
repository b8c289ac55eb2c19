"""A single run's report, section by section: Summary, Curves, Per group.

Each function takes the evaluated run and the output folder, writes its figures, and returns the
section's HTML and the numbers it shows (which go into report.json unchanged).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fashattr.metrics import Metrics, compute_metrics
from fashattr.report import figures, stats
from fashattr.report.collect import Evaluated
from fashattr.report.html import Section, confusion_table, esc, figure, note, num, table, with_ci

MATRIX_CAP = 20  # classes drawn in a confusion matrix (the most frequent); all counts go into report.json
CLASS_CAP = 30  # classes listed in per-class tables and distribution charts
PAIRS = 10  # most-confused pairs listed per group


@dataclass
class Options:
    """What the sections draw and how the numbers are resampled."""

    out: Path  # the report folder; figures go into out/figures
    resamples: int = stats.RESAMPLES
    seed: int = 0
    gradcam_images: int = 32
    gradcam_correct: int = 8  # of those, images with every group right
    top_losses: int = 16  # overall grid; per group half as many

    @property
    def figures(self) -> Path:
        return self.out / "figures"


def metrics_of(ev: Evaluated) -> Metrics | None:
    return None if ev.labels is None else compute_metrics(ev.schema, ev.labels, ev.logits)


def metric_rows(ev: Evaluated, metrics: Metrics, ci: dict[str, Any]) -> list[list[str]]:
    """The metric table: one row per group, then one for all groups."""
    rows = []
    for g in ev.schema.groups:
        gm = metrics.groups[g.name]
        top = "top{k}" if g.kind == "single" else "top{k}_recall"
        rows.append(
            [
                esc(g.name),
                esc(g.kind),
                str(gm.n),
                with_ci(ci.get(f"{g.name}/acc")),
                with_ci(ci.get(f"{g.name}/avg_class_acc")),
                with_ci(ci.get(f"{g.name}/{top.format(k=3)}")),
                with_ci(ci.get(f"{g.name}/{top.format(k=5)}")),
                with_ci(ci.get(f"{g.name}/mAP")),
            ]
        )
    rows.append(
        [
            "<b>all groups</b>",
            "",
            str(len(ev.paths)),
            "overall " + with_ci(ci.get("overall_acc")),
            with_ci(ci.get("avg_class_acc")),
            "exact match " + with_ci(ci.get("exact_match")),
            "",
            "",
        ]
    )
    return rows


def summary_section(ev: Evaluated, metrics: Metrics | None, opt: Options) -> tuple[Section, dict[str, Any]]:
    """Recipe, backbone, data, size, epochs; the metric table with bootstrap intervals over images."""
    info = ev.info
    cfg = info.path / "config.yaml"
    import yaml

    data = yaml.safe_load(cfg.read_text()).get("data", {})
    facts = {
        "run": str(info.path),
        "recipe": info.recipe,
        "backbone": info.backbone,
        "image_size": ev.pixels.shape[1],  # the side these images were read at (data.eval_size when set)
        "trained_at": info.image_size,
        "parameters": info.parameters or None,
        "weights_mb": round(info.weights_mb, 1),
        "weights": f"{ev.weights}.safetensors",
        "best_epoch": info.best_epoch,
        "epochs_run": info.epochs_run,
        "finished": ev.finished,
        "select_metric": info.select_metric,
        "train_wall_s": round(info.wall_s, 1),
        "data": f"{data.get('format')} at {data.get('root')}",
        "split": ev.split,
        "images": len(ev.paths),
        "training_images": int(max(v.sum() for v in ev.train_counts.values())) if ev.train_counts else None,
    }
    labels = {
        "image_size": "image size (px)",
        "trained_at": "trained at (px)",
        "parameters": "parameters",
        "weights_mb": "weights (MB)",
        "train_wall_s": "training time (s)",
        "training_images": "labelled training images (largest group)",
    }
    body = "".join(note(n) for n in ev.notes)
    pairs = [(labels.get(k, k.replace("_", " ")), "-" if v is None else v) for k, v in facts.items()]
    half = -(-len(pairs) // 2)  # two key/value columns: half the height
    rows = [[*pairs[i], *(pairs[i + half] if i + half < len(pairs) else ("", ""))] for i in range(half)]
    body += table([], rows, left=4).replace("<table>", '<table class="facts">', 1)
    out: dict[str, Any] = {"facts": facts, "notes": ev.notes}
    if metrics is not None and ev.labels is not None:
        ci = stats.bootstrap_ci(ev.schema, ev.labels, ev.logits, metrics.summary(), opt.resamples, opt.seed)
        header = ["group", "kind", "images", "accuracy", "avg per-class acc", "top-3", "top-5", "mAP"]
        body += "<h3>Metrics on the evaluated split</h3>"
        body += table(header, metric_rows(ev, metrics, ci), left=2, raw=True)
        body += (
            f'<p class="muted">[low, high]: 95% percentile bootstrap interval over images ({opt.resamples} '
            f"resamples, seed {opt.seed}); a difference inside it is within what another draw of "
            f"{len(ev.paths)} images could give. Multi-label groups: top-k is the top-k recall.</p>"
        )
        out["metrics"] = metrics.to_dict()
        out["bootstrap"] = {"resamples": opt.resamples, "seed": opt.seed, "level": 0.95, "ci": ci}
    return Section("summary", "Summary", body), out


def curves_section(ev: Evaluated, opt: Options) -> tuple[Section, dict[str, Any]]:
    """Losses and the selection metric per epoch, per group too (from metrics.csv)."""
    info = ev.info
    if not info.history:
        return Section("curves", "Curves", note("metrics.csv has no finished epoch yet.")), {"history": []}
    fig = figures.curves_figure({info.name: info.history}, info.select_metric, ev.schema.names)
    files = figures.save(fig, opt.figures, "curves")
    body = figure(files, "training curves", f"{info.epochs_run} epochs; best epoch {info.best_epoch}.", wide=True)
    return Section("curves", "Curves", body), {"history": info.history, "figure": files}


def _group_block(ev: Evaluated, metrics: Metrics | None, name: str, opt: Options) -> tuple[str, dict[str, Any]]:
    g = ev.schema[name]
    logits = ev.logits[name]
    train = np.asarray(ev.train_counts.get(name, np.zeros(g.num_classes)))
    slug = "".join(ch if ch.isalnum() else "_" for ch in name)
    body = f"<h3>{esc(name)} <span class='muted'>({g.kind}-label, {g.num_classes} classes)</span></h3>"
    out: dict[str, Any] = {"kind": g.kind, "classes": list(g.classes), "train_counts": train.tolist()}
    if ev.labels is None or metrics is None:
        predicted = stats.predicted_counts(g, logits)
        shown = stats.frequent_classes(np.maximum(train, predicted), CLASS_CAP)
        fig = figures.distribution_figure(
            [g.classes[i] for i in shown], train[shown], predicted[shown], f"predicted on {ev.split}", name
        )
        files = figures.save(fig, opt.figures, f"distribution_{slug}")
        out.update(predicted_counts=predicted.tolist(), distribution_figure=files)
        return body + figure(files, f"{name} class distribution", "training labels vs predictions"), out

    target = ev.labels[name]
    matrix = stats.confusion(g, target, logits)
    support = stats.row_support(g, target)
    pairs = stats.most_confused(g.classes, matrix, support, top=max(PAIRS, 50))
    shown = stats.frequent_classes(support, MATRIX_CAP)
    capped = len(shown) < g.num_classes
    sub = matrix[np.ix_(shown, shown)]
    names = [g.classes[i] for i in shown]
    what = "share of each true class's images" + (
        "; multi-label: diagonal = present and predicted, off-diagonal = wrongly predicted on images of the row's class"
        if g.kind == "multi"
        else ""
    )
    fig = figures.confusion_figure(names, sub, support[shown], f"{name}: confusion ({what.split(';')[0]})")
    cm_files = figures.save(fig, opt.figures, f"confusion_{slug}")
    if capped:
        body += note(
            f"{g.num_classes} classes: the matrix shows the {len(shown)} most frequent in this split; every "
            "count is in report.json, and the most-confused pairs below cover all classes."
        )
    pair_rows = [[p["true"], p["predicted"], p["count"], num(p["share"], 3)] for p in pairs[:PAIRS]]
    per_class = stats.per_class_table(metrics.groups[name])
    listed = stats.frequent_classes(support, CLASS_CAP)
    rows = [
        [r["class"], num(r["precision"], 3), num(r["recall"], 3), num(r["f1"], 3), r["support"], r["predicted"]]
        for r in (per_class[i] for i in listed)
    ]
    listed_names = [g.classes[i] for i in listed]
    dist = figures.distribution_figure(listed_names, train[listed], support[listed], ev.split, name)
    dist_files = figures.save(dist, opt.figures, f"distribution_{slug}")
    body += '<div class="row"><div><h4>Confusion</h4>' + confusion_table(names, sub, support[shown])
    body += f'<p class="muted">Cells: {esc(what)}, in % (hover for counts).</p></div>'
    body += "<div><h4>Most confused (true \u2192 predicted)</h4>"
    body += table(["true", "predicted", "images", "share of true"], pair_rows, left=2) if pair_rows else "<p>none</p>"
    body += "</div><div><h4>Per class</h4>"
    if len(listed) < g.num_classes:
        body += note(f"the {len(listed)} most frequent of {g.num_classes} classes; all are in report.json")
    body += table(["class", "precision", "recall", "F1", "support", "predicted"], rows) + "</div></div>"
    body += '<div class="row">' + figure(cm_files, f"{name} confusion matrix", "confusion")
    body += figure(dist_files, f"{name} distribution", f"class distribution: train vs {ev.split}") + "</div>"
    out.update(
        confusion=matrix.tolist(),
        support=support.tolist(),
        matrix_classes_shown=names,
        most_confused=pairs,
        per_class=per_class,
        confusion_figure=cm_files,
        distribution_figure=dist_files,
    )
    return body, out


def groups_section(ev: Evaluated, metrics: Metrics | None, opt: Options) -> tuple[Section, dict[str, Any]]:
    """Per group: normalised confusion (counts on hover), most-confused pairs, per-class P/R/F1, distributions."""
    body, out = "", {}
    for g in ev.schema.groups:
        html_part, out[g.name] = _group_block(ev, metrics, g.name, opt)
        body += html_part
    return Section("groups", "Per group", body), out


def run_steps(
    steps: list[tuple[str, Callable[[], tuple[Section, Any]]]], timings: dict[str, float]
) -> tuple[list[Section], dict[str, Any]]:
    """Build each named section in order: the sections, their numbers by name (``report.json``), and
    each step's seconds added to ``timings``."""
    out_sections, data = [], {}
    for name, make in steps:
        start = time.perf_counter()
        section, numbers = make()
        timings[name] = round(time.perf_counter() - start, 3)
        out_sections.append(section)
        data[name] = numbers
    return out_sections, data
