"""``fashattr eval``, ``calibrate``, ``report``, ``compare``: measuring runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fashattr.cli.common import (
    DECODE_HELP,
    DECODINGS,
    TTA_HELP,
    Subcommands,
)


def _eval(args: argparse.Namespace) -> None:
    import json

    from fashattr.predictor import eval_run

    metrics = eval_run(args.run, args.split, args.data, args.weights, args.device, args.decode, args.tta)
    out = Path(args.run) / f"eval_{args.split}.json"
    mode = json.loads(out.read_text()).get("decoding")
    how = {None: "none (the raw model: the run has no calibration.json)", "none": "none (the raw model)"}
    print(f"split: {args.split}; decoding: {how.get(mode, mode)}")
    print(metrics.table())
    print(f"\nwritten: {out} and .txt")


def _calibrate(args: argparse.Namespace) -> None:
    import json

    from fashattr.calibrate import CALIBRATION, calibrate_run
    from fashattr.calibration.fit import below_majority
    from fashattr.schema import Schema

    before_file = Path(args.run) / CALIBRATION
    before = json.loads(before_file.read_text()).get("default") if before_file.is_file() else None
    cal = calibrate_run(
        args.run,
        args.split,
        args.weights,
        args.data,
        args.folds,
        args.seed,
        args.device,
        args.objective,
        args.tta,
        args.default,
    )
    fitted, cross = cal["fitted_on"], cal["cross_fit"]
    print(f"fitted on {fitted['images']} images of split {fitted['split']!r} ({fitted['weights']})")
    for g, t in cal["modes"][cal["default"]]["temperature"].items():
        modes = [m for m in cal["modes"] if g in cal["modes"][m]["tau"]]
        taus = "  ".join(f"tau[{m}] {cal['modes'][m]['tau'][g]:+.2f}" for m in modes)
        print(f"  {g:<12} T {t:.3f}  {taus}")
    if cross:
        print(f"out-of-fold ({cross['folds']} folds)   avg_class_acc   overall_acc")
        for m in ("none", *cal["modes"]):
            print(f"  {m:<21} {cross[m]['avg_class_acc']:13.4f}   {cross[m]['overall_acc']:11.4f}")
    print(f"written: {Path(args.run) / CALIBRATION}")
    d = cal["default"]
    was = f"it was {before!r}" if before else "it was 'none', the raw model: nothing was calibrated"
    print(
        f"\ndefault decoding: {d!r} ({was}). From now on predict, eval, export, tag and serve of this run decode "
        f"with {d!r} unless --decode names another; {DECODINGS[d]}."
    )
    if cross:
        for metric, label in (("overall_acc", "overall accuracy"), ("avg_class_acc", "average per-class accuracy")):
            print(f"  {label} out of fold: raw {cross['none'][metric]:.4f} -> {d} {cross[d][metric]:.4f}")
        schema = Schema.load(Path(args.run) / "schema.yaml")
        for group, acc, cls, base in below_majority(schema, cross, d):
            print(
                f"warning: {group}: the {d!r} decoding is right on {acc:.3f} of the selection split out of fold, "
                f"always answering {cls!r} on {base:.3f}: this group's tags are no better than its most common "
                "class yet; more labelled photos of its other classes are what helps",
                file=sys.stderr,
            )


def _report(args: argparse.Namespace) -> None:
    from fashattr.engine.tracking import Tracker
    from fashattr.report.build import build_report

    options = {"gradcam_images": args.gradcam, "resamples": args.resamples, "seed": args.seed}
    split = args.split or _report_split(args.runs[0])
    html = build_report(args.runs, args.out, split, args.data, args.weights, args.device, options)
    print(f"report on split {split!r} written: {html} (report.json and figures/ beside it; open it in a browser)")
    for run in args.runs:  # a run tracked in MLflow (tracking: mlflow) gets the report among its artifacts
        tracker = Tracker.attach(Path(run))
        if tracker is not None:
            tracker.log_folder(html.parent, "report")
            print(f"logged to MLflow run {tracker.run_id} at {tracker.uri} (artifacts: report/)")


def _report_split(run: str) -> str:
    """The test holdout when the run has one (nothing trained or selected on it), else the selection holdout."""
    from fashattr.config import load_config

    cfg = load_config(Path(run) / "config.yaml")
    return "test_holdout" if cfg.data.test_holdout > 0 else "holdout"


def _compare(args: argparse.Namespace) -> None:
    import csv
    import json

    from fashattr.fileio import atomic_write_text
    from fashattr.report.compare import compare_rows, compare_table, load_run, plot_curves

    runs = [load_run(r) for r in args.runs]
    print(compare_table(runs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = compare_rows(runs)
    with open(out / "compare.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(out / "compare.json", json.dumps(rows, indent=2))
    png = plot_curves(runs, out / "compare.png", args.metric)
    print(f"\nwritten: {png}, {out / 'compare.csv'} and {out / 'compare.json'}")


def add_commands(sub: Subcommands, common: argparse.ArgumentParser, options: argparse.ArgumentParser) -> None:
    """Register this module's subcommands on ``sub``; ``common``: the run-folder argument and options every command
    on a trained model shares, ``options``: the same options without the positional argument."""
    p = sub.add_parser("eval", parents=[common], help="metric table on a labeled split or the holdout")
    p.add_argument(
        "--split",
        default="holdout",
        help="'holdout' (the run's selection holdout), 'test_holdout' (its evaluation holdout) or a labeled split",
    )
    p.add_argument("--decode", help=DECODE_HELP)
    p.add_argument("--tta", help=TTA_HELP + " (default none)")
    p.set_defaults(func=_eval)

    p = sub.add_parser(
        "calibrate",
        parents=[common],
        help="fit temperatures, multi-label thresholds and the accuracy/balanced decodings on the selection split",
        description="Writes RUN/calibration.json, which eval, predict and export then apply: a temperature per "
        "group, a logit threshold per multi-label class (best F1), and post-hoc logit adjustment of single-label "
        "groups (logits - tau * log prior) with tau fitted for overall accuracy ('accuracy') and for average "
        "per-class accuracy ('balanced'); the default follows the run's select_metric. Out-of-fold metrics "
        "(cross-fitting) say what it gains on images it was not fitted on.",
    )
    p.add_argument("--split", help="labeled split to fit on (default: the run's selection split, 'holdout')")
    p.add_argument(
        "--default",
        choices=["accuracy", "balanced"],
        help="the decoding later commands use (default: the one the run was selected for: balanced after "
        "avg_class_acc, accuracy after overall_acc)",
    )
    p.add_argument("--folds", type=int, default=5, help="cross-fitting folds for the out-of-fold metrics")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds")
    p.add_argument(
        "--objective",
        default="nll",
        choices=["nll", "metric"],
        help="how tau is chosen on its grid: smallest (class-balanced for 'balanced') NLL, or largest metric",
    )
    p.add_argument("--tta", help=TTA_HELP + "; fit on the logits the model will be evaluated with (default none)")
    p.set_defaults(func=_calibrate)

    p = sub.add_parser(
        "report",
        help="an HTML report of a run (metrics with intervals, curves, confusion, top losses, Grad-CAM, calibration)",
        description="One run: report.html, report.json and figures/ (PNG + SVG) in --out. Several runs: side by "
        "side on the same split. A run stopped before its end is reported from last.safetensors.",
    )
    p.add_argument("runs", nargs="+", help="run folders (several: compared side by side, the first as reference)")
    p.add_argument(
        "--split",
        help="'test_holdout' (the default when the run has one: never trained or selected on), 'holdout' (the "
        "selection holdout, the default otherwise) or a split of the dataset",
    )
    p.add_argument("--out", help="output folder (default RUN/report for one run, ./report for several)")
    p.add_argument("--data", help="dataset root, if not the one in the run's config")
    p.add_argument("--weights", choices=["best", "last"], help="default best (last for a run that did not finish)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, or auto")
    p.add_argument("--gradcam", type=int, default=32, help="images explained with Grad-CAM")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the intervals")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the calibration halves")
    p.set_defaults(func=_report)

    p = sub.add_parser("compare", help="one table of runs and a PNG of their curves overlaid")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--metric", default="avg_class_acc", help="the metrics.csv column to plot")
    p.add_argument("--out", default="compare", help="folder for compare.png, .csv and .json")
    p.set_defaults(func=_compare)
