"""`fashattr report`: the page, its numbers, a real browser on it, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from browser import open_page
from conftest import tiny_overrides
from PIL import Image

from fashattr.cli import main
from fashattr.config import load_config
from fashattr.engine.trainer import fit
from fashattr.errors import FashattrError
from fashattr.metrics import compute_metrics
from fashattr.predictor import eval_run
from fashattr.report import stats
from fashattr.report.build import SINGLE_SECTIONS, build_report
from fashattr.schema import Group, Schema

FAST = {"gradcam_images": 4, "gradcam_correct": 1, "resamples": 200, "top_losses": 8}


@pytest.fixture(scope="module")
def runs(tiny_data: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("runs")
    a = fit(load_config(None, tiny_overrides(tiny_data, cache_dir, out, name="plain", recipe="plain CE")))
    b = fit(load_config(None, tiny_overrides(tiny_data, cache_dir, out, name="bal", **{"loss.logit_adjust_tau": 1.0})))
    return [a, b]


@pytest.fixture(scope="module")
def report(runs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert main(["report", str(runs[0]), "--out", str(out), "--gradcam", "4", "--resamples", "200"]) == 0
    return out


def test_report_numbers_are_evals_and_every_figure_is_png_and_svg(runs: list[Path], report: Path):
    data = json.loads((report / "report.json").read_text())
    sections = data["sections"]
    assert list(sections) == list(SINGLE_SECTIONS)
    evaluated = eval_run(runs[0], "holdout").summary()
    assert sections["summary"]["metrics"]["summary"] == pytest.approx(evaluated)
    ci = sections["summary"]["bootstrap"]["ci"]
    for key in ("avg_class_acc", "overall_acc", "pattern/acc", "fit/avg_class_acc", "pattern/top3"):
        assert ci[key]["lo"] <= evaluated[key] <= ci[key]["hi"], key
        assert ci[key]["resamples"] == 200
    n = len(data["images"])
    pattern = sections["groups"]["pattern"]
    assert np.asarray(pattern["confusion"]).sum() == n == sum(pattern["support"])
    assert pattern["train_counts"] and sum(pattern["train_counts"]) == 118  # 160 less the 42 of the holdout (train.log)
    pairs = pattern["most_confused"]
    assert pairs == sorted(pairs, key=lambda p: -p["count"])
    assert sections["gradcam"]["layer"] == "backbone.layer4" and len(sections["gradcam"]["images"]) == 4
    assert set(sections["calibration"]["groups"]) == {"pattern", "sleeve", "length", "neckline", "fabric", "fit"}
    html = (report / "report.html").read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html  # opens offline
    for ref in _figure_files(sections):
        assert (report / ref).is_file(), ref
    pngs = sorted((report / "figures").glob("*.png"))
    assert pngs and all((p.with_suffix(".svg")).is_file() for p in pngs)
    dpi = Image.open(report / "figures" / "curves.png").info["dpi"]
    assert dpi[0] == pytest.approx(150, abs=0.5)


def _figure_files(tree: object) -> list[str]:
    """Every file name a figure entry of report.json points at."""
    found: list[str] = []
    if isinstance(tree, dict):
        if "web" in tree and "png" in tree:
            return [v for k, v in tree.items() if k in ("png", "svg", "jpg", "web")]
        for v in tree.values():
            found += _figure_files(v)
    elif isinstance(tree, list):
        for v in tree:
            found += _figure_files(v)
    return found


def test_report_in_a_real_browser(report: Path, tmp_path: Path):
    with open_page() as (page, log):
        page.goto((report / "report.html").resolve().as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
        ids = page.evaluate("Array.from(document.querySelectorAll('section')).map(s => s.id)")
        hover = page.evaluate("document.querySelector('table.cm td[title]').title")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=False)
    assert log.problems() == []
    assert len(images) >= 10 and all(w > 0 for _, w in images), images
    assert ids == list(SINGLE_SECTIONS)
    assert " images (" in hover and "\u2192" in hover  # counts on hover
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_compare_two_runs(runs: list[Path], tmp_path: Path):
    html = build_report(runs, tmp_path, options=FAST)
    data = json.loads((tmp_path / "report.json").read_text())["sections"]
    assert list(data) == ["summary", "curves", "deltas", "disagreements"]
    diff = data["summary"]["paired_difference"]["bal"]
    ci = data["summary"]["ci"]
    assert diff["value"] == pytest.approx(ci["bal"]["avg_class_acc"]["value"] - ci["plain"]["avg_class_acc"]["value"])
    assert diff["lo"] <= diff["value"] <= diff["hi"]
    recall = data["deltas"]["recall"]
    assert recall["plain"]["pattern"] == eval_run(runs[0], "holdout").groups["pattern"].recall
    counts = {(g, which): k for g, which, k in data["disagreements"]["bal"]["counts"]}
    _, a, b = _holdout_right(runs)
    assert counts[("sleeve", "plain right, bal wrong")] == int((a & ~b).sum())
    assert "Disagreements" in html.read_text()


def _holdout_right(runs: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from fashattr.report.collect import evaluate_run

    ea, eb = (evaluate_run(r) for r in runs)
    assert ea.labels is not None
    t = ea.labels["sleeve"]
    return t, ea.logits["sleeve"].argmax(1) == t, eb.logits["sleeve"].argmax(1) == t


def test_run_without_weights_is_a_clear_error(runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    empty = tmp_path / "empty"
    empty.mkdir()
    for f in ("config.yaml", "metrics.csv", "schema.yaml"):
        shutil.copy(runs[0] / f, empty / f)
    assert main(["report", str(empty), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"error: {empty}: no best.safetensors or last.safetensors" in err
    with pytest.raises(FashattrError, match="not a run folder"):
        build_report([tmp_path / "r"], tmp_path / "x")


def test_killed_run_is_reported_from_last(runs: list[Path], tmp_path: Path):
    killed = tmp_path / "killed"
    killed.mkdir()
    for f in ("config.yaml", "schema.yaml", "last.safetensors"):
        shutil.copy(runs[0] / f, killed / f)
    rows = (runs[0] / "metrics.csv").read_text().splitlines()
    (killed / "metrics.csv").write_text("\n".join(rows[:2]) + "\n")  # header and epoch 1 of 2
    html = build_report([killed], tmp_path / "r", options=FAST).read_text()
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["weights"] == {"killed": "last"}
    assert "killed stopped after epoch 1 of 2" in html and "uses last.safetensors" in html


def test_split_without_labels_shows_predictions_and_says_why(runs: list[Path], tmp_path: Path):
    html = build_report([runs[0]], tmp_path, split="val", options=FAST).read_text()
    data = json.loads((tmp_path / "report.json").read_text())["sections"]
    assert "split &#x27;val&#x27; has no labels" in html
    assert "metrics" not in data["summary"] and data["top-losses"] == {} and data["calibration"] == {}
    assert sum(data["groups"]["sleeve"]["predicted_counts"]) == 24  # every val image predicted
    assert len(data["gradcam"]["images"]) == 4


def test_two_hundred_class_multi_label_group_stays_readable(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    paths = (tiny_data / "split" / "train.txt").read_text().split()
    lines = ["path,tags"]
    for i, p in enumerate(paths):  # every one of 200 tags appears; t000 on most images
        tags = {f"t{(3 * i + k) % 200:03d}" for k in range(3)} | ({"t000"} if i % 4 else set())
        lines.append(f"{p},{'|'.join(sorted(tags))}")
    shutil.copytree(tiny_data / "img", tmp_path / "img")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    extra = {"data.format": "csv", "data.reader_options": "{multi_label: [tags]}", "train.epochs": 1}
    run = fit(load_config(None, tiny_overrides(tmp_path / "labels.csv", cache_dir, tmp_path / "runs", **extra)))
    html = build_report([run], tmp_path / "r", options=FAST).read_text()
    tags = json.loads((tmp_path / "r" / "report.json").read_text())["sections"]["groups"]["tags"]
    assert len(tags["classes"]) == 200 and np.asarray(tags["confusion"]).shape == (200, 200)
    assert len(tags["matrix_classes_shown"]) == 20 and "t000" in tags["matrix_classes_shown"]
    assert html.count('<td title="') == 20 * 20  # the heat-map table is capped too
    assert "200 classes: the matrix shows the 20 most frequent" in html
    assert len(tags["per_class"]) == 200 and "the 30 most frequent of 200 classes" in html


def test_bootstrap_with_every_image_once_is_compute_metrics():
    rng = np.random.default_rng(0)
    schema = Schema((Group("a", tuple("pqrst")), Group("m", tuple("uvwxyz"), "multi")))
    n = 120
    targets = {"a": rng.integers(-1, 5, n), "m": rng.integers(-1, 2, (n, 6))}
    scores = {"a": rng.normal(size=(n, 5)), "m": rng.normal(size=(n, 6))}
    want = compute_metrics(schema, targets, scores).summary()
    got = stats.resample_stats(schema, targets, scores, np.ones((1, n)), np.arange(n)[None])
    for key, value in want.items():
        if "top50" not in key:  # the benchmark's best-50 convention has no interval
            assert got[key][0] == pytest.approx(value, abs=1e-12), key
    # each image drawn twice: the same metrics (they are ratios of counts)
    twice = stats.resample_stats(schema, targets, scores, np.full((1, n), 2.0), np.arange(n)[None])
    assert twice["avg_class_acc"][0] == pytest.approx(want["avg_class_acc"])


def test_confusion_and_most_confused_by_hand():
    single = Group("s", ("a", "b", "c"))
    t = np.array([0, 0, 0, 1, 2, -1])
    z = np.eye(3)[[0, 1, 1, 1, 0, 2]]
    m = stats.confusion(single, t, z)
    assert m.tolist() == [[1, 2, 0], [0, 1, 0], [1, 0, 0]]
    pairs = stats.most_confused(single.classes, m, stats.row_support(single, t))
    assert pairs == [
        {"true": "a", "predicted": "b", "count": 2, "share": pytest.approx(2 / 3)},
        {"true": "c", "predicted": "a", "count": 1, "share": 1.0},
    ]
    multi = Group("m", ("x", "y", "z"), "multi")
    t = np.array([[1, 0, 0], [1, 1, 0], [0, 0, -1]])
    logits = np.array([[-1.0, 2.0, 3.0], [1.0, -1.0, 1.0], [1.0, 1.0, 1.0]])
    # image 0: x missed, y and z false; image 1: x hit, y missed, z false; image 2: x, y false
    assert stats.confusion(multi, t, logits).tolist() == [[1, 1, 2], [0, 0, 1], [0, 0, 0]]
    assert stats.per_image_loss(multi, t, logits)[2] == pytest.approx(2 * np.log1p(np.exp(-1.0)) + 2.0, rel=1e-6)


def test_calibration_json_is_shown_as_predict_decodes(runs: list[Path], tmp_path: Path):
    from fashattr.calibrate import calibrate_run

    run = tmp_path / "calibrated"
    shutil.copytree(runs[0], run, ignore=shutil.ignore_patterns("report*", "eval_*"))
    calibrate_run(run, folds=2)
    html = build_report([run], tmp_path / "r", options=FAST).read_text()
    cal = json.loads((tmp_path / "r" / "report.json").read_text())["sections"]["calibration"]
    saved = json.loads((run / "calibration.json").read_text())
    mode = saved["default"]
    assert cal["calibration_json"]["temperature"] == saved["modes"][mode]["temperature"]
    assert cal["groups"]["sleeve"]["saved_temperature"] == saved["modes"][mode]["temperature"]["sleeve"]
    assert f"ECE as predict decodes ({mode})" in html
    assert "on these same images (in-sample" in html  # fitted on the holdout this report shows
