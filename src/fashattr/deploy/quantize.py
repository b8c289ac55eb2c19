"""Static int8 quantisation of an exported model, and its holdout metric before and after.

onnxruntime's recipe: its pre-processing first (symbolic shape inference, graph optimisation), then
``quantize_static`` in QDQ format with per-channel int8 weights and uint8 activations whose ranges
are calibrated on training images. The uint8 image input and the in-graph normalisation stay as
exported; every runtime feeds the same pixels to either file.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("fashattr")

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over a uint8 NHWC array."""

    def __init__(self, images: np.ndarray, input_name: str, batch_size: int) -> None:
        self.images, self.input_name, self.batch_size, self.pos = images, input_name, batch_size, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.images):
            return None
        batch = np.ascontiguousarray(self.images[self.pos : self.pos + self.batch_size])
        self.pos += self.batch_size
        return {self.input_name: batch}

    def rewind(self) -> None:
        self.pos = 0


def quantize_int8(
    onnx_path: str | Path,
    out_path: str | Path,
    calibration: np.ndarray,
    per_channel: bool = True,
    method: str = "minmax",
    reduce_range: bool = True,
    batch_size: int = 16,
) -> Path:
    """Write a static int8 (QDQ) copy of ``onnx_path``, calibrated on uint8 NHWC ``calibration`` images.

    Args:
        onnx_path: the fp32 model exported by :func:`fashattr.deploy.onnx.export_onnx`.
        out_path: the int8 model to write.
        calibration: ``(N, S, S, 3)`` uint8 images (training images, prepared like every input).
        per_channel: one weight scale per output channel (keeps accuracy; the default).
        method: activation range calibration: ``minmax``, ``percentile`` or ``entropy``.
        reduce_range: 7-bit weights (the default). On x86 CPUs without VNNI (AVX2 only, like the AMD EPYC
            this project measures on) onnxruntime multiplies uint8 activations by int8 weights with
            ``vpmaddubsw``, whose 16-bit sums saturate with full-range weights: on a trained resnet10t
            only 78% of the int8 model's predictions equalled fp32's without it, 97% with it
            (benchmarks/int8_quality.py). CPUs with VNNI lose next to nothing by it.
        batch_size: calibration batch size (lowered to a divisor of the image count: the histogram
            calibrators need equal batches).

    Returns:
        ``out_path``.
    """
    from onnxruntime.quantization import CalibrationMethod

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if method not in methods:
        raise ValueError(f"unknown calibration method {method!r}; choose from {list(CALIBRATION_METHODS)}")
    if calibration.dtype != np.uint8 or calibration.ndim != 4 or calibration.shape[-1] != 3 or not len(calibration):
        raise ValueError(
            f"calibration images must be uint8 (N, S, S, 3) with N > 0, got {calibration.dtype} {calibration.shape}"
        )
    out_path = Path(out_path)
    batch_size = max(d for d in range(1, min(batch_size, len(calibration)) + 1) if len(calibration) % d == 0)
    # onnxruntime's quantiser warns on the root logger once per 1-D weight (LayerNorm) that per-channel
    # does not apply to; those stay per-tensor, as they should. Keep the CLI's output readable.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        _quantize(onnx_path, out_path, calibration, per_channel, methods[method], reduce_range, batch_size)
    finally:
        root.setLevel(level)
    return out_path


def _quantize(
    onnx_path: str | Path,
    out_path: Path,
    calibration: np.ndarray,
    per_channel: bool,
    method: Any,
    reduce_range: bool,
    batch_size: int,
) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="fashattr-quant-") as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        quant_pre_process(str(onnx_path), str(pre))
        quantize_static(
            str(pre),
            str(out_path),
            _Batches(calibration, "image", batch_size),  # duck-typed CalibrationDataReader
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
        )


def quantize_run(
    fp32_path: str | Path,
    out_path: str | Path,
    config: dict[str, Any],
    run_dir: str | Path,
    calib_images: int = 200,
    method: str = "minmax",
    seed: int = 0,
    reduce_range: bool = True,
) -> dict[str, Any]:
    """Quantise a run's exported model on ``calib_images`` of its training images and measure both files
    on its test holdout (the selection holdout when it has none).

    Returns:
        The int8 part of the bundle config's ``onnx`` entry: ``int8`` (file name), ``quantization``
        (settings) and ``int8_metrics`` (split, images, avg_class_acc / overall_acc of fp32 and int8, and
        the change in points of average per-class accuracy).
    """
    from fashattr.config import load_config
    from fashattr.data.prepare import inference_data, load_train_eval
    from fashattr.deploy.onnx import onnx_logits  # below this module: no cycle
    from fashattr.metrics import compute_metrics

    cfg = load_config(Path(run_dir) / "config.yaml")
    # At the size the model is used at (data.eval_size when set): calibration images and both measurements.
    schema, train, select, test = load_train_eval(inference_data(cfg.data), progress=cfg.train.progress)
    rng = np.random.default_rng(seed)
    n = min(calib_images, len(train))
    if n <= 0:
        raise ValueError(f"{run_dir}: no training images to calibrate int8 on (calib_images={calib_images})")
    rows = np.sort(rng.choice(train.rows, n, replace=False))
    quantize_int8(fp32_path, out_path, train.images[rows], method=method, reduce_range=reduce_range)
    entry: dict[str, Any] = {
        "int8": Path(out_path).name,
        "quantization": {
            "format": "QDQ",
            "weights": "int8 per-channel" + (" (7-bit range)" if reduce_range else ""),
            "activations": "uint8",
            "calibration": method,
            "calibration_images": n,
            "calibration_seed": seed,
            "preprocess": "onnxruntime.quantization.shape_inference.quant_pre_process",
        },
    }
    split = test if test is not None and len(test) else select
    if split is None or not len(split) or split.labels is None:
        log.warning("int8: no labelled holdout in %s to measure the int8 model on", run_dir)
        return entry
    images = split.pixels()
    result: dict[str, Any] = {"split": split.name, "images": len(images)}
    for name, path in (("fp32", fp32_path), ("int8", out_path)):
        summary = compute_metrics(schema, split.labels, onnx_logits(path, images)).summary()
        result[name] = {k: summary[k] for k in ("avg_class_acc", "overall_acc") if summary.get(k) is not None}
    if "avg_class_acc" in result["fp32"] and "avg_class_acc" in result["int8"]:
        result["avg_class_acc_change_points"] = round(
            100 * (result["int8"]["avg_class_acc"] - result["fp32"]["avg_class_acc"]), 3
        )
    entry["int8_metrics"] = result
    log.info(
        "int8 on %s (%d images): fp32 %s -> int8 %s",
        split.name,
        len(images),
        _fmt(result["fp32"]),
        _fmt(result["int8"]),
    )
    return entry


def _fmt(m: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in m.items())
