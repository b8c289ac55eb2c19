"""benchmarks/accuracy_ablation.py's planning and summary: cumulative rows, standalone rows, and each change
measured against the row it builds on (values computed by hand)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def ablation() -> ModuleType:
    return load_benchmark("accuracy_ablation")


SPEC = {
    "base": "configs/recipes/cpu_resnet18.yaml",
    "rows": [
        {"name": "base"},
        {"name": "ce", "overrides": ["loss.logit_adjust_tau=0.0"], "standalone": True},
        {"name": "ls", "overrides": ["loss.label_smoothing=0.1"]},
        {"name": "flip", "eval": {"tta": "flip"}},
        {"name": "teacher", "overrides": ["train.seed=11"], "standalone": True},
        {"name": "ema", "overrides": ["train.ema_decay=0.998"]},
    ],
}


def test_rows_carry_what_helped_and_leave_standalone_rows_out(ablation: ModuleType) -> None:
    rows = {r["name"]: r for r in ablation.plan(SPEC, ["data.image_size=64"])}
    assert rows["ce"]["overrides"] == ["data.image_size=64", "loss.logit_adjust_tau=0.0"]
    # 'ls' is built on 'base', not on the standalone 'ce': cross-entropy is not carried.
    assert rows["ls"]["overrides"] == ["data.image_size=64", "loss.label_smoothing=0.1"]
    assert rows["flip"]["same_model_as"] == "ls" and rows["flip"]["eval"] == {"tta": "flip"}
    assert rows["teacher"]["eval"] == {"tta": "flip"} and rows["teacher"]["builds_on"] == "flip"
    assert rows["ema"]["overrides"] == ["data.image_size=64", "loss.label_smoothing=0.1", "train.ema_decay=0.998"]
    assert rows["ema"]["eval"] == {"tta": "flip"}
    assert [rows[n]["builds_on"] for n in ("base", "ce", "ls", "flip", "teacher", "ema")] == [
        None,
        "base",
        "base",
        "ls",
        "flip",
        "flip",
    ]


def _result(avg: float, overall: float) -> dict[str, Any]:
    metric = {"lo": 0.0, "hi": 1.0}
    return {
        "command": "fashattr train ...",
        "train_wall_s": 60.0,
        "metrics": {"avg_class_acc": {**metric, "value": avg}, "overall_acc": {**metric, "value": overall}},
    }


def test_each_change_is_against_the_row_it_builds_on(ablation: ModuleType) -> None:
    rows = ablation.plan(SPEC, [])
    results = {
        "base|0": _result(0.50, 0.70),
        "ce|0": _result(0.47, 0.69),
        "ls|0": _result(0.52, 0.71),
        "flip|0": _result(0.53, 0.705),
        "teacher|0": _result(0.51, 0.70),
        "ema|0": _result(0.56, 0.72),
    }
    table = {e["name"]: e for e in ablation.summarize(rows, results, [0])}
    changes = {n: (e["avg_class_acc"]["change"], e["overall_acc"]["change"]) for n, e in table.items()}
    assert changes["base"] == (None, None)
    assert changes["ce"] == pytest.approx((-0.03, -0.01))
    assert changes["ls"] == pytest.approx((0.02, 0.01))  # against base (0.50, 0.70), not against ce
    assert changes["flip"] == pytest.approx((0.01, -0.005))
    assert changes["teacher"] == pytest.approx((-0.02, -0.005))
    assert changes["ema"] == pytest.approx((0.03, 0.015))  # against flip, not against the teacher
    # Two seeds: the mean, and the sample standard deviation.
    results["base|1"] = _result(0.54, 0.72)
    two = ablation.summarize(rows[:1], results, [0, 1])[0]["avg_class_acc"]
    assert two["mean"] == pytest.approx(0.52) and two["std"] == pytest.approx(0.0282843, abs=1e-6)


def test_pseudo_label_spec_becomes_the_cli_arguments(ablation: ModuleType) -> None:
    spec = {
        "from": "base",
        "threshold": 0.9,
        "group_thresholds": {"fabric": 0.7, "fit": 0.6},
        "splits": ["val", "test"],
    }
    args = ablation.pseudo_args(spec, Path("runs/base"), Path("runs/pseudo.json"))
    assert args == [
        "pseudo-label",
        "runs/base",
        "--threshold",
        "0.9",
        "--out",
        "runs/pseudo.json",
        "--group-threshold",
        "fabric=0.7",
        "--group-threshold",
        "fit=0.6",
        "--splits",
        "val,test",
    ]
    assert ablation.pseudo_args({}, Path("r"), Path("p.json")) == [
        "pseudo-label",
        "r",
        "--threshold",
        "0.9",
        "--out",
        "p.json",
    ]
    # the teacher's test-time augmentation, when the spec names one
    assert ablation.pseudo_args({"tta": "flip+zoom", "splits": ["val"]}, Path("r"), Path("p.json"))[-4:] == [
        "--tta",
        "flip+zoom",
        "--splits",
        "val",
    ]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"name": "st", "pseudo_label": {"from": "nope"}}, "pseudo_label from 'nope', which is not an earlier row"),
        ({"name": "st", "pseudo_label": {"threshold": 0.9, "thresh": 1}}, "unknown pseudo_label keys ['thresh']"),
        ({"name": "kd", "distill_from": ["base", "later"]}, "distill_from names 'later', which is not an earlier row"),
    ],
)
def test_bad_rows_are_refused_before_any_training(ablation: ModuleType, row: dict[str, Any], message: str) -> None:
    spec = {"base": "b.yaml", "rows": [{"name": "base"}, row, {"name": "later"}]}
    with pytest.raises(SystemExit, match=re.escape(message)):
        ablation.plan(spec, [])
    first = {"base": "b.yaml", "rows": [{"name": "st", "pseudo_label": {}}]}
    with pytest.raises(SystemExit, match="it is the first row"):
        ablation.plan(first, [])


def test_results_of_an_earlier_run_are_restored_per_seed(ablation: ModuleType, tmp_path: Path) -> None:
    # runs/ is scratch: a spec that grows by a row on a fresh machine takes the earlier rows from RESULTS.json.
    rows = ablation.plan(SPEC, [])
    results = {"base|0": _result(0.50, 0.70), "base|1": _result(0.54, 0.72), "ls|0": _result(0.52, 0.71)}
    for r in results.values():
        r["cpu"] = "host A"
        r["metrics"]["images"] = 501
    table = ablation.summarize(rows, results, [0, 1])
    path = tmp_path / "ablation.json"
    meta = {"seeds": [0, 1], "cpu": "host A", "test_images": 501}
    path.write_text(json.dumps({"meta": meta, "rows": table}))
    restored = ablation.restore(path, [0, 1])
    # 'ls' has one of the two seeds, and which one is not recorded: it is not restored, it is trained again.
    assert sorted(restored) == ["base|0", "base|1"]
    assert restored["base|1"]["metrics"]["avg_class_acc"]["value"] == 0.54
    assert restored["base|0"]["train_wall_s"] == 60.0 and restored["base|0"]["restored_from"] == str(path)
    assert ablation.restore(path, [1]).keys() == {"base|1"}
    assert ablation.restore(tmp_path / "missing.json", [0]) == {}
    # Restored and new rows from two machines: the table names each row's host beside its wall time.
    results["ls|0"]["cpu"] = "host B"
    md = ablation.markdown(
        ablation.summarize(rows, results, [0]),
        {**meta, "spec": "s", "resamples": 10, "load_before": [0], "load_after": [0], "note": ""},
    )
    assert "A = host A; B = host B" in md
    assert "| base | 1.0 min (A) |" in md and "| ls | 1.0 min (B) |" in md


def test_a_row_names_the_earlier_models_it_needs(ablation: ModuleType) -> None:
    spec = {
        "base": "b.yaml",
        "rows": [
            {"name": "a"},
            {"name": "t", "overrides": ["train.seed=11"], "standalone": True},
            {"name": "kd", "distill_from": ["a", "t"]},
            {"name": "after kd", "overrides": ["train.epochs=2"]},
            {"name": "flip", "eval": {"tta": "flip"}},
        ],
    }
    rows = {r["name"]: r for r in ablation.plan(spec, [])}
    assert ablation.needed_runs(rows["a"]) == []
    assert ablation.needed_runs(rows["kd"]) == ["a", "t"]
    assert ablation.needed_runs(rows["after kd"]) == ["a", "t"]  # it carries the distillation
    assert ablation.needed_runs(rows["flip"]) == ["a", "t", "after kd"]  # and evaluates that row's model
