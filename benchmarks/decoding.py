"""Metric-aware decoding on the real data: trained-with x decoded-for -> both metrics.

For each run (trained with balanced softmax, ``loss.logit_adjust_tau: 1``, or with plain cross-entropy,
``loss.logit_adjust_tau=0``), on a copy of its folder (``calibration.json`` is never written into the
run itself, which other tools read):

1. ``fashattr calibrate`` on the run's selection holdout (tau per group for overall accuracy and for
   average per-class accuracy, 5-fold cross-fitted out-of-fold metrics on those same 450 images), once
   per ``--objectives`` (how tau is chosen: ``nll``, the default, and ``metric``);
2. the fixed test holdout (``data.test_holdout``: never trained on, selected on or fitted on) decoded
   ``none`` (the raw model), ``accuracy`` and ``balanced``: average per-class accuracy and overall
   accuracy, computed as ``fashattr eval --split test_holdout --decode MODE`` computes them (one check
   runs that very function and compares);
3. the majority-class baseline (each group's most frequent training class for every image) on the same
   test holdout.

Results: ``benchmarks/results/decoding.{json,md}``.

    python benchmarks/decoding.py runs/readme_numbers/quick_s0 runs/readme_numbers/resnet18_s0 \\
        runs/decoding/quick_ce_s0
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from fashattr.calibrate import calibrate_run
from fashattr.config import load_config
from fashattr.data.formats import create_reader
from fashattr.data.prepare import holdout_rows, inference_data, load_split
from fashattr.metrics import compute_metrics
from fashattr.portable.decoding import decision_logits
from fashattr.predictor import Predictor, eval_run

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = ("config.yaml", "schema.yaml", "summary.json", "metrics.csv", "train.log", "best.safetensors")
DECODINGS = ("none", "accuracy", "balanced")


def copy_run(run: Path, work: Path) -> Path:
    """The files a run's evaluation needs, copied (calibration.json goes into the copy)."""
    out = work
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in RUN_FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, out / name)
    return out


def trained_with(run: Path) -> str:
    tau = load_config(run / "config.yaml").loss.logit_adjust_tau
    return "balanced softmax (tau 1)" if tau == 1 else ("cross-entropy" if tau == 0 else f"logit-adjusted (tau {tau})")


def majority_baseline(run: Path, labels: dict[str, np.ndarray]) -> dict[str, float | None]:
    """Each group's most frequent class among the training rows, predicted for every test image."""
    cfg = load_config(run / "config.yaml")
    reader = create_reader(cfg.data.format, cfg.data.root, cfg.data.reader_options)
    schema, table = reader.schema(), reader.read(cfg.data.train_split)
    counts = table.subset(holdout_rows(table, schema, cfg.data)[0]).class_counts(schema)
    scores = {
        g.name: np.tile(np.eye(g.num_classes)[counts[g.name].argmax()], (len(labels[g.name]), 1)) for g in schema.groups
    }
    m = compute_metrics(schema, labels, scores)
    return {"avg_class_acc": m.avg_class_acc, "overall_acc": m.overall_acc}


