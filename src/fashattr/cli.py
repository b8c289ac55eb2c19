"""``fashattr VERB ...``: each subcommand parses its arguments, then calls one library function."""

from __future__ import annotations

import argparse
import difflib
import importlib.resources
import logging
import os
import sys
from pathlib import Path
from typing import Literal

from fashattr.errors import USER_ERRORS, ConfigError
from fashattr.memory import keep_freed_memory


def _train(args: argparse.Namespace) -> None:
    from fashattr.config import load_config
    from fashattr.engine.trainer import fit

    if args.resume:
        if args.config or args.overrides:
            raise SystemExit("--resume continues a run with its own config.yaml; give no config or overrides")
        run_dir = fit(resume=args.resume)
    else:
        run_dir = fit(load_config(*_config_and_overrides(args.config, args.overrides)))
    print(f"run folder: {run_dir}")


def _config_and_overrides(config: str | None, overrides: list[str]) -> tuple[Path | None, list[str]]:
    """``VERB key=value ...`` (no YAML file) means the defaults plus those overrides."""
    if config and "=" in config:
        return None, [config, *overrides]
    return (resolve_config(config) if config else None), list(overrides)


def recipe_names() -> list[str]:
    """Names of the recipes shipped inside the package (``fashattr/recipes/*.yaml``)."""
    folder = importlib.resources.files("fashattr") / "recipes"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_config(arg: str) -> Path:
    """Find a config given on the command line: a YAML path, or a shipped recipe by name.

    Args:
        arg: a path (``runs/X/config.yaml``), a recipe name (``cpu_quick`` or ``cpu_quick.yaml``),
            or ``recipe:cpu_quick`` to mean the recipe even where a file of that name exists.

    Returns:
        The YAML file to load. A path with a folder in it is returned as given (a missing
        one is reported by ``load_config``).

    Raises:
        ConfigError: neither a file nor a recipe has that name; names the close recipe or all.
    """
    explicit = arg.startswith("recipe:")
    if not explicit and (Path(arg).exists() or "/" in arg or os.sep in arg):
        return Path(arg)
    name = arg.removeprefix("recipe:").removesuffix(".yaml")
    names = recipe_names()
    if name in names:
        # The installed package's own folder (an ordinary directory in a wheel or source install).
        return Path(str(importlib.resources.files("fashattr") / "recipes" / f"{name}.yaml"))
    what = f"no recipe is named {name!r}"
    if not explicit:
        what = f"config file {arg} not found, and {what}"
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"the recipes are: {', '.join(names)}."
    raise ConfigError(f"{what}; {hint}")


def _lr_find(args: argparse.Namespace) -> None:
    from fashattr.config import load_config
    from fashattr.engine.lr_find import lr_find, save_lr_find

    cfg = load_config(*_config_and_overrides(args.config, args.overrides))
    result = lr_find(cfg, args.start, args.end, args.steps, rule=args.rule)
    json_path, png_path = save_lr_find(result, args.out)
    stop = "diverged and stopped" if result.stopped_early else "ran every step"
    print(f"{len(result.lrs)} steps from {args.start:g} to {result.lrs[-1]:.3g} ({stop})")
    for name in ("valley", "steepest"):
        value = getattr(result, name)
        print(f"  {name:<9} {'-' if value is None else f'{value:.3g}'}")
    if result.suggestion is not None:
        print(f"suggested ({result.rule}): optim.lr={result.suggestion:.3g}")
    print(f"written: {png_path} and {json_path}")


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


def _report(args: argparse.Namespace) -> None:
    from fashattr.report.build import build_report

    options = {"gradcam_images": args.gradcam, "resamples": args.resamples, "seed": args.seed}
    split = args.split or _report_split(args.runs[0])
    html = build_report(args.runs, args.out, split, args.data, args.weights, args.device, options)
    print(f"report on split {split!r} written: {html} (report.json and figures/ beside it; open it in a browser)")


def _report_split(run: str) -> str:
    """The test holdout when the run has one (nothing trained or selected on it), else the selection holdout."""
    from fashattr.config import load_config

    cfg = load_config(Path(run) / "config.yaml")
    return "test_holdout" if cfg.data.test_holdout > 0 else "holdout"


