"""A trained run, exported, predicted three ways on real photos: does the bundle stand alone?

1. ``fashattr export RUN --format onnx-int8``: the bundle, with the int8 file's test-holdout
   metric before and after quantisation (``config.json`` ``onnx.int8_metrics``).
2. ``fashattr predict BUNDLE PHOTOS --backend torch``: the reference (torch + timm + fashattr).
3. ``BUNDLE/predict_onnx.py`` (fp32, then ``--int8``) run by a Python that has *only* onnxruntime,
   NumPy and Pillow (:func:`fashattr.deploy.isolated.onnx_only_venv`).

The photos are every ``--stride``-th image of the FashionDataset's val split (labels withheld:
agreement, not accuracy). Results: ``benchmarks/results/bundle_check.{json,md}``.

    python benchmarks/bundle_check.py runs/readme_numbers/resnet18_s0
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fashattr.deploy.isolated import onnx_only_venv, run_standalone

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "FashionDataset"


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def compare(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-image agreement of every group's class, and the largest probability difference."""
    assert [r["path"] for r in got] == [r["path"] for r in want], "the two outputs list other images"
    groups = list(want[0]["groups"])
    pairs = list(zip(got, want, strict=True))
    same = np.array([[g["groups"][k]["class"] == w["groups"][k]["class"] for k in groups] for g, w in pairs])
    probs = np.array([[abs(g["groups"][k]["prob"] - w["groups"][k]["prob"]) for k in groups] for g, w in pairs])
    return {
        "images": len(want),
        "all_groups_same": int(same.all(1).sum()),
        "labels_same": f"{int(same.sum())}/{same.size}",
        "max_prob_diff": float(probs.max()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--stride", type=int, default=5)
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()
    run, data = Path(args.run).resolve(), Path(args.data)
    work = Path(tempfile.mkdtemp(prefix="bundle_check_"))
    bundle = work / "bundle"
    fashattr = [sys.executable, "-m", "fashattr"]
    subprocess.run([*fashattr, "export", str(run), "--format", "onnx-int8", "--out", str(bundle)], check=True)
    config = json.loads((bundle / "config.json").read_text())
    photos = work / "photos"
    photos.mkdir()
    listed = (data / "split" / "val.txt").read_text().split()[:: args.stride][: args.images]
    for rel in listed:  # links: the photos stay in the shared data folder
        (photos / Path(rel).name).symlink_to(data / rel)

    reference = work / "torch.jsonl"
    predict = [*fashattr, "predict", str(bundle), str(photos), "--no-progress", "--backend", "torch"]
    subprocess.run([*predict, "--out", str(reference)], check=True)
    python = onnx_only_venv(work / "venv")
    rows: dict[str, Any] = {}
    for name, extra in (("onnx fp32 (predict_onnx.py)", []), ("onnx int8 (predict_onnx.py --int8)", ["--int8"])):
        out = work / f"{len(rows)}.jsonl"
        proc = run_standalone(python, bundle, str(photos), "--out", str(out), *extra)
        if proc.returncode != 0:
            raise SystemExit(f"predict_onnx.py failed:\n{proc.stderr}")
        rows[name] = compare(records(out), records(reference))

    result = {
        "run": str(run.relative_to(ROOT) if run.resolve().is_relative_to(ROOT) else run),
        "bundle_hash": json.loads((bundle / "hashes.json").read_text())["bundle_hash"],
        "photos": f"every {args.stride}th of split/val.txt, first {len(listed)}",
        "int8_metrics": (config.get("onnx") or {}).get("int8_metrics"),
        "against_fashattr_predict_torch": rows,
        "environment": "predict_onnx.py ran in a venv holding only onnxruntime, numpy and Pillow",
    }
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "bundle_check.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"`python benchmarks/bundle_check.py {result['run']}`: {result['photos']}; {result['environment']}.",
        "",
        f"int8 on the run's test holdout: {json.dumps(result['int8_metrics'])}",
        "",
        "| against `fashattr predict --backend torch` | images | all 6 groups the same | labels the same"
        " | max prob diff |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['images']} | {r['all_groups_same']} | {r['labels_same']} | {r['max_prob_diff']:.2e} |"
        )
    (results / "bundle_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
