"""``fashattr VERB ...``: each subcommand parses its arguments, then calls one library function.

The subcommands live by area: :mod:`.train` (making runs), :mod:`.evaluate` (measuring them), :mod:`.model`
(predict, export, serve), :mod:`.data` (looking at a dataset), :mod:`.catalog` (tag, search, similar),
:mod:`.wardrobe` (a person's clothes on the catalog).
"""

from __future__ import annotations

import argparse
import logging
import sys

from fashattr.cli import catalog, data, evaluate, model, train, wardrobe
from fashattr.cli.common import recipe_names, resolve_config
from fashattr.errors import USER_ERRORS
from fashattr.memory import keep_freed_memory

__all__ = ["build_parser", "main", "recipe_names", "resolve_config"]


def build_parser() -> argparse.ArgumentParser:
    """The ``fashattr`` parser with every subcommand; each has ``func``, the handler ``main`` calls."""
    parser = argparse.ArgumentParser(prog="fashattr", description="Multi-attribute fashion classifiers.")
    sub = parser.add_subparsers(dest="verb", required=True)
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

    for area in (train, evaluate, model, data, catalog, wardrobe):
        area.add_commands(sub, common, options)
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