def measure(run: Path, work: Path, folds: int, objective: str) -> dict[str, Any]:
    copy = copy_run(run, work / f"{run.name}_{objective}")
    start = time.perf_counter()
    cal = calibrate_run(copy, folds=folds, objective=objective)
    calibrate_s = time.perf_counter() - start
    cfg = load_config(copy / "config.yaml")
    predictor = Predictor.from_run(copy)
    _, test = load_split(inference_data(cfg.data), "test_holdout", progress=False)
    assert test.labels is not None
    logits = predictor.scores(test.pixels(), cfg.train.eval_batch_size)
    rows: dict[str, Any] = {}
    for mode in DECODINGS:
        m = compute_metrics(predictor.schema, test.labels, decision_logits(predictor.runtime.config, logits, mode))
        rows[mode] = {
            "avg_class_acc": m.avg_class_acc,
            "overall_acc": m.overall_acc,
            "groups": {g: {"acc": v.accuracy, "avg_class_acc": v.avg_class_acc} for g, v in m.groups.items()},
        }
    # The CLI's own path on one mode gives the same numbers.
    check = eval_run(copy, "test_holdout", decode="accuracy")
    assert abs(check.overall_acc - rows["accuracy"]["overall_acc"]) < 1e-12, "eval_run disagrees"
    return {
        "run": str(run.relative_to(ROOT) if run.is_relative_to(ROOT) else run),
        "trained_with": trained_with(run),
        "objective": objective,
        "backbone": cfg.model.backbone,
        "image_size": cfg.data.image_size,
        "select_metric": cal["fitted_on"]["select_metric"],
        "default": cal["default"],
        "tau": {m: cal["modes"][m]["tau"] for m in cal["modes"]},
        "selection_images": cal["fitted_on"]["images"],
        "test_images": len(test),
        "test_holdout": rows,
        "selection_out_of_fold": {
            m: {k: cal["cross_fit"][m][k] for k in ("avg_class_acc", "overall_acc")} for m in DECODINGS
        },
        "majority_baseline": majority_baseline(copy, test.labels),
        "calibrate_s": round(calibrate_s, 1),
    }


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    main = [r for r in results if r["objective"] == "nll"]
    base = main[0]["majority_baseline"]
    lines = [
        "# Metric-aware decoding: trained-with x decoded-for",
        "",
        f"FashionDataset, fixed test holdout ({main[0]['test_images']} images; never trained on, selected on or"
        f" fitted on). Decoding fitted by `fashattr calibrate` (default objective: NLL) on each run's selection"
        f" holdout ({main[0]['selection_images']} images); the last column is cross-fitted on that holdout (5 folds,"
        " each decoded with what the other 4 fitted). Majority-class baseline (each group's most frequent training"
        f" class for every image): overall accuracy {base['overall_acc']:.4f}, average per-class accuracy"
        f" {base['avg_class_acc']:.4f}.",
        "",
        "| run | trained with | decoded for | avg per-class acc | overall acc"
        " | out-of-fold on selection: avg/class, overall |",
        "|---|---|---|---|---|---|",
    ]
    for r in main:
        name = f"{Path(r['run']).name} ({r['backbone']} {r['image_size']} px)"
        for mode in DECODINGS:
            t, o = r["test_holdout"][mode], r["selection_out_of_fold"][mode]
            label = {"none": "none (raw argmax)", "accuracy": "accuracy", "balanced": "balanced"}[mode]
            if mode == r["default"]:
                label += " (default)"
            lines.append(
                f"| {name} | {r['trained_with']} | {label} | {t['avg_class_acc']:.4f} | {t['overall_acc']:.4f} |"
                f" {o['avg_class_acc']:.4f}, {o['overall_acc']:.4f} |"
            )
    other = {(r["run"], r["objective"]): r for r in results}
    if any(r["objective"] == "metric" for r in results):
        lines += [
            "",
            "How tau is chosen on its grid: the smallest NLL (class-balanced for `balanced`; the default) or the"
            " largest metric itself (`--objective metric`). Test holdout, avg per-class acc / overall acc:",
            "",
            "| run | decoded for | objective nll | objective metric |",
            "|---|---|---|---|",
        ]
        for r in main:
            m = other.get((r["run"], "metric"))
            for mode in ("accuracy", "balanced"):
                a = r["test_holdout"][mode]
                b = m["test_holdout"][mode] if m else None
                cell = f"{b['avg_class_acc']:.4f} / {b['overall_acc']:.4f}" if b else "-"
                lines.append(
                    f"| {Path(r['run']).name} | {mode} | {a['avg_class_acc']:.4f} / {a['overall_acc']:.4f} | {cell} |"
                )
    lines += ["", "tau per group (decoded logits = logits - tau * log prior), objective nll:", ""]
    for r in main:
        for mode, taus in r["tau"].items():
            lines.append(f"- {Path(r['run']).name}, {mode}: " + ", ".join(f"{g} {t:+.2f}" for g, t in taus.items()))
    lines += ["", f"Machine: {meta['machine']}", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--objectives", default="nll,metric", help="fit_tau objectives to measure (nll first)")
    p.add_argument("--work", default=str(ROOT / "runs" / "decoding" / "calibrated"), help="where the run copies go")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()
    load_before = os.getloadavg()
    objectives = args.objectives.split(",")
    results = [measure(Path(r).resolve(), Path(args.work), args.folds, o) for r in args.runs for o in objectives]
    meta = {
        "machine": f"{os.cpu_count()} CPU cores; load average before {load_before[0]:.2f},"
        f" after {os.getloadavg()[0]:.2f}"
        " (other helpers' jobs share the machine; these numbers are accuracies, not timings)",
    }
    out = Path(args.results)
    (out / "decoding.json").write_text(json.dumps({"meta": meta, "runs": results}, indent=1) + "\n")
    (out / "decoding.md").write_text(markdown(results, meta))
    print(markdown(results, meta))


if __name__ == "__main__":
    main()
