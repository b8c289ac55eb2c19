"""``fashattr train``, ``lr-find``, ``tune``, ``pseudo-label``, ``synth``, ``demo``: making runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from fashattr.cli.common import (
    TTA_HELP,
    Subcommands,
    config_and_overrides,
    resolve_config,
)


def _train(args: argparse.Namespace) -> None:
    from fashattr.config import load_config
    from fashattr.engine.trainer import fit

    if args.resume:
        if args.config or args.overrides:
            raise SystemExit("--resume continues a run with its own config.yaml; give no config or overrides")
        run_dir = fit(resume=args.resume)
    else:
        run_dir = fit(load_config(*config_and_overrides(args.config, args.overrides)))
    print(f"run folder: {run_dir}")


def _lr_find(args: argparse.Namespace) -> None:
    from fashattr.config import load_config
    from fashattr.engine.lr_find import lr_find, save_lr_find

    cfg = load_config(*config_and_overrides(args.config, args.overrides))
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


def _tune(args: argparse.Namespace) -> None:
    from fashattr.tune import load_spec, run_study, trials_table, write_best

    config = resolve_config(args.config)
    spec = load_spec(config, args.overrides)
    study = run_study(spec, args.trials, args.out, args.storage, args.study or config.stem, args.baseline)
    print(trials_table(study))
    if any(t.value is not None for t in study.trials):
        best, recipe = study.best_trial, write_best(study, spec, args.out)
        print(f"\nbest: trial {best.number}, {spec.metric} {best.value:.4f}; recipe written to {recipe}")


def _pseudo_label(args: argparse.Namespace) -> None:
    from fashattr.engine.pseudo import pseudo_label

    splits = [s for s in (args.splits or "").split(",") if s] or None
    thresholds: float | dict[str, float] = args.threshold
    if args.group_threshold:
        thresholds = {k: float(v) for k, v in (item.split("=", 1) for item in args.group_threshold)}
        thresholds = {**dict.fromkeys(thresholds, args.threshold), **thresholds}
    result = pseudo_label(args.run, splits, thresholds, args.out, args.weights, args.device, args.tta, args.data)
    n = len(result["images"])
    check = result["selection_check"]
    print(f"{n} images of {result['splits']} labeled by {result['teacher']}; written to {args.out}")
    print(
        f"  {'group':<12} {'threshold':>9}  {'labeled here':>14}  "
        f"on {check['split']} ({check['images']} known): kept, right"
    )
    for g, k in result["kept"].items():
        c = check["groups"][g]
        right = "-" if c["precision"] is None else f"{c['precision']:.1%}"
        print(f"  {g:<12} {result['thresholds'][g]:9.2f}  {k:6d} ({k / max(n, 1):5.1%})  {c['coverage']:.1%}, {right}")


def _synth(args: argparse.Namespace) -> None:
    from fashattr.data.synthetic import synthesize

    out = synthesize(args.out, args.n, args.size, args.seed, looks=args.looks)
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


def add_commands(sub: Subcommands, common: argparse.ArgumentParser, options: argparse.ArgumentParser) -> None:
    """Register this module's subcommands on ``sub``; ``common``: the run-folder argument and options every command
    on a trained model shares, ``options``: the same options without the positional argument."""
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

    p = sub.add_parser("synth", help="draw synthetic garments in the FashionDataset layout")
    p.add_argument("out", help="output folder")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--looks",
        type=int,
        default=0,
        help="also write wardrobe.csv and this many looks (looks.csv) drawn under a known compatibility rule "
        "(data.synthetic.combines), for fashattr wardrobe",
    )
    p.set_defaults(func=_synth)

    p = sub.add_parser("demo", help="synthesize garments, train, evaluate and predict, in a few minutes")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.epochs=3")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default="recipe:demo_synthetic", help="YAML config or recipe name")
    p.set_defaults(func=_demo)
