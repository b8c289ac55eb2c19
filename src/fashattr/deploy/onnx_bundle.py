"""The ONNX part of a bundle: ``model.onnx`` (and ``model.int8.onnx``) exported, checked and within the size
budget, and ``predict_onnx.py`` with ``fashattr_portable/``, the code that runs them without fashattr."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

import fashattr.portable
from fashattr.deploy.onnx import (
    DEFAULT_OPSET,
    FEATURES,
    INPUT_NAME,
    check_budget,
    export_onnx,
    file_mb,
    group_names,
    onnx_features_dim,
)
from fashattr.deploy.quantize import quantize_run

log = logging.getLogger("fashattr")


PORTABLE_PACKAGE = "fashattr_portable"  # fashattr.portable's name inside a bundle
LAUNCHER = '''"""Predict attributes with this bundle's ONNX model, without fashattr: only onnxruntime, NumPy and Pillow.

    python predict_onnx.py BUNDLE photo.jpg shop_folder/ [--int8] [--decode accuracy] [--out preds.jsonl]

The code is fashattr.portable, copied beside this file as fashattr_portable/.
"""

import sys
from pathlib import Path

sys.dont_write_bytecode = True  # a __pycache__ folder in the bundle would be a file its hashes.json does not list
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fashattr_portable.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
'''


def write_portable(folder: Path) -> None:
    """Copy :mod:`fashattr.portable` into ``folder`` as ``fashattr_portable/`` and write ``predict_onnx.py``,
    the command that runs it: the bundle's ONNX model then needs no fashattr (tests/test_portable.py runs
    it in an environment that has only onnxruntime, NumPy and Pillow)."""
    source = Path(fashattr.portable.__file__).parent
    target = folder / PORTABLE_PACKAGE
    target.mkdir(exist_ok=True)
    for module in sorted(source.glob("*.py")):
        shutil.copyfile(module, target / module.name)
    (folder / "predict_onnx.py").write_text(LAUNCHER, encoding="utf-8")


def export_bundle_onnx(
    model: nn.Module,
    config: dict[str, Any],
    folder: str | Path,
    run_dir: str | Path | None = None,
    int8: bool = False,
    calib_images: int = 200,
    opset: int = DEFAULT_OPSET,
    exporter: str = "dynamo",
) -> dict[str, Any]:
    """Write ``model.onnx`` (and ``model.int8.onnx``) plus ``predict_onnx.py`` into a bundle folder.

    Returns:
        The ``onnx`` entry of the bundle's config.json: file names, opset, input and output names,
        the exporter; with ``int8`` also the quantisation settings and ``int8_metrics`` (the holdout
        metric of the fp32 and the int8 file, measured on ``run_dir``'s data).

    Raises:
        ValueError: a file over ``model.max_mb``; int8 without a ``run_dir`` to calibrate on.
    """
    folder = Path(folder)
    if int8 and run_dir is None:
        raise ValueError("int8 quantisation calibrates on the run's training images: give run_dir")
    fp32 = export_onnx(model, config, folder / "model.onnx", opset, exporter, features=True)
    check_budget(fp32, config["model"].get("max_mb"))
    write_portable(folder)
    entry: dict[str, Any] = {
        "fp32": fp32.name,
        "opset": opset,
        "input": INPUT_NAME,
        "input_layout": "uint8 NHWC, letterboxed; normalised in the graph",
        "outputs": group_names(config),
        "features_output": FEATURES,
        "features_dim": int(onnx_features_dim(fp32)),
        "exporter": exporter,
        "torch": torch.__version__,
    }
    log.info("model.onnx: %.2f MB", file_mb(fp32))
    if int8:
        assert run_dir is not None
        entry.update(quantize_run(fp32, folder / "model.int8.onnx", config, run_dir, calib_images))
        check_budget(folder / "model.int8.onnx", config["model"].get("max_mb"))
    return entry
