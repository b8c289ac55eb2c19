"""``fashattr data check``, ``data show``, ``data init``: looking at a dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fashattr.cli.common import (
    Subcommands,
    dataset_arguments,
    reader_options,
    resolve_config,
)


def _data_check(args: argparse.Namespace) -> int:
    import json

    from fashattr.data.check import audit, format_report, plot_distribution
    from fashattr.fileio import atomic_write_text

    root, fmt, options = dataset_arguments(args)
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
    from fashattr.data.starter import starter_config
    from fashattr.errors import DatasetError
    from fashattr.fileio import atomic_write_text

    out = Path(args.out)
    if out.exists() and not args.force:
        raise ValueError(f"{out} exists: pass --force to overwrite it, or --out another file")
    fmt = args.format or infer_format(args.data)
    command = "fashattr " + shlex.join(sys.argv[1:])
    text, recipe, _ = starter_config(
        args.data,
        fmt,
        reader_options(args.option),
        args.job,
        resolve_config,
        args.min_count,
        command,
        out.parent,
    )
    atomic_write_text(out, text)
    cfg = load_config(out)  # what was written reads back as a valid config
    print("\n".join(line[2:] for line in text.splitlines() if line.startswith("# ")))
    print(f"\nwritten: {out} (recipe {recipe}, data.root {cfg.data.root})")
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
    options = reader_options(args.option) or cfg.data.reader_options
    # Flags given override the config; flags left out keep its format (and its image_size below).
    fmt = args.format or cfg.data.format
    cfg = replace(cfg, data=replace(cfg.data, root=args.data, format=fmt, reader_options=options))
    out = show_samples(cfg, args.split, args.n, args.out, args.augment, args.seed, args.size)
    print(f"wrote {out}")


def add_commands(sub: Subcommands, common: argparse.ArgumentParser, options: argparse.ArgumentParser) -> None:
    """Register this module's subcommands on ``sub``; ``common``: the run-folder argument and options every command
    on a trained model shares, ``options``: the same options without the positional argument."""
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
        "and the recipe for the job: shop (overall accuracy, for catalog tags; shop_probe below 3000 labelled photos, "
        "shop_pretrained from 3000) or challenge (average per-class).",
    )
    p.add_argument("data", help="label table (.csv, .parquet) or dataset folder")
    p.add_argument("--job", choices=["shop", "challenge"], default="shop", help="what the model is for (default shop)")
    p.add_argument("--format", help="dataset layout (default: told from the path: .csv = csv)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a reader option (repeatable)")
    p.add_argument("--min-count", type=int, default=5, help="flag classes with fewer images than this")
    p.add_argument("--out", default="fashattr.yaml", help="the config to write (an existing file is kept)")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(func=_data_init)
