"""``fashattr predict``, ``export``, ``serve``: using a model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

from fashattr.cli.common import (
    BACKEND_CHOICES,
    BACKEND_HELP,
    DECODE_HELP,
    TTA_HELP,
    Subcommands,
)


def _predict(args: argparse.Namespace) -> int:
    from fashattr.deploy.output import expand_paths, predict_to_file
    from fashattr.deploy.runtime import Runtime
    from fashattr.predictor import predict_split

    if bool(args.split) == bool(args.paths):
        raise SystemExit("predict needs either --split NAME or image files/folders, not both")
    if args.split:
        if not (Path(args.run) / "config.yaml").is_file():
            raise SystemExit(f"--split needs a run folder (its config.yaml names the data); {args.run} is not one")
        out = args.out or "prediction.txt"
        n = predict_split(args.run, args.split, out, args.data, args.weights, args.device, args.decode, args.tta)
        print(f"wrote {n} lines to {out}")
        return 0
    out = args.out or "predictions.jsonl"
    paths = expand_paths(args.paths)
    # An unknown decoding mode fails before any image is read; tta None: the bundle's own (`export --tta`).
    runtime = Runtime.load(
        args.run,
        args.backend,
        args.weights,
        device=args.device,
        threads=args.threads or None,
        decode=args.decode,
        tta=args.tta,
    )
    on_bad: Literal["report", "error"] = "error" if args.on_bad_image == "error" else "report"
    progress = not args.no_progress
    done = predict_to_file(runtime, paths, out, args.batch_size, args.workers, on_bad, progress)
    print(
        f"wrote predictions for {done.predicted} of {len(paths)} images to {out} ({done.images_per_s:.1f} images/s)"
        + (f"; {done.errors} unreadable, each reported above and as an error record there" if done.errors else "")
    )
    return 1 if done.predicted == 0 else 0


def _export(args: argparse.Namespace) -> None:
    import json

    from fashattr.deploy.bundle import bundle_hash, write_bundle

    out = Path(args.out or Path("bundles") / Path(args.run).resolve().name)
    write_bundle(args.run, out, [args.format], args.weights, args.calib_images, tta=args.tta, decode=args.decode)
    decoding = json.loads((out / "config.json").read_text()).get("decoding") or {}
    default = decoding.get("default") if decoding.get("modes") else "none (the run is not calibrated)"
    print(f"bundle written to {out}\nmodel id (bundle_hash): {bundle_hash(out)}\ndefault decoding: {default}")
    q = (json.loads((out / "config.json").read_text()).get("onnx") or {}).get("int8_metrics")
    if q:
        print(
            f"int8 vs fp32 on the {q['split']} ({q['images']} images): avg_class_acc "
            f"{q['fp32']['avg_class_acc']:.4f} -> {q['int8']['avg_class_acc']:.4f} "
            f"({q['avg_class_acc_change_points']:+.2f} points)"
        )
    for p in sorted(out.iterdir()):
        print(f"  {p.name:<20} {p.stat().st_size / 1e6:9.3f} MB")


def _serve(args: argparse.Namespace) -> None:
    from fashattr.serve import run_server, settings_from_args

    settings = settings_from_args(args)
    threads = args.threads or None
    run_server(
        args.model,
        settings,
        args.backend,
        args.weights,
        threads,
        db=args.db,
        looks=args.looks,
        max_connections=args.max_connections,
        decode=args.decode,
    )


def add_commands(sub: Subcommands, common: argparse.ArgumentParser, options: argparse.ArgumentParser) -> None:
    """Register this module's subcommands on ``sub``; ``common``: the run-folder argument and options every command
    on a trained model shares, ``options``: the same options without the positional argument."""
    p = sub.add_parser(
        "predict",
        parents=[options],
        help="JSON Lines / CSV for image files and folders (streamed), or the challenge file of a split",
        description="MODEL is a bundle written by `fashattr export` or a run folder. Images are decoded by "
        "--workers threads a batch at a time (constant memory) and written as they go. An image that cannot "
        "be decoded is reported (stderr and an error record in the output) and the rest are predicted "
        "(--on-bad-image report, the default); --on-bad-image error stops at the first. Exit code 1 when no "
        "image could be predicted.",
    )
    p.add_argument(
        "run", metavar="MODEL", help="a bundle folder (`fashattr export`) or a run folder (`fashattr train`)"
    )
    p.add_argument("paths", nargs="*", help="image files and folders")
    p.add_argument("--split", help="write the challenge file for this split (e.g. test); needs a run folder")
    p.add_argument("--out", help="output: .jsonl (default predictions.jsonl), .csv or .json; .txt for --split")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help=BACKEND_HELP)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="image decode threads")
    p.add_argument("--threads", type=int, default=0, help="model threads (0 = the backend's default)")
    p.add_argument("--on-bad-image", default="report", choices=["report", "error"])
    p.add_argument("--decode", help=DECODE_HELP)
    p.add_argument("--tta", help=TTA_HELP + " (default: a bundle's own, else none)")
    p.add_argument("--skip-bad", action="store_true", help=argparse.SUPPRESS)  # the old flag: report is the default now
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=_predict)

    p = sub.add_parser("export", help="a bundle folder (safetensors + config + model card [+ ONNX, int8]) from a run")
    p.add_argument("run", help="a run folder written by `fashattr train`")
    p.add_argument("--format", default="bundle", choices=["bundle", "onnx", "onnx-int8"])
    p.add_argument("--out", help="bundle folder (default bundles/RUN_NAME)")
    p.add_argument("--weights", default="best", choices=["best", "last"])
    p.add_argument("--calib-images", type=int, default=200, help="training images that calibrate int8")
    p.add_argument("--tta", default="none", help=TTA_HELP + "; recorded in the bundle, which every runtime honours")
    p.add_argument(
        "--decode",
        choices=["accuracy", "balanced", "none"],
        help="the bundle's default decoding, which predict, serve and tag of the bundle use (default: the run's, "
        "from `fashattr calibrate`)",
    )
    p.set_defaults(func=_export)

    p = sub.add_parser(
        "serve",
        help="HTTP service and web page for a bundle or run: /v1/predict, /v1/explain, /metrics",
        description="Serves MODEL (a bundle, or a run folder exported to a temporary bundle) on uvicorn with "
        "micro-batching and request limits. Binds 127.0.0.1 unless --host says otherwise; /v1 routes and "
        "/metrics need the bearer token in --token-file when one is given.",
    )
    p.add_argument("model", help="a bundle folder (fashattr export) or a run folder")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help=BACKEND_HELP + "; torch enables Grad-CAM")
    p.add_argument("--weights", default="best", choices=["best", "last"], help="for a run folder")
    p.add_argument("--decode", help=DECODE_HELP + "; the page can switch per request")
    p.add_argument("--threads", type=int, default=0, help="model threads (0 = the backend's default)")
    p.add_argument("--max-batch", type=int, default=16, help="most images per model call")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="wait for more images once one is queued")
    p.add_argument("--queue-size", type=int, default=64, help="images in flight before 503 + Retry-After")
    p.add_argument(
        "--max-queue-ms", type=float, default=250.0, help="503 while the queue holds more model time than this (0: off)"
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request (body 408, prediction 504)")
    p.add_argument("--max-body-mb", type=float, default=20.0, help="request body limit (413)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="width x height limit per image (413)")
    p.add_argument("--max-images", type=int, default=16, help="images per request")
    p.add_argument("--decode-threads", type=int, default=2, help="threads decoding uploads")
    p.add_argument(
        "--worker-nice", type=int, default=10, help="nice value of the model/decode threads (0-19; 0 = no change)"
    )
    p.add_argument("--max-connections", type=int, default=256, help="open connections before uvicorn answers 503")
    p.add_argument("--token-file", help="file whose first line is the bearer token the /v1 routes require")
    p.add_argument("--cors-origin", action="append", default=[], help="allow this origin cross-site (repeatable)")
    p.add_argument(
        "--db",
        help="a catalog database URL (fashattr tag): adds /v1/search, the /v1/gallery page and the /v1/wardrobe pages",
    )
    p.add_argument("--looks", help="with --db: a looks CSV (look,item); the wardrobe pages show what combines best")
    p.set_defaults(func=_serve)
