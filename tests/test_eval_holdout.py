"""The evaluation (test) holdout and the precision of evaluation: `fashattr eval` reproduces the
numbers a run recorded, on the selection holdout and on the test holdout."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

from fashattr.cli import main
from fashattr.config import ConfigError, load_config
from fashattr.data.formats import create_reader
from fashattr.data.prepare import load_train_eval
from fashattr.data.table import nested_holdouts, stratified_holdout
from fashattr.engine.trainer import fit
from fashattr.losses import create_loss
from fashattr.predictor import Predictor
from fashattr.report.compare import compare_rows, compare_table, load_run


@pytest.fixture(scope="module")
def run(tiny_data: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run with a test holdout, trained under bf16 autocast (the CUDA default's precision)."""
    out = tmp_path_factory.mktemp("runs")
    extra = {"data.test_holdout": 0.2, "train.amp": "bf16", "train.epochs": 2}
    return fit(load_config(None, tiny_overrides(tiny_data, cache_dir, out, name="th", **extra)))


def test_nested_holdouts_are_disjoint_stratified_and_fixed(tiny_data: Path):
    reader = create_reader("ai6126", str(tiny_data), {})
    schema, table = reader.schema(), reader.read("train")
    train, holdout, test = nested_holdouts(table, schema, 0.2, 7, 0.25, 0)
    assert len(np.intersect1d(train, holdout)) == len(np.intersect1d(train, test)) == 0
    assert len(np.intersect1d(holdout, test)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, holdout, test])), np.arange(len(table)))
    assert len(test) == pytest.approx(0.2 * len(table), abs=8)
    assert len(holdout) == pytest.approx(0.25 * (len(table) - len(test)), abs=8)
    # every class with at least 2 images has one in the test holdout
    assert table.labels is not None
    for g in schema.groups:
        y = table.labels[g.name]
        for c in range(g.num_classes):
            if (y == c).sum() >= 2:
                assert (y[test] == c).any(), (g.name, c)
    # the test holdout ignores the selection holdout's seed and fraction
    for fraction, seed in ((0.1, 1), (0.3, 5)):
        assert np.array_equal(nested_holdouts(table, schema, 0.2, 7, fraction, seed)[2], test)
    # off: exactly the old split, no test rows
    a, b, none = nested_holdouts(table, schema, 0.0, 7, 0.25, 0)
    old = stratified_holdout(table, schema, 0.25, 0)
    assert np.array_equal(a, old[0]) and np.array_equal(b, old[1]) and len(none) == 0


def test_test_holdout_config_is_checked():
    with pytest.raises(ConfigError, match=r"data.test_holdout: 1.0 must be in \[0, 1\)"):
        load_config(None, ["data.test_holdout=1.0"])


def test_run_never_trains_or_selects_on_the_test_holdout(run: Path):
    cfg = load_config(run / "config.yaml")
    _, train, evaluation, test = load_train_eval(cfg.data, progress=False)
    assert test is not None
    written = np.loadtxt(run / "test_rows.txt", dtype=np.int64)
    assert np.array_equal(written, test.rows)
    assert np.array_equal(np.loadtxt(run / "eval_rows.txt", dtype=np.int64), evaluation.rows)
    assert len(np.intersect1d(train.rows, test.rows)) == 0
    assert len(np.intersect1d(evaluation.rows, test.rows)) == 0
    assert len(train) + len(evaluation) + len(test) == 160
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_holdout_images"] == len(test) == len(written)
    assert (
        "data: 98 training images, 31 for model selection (holdout), 31 in the test holdout"
        in (run / "train.log").read_text()
    )


def test_eval_reproduces_the_test_holdout_numbers_in_summary(run: Path, capsys: pytest.CaptureFixture[str]):
    summary = json.loads((run / "summary.json").read_text())
    test = summary["test_holdout"]
    assert {"avg_class_acc", "overall_acc", "exact_match", "pattern/acc", "fit/avg_class_acc"} <= set(test)
    assert main(["eval", str(run), "--split", "test_holdout"]) == 0
    report = json.loads((run / "eval_test_holdout.json").read_text())
    assert report["summary"] == test  # every metric, per group too, exactly
    printed = capsys.readouterr().out
    assert f"average per-class accuracy {test['avg_class_acc']:.4f}" in printed
    log = (run / "train.log").read_text()
    assert "test holdout: 31 images never trained or selected on" in log
    assert f"average per-class accuracy {test['avg_class_acc']:.4f}" in log


def test_eval_reproduces_the_best_epochs_row(run: Path):
    """Training ran under bf16 autocast; the holdout is evaluated in fp32 there and in `fashattr eval`."""
    summary = json.loads((run / "summary.json").read_text())
    with open(run / "metrics.csv") as f:
        row = next(r for r in csv.DictReader(f) if int(r["epoch"]) == summary["best_epoch"])
    assert main(["eval", str(run), "--split", "holdout"]) == 0
    report = json.loads((run / "eval_holdout.json").read_text())["summary"]
    assert report == {k: float(row[k]) for k in report}
    assert report == {k: v for k, v in summary["best"].items() if k in report}
    # The accuracies above are coarse (31 images); the loss is not: the row's eval_loss is the
    # fp32 loss of the best weights, computed here from the saved file alone.
    cfg = load_config(run / "config.yaml")
    schema, train, evaluation, _ = load_train_eval(cfg.data, progress=False)
    assert train.labels is not None and evaluation.labels is not None
    scores = Predictor.from_run(run).scores(evaluation.pixels(), cfg.train.eval_batch_size)
    loss = create_loss(cfg.loss, schema, train.labels)(
        {g: torch.as_tensor(s) for g, s in scores.items()},
        {g: torch.as_tensor(v) for g, v in evaluation.labels.items()},
    )["loss"]
    assert float(row["eval_loss"]) == float(loss)


def test_eval_test_holdout_of_a_run_without_one(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    cfg = (run / "config.yaml").read_text().replace("test_holdout: 0.2", "test_holdout: 0.0")
    other = tmp_path / "no_test"
    other.mkdir()
    (other / "config.yaml").write_text(cfg)
    for f in ("schema.yaml", "best.safetensors"):
        (other / f).write_bytes((run / f).read_bytes())
    assert main(["eval", str(other), "--split", "test_holdout"]) == 2
    assert capsys.readouterr().err == (
        "error: split 'test_holdout': this config has none (data.test_holdout is 0); "
        "train with data.test_holdout=0.1 to hold one out\n"
    )


def test_compare_shows_the_test_holdout(run: Path):
    test = json.loads((run / "summary.json").read_text())["test_holdout"]
    (row,) = compare_rows([load_run(run)])
    assert row["test_avg_class_acc"] == test["avg_class_acc"]
    assert row["test_overall_acc"] == test["overall_acc"]
    assert "test_avg_class_acc" in compare_table([load_run(run)]).splitlines()[0]
