"""Test-time augmentation: flip-TTA logits are the mean of the two passes, the same in the torch eval path,
the runtime on a run folder, a bundle on torch and ONNX, and the bundle's standalone predict_onnx.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_overrides
from PIL import Image

from fashattr.cli import main as cli
from fashattr.config import load_config
from fashattr.deploy.bundle import write_bundle
from fashattr.deploy.runtime import Runtime
from fashattr.engine.trainer import fit
from fashattr.inference import predict_scores
from fashattr.portable.decoding import decode
from fashattr.portable.tta import TTA_ZOOM, tta_apply, tta_view, tta_views


@pytest.fixture(scope="module")
def run(tiny_data: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    return fit(load_config(None, tiny_overrides(tiny_data, cache_dir, out, name="tta", **{"train.epochs": 1})))


def _images(tiny_data: Path, n: int = 6) -> list[Path]:
    return sorted((tiny_data / "img").glob("*.jpg"))[:n]


def test_views_and_their_errors():
    assert tta_views("none") == [(False, False)]
    assert tta_views(None) == [(False, False)]
    assert tta_views("flip") == [(False, False), (True, False)]
    assert tta_views("flip+zoom") == [(False, False), (True, False), (False, True), (True, True)]
    for bad in ("flop", "flip+flip", "zoom+"):
        with pytest.raises(ValueError, match=r"unknown tta .*choose from \['none', 'flip', 'zoom', 'flip\+zoom'\]"):
            tta_views(bad)
    x = np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3)
    assert np.array_equal(tta_view(x, True, False), x[:, :, ::-1])
    # zoom: the central round(8 * 0.875) = 7 pixels from offset 0, scaled back to 8 by Pillow's bilinear
    assert round(8 * TTA_ZOOM) == 7
    want = np.asarray(Image.fromarray(x[1, 0:7, 0:7]).resize((8, 8), Image.Resampling.BILINEAR))
    assert np.array_equal(tta_view(x, False, True)[1], want)
    # the mean of dicts and (dict, array) tuples, view by view
    out = tta_apply(lambda b: ({"g": b[:, 0, :, 0].astype(np.float32)}, b[:, 0, 0]), x, "flip")
    f = x.astype(np.float64)
    assert np.allclose(out[0]["g"], (f[:, 0, :, 0] + f[:, 0, ::-1, 0]) / 2)
    assert np.allclose(out[1], (f[:, 0, 0] + f[:, 0, -1]) / 2)


def test_flip_tta_is_the_mean_of_two_passes_on_every_path(run: Path, tiny_data: Path, tmp_path: Path):
    pytest.importorskip("onnxruntime")
    rt = Runtime.from_run(run)
    assert rt.tta == "none"
    paths = _images(tiny_data)
    x = np.stack([rt.preprocess(p) for p in paths])
    plain, mirrored = rt.logits(x), rt.logits(np.ascontiguousarray(x[:, :, ::-1]))
    by_hand = {g: (plain[g].astype(np.float64) + mirrored[g]) / 2 for g in plain}
    assert any(not np.allclose(plain[g], mirrored[g]) for g in plain)  # the flip changes something
    got = {"runtime (run folder)": Runtime.from_run(run, tta="flip").logits(x)}
    model = rt.backend.model  # type: ignore[attr-defined]
    cfg = load_config(run / "config.yaml")
    got["inference.predict_scores"] = predict_scores(model, x, cfg.data.mean, cfg.data.std, 4, tta="flip")
    bundle = write_bundle(run, tmp_path / "b", formats=("onnx",), tta="flip")
    assert json.loads((bundle / "config.json").read_text())["tta"] == "flip"
    got["bundle, torch"] = Runtime.from_bundle(bundle, "torch").logits(x)
    onnx_rt = Runtime.from_bundle(bundle, "onnx")
    assert onnx_rt.tta == "flip"  # the bundle's own setting, no flag needed
    got["bundle, onnx"] = onnx_rt.logits(x)
    for where, logits in got.items():
        for g, v in by_hand.items():
            assert np.allclose(logits[g], v, atol=2e-5), (where, g, np.abs(logits[g] - v).max())
    # The standalone runner honours the bundle's tta: its probabilities are those of the averaged logits.
    out = tmp_path / "p.jsonl"
    subprocess.run(
        [sys.executable, str(bundle / "predict_onnx.py"), str(bundle), *map(str, paths), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    want = decode(onnx_rt.config, by_hand)
    for rec, w in zip(records, want, strict=True):
        for g, entry in w["groups"].items():
            assert rec["groups"][g]["index"] == entry["index"]
            assert rec["groups"][g]["prob"] == pytest.approx(entry["prob"], abs=1e-4)


def test_cli_tta_on_eval_predict_and_export(run: Path, tiny_data: Path, tmp_path: Path):
    assert cli(["eval", str(run), "--tta", "flip"]) == 0
    report = json.loads((run / "eval_holdout.json").read_text())
    assert report["tta"] == "flip"
    assert cli(["eval", str(run)]) == 0
    assert json.loads((run / "eval_holdout.json").read_text())["tta"] == "none"
    out = tmp_path / "p.jsonl"
    assert cli(["predict", str(run), *map(str, _images(tiny_data, 2)), "--tta", "flip", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 2
    assert cli(["export", str(run), "--tta", "flop", "--out", str(tmp_path / "x")]) == 2  # a clear error
    assert not (tmp_path / "x").exists()


def test_calibrate_fits_on_tta_logits(run: Path, tmp_path: Path):
    temps = {}
    for tta in ("none", "flip"):
        assert cli(["calibrate", str(run), "--tta", tta, "--folds", "2"]) == 0
        cal = json.loads((run / "calibration.json").read_text())
        assert cal["fitted_on"]["tta"] == tta
        temps[tta] = cal["modes"][cal["default"]]["temperature"]
    assert temps["none"] != temps["flip"]  # fitted on other logits
    (run / "calibration.json").unlink()  # the module's other tests expect an uncalibrated run
