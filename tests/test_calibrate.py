"""`fashattr calibrate`: the fitting primitives on hand-computed cases, and the whole fit on a run whose schema
has single- and multi-label groups (calibration.json: what it was fitted on, temperatures, thresholds, modes,
out-of-fold metrics; refused when stale or on the test holdout)."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_overrides

from fashattr.calibrate import calibrate_run
from fashattr.calibration.fit import (
    TAU_GRID,
    adjustment,
    below_majority,
    default_mode,
    f1_threshold,
    fit_calibration,
    fit_tau,
    log_prior,
)
from fashattr.calibration.store import CALIBRATION, CalibrationError, bundle_decoding, load_calibration
from fashattr.config import load_config
from fashattr.engine.trainer import fit
from fashattr.portable.bundle import file_sha256
from fashattr.portable.decoding import decode
from fashattr.schema import AI6126_GROUPS, Group, Schema


# ---------------------------------------------------------------------------------------------- by hand
def test_tau_adjustment_by_hand():
    prior = log_prior(np.array([80, 20]))
    assert prior == pytest.approx([math.log(0.8), math.log(0.2)])
    # tau = 1: offsets -log(prior) = (0.2231, 1.6094); the logits (1, 0) become (1.2231, 1.6094): class 1.
    assert adjustment(prior, 1.0) == pytest.approx([0.223144, 1.609438], abs=1e-6)
    z = np.array([[1.0, 0.0]])
    assert [int((z + adjustment(prior, tau)).argmax()) for tau in (0.0, 1.0, -1.0)] == [0, 1, 0]
    # A class never seen counts once, as in the balanced-softmax loss: finite offsets.
    assert log_prior(np.array([3, 0])) == pytest.approx([math.log(3 / 3), math.log(1 / 3)])
    # The bundle decoding applies the same offsets.
    config = {
        "schema": {"groups": [{"name": "g", "kind": "single", "classes": ["a", "b"]}]},
        "decoding": {"logit_adjust": {"offsets": {"g": adjustment(prior, 1.0).tolist()}}},
    }
    assert decode(config, {"g": z})[0]["groups"]["g"]["class"] == "b"


def test_fit_tau_by_hand():
    # Prior 3:1, so tau adds tau * log 3 to class 1 against class 0: a row with logit difference d = z1 - z0
    # is decoded as class 1 iff tau > -d / log 3. Rows (d, target): (-0.55, 1) needs tau > 0.5006,
    # (-2, 0) tau < 1.8205, (1, 1) tau > -0.9102, (-1.5, 0) tau < 1.3653: all right for tau in (0.5006,
    # 1.3653), i.e. grid points 0.55 .. 1.35, whose median is 0.95.
    prior = log_prior(np.array([3, 1]))
    d = np.array([-0.55, -2.0, 1.0, -1.5])
    logits = np.stack([np.zeros(4), d], axis=1)
    target = np.array([1, 0, 1, 0])
    assert fit_tau(logits, target, prior, "accuracy", objective="metric") == pytest.approx(0.95)
    assert fit_tau(logits, target, prior, "balanced", objective="metric") == pytest.approx(0.95)
    # Unknown targets are ignored; none at all: no adjustment.
    rows, targets = np.r_[logits, [[0.0, 9.0]]], np.r_[target, -1]
    assert fit_tau(rows, targets, prior, "accuracy", objective="metric") == pytest.approx(0.95)
    assert fit_tau(logits, np.full(4, -1), prior, "accuracy") == 0.0
    with pytest.raises(ValueError, match=r"unknown decoding mode 'fast'; choose from \['accuracy', 'balanced'\]"):
        fit_tau(logits, target, prior, "fast")
    with pytest.raises(ValueError, match=r"unknown objective 'f1'; choose from \['nll', 'metric'\]"):
        fit_tau(logits, target, prior, "accuracy", objective="f1")


def test_nll_objective_by_hand():
    # Training counts 2:1, so tau adds tau * log 2 to class 1's logit against class 0's. Logit differences
    # d = z1 - z0: class 0 at -3 and 0, class 1 at -2 and 1. Adding 1 makes the classes mirror images
    # (class 0 at -2, 1; class 1 at -1, 2), where the NLL (convex in the shift, at any temperature) is
    # smallest: tau = 1 / log 2 = 1.4427, the grid's 1.45.
    prior = log_prior(np.array([2, 1]))
    d = np.array([-3.0, 0.0, -2.0, 1.0])
    target = np.array([0, 0, 1, 1])
    logits = np.stack([np.zeros(4), d], axis=1)
    assert fit_tau(logits, target, prior, "accuracy") == pytest.approx(1.45)
    assert fit_tau(logits, target, prior, "balanced") == pytest.approx(1.45)  # classes equally frequent here
    assert TAU_GRID[0] == -2.0 and TAU_GRID[-1] == 2.0 and 0.0 in TAU_GRID and -1.0 in TAU_GRID


def test_f1_threshold_by_hand():
    # Logits -2, -1, 0.5, 1, 3 with targets 0, 1, 0, 1, 1. Present when logit > t:
    # t in (1, 3): F1 2*1/(2+0+2) = 0.5; (0.5, 1): 4/5; (-1, 0.5): 4/6; (-2, -1): 6/7; below -2: 6/8.
    t, f1 = f1_threshold(np.array([-2.0, -1.0, 0.5, 1.0, 3.0]), np.array([0, 1, 0, 1, 1]))
    assert t == pytest.approx(-1.5) and f1 == pytest.approx(6 / 7)
    # Ties go to the threshold nearest 0; unknown cells (-1) are ignored; no positive: the default rule.
    # Logits 3, 1, -1, -3 (targets 1, 0, 0, 1): F1 2/3 with only 3 present (t = 2) and with all present
    # (t = -4): the tie goes to t = 2.
    t, f1 = f1_threshold(np.array([-3.0, -1.0, 1.0, 3.0, 5.0]), np.array([1, 0, 0, 1, -1]))
    assert t == pytest.approx(2.0) and f1 == pytest.approx(2 / 3)
    t, f1 = f1_threshold(np.array([1.0, 2.0]), np.array([0, 0]))
    assert t == 0.0 and math.isnan(f1)


def test_balanced_softmax_logits_need_tau_minus_one_for_accuracy():
    """Simulated: a balanced-softmax model learns log p(x|y) (no prior); the Bayes decision for overall
    accuracy adds log p(y) back (tau = -1), and for average per-class accuracy leaves it (tau = 0)."""
    rng = np.random.default_rng(0)
    prior = np.array([0.7, 0.2, 0.1])
    y = rng.choice(3, size=2500, p=prior)
    x = rng.normal(np.array([0.0, 1.0, 2.0])[y], 1.0)
    logits = -((x[:, None] - np.array([0.0, 1.0, 2.0])[None]) ** 2) / 2
    lp = log_prior(np.bincount(y, minlength=3))
    ce = logits + np.log(prior)  # plain cross-entropy logits: log p(y|x) = log p(x|y) + log p(y) + const
    for objective in ("nll", "metric"):
        assert fit_tau(logits, y, lp, "accuracy", objective=objective) == pytest.approx(-1.0, abs=0.3)
        assert fit_tau(logits, y, lp, "balanced", objective=objective) == pytest.approx(0.0, abs=0.3)
        assert fit_tau(ce, y, lp, "accuracy", objective=objective) == pytest.approx(0.0, abs=0.3)
        assert fit_tau(ce, y, lp, "balanced", objective=objective) == pytest.approx(1.0, abs=0.3)
    # With the likelihoods exact, the NLL's optimum is the Bayes one itself.
    assert fit_tau(logits, y, lp, "accuracy") == pytest.approx(-1.0, abs=0.1)
    assert fit_tau(ce, y, lp, "balanced") == pytest.approx(1.0, abs=0.1)


def test_fit_calibration_single_and_multi_label():
    rng = np.random.default_rng(1)
    schema = Schema((Group("sleeve", ("long", "short", "none")), Group("tags", ("a", "b"), "multi")))
    n = 300
    y = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])
    sleeve = rng.normal(0, 1, (n, 3)) + 2.0 * np.eye(3)[y]
    tags_y = (rng.random((n, 2)) < [0.3, 0.6]).astype(np.int64)
    tags_y[0, 0] = -1
    tags = rng.normal(0, 1, (n, 2)) + 2.0 * tags_y - 1.5  # positives score 0.5 on average: 0 is too high
    cal = fit_calibration(
        schema,
        {"sleeve": sleeve, "tags": tags},
        {"sleeve": y, "tags": tags_y},
        {"sleeve": np.array([600, 300, 100]), "tags": np.array([300, 600])},
        folds=5,
        default="accuracy",
    )
    assert cal["default"] == "accuracy" and set(cal["modes"]) == {"accuracy", "balanced"}
    for m in ("accuracy", "balanced"):
        mode = cal["modes"][m]
        assert set(mode["tau"]) == {"sleeve"} and set(mode["offsets"]) == {"sleeve"}
        assert mode["offsets"]["sleeve"] == pytest.approx(
            adjustment(log_prior([600, 300, 100]), mode["tau"]["sleeve"]), abs=1e-6
        )
        assert set(mode["temperature"]) == {"sleeve", "tags"} and all(t > 0 for t in mode["temperature"].values())
    assert len(cal["thresholds"]["tags"]) == 2 and all(t < 0 for t in cal["thresholds"]["tags"])
    cross = cal["cross_fit"]
    assert cross["folds"] == 5 and cross["images"] == n
    for m in ("none", "accuracy", "balanced"):
        assert 0 < cross[m]["avg_class_acc"] <= 1 and 0 < cross[m]["overall_acc"] <= 1
    assert len(cross["accuracy"]["fold_tau"]["sleeve"]) == 5
    # Out of fold, thresholds fitted for F1 beat the default rule's F1 on these shifted logits.
    assert cross["accuracy"]["groups"]["tags"]["macro_f1"] > cross["none"]["groups"]["tags"]["macro_f1"]
    # The bundle block: the default's offsets and temperatures on top, every mode below.
    block = bundle_decoding(cal)
    assert block["default"] == "accuracy" and block["logit_adjust"] == {"offsets": cal["modes"]["accuracy"]["offsets"]}
    assert block["modes"]["balanced"]["calibration"] == {"temperature": cal["modes"]["balanced"]["temperature"]}
    assert block["thresholds"] == cal["thresholds"] and bundle_decoding(None)["calibration"] is None


def test_cross_fit_names_groups_no_better_than_their_majority_class():
    """A group whose logits carry nothing (fabric) cannot beat always answering its most common class; one whose
    logits carry the label (sleeve) does. The floor is computed by hand on the same images."""
    rng = np.random.default_rng(3)
    schema = Schema((Group("sleeve", ("long", "short", "none")), Group("fabric", ("cotton", "denim", "leather"))))
    n = 200
    sleeve_y = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    fabric_y = rng.choice(3, size=n, p=[0.7, 0.2, 0.1])
    fabric_y[:3] = -1  # unknown labels are left out of both accuracies
    logits = {"sleeve": rng.normal(0, 1, (n, 3)) + 3.0 * np.eye(3)[sleeve_y], "fabric": rng.normal(0, 1, (n, 3))}
    counts = {"sleeve": np.array([50, 30, 20]), "fabric": np.array([70, 20, 10])}
    cal = fit_calibration(schema, logits, {"sleeve": sleeve_y, "fabric": fabric_y}, counts, folds=5, default="accuracy")
    floor = cal["cross_fit"]["majority"]
    known = fabric_y[fabric_y >= 0]
    assert floor["fabric"] == {"class_index": 0, "acc": pytest.approx(np.mean(known == 0))}
    assert floor["sleeve"] == {"class_index": 0, "acc": pytest.approx(np.mean(sleeve_y == 0))}
    below = below_majority(schema, cal["cross_fit"], "accuracy")
    assert [b[0] for b in below] == ["fabric"] and below[0][2] == "cotton"
    assert below[0][1] == cal["cross_fit"]["accuracy"]["groups"]["fabric"]["acc"] <= floor["fabric"]["acc"]


def test_default_mode_follows_the_selection_metric():
    assert default_mode("avg_class_acc") == "balanced" and default_mode("fit/avg_class_acc") == "balanced"
    assert default_mode("overall_acc") == "accuracy" and default_mode(None) == "accuracy"


# ---------------------------------------------------------------------------------------------- on a run
def csv_dataset(tiny_data: Path, root: Path) -> Path:
    """The tiny FashionDataset's images and labels as a CSV: two single-label groups and a multi-label one."""
    attr = np.loadtxt(tiny_data / "split" / "train_attr.txt", dtype=np.int64)
    paths = (tiny_data / "split" / "train.txt").read_text().split()
    names = [list(v) for v in AI6126_GROUPS.values()]
    rows = ["path,pattern,sleeve,tags"]
    for p, a in zip(paths, attr, strict=True):
        tags = "|".join(t for t, on in (("busy", a[0] < 3), ("bare", a[1] == 2)) if on)
        rows.append(f"{p},{names[0][a[0]]},{names[1][a[1]]},{tags}")
    shutil.copytree(tiny_data / "img", root / "img")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