def _tune(args: argparse.Namespace) -> None:
    from fashattr.tune import load_spec, run_study, trials_table, write_best

    config = resolve_config(args.config)
    spec = load_spec(config, args.overrides)
    study = run_study(spec, args.trials, args.out, args.storage, args.study or config.stem, args.baseline)
    print(trials_table(study))
    if any(t.value is not None for t in study.trials):
        best, recipe = study.best_trial, write_best(study, spec, args.out)
        print(f"\nbest: trial {best.number}, {spec.metric} {best.value:.4f}; recipe written to {recipe}")


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


def _pseudo_label(args: argparse.Namespace) -> None:
    from fashattr.data.pseudo import pseudo_label

    splits = [s for s in (args.splits or "").split(",") if s] or None
    thresholds: float | dict[str, float] = args.threshold
    if args.group_threshold:
        thresholds = {k: float(v) for k, v in (item.split("=", 1) for item in args.group_threshold)}
        thresholds = {**dict.fromkeys(thresholds, args.threshold), **thresholds}
    result = pseudo_label(args.run, splits, thresholds, args.out, args.weights, args.device, args.tta, args.data)
    n = len(result["images"])
    print(f"{n} images of {result['splits']} labeled by {result['teacher']}; written to {args.out}")
    for g, k in result["kept"].items():
        print(f"  {g:<12} {k:6d} above threshold {result['thresholds'][g]:.2f}  ({k / max(n, 1):.1%})")


def _predict(args: argparse.Namespace) -> int:
    from fashattr.deploy.output import expand_paths, predict_to_file
    from fashattr.deploy.runtime import Runtime
    from fashattr.predictor import predict_split
    from fashattr.runtime_onnx import tta_mode

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
    runtime = Runtime.load(args.run, args.backend, args.weights, device=args.device, threads=args.threads or None)
    runtime.set_decode(args.decode)  # an unknown mode fails before any image is read
    if args.tta is not None:  # else the bundle's own (`fashattr export --tta`)
        runtime.tta = tta_mode({"tta": args.tta})
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


