"""Runtime.infer: logits and pooled features from one pass, on the torch backend and the ONNX bundles
(fp32 and int8); the extra ONNX output leaves the logits, predict_onnx.py and old bundles' errors alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import tiny_overrides

from fashattr.config import load_config
from fashattr.deploy.bundle import load_bundle_torch, write_bundle
from fashattr.deploy.onnx import onnx_logits
from fashattr.deploy.runtime import Runtime
from fashattr.engine.trainer import fit
from fashattr.errors import BundleError
from fashattr.portable import bundle as bundle_format

GROUPS = ["pattern", "sleeve", "length", "neckline", "fabric", "fit"]


@pytest.fixture(scope="module")
def bundle(tiny_data: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    over = tiny_overrides(tiny_data, cache_dir, out, name="emb", **{"train.epochs": 1})
    run = fit(load_config(None, over))
    return write_bundle(run, tmp_path_factory.mktemp("bundles") / "emb", formats=("onnx-int8",), calib_images=32)


@pytest.fixture(scope="module")
def pixels(bundle: Path, tiny_data: Path) -> np.ndarray:
    rt = Runtime.from_bundle(bundle, backend="torch")
    return np.stack([rt.preprocess(f) for f in sorted((tiny_data / "img").glob("*.jpg"))[:24]])


def test_torch_infer_is_features_then_heads_in_one_pass(bundle: Path, pixels: np.ndarray):
    rt = Runtime.from_bundle(bundle, backend="torch")
    logits, features = rt.infer(pixels)
    model, _ = load_bundle_torch(bundle)
    assert features.dtype == np.float32 and features.shape == (24, model.heads["pattern"].in_features)
    assert rt.has_features and list(logits) == GROUPS
    plain = rt.logits(pixels)
    for g in GROUPS:
        np.testing.assert_allclose(logits[g], plain[g], rtol=0, atol=1e-5)
    # The features are what the heads read: the head applied to them gives the logits.
    head = model.heads["sleeve"]
    with torch.no_grad():
        again = head(torch.from_numpy(features)).numpy()
    np.testing.assert_allclose(again, logits["sleeve"], rtol=0, atol=1e-5)


def test_onnx_features_agree_with_torch_and_logits_are_unchanged(bundle: Path, pixels: np.ndarray):
    config = json.loads((bundle / "config.json").read_text())
    assert config["onnx"]["outputs"] == GROUPS and config["onnx"]["features_output"] == "__features__"
    graph = onnx.load(str(bundle / "model.onnx")).graph
    assert [o.name for o in graph.output] == [*GROUPS, "__features__"]
    t_logits, t_feat = Runtime.from_bundle(bundle, backend="torch").infer(pixels)
    assert config["onnx"]["features_dim"] == t_feat.shape[1]
    fp32 = Runtime.from_bundle(bundle, backend="onnx")
    o_logits, o_feat = fp32.infer(pixels)
    np.testing.assert_allclose(o_feat, t_feat, rtol=1e-4, atol=1e-4)
    plain = fp32.logits(pixels)  # the logits-only run fetches the group outputs alone
    assert list(plain) == GROUPS
    for g in GROUPS:
        np.testing.assert_allclose(o_logits[g], t_logits[g], rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(plain[g], o_logits[g])
    assert list(onnx_logits(bundle / "model.onnx", pixels)) == GROUPS
    # int8: the same features up to quantisation; nearest neighbours by cosine mostly kept.
    q_logits, q_feat = Runtime.from_bundle(bundle, backend="onnx-int8").infer(pixels)
    assert q_feat.shape == t_feat.shape and list(q_logits) == GROUPS
    cos = (q_feat * t_feat).sum(1) / (np.linalg.norm(q_feat, axis=1) * np.linalg.norm(t_feat, axis=1))
    assert cos.min() > 0.9, cos


def test_predict_onnx_py_ignores_the_features_output(bundle: Path, tiny_data: Path, tmp_path: Path):
    out = tmp_path / "p.jsonl"
    photos = sorted((tiny_data / "img").glob("*.jpg"))[:5]
    proc = subprocess.run(
        [sys.executable, str(bundle / "predict_onnx.py"), str(bundle), *map(str, photos), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 5 and all(list(r["groups"]) == GROUPS for r in records)
    expected = Runtime.from_bundle(bundle, backend="onnx").predict_arrays(
        np.stack([bundle_format.preprocess(json.loads((bundle / "config.json").read_text()), p) for p in photos])
    )
    assert [r["groups"] for r in records] == [e["groups"] for e in expected]


def test_an_old_bundle_without_the_features_output_says_to_re_export(bundle: Path, pixels: np.ndarray, tmp_path: Path):
    old = Path(shutil.copytree(bundle, tmp_path / "old"))
    model = onnx.load(str(old / "model.onnx"))
    model.graph.output.pop()  # the graph as bundles were exported before the features output
    onnx.save(model, str(old / "model.onnx"))
    (old / "hashes.json").write_text(json.dumps(bundle_format.compute_hashes(old)))
    rt = Runtime.from_bundle(old, backend="onnx")
    assert not rt.has_features
    assert list(rt.logits(pixels)) == GROUPS  # predicting still works
    with pytest.raises(BundleError) as e:
        rt.infer(pixels)
    assert str(e.value) == (
        f"{old / 'model.onnx'}: has no '__features__' output (exported by an older fashattr); re-export the run "
        "with `fashattr export RUN --format onnx` (or onnx-int8) to get image embeddings"
    )
