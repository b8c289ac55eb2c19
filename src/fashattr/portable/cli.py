"""``python predict_onnx.py BUNDLE IMAGES... [--int8] [--out preds.jsonl]``: a bundle's ONNX model on image
files, JSON Lines out, without fashattr installed."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from .decoding import decoding_for
from .errors import FashattrError
from .images import expand_paths
from .onnx_runner import OnnxRunner, predict_files
from .tta import tta_views


def main(argv: Sequence[str] | None = None) -> int:
    """``python predict_onnx.py BUNDLE IMAGES... [--int8] [--out preds.jsonl]``: JSON Lines, one per image."""
    ap = argparse.ArgumentParser(
        prog="predict_onnx.py", description="Predict attributes with a fashattr bundle's ONNX model (onnxruntime)."
    )
    ap.add_argument("bundle", help="the bundle folder (config.json, model.onnx, hashes.json, ...)")
    ap.add_argument("images", nargs="+", help="image files and folders (searched recursively)")
    ap.add_argument("--int8", action="store_true", help="run model.int8.onnx instead of model.onnx")
    ap.add_argument("--out", help="write JSON Lines here (default: standard output)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="image decoding threads")
    ap.add_argument("--top-k", type=int, default=1, help="also list the k best classes of single-label groups")
    ap.add_argument(
        "--decode",
        help="decoding mode: 'accuracy' (best overall accuracy), 'balanced' (best average per-class accuracy) "
        "or 'none' (the raw model); default: the bundle's default (`fashattr calibrate` saves them)",
    )
    ap.add_argument(
        "--tta",
        help="test-time augmentation: 'none', 'flip', 'zoom' or 'flip+zoom' (logits averaged over the views); "
        "default: the bundle's own (`fashattr export --tta`)",
    )
    args = ap.parse_args(argv)
    try:
        runner = OnnxRunner(args.bundle, "int8" if args.int8 else "fp32", args.threads)
        decoding_for(runner.config, args.decode)
        tta_views(args.tta)
        paths = expand_paths(args.images)
    except (FashattrError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    ok = bad = 0
    try:
        for rec in predict_files(runner, paths, args.batch_size, args.workers, args.top_k, args.decode, args.tta):
            if "error" in rec:
                bad += 1
                print(f"skipped {rec['path']}: {rec['error']}", file=sys.stderr)
            else:
                ok += 1
            out.write(json.dumps(rec) + "\n")
    finally:
        if args.out:
            out.close()
    print(f"{ok} image(s) predicted, {bad} unreadable", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
