"""The one inference path: the runtime's pixels and logits equal training-time evaluation's, it imports
no training code, and its backends agree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_overrides, untrained_run

from fashattr.config import load_config
from fashattr.deploy.bundle import write_bundle
from fashattr.deploy.runtime import Runtime
from fashattr.engine.trainer import fit
from fashattr.schema import ai6126_schema

FORBIDDEN = (
    "fashattr.engine",
    "fashattr.data.formats",
    "fashattr.data.augment",
    "fashattr.data.loader",
    "fashattr.data.prepare",
    "fashattr.data.cache",
    "fashattr.inference",
)


@pytest.fixture(scope="module")
def run(tiny_data: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    return fit(load_config(None, tiny_overrides(tiny_data, cache_dir, out, name="rt", **{"train.epochs": 1})))


@pytest.fixture(scope="module")
def onnx_bundle(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime")
    return write_bundle(run, tmp_path_factory.mktemp("bundles") / "b", formats=("onnx",))


@pytest.mark.realdata
def test_pixels_and_logits_equal_training_time_evaluation(real_data: Path, tmp_path: Path):
    from fashattr.data.formats import create_reader
    from fashattr.data.prepare import cache_table
    from fashattr.data.table import Table
    from fashattr.inference import predict_scores

    run = untrained_run(real_data, tmp_path)
    cfg = load_config(run / "config.yaml")
    table = create_reader("ai6126", str(real_data), {}).read("train")
    rows = np.arange(0, 5000, 50)  # 100 real photos, portrait and landscape
    table = Table(table.root, [table.paths[r] for r in rows], split="train")
    cache = cache_table(table, cfg.data, progress=False)  # what training and `fashattr eval` feed the model

    rt = Runtime.from_run(run)
    pixels = np.stack([rt.preprocess(table.file(i)) for i in range(len(table))])
    assert pixels.dtype == np.uint8 and pixels.shape == (100, 64, 64, 3)
    assert np.array_equal(pixels, cache.pixels)  # identical bytes, image by image

    model = rt.backend.model  # type: ignore[attr-defined]
    want = predict_scores(model, cache.pixels, cfg.data.mean, cfg.data.std, 50, channels_last=True)
    got = {g: np.concatenate([rt.logits(pixels[:50])[g], rt.logits(pixels[50:])[g]]) for g in want}
    for g in want:
        assert got[g].dtype == np.float32 and np.array_equal(got[g], want[g]), g
    # The records are the decoding of exactly those logits.
    records = list(rt.predict_files([table.file(i) for i in range(len(table))], batch_size=50))
    classes = {g.name: g.classes for g in ai6126_schema().groups}
    for g in want:
        assert [r["groups"][g]["class"] for r in records] == [classes[g][k] for k in want[g].argmax(1)]


def test_runtime_imports_no_training_code(run: Path, tmp_path: Path, tiny_data: Path):
    bundle = write_bundle(run, tmp_path / "bundle")
    image = tiny_data / "img" / "00001.jpg"
    code = f"""
import sys
from fashattr.deploy.runtime import Runtime
from fashattr.cli import main
for rt in (Runtime.from_bundle({str(bundle)!r}), Runtime.from_run({str(run)!r})):
    rec = next(rt.predict_files([{str(image)!r}]))
    assert set(rec["groups"]) == {{"pattern", "sleeve", "length", "neckline", "fabric", "fit"}}, rec
assert main(["predict", {str(bundle)!r}, {str(image)!r}, "--out", {str(tmp_path / "p.jsonl")!r}, "--no-progress"]) == 0
print(sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r})))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_backends_agree(onnx_bundle: Path, tiny_data: Path):
    files = sorted((tiny_data / "img").glob("*.jpg"))[:40]
    torch_rt, onnx_rt = Runtime.from_bundle(onnx_bundle), Runtime.from_bundle(onnx_bundle, "onnx", threads=1)
    pixels = np.stack([torch_rt.preprocess(f) for f in files])
    a, b = torch_rt.logits(pixels), onnx_rt.logits(pixels)
    assert list(b) == [g.name for g in torch_rt.schema.groups]
    for g in a:
        assert b[g].shape == a[g].shape and np.abs(a[g] - b[g]).max() <= 1e-4, g

    def classes(rt: Runtime) -> list[list[str]]:
        return [[v["class"] for v in r["groups"].values()] for r in rt.predict_files(files, batch_size=16)]

    assert classes(onnx_rt) == classes(torch_rt)


def test_onnx_backend_needs_its_file(run: Path, tmp_path: Path):
    bundle = write_bundle(run, tmp_path / "plain")
    with pytest.raises(
        Exception, match=r"model.onnx: not in this bundle; export with `fashattr export RUN --format onnx`"
    ):
        Runtime.from_bundle(bundle, "onnx")
    with pytest.raises(ValueError, match=r"backend 'onnx' needs a bundle with ONNX files: `fashattr export"):
        Runtime.from_run(run, backend="onnx")
    with pytest.raises(ValueError, match=r"unknown backend 'tflite'"):
        Runtime.from_bundle(bundle, "tflite")
