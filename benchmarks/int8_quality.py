"""What static int8 quantisation costs a trained run, by calibration setting, on its test holdout.

Exports the run's best weights once (``fashattr.deploy.onnx.export_onnx``: the file ``fashattr export
--format onnx`` writes), then for each calibration method (and optionally reduce-range weights) writes
an int8 copy with ``deploy.quantize.quantize_int8`` calibrated on N training images (seed 0, never
holdout images) and measures on the run's test holdout (never trained on nor selected on):
average per-class accuracy, overall accuracy, and the share of (image, group) predictions that
equal the fp32 model's. The fp32 ONNX row is checked against the PyTorch model's logits.

    python benchmarks/int8_quality.py runs/cpu_resnet18
    python benchmarks/int8_quality.py runs/cpu_resnet18 --methods minmax percentile --calib 100 200 500

Writes ``benchmarks/results/int8_quality_<run>.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fashattr.config import load_config
from fashattr.data.prepare import inference_data, load_train_eval
from fashattr.deploy.bundle import bundle_config
from fashattr.deploy.onnx import export_onnx, onnx_logits, torch_logits
from fashattr.deploy.quantize import CALIBRATION_METHODS, quantize_int8
from fashattr.metrics import compute_metrics
from fashattr.models import create_model
from fashattr.models.weights import load_weights
from fashattr.schema import Schema

ROOT = Path(__file__).resolve().parents[1]


def cpu() -> dict[str, str]:
    info = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    return {
        "model": fields.get("Model name", platform.processor()).strip(),
        "flags": " ".join(f for f in flags if f.startswith(("avx", "fma", "vnni", "amx")) or "vnni" in f),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--methods", nargs="+", default=["minmax", "percentile", "entropy"], choices=CALIBRATION_METHODS)
    ap.add_argument("--calib", nargs="+", type=int, default=[200], help="calibration image counts")
    ap.add_argument("--reduce-range", action="store_true", help="also try 7-bit weights (reduce_range)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)

    cfg = load_config(args.run / "config.yaml")
    schema = Schema.load(args.run / "schema.yaml")
    config = bundle_config(args.run)
    model = create_model(
        dataclasses.replace(cfg.model, pretrained=False, pretrained_file=None), schema, cfg.data.image_size
    )
    model.load_state_dict(load_weights(args.run / "best.safetensors"))
    model.eval()
    _, train, _, test = load_train_eval(inference_data(cfg.data), progress=False)  # the pixels the bundle takes
    if test is None or test.labels is None:
        sys.exit(f"{args.run}: no test holdout (data.test_holdout is 0)")
    images = test.pixels()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, config, Path(tmp) / "model.onnx")
        ref = onnx_logits(fp32, images)
        torch_ref = torch_logits(model, images, config)
        parity = max(float(np.abs(ref[g] - torch_ref[g]).max()) for g in ref)
        ref_pred = {g: v.argmax(1) for g, v in ref.items()}

        def measure(name: str, logits: dict[str, np.ndarray], extra: dict) -> None:
            s = compute_metrics(schema, test.labels or {}, logits).summary()
            agree = np.mean([np.mean(logits[g].argmax(1) == ref_pred[g]) for g in ref])
            rows.append(
                {
                    "model": name,
                    **extra,
                    "avg_class_acc": round(s["avg_class_acc"], 4),
                    "overall_acc": round(s["overall_acc"], 4),
                    "same_class_as_fp32": round(float(agree), 4),
                }
            )
            print(rows[-1], flush=True)

        measure("fp32 onnx", ref, {"mb": round(fp32.stat().st_size / 1e6, 2), "max_abs_diff_vs_torch": parity})
        rng = np.random.default_rng(0)
        for n in args.calib:
            calib_rows = np.sort(rng.choice(train.rows, min(n, len(train)), replace=False))
            for method in args.methods:
                for reduce in [False, True] if args.reduce_range else [False]:
                    path = Path(tmp) / f"int8_{method}_{n}_{reduce}.onnx"
                    t = time.perf_counter()
                    quantize_int8(fp32, path, train.images[calib_rows], method=method, reduce_range=reduce)
                    took = time.perf_counter() - t
                    extra = {"calibration": method, "calib_images": n, "reduce_range": reduce}
                    extra |= {"mb": round(path.stat().st_size / 1e6, 2), "quantize_s": round(took, 1)}
                    measure("int8 QDQ per-channel", onnx_logits(path, images), extra)
    fp = rows[0]
    for r in rows[1:]:
        r["avg_class_acc_change_points"] = round(100 * (r["avg_class_acc"] - fp["avg_class_acc"]), 2)
    result = {
        "run": str(args.run),
        "backbone": cfg.model.backbone,
        "image_size": inference_data(cfg.data).image_size,
        "test_holdout_images": len(images),
        "cpu": cpu(),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"int8_quality_{args.run.name}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    head = "| model | calibration | images | reduce_range | MB | avg per-class acc | change (points) | overall acc |"
    lines = [head + " same class as fp32 |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r.get('calibration', '')} | {r.get('calib_images', '')} | {r.get('reduce_range', '')} "
            f"| {r['mb']} | {r['avg_class_acc']:.4f} | {r.get('avg_class_acc_change_points', '')} "
            f"| {r['overall_acc']:.4f} | {r['same_class_as_fp32']:.4f} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
