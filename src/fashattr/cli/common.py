"""What the subcommands share: the recipe lookup, the dataset arguments, and the help texts of shared options."""

from __future__ import annotations

import argparse
import difflib
import importlib.resources
import os
from pathlib import Path

from fashattr.errors import ConfigError

Subcommands = argparse._SubParsersAction  # the type of ``parser.add_subparsers()``

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


def config_and_overrides(config: str | None, overrides: list[str]) -> tuple[Path | None, list[str]]:
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


def reader_options(items: list[str]) -> dict:
    """``--option key=value`` pairs (values parsed as YAML) into reader options."""
    import yaml

    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {item!r} is not key=value (e.g. --option path_column=file)")
        out[key] = yaml.safe_load(raw)
    return out


def dataset_arguments(args: argparse.Namespace) -> tuple[str, str, dict]:
    """(root, format, reader options) from ``data [--format] [--option] [--config]``: flags over the config, and
    a format told from the path when neither names one."""
    from fashattr.data.formats import infer_format

    root, fmt, options = args.data, args.format, reader_options(args.option)
    if args.config:
        from fashattr.config import load_config

        cfg = load_config(resolve_config(args.config))
        root = root or cfg.data.root
        fmt = fmt or cfg.data.format
        options = options or dict(cfg.data.reader_options)
    if not root:
        raise ValueError("name the dataset (a folder or a label table), or pass --config with a data.root")
    return root, fmt or infer_format(root), options
