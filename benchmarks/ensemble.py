"""How far an ensemble of finished runs gets: is a recipe limited by run-to-run variance or by the model?

Averages the logits of several runs (same data split and pixels; each with the same test-time augmentation),
fits the decodings on the mean logits of the selection holdout exactly as ``fashattr calibrate`` does
(``calibration.fit.fit_calibration``), and scores the test holdout: average per-class accuracy with the balanced
decoding and overall accuracy with the accuracy decoding, each with a 95% bootstrap interval, for every run
alone and for the ensemble. A run alone reproduces what ``fashattr eval`` printed for it (the same fit on the
same logits), which the script checks against the run's ``calibration.json`` when that was fitted with the
same TTA.

An ensemble well above its members says distillation (``loss.distill_from``) has something to pass on; one
barely above their mean says the members err alike, and only a better model helps.

    python benchmarks/ensemble.py runs/cpu_best/cpu_best-s0 runs/cpu_best/cpu_best-s11 runs/cpu_best/cpu_best-s12 \\
        --name "cpu_best, 3 seeds"
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_ablation import METRICS, both_metrics
from machine import machine_line


def run_logits(run: Path, split_data: dict[str, Any], tta: str) -> dict[str, dict[str, np.ndarray]]:
    """Per split name, the run's logits (with ``tta``) on that split's pixels."""
    from fashattr.predictor import Predictor

    predictor = Predictor.from_run(run, tta=tta)
    return {name: predictor.scores(data.pixels(), 128) for name, data in split_data.items()}


def fitted_decodings(
    schema: Any, logits: dict[str, np.ndarray], labels: dict[str, np.ndarray], counts: dict[str, np.ndarray]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both decodings fitted on selection-holdout ``logits`` exactly as ``fashattr calibrate`` fits them: the
    calibration, and the bundle-config part that ``portable.decoding`` applies."""
    from fashattr.calibration.fit import fit_calibration
    from fashattr.calibration.store import bundle_decoding

    cal = fit_calibration(schema, logits, labels, counts, folds=0)
    config = {
        "schema": {"groups": [{"name": g.name, "kind": g.kind} for g in schema.groups]},
        "decoding": bundle_decoding(cal),
    }
    return cal, config


def write_results(folder: Path, prefix: str, name: str, result: dict[str, Any], text: str) -> None:
    """``folder/{prefix}_{name as a slug}.json`` and ``.md``."""
    stem = f"{prefix}_" + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (folder / f"{stem}.md").write_text(text)


def score(
    schema: Any, hold: Any, test: Any, counts: dict[str, np.ndarray], members: list[dict[str, Any]], resamples: int
) -> dict[str, Any]:
    """Decodings fitted on the members' mean holdout logits; both metrics on the test holdout."""

    def mean(split: str) -> dict[str, np.ndarray]:
        return {g.name: np.mean([m[split][g.name] for m in members], axis=0) for g in schema.groups}

    cal, config = fitted_decodings(schema, mean("holdout"), hold.labels, counts)
    tau = {m: cal["modes"][m]["tau"] for m in ("balanced", "accuracy")}
    return {"tau": tau, **both_metrics(schema, test.labels, config, mean("test_holdout"), resamples)}


def markdown(result: dict[str, Any]) -> str:
    rows = [
        f"# Ensemble: {result['name']}",
        "",
        f"`{result['command']}`; {result['cpu']}; {result['test_images']} test-holdout images, TTA {result['tta']}, "
        f"{result['resamples']} bootstrap resamples. Decodings fitted on the selection holdout "
        f"({result['holdout_images']} images) on each row's own (mean) logits.",
        "",
        "| model | avg per-class acc (balanced) [95% CI] | overall acc (accuracy) [95% CI] |",
        "|---|---|---|",
    ]

    def cell(m: dict[str, Any]) -> str:
        return f"{m['value']:.4f} [{m['lo']:.3f}, {m['hi']:.3f}]"

    for r in result["members"]:
        rows.append(f"| {r['run']} | {cell(r['avg_class_acc'])} | {cell(r['overall_acc'])} |")
    mean = result["members_mean"]
    rows.append(
        f"| mean of the {len(result['members'])} runs | {mean['avg_class_acc']:.4f} | {mean['overall_acc']:.4f} |"
    )
    e = result["ensemble"]
    rows.append(f"| **ensemble (mean logits)** | **{cell(e['avg_class_acc'])}** | **{cell(e['overall_acc'])}** |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished run folders (same data split and pixels)")
    ap.add_argument("--name", required=True, help="what the runs are (the results' title and file name)")
    ap.add_argument("--tta", default="flip", help="test-time augmentation of every run (none, flip, ...)")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results"), help="folder of the results")
    args = ap.parse_args(argv)

    from fashattr.calibrate import training_counts
    from fashattr.config import load_config
    from fashattr.data.prepare import HOLDOUT, TEST_HOLDOUT, inference_data, load_split
    from fashattr.engine.distill import check_teacher

    cfg = load_config(args.runs[0] / "config.yaml")
    for run in args.runs[1:]:
        check_teacher(cfg, run)  # the same split and pixels, or it names the key that differs
        size = inference_data(load_config(run / "config.yaml").data).image_size
        if size != inference_data(cfg.data).image_size:
            raise SystemExit(f"{run} is used at {size} px, {args.runs[0]} at {inference_data(cfg.data).image_size} px")
    schema, hold = load_split(inference_data(cfg.data), HOLDOUT, progress=False)
    _, test = load_split(inference_data(cfg.data), TEST_HOLDOUT, progress=False)
    counts = training_counts(cfg, schema)[1]
    splits = {"holdout": hold, "test_holdout": test}
    logits = [run_logits(run, splits, args.tta) for run in args.runs]

    members = []
    for run, member in zip(args.runs, logits, strict=True):
        alone = score(schema, hold, test, counts, [member], args.resamples)
        cal_file = run / "calibration.json"
        if cal_file.is_file():
            cal = json.loads(cal_file.read_text())
            if (
                cal["fitted_on"].get("tta", "none") == args.tta
                and cal["modes"]["balanced"]["tau"] != alone["tau"]["balanced"]
            ):
                sys.exit(f"{run}: the decoding fitted here differs from its calibration.json; is it another run?")
        members.append({"run": str(run), **alone})
    ensemble = score(schema, hold, test, counts, logits, args.resamples)
    result = {
        "name": args.name,
        "command": shlex.join(["python", "benchmarks/ensemble.py", *(sys.argv[1:] if argv is None else argv)]),
        "cpu": machine_line(),
        "tta": args.tta,
        "resamples": args.resamples,
        "holdout_images": len(hold),
        "test_images": len(test),
        "members": members,
        "members_mean": {m: statistics.mean(r[m]["value"] for r in members) for m, _ in METRICS},
        "ensemble": ensemble,
    }
    write_results(args.results, "ensemble", args.name, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
