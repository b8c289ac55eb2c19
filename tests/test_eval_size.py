"""``data.eval_size``: a model trained at ``data.image_size`` is evaluated and used at another letterbox side
(FixRes). Everything after training reads the larger pixels: the run's test-holdout summary, ``eval``,
``calibrate`` (which records the size), the bundle, its ONNX and int8 files; a calibration fitted at another
size is refused; a backbone built for one input size is refused before any data are read."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import load_benchmark, tiny_overrides

from fashattr.calibration.store import CalibrationError
from fashattr.cli import main
from fashattr.config import ConfigError, load_config
from fashattr.config.sections import DataConfig
from fashattr.data.prepare import TEST_HOLDOUT, inference_data, load_split
from fashattr.deploy.bundle import bundle_config
from fashattr.deploy.onnx import onnx_logits
from fashattr.engine.trainer import fit
from fashattr.metrics import compute_metrics
from fashattr.predictor import Predictor

TRAIN, EVAL = 32, 40


@pytest.fixture(scope="module")
def run(tiny_data: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run trained at 32 px and used at 40 px, with a test holdout."""
    out = tmp_path_factory.mktemp("runs")
    extra = {"data.test_holdout": 0.2, "train.epochs": 1, "data.eval_size": EVAL}
    return fit(load_config(None, tiny_overrides(tiny_data, cache_dir, out, name="es", **extra)))


def test_inference_data_swaps_only_the_size():
    d = DataConfig(image_size=192)
    assert inference_data(d) is d
    assert inference_data(replace(d, eval_size=192)).image_size == 192
    bigger = inference_data(replace(d, eval_size=224))
    assert bigger.image_size == 224 and bigger.eval_size == 224
    assert replace(bigger, image_size=192) == replace(d, eval_size=224)  # nothing else changed
    with pytest.raises(ConfigError, match=r"data.eval_size: 4 is too small \(minimum 8; null: data.image_size\)"):
        load_config(None, ["data.eval_size=4"])


def test_the_run_trains_at_image_size_and_is_measured_at_eval_size(run: Path):
    cfg = load_config(run / "config.yaml")
    assert (cfg.data.image_size, cfg.data.eval_size) == (TRAIN, EVAL)
    log = (run / "train.log").read_text()
    said = f"pixels: trained and selected at {TRAIN} px; the test holdout, calibrate, eval, predict and the bundle"
    assert f"{said} at {EVAL} px" in log
    assert f"31 images never trained or selected on, at {EVAL} px" in log
    # The summary's test-holdout numbers are the model's on 40 px pixels, not on the 32 px it trained on.
    predictor = Predictor.from_run(run)
    assert predictor.runtime.image_size == EVAL
    _, big = load_split(inference_data(cfg.data), TEST_HOLDOUT, progress=False)
    _, small = load_split(cfg.data, TEST_HOLDOUT, progress=False)
    assert big.pixels().shape[1:] == (EVAL, EVAL, 3) and small.pixels().shape[1:] == (TRAIN, TRAIN, 3)
    assert big.labels is not None
    scores = predictor.scores(big.pixels(), cfg.train.eval_batch_size)
    summary = json.loads((run / "summary.json").read_text())
    assert compute_metrics(predictor.schema, big.labels, scores).summary() == summary["test_holdout"]
    # ... and `fashattr eval` reproduces them exactly.
    assert main(["eval", str(run), "--split", "test_holdout", "--decode", "none"]) == 0
    assert json.loads((run / "eval_test_holdout.json").read_text())["summary"] == summary["test_holdout"]


