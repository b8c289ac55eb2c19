"""At what size should a trained model be used? Scores finished runs at several letterbox sides (``data.eval_size``).

A recipe that trains on random resized crops shows the model garments larger than a whole letterboxed photo
shows them, so the model tends to score higher when tested a little larger than it trained (FixRes, Touvron et al.
2019: "Fixing the train-test resolution discrepancy"). For each run and each size this script reads the
selection holdout and the test holdout at that size, fits the decodings on the selection holdout's logits exactly
as ``fashattr calibrate`` does (``calibration.fit.fit_calibration``, with the same TTA), and scores both holdouts:
average per-class accuracy with the balanced decoding and overall accuracy with the accuracy decoding, with the
test holdout's 95% bootstrap interval. Choose the size on the selection holdout; the test holdout only reports.

    python benchmarks/eval_size.py runs/cpu_pretrained/cpu_pretrained-s0 --sizes 192,208,224,240 --tta flip+zoom \\
        --name "cpu_pretrained"
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_ablation import METRICS, both_metrics
from ensemble import fitted_decodings, write_results
from machine import machine_line


def score_sizes(run: Path, sizes: list[int], tta: str, resamples: int) -> list[dict[str, Any]]:
    """One run at each letterbox side: decodings fitted on the selection holdout, both metrics on both holdouts."""
    from fashattr.calibrate import training_counts
    from fashattr.config import load_config
    from fashattr.predictor import Predictor

    cfg = load_config(run / "config.yaml")
    predictor = Predictor.from_run(run, tta=tta)  # scores() takes the pixels as given, at any size
    counts = training_counts(cfg, predictor.schema)[1]
    rows = []
    for size in sizes:
        rows.append({"run": str(run), **score_size(cfg, predictor, counts, size, resamples)})
        r = rows[-1]
        print(
            f"{run.name} {size} px: selection {r['selection']['avg_class_acc']['value']:.4f} / "
            f"{r['selection']['overall_acc']['value']:.4f}, test {r['test']['avg_class_acc']['value']:.4f} / "
            f"{r['test']['overall_acc']['value']:.4f} ({r['seconds']:.0f} s)",
            flush=True,
        )
    return rows


def score_size(cfg: Any, predictor: Any, counts: dict[str, Any], size: int, resamples: int) -> dict[str, Any]:
    """The run's model (``predictor``) on both holdouts read at ``size`` px."""
    from fashattr.data.prepare import HOLDOUT, TEST_HOLDOUT, load_split

    data = replace(cfg.data, image_size=size, eval_size=None)
    start = time.perf_counter()
    schema, hold = load_split(data, HOLDOUT, progress=False)
    _, test = load_split(data, TEST_HOLDOUT, progress=False)
    logits = {
        name: predictor.scores(s.pixels(), cfg.train.eval_batch_size) for name, s in (("hold", hold), ("test", test))
    }
    _, config = fitted_decodings(schema, logits["hold"], hold.labels, counts)
    return {
        "size": size,
        "selection": both_metrics(schema, hold.labels, config, logits["hold"], resamples),
        "test": both_metrics(schema, test.labels, config, logits["test"], resamples),
        "seconds": round(time.perf_counter() - start, 1),
        "holdout_images": len(hold),
        "test_images": len(test),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Evaluation size: {result['name']}",
        "",
        f"`{result['command']}`; {result['cpu']}; TTA {result['tta']}; decodings fitted on the selection holdout "
        f"at each size; test-holdout interval = 95% bootstrap ({result['resamples']} resamples). Trained at "
        f"{result['trained_at']} px. Choose on the selection holdout; the test holdout only reports.",
        "",
        "| run | size | selection: avg per-class | selection: overall | test: avg per-class [95% CI] "
        "| test: overall [95% CI] | seconds |",
        "|---|---:|---:|---:|---|---|---:|",
    ]

    def cell(m: dict[str, Any]) -> str:
        return f"{m['value']:.4f} [{m['lo']:.3f}, {m['hi']:.3f}]"

    for r in result["rows"]:
        sel, test = r["selection"], r["test"]
        lines.append(
            f"| {Path(r['run']).name} | {r['size']} | {sel['avg_class_acc']['value']:.4f} "
            f"| {sel['overall_acc']['value']:.4f} | {cell(test['avg_class_acc'])} | {cell(test['overall_acc'])} "
            f"| {r['seconds']:.0f} |"
        )
    if len(result["runs"]) > 1:
        lines += [
            "",
            "Mean over the runs:",
            "",
            "| size | selection: avg per-class | selection: overall | test: avg per-class | test: overall |",
            "|---:|---:|---:|---:|---:|",
        ]
        for size, m in result["mean"].items():
            lines.append(
                f"| {size} | {m['selection']['avg_class_acc']:.4f} | {m['selection']['overall_acc']:.4f} "
                f"| {m['test']['avg_class_acc']:.4f} | {m['test']['overall_acc']:.4f} |"
            )
    best = result["best_on_selection"]
    lines += [
        "",
        f"Best on the selection holdout (mean over the runs): average per-class accuracy at {best['avg_class_acc']} px,"
        f" overall accuracy at {best['overall_acc']} px.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished run folders (same data split and training size)")
    ap.add_argument("--sizes", required=True, help="letterbox sides to try, comma-separated (e.g. 192,208,224,240)")
    ap.add_argument("--name", required=True, help="what the runs are (the results' title and file name)")
    ap.add_argument("--tta", default="flip+zoom", help="test-time augmentation (none, flip, zoom, flip+zoom)")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results"), help="folder of the results")
    args = ap.parse_args(argv)

    from fashattr.config import load_config

    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        raise SystemExit(f"--sizes {args.sizes!r}: comma-separated sides in pixels, e.g. 192,224") from None
    if min(sizes) < 8:
        raise SystemExit(f"--sizes {args.sizes!r}: a side of at least 8 pixels")
    trained = {load_config(run / "config.yaml").data.image_size for run in args.runs}
    if len(trained) != 1:
        raise SystemExit(f"the runs trained at different sizes {sorted(trained)}; compare one training size at a time")
    rows = [row for run in args.runs for row in score_sizes(run, sizes, args.tta, args.resamples)]
    mean = {
        size: {
            part: {m: statistics.mean(r[part][m]["value"] for r in rows if r["size"] == size) for m, _ in METRICS}
            for part in ("selection", "test")
        }
        for size in sizes
    }
    result = {
        "name": args.name,
        "command": shlex.join(["python", "benchmarks/eval_size.py", *(sys.argv[1:] if argv is None else argv)]),
        "cpu": machine_line(),
        "tta": args.tta,
        "resamples": args.resamples,
        "trained_at": trained.pop(),
        "runs": [str(r) for r in args.runs],
        "rows": rows,
        "mean": mean,
        "best_on_selection": {m: max(sizes, key=lambda s: mean[s]["selection"][m]) for m, _ in METRICS},
    }
    write_results(args.results, "eval_size", args.name, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