def _tag(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from fashattr.catalog.tag import tag

    try:
        summary = tag(
            args.model,
            args.sources,
            args.db,
            args.backend,
            args.batch_size,
            args.workers,
            args.threads or None,
            args.engine,
            args.ray_address,
            not args.no_progress,
            args.decode,
        )
    except sa.exc.OperationalError as e:  # unreachable server, bad credentials, unwritable file: fatal, said plainly
        raise SystemExit(f"error: database {args.db}: {e.orig or e}") from None
    print("\n".join(summary.lines()))
    return 0


def _reader_options(items: list[str]) -> dict:
    """``--option key=value`` pairs (values parsed as YAML) into reader options."""
    import yaml

    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {item!r} is not key=value (e.g. --option path_column=file)")
        out[key] = yaml.safe_load(raw)
    return out


def _dataset_arguments(args: argparse.Namespace) -> tuple[str, str, dict]:
    """(root, format, reader options) from ``data [--format] [--option] [--config]``: flags over the config, and
    a format told from the path when neither names one."""
    from fashattr.data.formats import infer_format

    root, fmt, options = args.data, args.format, _reader_options(args.option)
    if args.config:
        from fashattr.config import load_config

        cfg = load_config(resolve_config(args.config))
        root = root or cfg.data.root
        fmt = fmt or cfg.data.format
        options = options or dict(cfg.data.reader_options)
    if not root:
        raise ValueError("name the dataset (a folder or a label table), or pass --config with a data.root")
    return root, fmt or infer_format(root), options


def _data_check(args: argparse.Namespace) -> int:
    import json

    from fashattr.data.check import audit, format_report, plot_distribution
    from fashattr.fileio import atomic_write_text

    root, fmt, options = _dataset_arguments(args)
    report = audit(root, fmt, args.min_size, options=options, min_count=args.min_count)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.json", json.dumps(report, indent=1))
    chart = plot_distribution(report, out / "class_distribution.png")
    print(format_report(report))
    print(f"\nwritten: {out / 'report.json'}" + (f" and {chart}" if chart else ""))
    return 1 if report["errors"] else 0


def _data_init(args: argparse.Namespace) -> int:
    import shlex

    from fashattr.config import load_config
    from fashattr.data.formats import create_reader, infer_format
    from fashattr.data.starter import JOBS, starter_config
    from fashattr.errors import DatasetError
    from fashattr.fileio import atomic_write_text

    out = Path(args.out)
    if out.exists() and not args.force:
        raise ValueError(f"{out} exists: pass --force to overwrite it, or --out another file")
    fmt = args.format or infer_format(args.data)
    command = "fashattr " + shlex.join(sys.argv[1:])
    text, _ = starter_config(
        args.data,
        fmt,
        _reader_options(args.option),
        args.job,
        resolve_config(JOBS[args.job][0]),
        args.min_count,
        command,
        out.parent,
    )
    atomic_write_text(out, text)
    cfg = load_config(out)  # what was written reads back as a valid config
    print("\n".join(line[2:] for line in text.splitlines() if line.startswith("# ")))
    print(f"\nwritten: {out} (recipe {JOBS[args.job][0]}, data.root {cfg.data.root})")
    reader = create_reader(cfg.data.format, cfg.data.root, cfg.data.reader_options)
    stopped = []
    for split in reader.splits():  # what training will refuse until it is fixed, named now
        try:
            reader.read(split, allow_missing=True)
        except DatasetError as e:
            stopped += [f"{e.file}:{ln}: {msg}" if ln is not None else f"{e.file}: {msg}" for ln, msg in e.problems]
    if stopped:
        print(f"\ntraining stops at these {len(stopped)} row(s) until they are fixed:")
        print("\n".join(f"  {line}" for line in stopped[:20]) + ("\n  ..." if len(stopped) > 20 else ""))
    print(f"\nnext: fashattr data check --config {out}    then: fashattr train {out} name=first")
    return 1 if stopped else 0


def _data_show(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from fashattr.config import load_config
    from fashattr.data.show import show_samples

    cfg = load_config(resolve_config(args.config) if args.config else None)
    options = _reader_options(args.option) or cfg.data.reader_options
    # Flags given override the config; flags left out keep its format (and its image_size below).
    fmt = args.format or cfg.data.format
    cfg = replace(cfg, data=replace(cfg.data, root=args.data, format=fmt, reader_options=options))
    out = show_samples(cfg, args.split, args.n, args.out, args.augment, args.seed, args.size)
    print(f"wrote {out}")


def _synth(args: argparse.Namespace) -> None:
    from fashattr.data.synthetic import synthesize

    out = synthesize(args.out, args.n, args.size, args.seed)
    print(f"wrote {args.n} garments in the FashionDataset layout to {out}")


def _demo(args: argparse.Namespace) -> None:
    import shutil
    import time

    from fashattr.config import load_config
    from fashattr.data.synthetic import synthesize
    from fashattr.engine.trainer import fit
    from fashattr.predictor import eval_run, predict_split

    start = time.perf_counter()
    out = Path(args.out)
    if out.exists():
        # Only ever replace a folder the demo wrote itself: a user's folder passed as --out is kept.
        own = {"data", "run"}
        if not out.is_dir() or not {p.name for p in out.iterdir()} <= own:
            raise FileExistsError(f"{out} exists and is not a demo folder (only data/ and run/); choose another --out")
        shutil.rmtree(out)
    data = synthesize(out / "data", args.n, 96, args.seed)
    print(f"[1/4] drew {args.n} synthetic garments into {data} ({time.perf_counter() - start:.0f} s)")
    cfg = load_config(resolve_config(args.config), [f"data.root={data}", f"out_dir={out}", "name=run", *args.overrides])
    run = fit(cfg)
    print(f"[2/4] trained {cfg.model.backbone} into {run} ({time.perf_counter() - start:.0f} s)")
    metrics = eval_run(run, "val")
    print(metrics.table())
    print(f"[3/4] evaluated on the synthetic val split: {run / 'eval_val.txt'} and eval_val.json")
    n = predict_split(run, "test", run / "prediction.txt")
    print(f"[4/4] wrote the challenge file for test ({n} lines): {run / 'prediction.txt'}")
    print(f"\ndone in {time.perf_counter() - start:.0f} s. Outputs:")
    for label, path in [
        ("data", data),
        ("run folder", run),
        ("metrics per epoch", run / "metrics.csv"),
        ("best weights", run / "best.safetensors"),
        ("val metrics", run / "eval_val.txt"),
        ("test predictions", run / "prediction.txt"),
        ("training log", run / "train.log"),
    ]:
        print(f"  {label:<18} {path}")


def _search(args: argparse.Namespace) -> int:
    from fashattr.catalog.search import contact_sheet, open_catalog, search, write_matches

    result = search(open_catalog(args.db), args.conditions, args.min_prob, args.model, args.limit, args.sure)
    write_matches(result, args.format, sys.stdout)
    if args.sheet:
        print(f"contact sheet: {contact_sheet(result, args.sheet)}", file=sys.stderr)
    return 0


def _export_labels(args: argparse.Namespace) -> None:
    from fashattr.catalog.export import export_labels
    from fashattr.catalog.search import open_catalog

    info = export_labels(open_catalog(args.db), args.format, args.out, args.model, args.image_root)
    extra = f"; Label Studio labeling config: {info['config']}" if "config" in info else ""
    print(f"{info['images']} image(s) of model {info['model_id'][:12]} -> {info['out']}{extra}", file=sys.stderr)


def _similar(args: argparse.Namespace) -> None:
    from fashattr.catalog.search import open_catalog
    from fashattr.catalog.similar import bundle_model_id, format_rows, similar
    from fashattr.deploy.runtime import Runtime

    model_id, runtime = None, None  # without --bundle: the catalog's most recent model and its stored embeddings
    if args.bundle:
        model_id = bundle_model_id(args.bundle)
        runtime = Runtime.from_bundle(args.bundle, backend=args.backend)
    same = [g.strip() for g in args.same.split(",") if g.strip()] if args.same else []
    res = similar(open_catalog(args.db), args.photo, runtime, model_id, args.k, same, args.index, args.index_cache)
    rows: list[dict[str, object]] = [{"path": n.path, "score": f"{n.score:.4f}", **n.classes} for n in res.neighbours]
    if args.format == "jsonl":
        rows = [{"path": n.path, "sha256": n.sha256, "score": n.score, "classes": n.classes} for n in res.neighbours]
    print(f"query: {' '.join(f'{g}={c}' for g, c in res.query.items())} ({res.index} index)", file=sys.stderr)
    sys.stdout.write(format_rows(rows, args.format))


def _duplicates(args: argparse.Namespace) -> None:
    import dataclasses

    from fashattr.catalog.search import open_catalog
    from fashattr.catalog.similar import duplicates, format_rows

    pairs = duplicates(
        open_catalog(args.db),
        args.threshold,
        args.model,
        include_missing=args.include_missing,
        index_cache=args.index_cache,
    )
    rows = [dataclasses.asdict(p) for p in pairs]
    if args.format == "table":
        rows = [{"kind": p.kind, "similarity": f"{p.similarity:.4f}", "a": p.a, "b": p.b} for p in pairs]
    sys.stdout.write(format_rows(rows, args.format))
    identical = sum(p.kind == "identical" for p in pairs)
    print(f"{identical} byte-identical pair(s), {len(pairs) - identical} near-duplicate pair(s)", file=sys.stderr)


BACKEND_CHOICES = ("auto", "torch", "onnx", "onnx-int8")  # deploy.runtime.BACKEND_CHOICES, without its imports
BACKEND_HELP = (
    "auto (default, the same for predict, serve, tag and similar): the bundle's fp32 ONNX model when it has one, "
    "else torch (a run folder: torch); onnx-int8 only when asked for"
)
DECODINGS = {  # what each decoding mode is for, in the words calibrate prints
    "accuracy": "'accuracy' gets the most labels right (overall accuracy): a shop's catalog tags",
    "balanced": "'balanced' gives rare classes their due (average per-class accuracy: the challenge's metric) at "
    "some cost in overall accuracy; `fashattr calibrate RUN --default accuracy` for catalog tags",
}
DECODE_HELP = (
    "decoding mode: 'accuracy' (best overall accuracy), 'balanced' (best average per-class accuracy) or 'none' "
    "(the raw model); default: the one `fashattr calibrate` saved (none without calibration.json)"
)
TTA_HELP = (
    "test-time augmentation: 'none', 'flip' (mirror), 'zoom' (centre 87.5%% scaled up) or 'flip+zoom'; "
    "logits are averaged over the views (each view costs one more forward pass)"
)


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
        max_connections=args.max_connections,
        decode=args.decode,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashattr", description="Multi-attribute fashion classifiers.")
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("train", help="train a model from a YAML config (plus key=value overrides)")
    p.add_argument("config", nargs="?", help="YAML config or recipe name (a run's config.yaml reproduces that run)")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.epochs=5 optim.lr=1e-3")
    p.add_argument("--resume", metavar="RUN", help="continue a killed run exactly where it stopped")
    p.set_defaults(func=_train)

    p = sub.add_parser("lr-find", help="learning-rate range test: a PNG of loss against lr and a suggested lr")
    p.add_argument("config", nargs="?", help="YAML config or recipe name")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument("--start", type=float, default=1e-7)
    p.add_argument("--end", type=float, default=10.0)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--rule", default="valley", choices=["valley", "steepest"], help="how to pick the suggestion")
    p.add_argument("--out", default="lr_find", help="folder for lr_find.png and lr_find.json")
    p.set_defaults(func=_lr_find)

    p = sub.add_parser("tune", help="Optuna search over the config's tune: space, under size/latency budgets")
    p.add_argument("config", help="YAML config with a tune: section")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides of the base config")
    p.add_argument("--trials", type=int, default=20, help="finished trials the study should hold (resumes)")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite in --out); share one to run workers")
    p.add_argument("--study", help="study name (default: the config file's name)")
    p.add_argument("--out", default="runs/tune", help="folder for study.db, trials/ and best.yaml")
    p.add_argument(
        "--baseline",
        action="store_true",
        help="a new study's first trial is the config's own values of the searched keys (the guess, measured alike)",
    )
    p.set_defaults(func=_tune)

    p = sub.add_parser("compare", help="one table of runs and a PNG of their curves overlaid")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--metric", default="avg_class_acc", help="the metrics.csv column to plot")
    p.add_argument("--out", default="compare", help="folder for compare.png, .csv and .json")
    p.set_defaults(func=_compare)

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

    # The options every command on a trained model shares; its positional argument is each command's own (predict
    # also takes bundles).
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--data", help="dataset root, if not the one in the run's config")
    options.add_argument("--weights", default="best", choices=["best", "last"])
    options.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, or auto")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("run", help="a run folder written by `fashattr train`")
    common.add_argument("--data", help="dataset root, if not the one in the run's config")
    common.add_argument("--weights", default="best", choices=["best", "last"])
    common.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, or auto")

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
        "pseudo-label",
        parents=[common],
        help="self-training: label unlabeled splits with a run; train with data.pseudo_labels=FILE",
        description="Per image and group, the run's top class when its probability reaches the threshold, else "
        "unknown (masked in the loss); multi-label classes: 1 at p >= t, 0 at p <= 1 - t, else unknown. The "
        "training split, the selection split and their holdouts are refused.",
    )
    p.add_argument("--splits", help="comma-separated splits (default: the run's data.unlabeled_splits)")
    p.add_argument("--threshold", type=float, default=0.9, help="confidence threshold of every group (0.5-1)")
    p.add_argument(
        "--group-threshold", action="append", default=[], metavar="GROUP=T", help="one group's own threshold"
    )
    p.add_argument("--tta", help=TTA_HELP)
    p.add_argument("--out", default="pseudo.json", help="the pseudo-label file (JSON)")
    p.set_defaults(func=_pseudo_label)

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
        "tag",
        help="tag a catalog of images into a database, once per image and model (resumable)",
        description="Every image of the SOURCES is tagged once per model (the bundle hash) into the catalog "
        "database: a re-run skips what is done, the same photo under two names is inferred once, each batch "
        "commits in one transaction (kill it at any moment and run it again). Bad images go to the errors "
        "table and the run goes on; the exit code is non-zero only on a fatal error.",
    )
    p.add_argument("model", help="a bundle folder (fashattr export) or a run folder (exported on the fly)")
    p.add_argument("sources", nargs="+", help="folders (recursive), image files, .csv/.parquet lists (column path)")
    p.add_argument("--db", default="sqlite:///catalog.db", help="SQLAlchemy URL (default sqlite:///catalog.db)")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help=BACKEND_HELP)
    p.add_argument("--batch-size", type=int, default=32, help="images per model call and per transaction")
    p.add_argument("--workers", type=int, default=2, help="decode threads (local) or model actors (ray)")
    p.add_argument("--threads", type=int, default=0, help="model threads (0 = the backend's default)")
    p.add_argument("--engine", default="local", choices=["local", "ray"])
    p.add_argument("--decode", help=DECODE_HELP + "; each row records it")
    p.add_argument("--ray-address", help="Ray cluster address (ray start --head prints it); default: a local Ray")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=_tag)

    p = sub.add_parser("synth", help="draw synthetic garments in the FashionDataset layout")
    p.add_argument("out", help="output folder")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_synth)

    p = sub.add_parser("demo", help="synthesize garments, train, evaluate and predict, in a few minutes")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.epochs=3")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default="recipe:demo_synthetic", help="YAML config or recipe name")
    p.set_defaults(func=_demo)

    data = sub.add_parser("data", help="look at a dataset: audit it, or draw samples").add_subparsers(
        dest="data_verb", required=True
    )
    p = data.add_parser("check", help="audit: counts, distributions, missing/corrupt/small images, duplicates")
    p.add_argument("data", nargs="?", help="dataset root or label table (default: the --config's data.root)")
    p.add_argument("--format", help="dataset layout (default: the --config's, else told from the path: .csv = csv)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a reader option (repeatable)")
    p.add_argument("--config", help="take data.root, data.format and data.reader_options from this config or recipe")
    p.add_argument("--min-size", type=int, default=32, help="flag images whose shorter side is below this")
    p.add_argument("--min-count", type=int, default=5, help="flag classes with fewer images than this in a split")
    p.add_argument("--out", default="data_check", help="folder for report.json and class_distribution.png")
    p.set_defaults(func=_data_check)
    p = data.add_parser("show", help="a grid PNG of samples with their labels (and augmentations)")
    p.add_argument("data", help="dataset root")
    p.add_argument("--format", help="dataset layout (default: the config's data.format)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a reader option (repeatable)")
    p.add_argument("--split", default="train")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--size", type=int, help="side in pixels (default: the config's data.image_size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", action="store_true", help="add each sample after the training augmentations")
    p.add_argument("--config", help="take preprocessing and augmentations from this YAML config or recipe")
    p.add_argument("--out", default="samples.png")
    p.set_defaults(func=_data_show)
    p = data.add_parser(
        "init",
        help="start from your data: show its groups and classes, flag typos, write a config for the job",
        description="Read a label table (CSV / Parquet) or folder, show the groups and classes found with their "
        "counts, flag likely typos, rare classes and empty cells, and write a config with the classes declared "
        "and the recipe for the job: shop (overall accuracy, for catalog tags) or challenge (average per-class).",
    )
    p.add_argument("data", help="label table (.csv, .parquet) or dataset folder")
    p.add_argument("--job", choices=["shop", "challenge"], default="shop", help="what the model is for (default shop)")
    p.add_argument("--format", help="dataset layout (default: told from the path: .csv = csv)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a reader option (repeatable)")
    p.add_argument("--min-count", type=int, default=5, help="flag classes with fewer images than this")
    p.add_argument("--out", default="fashattr.yaml", help="the config to write (an existing file is kept)")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(func=_data_init)
    p = sub.add_parser(
        "search",
        help="catalog images whose predictions match GROUP=CLASS conditions (all of them), best first",
        description="Searches a database written by `fashattr tag`: one SQL query on the predictions index. "
        "Default model: the one registered most recently.",
    )
    p.add_argument("conditions", nargs="+", metavar="GROUP=CLASS", help="e.g. sleeve=long_sleeve pattern=floral")
    p.add_argument("--db", default="sqlite:///catalog.db", help="SQLAlchemy URL of the catalog")
    p.add_argument("--min-prob", type=float, default=0.0, help="each condition's probability at least this")
    p.add_argument("--sure", action="store_true", help='leave out answers tagged as unsure (the JSON\'s "unsure")')
    p.add_argument("--model", help="model id (or a unique prefix); default the most recent")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--format", default="table", choices=["table", "csv", "jsonl"])
    p.add_argument("--sheet", metavar="PNG", help="also draw a contact sheet of the matches")
    p.set_defaults(func=_search)

    p = sub.add_parser(
        "export-labels",
        help="a model's catalog predictions as Label Studio pre-annotations (+ labeling config) or CSV/Parquet",
    )
    p.add_argument("--db", default="sqlite:///catalog.db", help="SQLAlchemy URL of the catalog")
    p.add_argument("--format", required=True, choices=["label-studio", "csv", "parquet"])
    p.add_argument("--out", help="output file (default labels.json / labels.csv / labels.parquet)")
    p.add_argument("--model", help="model id (or a unique prefix); default the most recent")
    p.add_argument(
        "--image-root",
        help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT: image paths become /data/local-files/?d=<relative path>",
    )
    p.set_defaults(func=_export_labels)

    p = sub.add_parser(
        "similar",
        help="the catalog items nearest to a photo (cosine of the model's embeddings), optionally sharing classes",
        description="The photo is embedded with --bundle, which must be the bundle the catalog was tagged with "
        "(its hash is the catalog's model id; the database does not record where bundles live).",
    )
    p.add_argument("photo", help="an image file")
    p.add_argument(
        "--bundle",
        help="the bundle the catalog was tagged with, to embed a new photo (default: the catalog's most recent "
        "model, for a photo it holds)",
    )
    p.add_argument("--db", default="sqlite:///catalog.db", help="SQLAlchemy URL of the catalog")
    p.add_argument("-k", type=int, default=10, help="how many neighbours")
    p.add_argument("--same", help="comma-separated groups whose predicted class must equal the photo's")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help=BACKEND_HELP)
    p.add_argument("--index", default="auto", choices=["auto", "flat", "hnsw", "ivf"], help="vector index kind")
    p.add_argument("--index-cache", metavar="DIR", help="keep the vector index here between calls (large catalogs)")
    p.add_argument("--format", default="table", choices=["table", "csv", "jsonl"])
    p.set_defaults(func=_similar)

    p = sub.add_parser(
        "duplicates", help="byte-identical photos under several paths, then near-duplicates by embedding"
    )
    p.add_argument("--db", default="sqlite:///catalog.db", help="SQLAlchemy URL of the catalog")
    p.add_argument("--threshold", type=float, default=0.995, help="cosine similarity of near-duplicates")
    p.add_argument("--model", help="model whose embeddings to compare (default the most recent)")
    p.add_argument("--include-missing", action="store_true", help="also paths whose file no longer exists")
    p.add_argument("--index-cache", metavar="DIR", help="keep the vector index here between calls (large catalogs)")
    p.add_argument("--format", default="table", choices=["table", "csv", "jsonl"])
    p.set_defaults(func=_duplicates)
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
    p.add_argument("--db", help="a catalog database URL (fashattr tag): adds /v1/search and the /v1/gallery page")
    p.set_defaults(func=_serve)

    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # glibc keeps freed tensors' memory: much less kernel time on CPU
    try:
        status = args.func(args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return status or 0