@pytest.fixture(scope="module")
def multi_run(tiny_data: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("csv")
    over = tiny_overrides(
        csv_dataset(tiny_data, root),
        cache_dir,
        root / "runs",
        name="multi",
        **{"data.format": "csv", "data.reader_options": "{multi_label: [tags]}", "data.test_holdout": 0.2},
    )
    return fit(load_config(None, over))


def test_calibrate_run_writes_what_it_was_fitted_on(multi_run: Path):
    cal = calibrate_run(multi_run, folds=4)
    saved = json.loads((multi_run / CALIBRATION).read_text())
    assert saved == json.loads(json.dumps(cal))
    fitted = saved["fitted_on"]
    assert fitted["split"] == "holdout" and fitted["weights"] == "best.safetensors"
    assert fitted["weights_sha256"] == file_sha256(multi_run / "best.safetensors")
    # The image counts training logged (160 = 99 trained on + 30 selection + 31 test holdout, stratified).
    logged = re.search(r"data: (\d+) training images, (\d+) for model selection", (multi_run / "train.log").read_text())
    assert logged is not None and (fitted["train_images"], fitted["images"]) == (int(logged[1]), int(logged[2]))
    assert fitted["select_metric"] == "avg_class_acc" and saved["default"] == "balanced"
    assert set(saved["thresholds"]) == {"tags"} and len(saved["thresholds"]["tags"]) == 2
    assert sum(saved["train_counts"]["pattern"]) == fitted["train_images"]
    assert set(saved["modes"]["accuracy"]["tau"]) == {"pattern", "sleeve"}
    assert saved["cross_fit"]["folds"] == 4 and saved["cross_fit"]["images"] == fitted["images"]
    # The raw model's metric on the selection split is what training selected on.
    best = json.loads((multi_run / "summary.json").read_text())["best"]["avg_class_acc"]
    assert saved["cross_fit"]["none"]["avg_class_acc"] == pytest.approx(best, abs=1e-6)
    assert load_calibration(multi_run)["fitted_on"] == fitted
    assert load_calibration(multi_run, "last") is None  # fitted for best: not applied to last


def test_calibrate_refuses_the_test_holdout_and_stale_weights(multi_run: Path, tmp_path: Path):
    with pytest.raises(ValueError, match=r"never on the test holdout"):
        calibrate_run(multi_run, "test_holdout")
    run = tmp_path / "copy"
    shutil.copytree(multi_run, run)
    if not (run / CALIBRATION).is_file():
        calibrate_run(run, folds=2)
    (run / "best.safetensors").write_bytes((run / "last.safetensors").read_bytes() + b" ")
    with pytest.raises(
        CalibrationError,
        match=r"calibration.json: fitted on best.safetensors with sha256 .* run `fashattr calibrate RUN` again",
    ):
        load_calibration(run)
    (run / CALIBRATION).write_text("{}")
    with pytest.raises(CalibrationError, match=r"not a fashattr calibration file"):
        load_calibration(run)
