"""benchmarks/ensemble.py: a run alone scores what `fashattr calibrate` + `fashattr eval` give it, an ensemble
of one run with itself scores the same, and runs that saw other pixels are refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_benchmark, untrained_run

from fashattr.cli import main as cli
from fashattr.config import ConfigError

SPLITS = ["data.holdout=0.25", "data.test_holdout=0.2"]


def test_a_run_alone_scores_what_eval_prints_and_twice_itself_the_same(tiny_data: Path, tmp_path: Path):
    ensemble = load_benchmark("ensemble")
    a = untrained_run(tiny_data, tmp_path, SPLITS, size=32, seed=0, name="a")
    b = untrained_run(tiny_data, tmp_path, SPLITS, size=32, seed=1, name="b")
    assert cli(["calibrate", str(a), "--tta", "flip"]) == 0
    evals = {}
    for mode in ("balanced", "accuracy"):
        assert cli(["eval", str(a), "--split", "test_holdout", "--decode", mode, "--tta", "flip"]) == 0
        evals[mode] = json.loads((a / "eval_test_holdout.json").read_text())

    assert (
        ensemble.main([str(a), str(a), "--name", "A twice", "--results", str(tmp_path / "r"), "--resamples", "50"]) == 0
    )
    twice = json.loads((tmp_path / "r" / "ensemble_a_twice.json").read_text())
    alone = twice["members"][0]
    assert alone["avg_class_acc"]["value"] == pytest.approx(evals["balanced"]["summary"]["avg_class_acc"], abs=1e-12)
    assert alone["overall_acc"]["value"] == pytest.approx(evals["accuracy"]["summary"]["overall_acc"], abs=1e-12)
    for metric in ("avg_class_acc", "overall_acc"):
        assert twice["ensemble"][metric]["value"] == pytest.approx(alone[metric]["value"], abs=1e-12)
        assert alone[metric]["lo"] <= alone[metric]["value"] <= alone[metric]["hi"]
    assert twice["ensemble"]["tau"] == alone["tau"]
    # tiny_data's stratified holdouts: 31 of 160 for the test, 31 of the other 129 for selection
    assert twice["test_images"] == 31 and twice["holdout_images"] == 31
    assert twice["command"].startswith(f"python benchmarks/ensemble.py {a} {a} --name 'A twice'")

    assert (
        ensemble.main([str(a), str(b), "--name", "A and B", "--results", str(tmp_path / "r"), "--resamples", "50"]) == 0
    )
    pair = json.loads((tmp_path / "r" / "ensemble_a_and_b.json").read_text())
    assert [m["run"] for m in pair["members"]] == [str(a), str(b)]
    assert pair["members_mean"]["avg_class_acc"] == pytest.approx(
        (pair["members"][0]["avg_class_acc"]["value"] + pair["members"][1]["avg_class_acc"]["value"]) / 2
    )
    md = (tmp_path / "r" / "ensemble_a_and_b.md").read_text()
    assert "| **ensemble (mean logits)** |" in md and str(b) in md


def test_runs_that_saw_other_pixels_are_refused(tiny_data: Path, tmp_path: Path):
    ensemble = load_benchmark("ensemble")
    a = untrained_run(tiny_data, tmp_path, SPLITS, size=32, name="a")
    c = untrained_run(tiny_data, tmp_path, SPLITS, size=48, name="c")
    with pytest.raises(ConfigError, match=r"data.image_size=48, this run 32: it sees other pixels"):
        ensemble.main([str(a), str(c), "--name", "mixed", "--results", str(tmp_path / "r")])