def test_calibrate_records_the_size_and_a_changed_size_is_refused(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    assert main(["calibrate", str(run)]) == 0
    cal = json.loads((run / "calibration.json").read_text())
    assert cal["fitted_on"]["image_size"] == EVAL
    assert bundle_config(run)["decoding"]["fitted_on"]["image_size"] == EVAL
    # The same run used at another size: its decodings were fitted on other logits.
    other = tmp_path / "resized"
    other.mkdir()
    for f in ("schema.yaml", "best.safetensors", "calibration.json", "summary.json", "metrics.csv"):
        (other / f).write_bytes((run / f).read_bytes())
    (other / "config.yaml").write_text((run / "config.yaml").read_text().replace(f"eval_size: {EVAL}", "eval_size: 48"))
    with pytest.raises(CalibrationError, match=r"fitted on images at 40 px, but the run is now used at 48 px"):
        bundle_config(other)
    # The report, too, refuses to decode 48 px logits with it, and says what to do.
    assert main(["report", str(other), "--split", "holdout", "--gradcam", "0", "--resamples", "10"]) == 2
    assert "fitted on images at 40 px, but the run is now used at 48 px" in capsys.readouterr().err
    # What docs/training.md tells a user to do after choosing a size: calibrate again, at the new size.
    assert main(["calibrate", str(other)]) == 0
    assert json.loads((other / "calibration.json").read_text())["fitted_on"]["image_size"] == 48
    assert bundle_config(other)["preprocess"]["image_size"] == 48


def test_export_onnx_and_int8_take_eval_size_pixels(run: Path, tmp_path: Path):
    out = tmp_path / "bundle"
    assert main(["export", str(run), "--format", "onnx-int8", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["preprocess"]["image_size"] == EVAL and config["source"]["trained_on"]["image_size"] == TRAIN
    assert (
        f"- input: {EVAL} px square (trained at {TRAIN} px: data.eval_size), letterboxed"
        in (out / "README.md").read_text()
    )
    # int8 was calibrated and measured on 40 px images of the run (the ONNX graph takes nothing else).
    assert config["onnx"]["int8_metrics"]["images"] == 31
    cfg = load_config(run / "config.yaml")
    _, big = load_split(inference_data(cfg.data), TEST_HOLDOUT, progress=False)
    torch_scores = Predictor.from_run(run).scores(big.pixels())
    onnx_scores = onnx_logits(out / "model.onnx", big.pixels())
    assert max(float(np.abs(torch_scores[g] - onnx_scores[g]).max()) for g in torch_scores) <= 1e-4


def test_a_fixed_size_backbone_refuses_eval_size(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    extra = {"data.eval_size": EVAL, "model.backbone": "test_vit"}
    cfg = load_config(None, tiny_overrides(tiny_data, cache_dir, tmp_path, name="vit", **extra))
    said = r"data.eval_size 40: test_vit is built for one input size \(data.image_size 32\)"
    with pytest.raises(ConfigError, match=said):
        fit(cfg)
    assert not (tmp_path / "vit" / "best.safetensors").exists()


def test_the_size_benchmark_reproduces_eval_at_the_runs_own_size(run: Path, tmp_path: Path):
    """benchmarks/eval_size.py fits the decodings as `fashattr calibrate` does: at the run's own eval_size its
    test-holdout numbers are `fashattr eval`'s; at the training size they are the model's on 32 px pixels."""
    bench = load_benchmark("eval_size")
    assert main(["calibrate", str(run), "--tta", "flip"]) == 0
    assert main(["eval", str(run), "--split", "test_holdout", "--decode", "balanced", "--tta", "flip"]) == 0
    balanced = json.loads((run / "eval_test_holdout.json").read_text())["summary"]["avg_class_acc"]
    assert main(["eval", str(run), "--split", "test_holdout", "--decode", "accuracy", "--tta", "flip"]) == 0
    accuracy = json.loads((run / "eval_test_holdout.json").read_text())["summary"]["overall_acc"]
    argv = [str(run), "--sizes", f"{TRAIN},{EVAL}", "--tta", "flip", "--name", "tiny", "--resamples", "20"]
    assert bench.main([*argv, "--results", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "eval_size_tiny.json").read_text())
    own = next(r for r in result["rows"] if r["size"] == EVAL)
    assert own["test"]["avg_class_acc"]["value"] == balanced and own["test"]["overall_acc"]["value"] == accuracy
    assert [r["size"] for r in result["rows"]] == [TRAIN, EVAL] and result["trained_at"] == TRAIN
    assert set(result["best_on_selection"].values()) <= {TRAIN, EVAL}
    assert "| es | 40 |" in (tmp_path / "eval_size_tiny.md").read_text()


def test_an_eval_size_far_from_image_size_is_named(caplog: pytest.LogCaptureFixture):
    # A recipe's eval_size 224 stays when a quick run overrides image_size=64 on the command line: say so.
    with caplog.at_level("WARNING", logger="fashattr"):
        load_config(None, ["data.image_size=64", "data.eval_size=224"])
        load_config(None, ["data.image_size=192", "data.eval_size=224"])  # 1.17x: the measured setting, silent
    said = [r.getMessage() for r in caplog.records if "eval_size" in r.getMessage()]
    assert said == [
        "data.eval_size 224 is 3.50x data.image_size 64: the model is used at a size far from the one it trains at; "
        "change data.eval_size with data.image_size (null: the same size)"
    ]


def test_the_report_names_both_sizes(run: Path, tmp_path: Path):
    """A report reads the pixels the model is used at, and its summary says so beside the training size."""
    out = tmp_path / "report"
    assert main(["calibrate", str(run)]) == 0
    assert (
        main(["report", str(run), "--split", "holdout", "--gradcam", "0", "--resamples", "10", "--out", str(out)]) == 0
    )
    summary = json.loads((out / "report.json").read_text())["sections"]["summary"]
    assert (summary["facts"]["image_size"], summary["facts"]["trained_at"]) == (EVAL, TRAIN)
    assert f"at {EVAL} px (trained at {TRAIN})" in (out / "report.html").read_text()
