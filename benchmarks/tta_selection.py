"""Test-time augmentations compared where such a choice belongs: on the selection split, out of fold.

For each finished run, a copy (weights and config; the run itself is left alone) is calibrated with each TTA
(``fashattr calibrate COPY --tta T``), and the out-of-fold scores ``calibrate`` records on the selection split
(``cross_fit`` in calibration.json: the balanced decoding's average per-class accuracy, the accuracy decoding's
overall accuracy, each fitted on the other folds) are tabled side by side. The test holdout is not read.

    python benchmarks/tta_selection.py RUN [RUN ...] --tta flip flip+zoom --results benchmarks/results/tta_selection
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_ablation import run_cli
from machine import machine_line


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--tta", nargs="+", default=["flip", "flip+zoom"])
    ap.add_argument("--out", type=Path, default=Path("runs/tta_selection"))
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/tta_selection"))
    args = ap.parse_args()
    started = time.perf_counter()
    rows = []
    for run in args.runs:
        copy = args.out / run.name
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("checkpoint.pt", "*.log"))
        for tta in args.tta:
            run_cli(["calibrate", str(copy), "--tta", tta], args.out / f"{run.name}.log")
            cross = json.loads((copy / "calibration.json").read_text())["cross_fit"]
            rows.append(
                {
                    "run": str(run),
                    "tta": tta,
                    "images": cross["images"],
                    "avg_class_acc_balanced": cross["balanced"]["avg_class_acc"],
                    "overall_acc_accuracy": cross["accuracy"]["overall_acc"],
                }
            )
            print(rows[-1], flush=True)
    wall = time.perf_counter() - started
    command = "python benchmarks/tta_selection.py " + " ".join(sys.argv[1:])
    record = {"command": command, "cpu": machine_line(), "wall_s": round(wall, 1), "rows": rows}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.with_name(args.results.name + ".json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [
        "# TTA on the selection split, out of fold (benchmarks/tta_selection.py)",
        "",
        f"`{command}` on {record['cpu']}; {wall / 60:.1f} min. Scores `fashattr calibrate` records in `cross_fit` "
        "(5 folds of the selection split; each fold decoded by what the others fitted).",
        "",
        "| run | TTA | images | avg per-class acc (balanced) | overall acc (accuracy) |",
        "|---|---|---:|---:|---:|",
        *(
            f"| `{r['run']}` | {r['tta']} | {r['images']} | {r['avg_class_acc_balanced']:.4f} "
            f"| {r['overall_acc_accuracy']:.4f} |"
            for r in rows
        ),
        "",
    ]
    args.results.with_name(args.results.name + ".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
