"""The onnxruntime session options every fashattr ONNX session uses (chosen by benchmarks/inference.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from fashattr.portable import bundle as bundle_format  # noqa: E402
from fashattr.portable import onnx_runner  # noqa: E402


def test_session_options_values() -> None:
    opts = onnx_runner.session_options(2)
    assert opts.intra_op_num_threads == 2
    assert opts.inter_op_num_threads == 1
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.enable_cpu_mem_arena
    # threads sleep between operators: spinning ones took the decode threads' cores in predict
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert onnx_runner.session_options(None).intra_op_num_threads == 0  # 0: onnxruntime chooses


def _tiny_bundle(folder: Path, size: int = 4) -> np.ndarray:
    """A bundle whose model.onnx maps uint8 (N, S, S, 3) pixels to one group's 2 logits by a matmul."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.arange(size * size * 3 * 2, dtype=np.float32).reshape(-1, 2) / 100.0
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Flatten", ["f"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["g"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", size, size, 3])],
        [helper.make_tensor_value_info("g", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    config = {
        "format": bundle_format.FORMAT,
        "format_version": bundle_format.FORMAT_VERSION,
        "schema": {"groups": [{"name": "g", "kind": "single", "classes": ["a", "b"]}]},
        "preprocess": {"image_size": size, "fill": [124, 116, 104], "mean": [0.5] * 3, "std": [0.5] * 3},
        "decoding": {"multi_label_threshold_logit": 0.0, "calibration": None, "logit_adjust": None},
        "onnx": {"fp32": "model.onnx", "input": "image", "outputs": ["g"]},
    }
    (folder / "config.json").write_text(json.dumps(config))
    return w


def test_onnx_runner_uses_session_options(tmp_path: Path) -> None:
    w = _tiny_bundle(tmp_path)
    runner = onnx_runner.OnnxRunner(tmp_path, threads=2, verify=False)
    used = runner.session.get_session_options()
    assert used.intra_op_num_threads == 2
    assert used.inter_op_num_threads == 1
    assert used.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    batch = np.random.default_rng(0).integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    got = runner.logits(batch)["g"]
    np.testing.assert_allclose(got, batch.reshape(3, -1).astype(np.float32) @ w, rtol=1e-5)
