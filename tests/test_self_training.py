"""Self-training (pseudo-labels: thresholds by hand, masking in the loss by hand, holdouts never labeled)
and the data.duplicates policy."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_dataset, tiny_overrides

from fashattr.cli import main as cli
from fashattr.config import ConfigError, LossConfig, load_config
from fashattr.data.dedup import apply_policy, conflicting_duplicates
from fashattr.data.formats import create_reader
from fashattr.data.prepare import load_split, load_train_eval
from fashattr.engine.distill import CACHE, soften
from fashattr.engine.pseudo import add_pseudo_labels, pseudo_label, threshold_check, threshold_labels
from fashattr.engine.trainer import fit
from fashattr.losses import create_loss
from fashattr.predictor import Predictor
from fashattr.schema import Group, Schema

SCHEMA = Schema((Group("a", ("x", "y", "z")), Group("m", ("p", "q"), kind="multi")))


def test_thresholds_by_hand():
    probs = {
        "a": np.array([[0.95, 0.03, 0.02], [0.5, 0.4, 0.1], [0.05, 0.85, 0.10]]),
        "m": np.array([[0.97, 0.5], [0.02, 0.9], [0.15, 0.85]]),
    }
    got = threshold_labels(SCHEMA, probs, {"a": 0.9, "m": 0.85})
    assert got["a"].tolist() == [0, -1, -1]  # 0.95 >= 0.9; 0.5 and 0.85 are below it
    # multi: 1 at p >= 0.85, 0 at p <= 0.15, else unknown
    assert got["m"].tolist() == [[1, -1], [0, 1], [0, 1]]
    got = threshold_labels(SCHEMA, probs, {"a": 0.85, "m": 0.99})
    assert got["a"].tolist() == [0, -1, 1]
    assert got["m"].tolist() == [[-1, -1], [-1, -1], [-1, -1]]


def test_threshold_check_by_hand():
    """Coverage and precision of the pseudo-labels where the answers are known (the selection split)."""
    probs = {
        "a": np.array([[0.95, 0.03, 0.02], [0.1, 0.85, 0.05], [0.5, 0.4, 0.1], [0.05, 0.05, 0.9]]),
        "m": np.array([[0.97, 0.5], [0.02, 0.9], [0.15, 0.85], [0.6, 0.95]]),
    }
    truth = {"a": np.array([0, 0, 1, -1]), "m": np.array([[1, 1], [0, 0], [0, 1], [-1, 1]], dtype=np.int8)}
    got = threshold_check(SCHEMA, probs, truth, {"a": 0.8, "m": 0.9})
    # a: rows 1-3 have a truth; rows 1 (0.95 -> 0, right) and 2 (0.85 -> 1, wrong) are kept: 2 of 3, 1 of 2 right
    assert got["a"] == {"threshold": 0.8, "coverage": round(2 / 3, 4), "precision": 0.5}
    # m: 7 known entries; kept (p >= 0.9 -> 1, p <= 0.1 -> 0): (0,p)=1 right, (1,p)=0 right, (1,q)=1 wrong,
    # (3,q)=1 right; (0,q) 0.5, (2,p) 0.15, (2,q) 0.85 unsure; (3,p) has no truth
    assert got["m"] == {"threshold": 0.9, "coverage": round(4 / 7, 4), "precision": 0.75}
    assert threshold_check(SCHEMA, probs, truth, {"a": 1.0, "m": 1.0})["a"] == {
        "threshold": 1.0,
        "coverage": 0.0,
        "precision": None,
    }


def test_a_group_below_threshold_is_masked_in_the_loss_by_hand():
    logits = {"a": torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), "m": torch.tensor([[3.0, -2.0], [1.0, 0.5]])}
    targets = {"a": torch.tensor([-1, 1]), "m": torch.tensor([[1, -1], [-1, -1]], dtype=torch.int8)}
    loss = create_loss(LossConfig(), SCHEMA)(logits, targets)
    # a: only row 2 counts: -log softmax([0, 1, 0])[1]
    want_a = -(1.0 - math.log(math.exp(0) + math.exp(1) + math.exp(0)))
    assert loss["a"].item() == pytest.approx(want_a, rel=1e-6)
    # m: one known entry (row 1, class p = 1): -log sigmoid(3)
    assert loss["m"].item() == pytest.approx(math.log1p(math.exp(-3.0)), rel=1e-6)
    assert loss["loss"].item() == pytest.approx(want_a + math.log1p(math.exp(-3.0)), rel=1e-6)
    # a group unknown for every image contributes exactly zero
    none = create_loss(LossConfig(), SCHEMA)(logits, {"a": torch.tensor([-1, -1]), "m": targets["m"]})
    assert none["a"].item() == 0.0


def test_pseudo_labels_train_and_never_touch_the_holdouts(
    tiny_data: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    over = tiny_overrides(tiny_data, cache_dir, tmp_path, **{"train.epochs": 1, "data.test_holdout": 0.2})
    teacher = fit(load_config(None, [*over, "name=teacher", "data.unlabeled_splits=[val,test]"]))
    out = tmp_path / "pseudo.json"
    assert cli(["pseudo-label", str(teacher), "--threshold", "0.5", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["splits"] == ["val", "test"] and len(data["images"]) == 24 + 20
    # the threshold tried on the selection holdout, where the answers are known: per group, the share of its
    # images whose top softmax probability reaches 0.5, and how many of those the teacher gets right
    check = data["selection_check"]
    schema, held = load_split(load_config(teacher / "config.yaml").data, "holdout", progress=False)
    assert check["split"] == "holdout" and check["images"] == len(held) and held.labels is not None
    scores = Predictor.from_run(teacher).scores(held.pixels())
    for g in schema.groups:
        z = scores[g.name].astype(np.float64)
        p = np.exp(z - z.max(1, keepdims=True))
        kept = p.max(1) / p.sum(1) >= 0.5
        right = (z.argmax(1) == held.labels[g.name])[kept]
        assert check["groups"][g.name]["coverage"] == round(float(kept.mean()), 4)
        assert check["groups"][g.name]["precision"] == (round(float(right.mean()), 4) if kept.any() else None)
    # and the command prints them beside what it labeled
    printed = capsys.readouterr().out
    assert f"on holdout ({len(held)} known): kept, right" in printed
    c, k = check["groups"]["sleeve"], data["kept"]["sleeve"]
    right = "-" if c["precision"] is None else f"{c['precision']:.1%}"
    assert f"  sleeve            0.50  {k:6d} ({k / 44:5.1%})  {c['coverage']:.1%}, {right}\n" in printed
    val_paths = create_reader("ai6126", tiny_data).read("val").paths
    assert [img["path"] for img in data["images"][:24]] == val_paths
    # the holdouts and the training split are refused, by the command and by the config
    for split in ("train", "holdout", "test_holdout"):
        with pytest.raises(ConfigError, match="never pseudo-labeled"):
            pseudo_label(teacher, [split], 0.9, tmp_path / "x.json")
    with pytest.raises(ConfigError, match="never pseudo-labeled"):
        load_config(None, [*over, "data.unlabeled_splits=[val,train]"])
    # A 1-epoch teacher is rarely sure: give 10 images one confident group by hand, none to the rest.
    for i, img in enumerate(data["images"]):
        img["labels"] = {g: (1 if i < 10 and g == "sleeve" else -1) for g in img["labels"]}
    out.write_text(json.dumps(data))
    student = fit(load_config(None, [*over, "name=student", f"data.pseudo_labels={out}"]))
    log = (student / "train.log").read_text()
    assert "pseudo-labels: 34 of 44 images have no label above its threshold; left out" in log
    assert "pseudo-labels: 10 images added to" in log
    # the same holdouts as the teacher's: nothing of them was trained on
    for f in ("eval_rows.txt", "test_rows.txt"):
        assert (student / f).read_text() == (teacher / f).read_text()
    # a file that labels an image of the training split (here: of its test holdout) is refused, naming it
    test_row = int((teacher / "test_rows.txt").read_text().split()[0])
    leaked = create_reader("ai6126", tiny_data).read("train").paths[test_row]
    data["images"][0]["path"] = leaked
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=f"labels 1 image.*of split 'train'.*{leaked}"):
        fit(load_config(None, [*over, "name=bad", f"data.pseudo_labels={bad}"]))


def test_duplicates_with_conflicting_labels(cache_dir: Path, tmp_path: Path):
    root = make_dataset(tmp_path / "FashionDataset", {"train": 40, "val": 4}, seed=3)
    table = create_reader("ai6126", root).read("train")
    assert table.labels is not None
    # two copies of image 5: one over image 6 (other labels: a conflict), one over image 7 given 5's labels
    shutil.copyfile(root / table.paths[5], root / table.paths[6])
    assert any(table.labels[g][5] != table.labels[g][6] for g in table.labels)
    lines = (root / "split" / "train_attr.txt").read_text().splitlines()
    lines[7] = lines[5]
    shutil.copyfile(root / table.paths[5], root / table.paths[7])
    (root / "split" / "train_attr.txt").write_text("\n".join(lines) + "\n")
    table = create_reader("ai6126", root).read("train")
    assert conflicting_duplicates(table) == [[5, 6, 7]]
    rows = np.arange(40)
    assert apply_policy(table, rows, "keep") is rows
    assert apply_policy(table, rows, "drop_conflicting").tolist() == [r for r in range(40) if r not in (5, 6, 7)]
    with pytest.raises(ValueError, match=r"unknown data.duplicates 'drop'; choose from \['keep', 'drop_conflicting'\]"):
        apply_policy(table, rows, "drop")
    # in training: only the training rows lose them; both holdouts stay as they were
    base = tiny_overrides(root, cache_dir, tmp_path, **{"data.test_holdout": 0.2})
    _, train, held, test = load_train_eval(load_config(None, base).data, progress=False)
    _, train2, held2, test2 = load_train_eval(
        load_config(None, [*base, "data.duplicates=drop_conflicting"]).data, progress=False
    )
    assert test is not None and test2 is not None
    assert held.rows.tolist() == held2.rows.tolist() and test.rows.tolist() == test2.rows.tolist()
    assert train2.rows.tolist() == [r for r in train.rows.tolist() if r not in (5, 6, 7)]


def test_a_copy_of_a_holdout_image_in_an_unlabeled_split_is_never_trained_on(cache_dir: Path, tmp_path: Path):
    root = make_dataset(tmp_path / "FashionDataset", {"train": 40, "val": 4}, seed=5)
    cfg = load_config(None, tiny_overrides(root, cache_dir, tmp_path, **{"data.test_holdout": 0.2})).data
    schema, train, held, test = load_train_eval(cfg, progress=False)
    assert test is not None
    val = create_reader("ai6126", root).read("val").paths
    shutil.copyfile(test.table.file(int(test.rows[0])), root / val[1])  # the val split holds a holdout copy
    labels = {g.name: 0 if g.kind == "single" else [0] * g.num_classes for g in schema.groups}
    pseudo = {"format": "fashattr-pseudo-labels", "splits": ["val"]}
    pseudo["images"] = [{"split": "val", "path": p, "labels": labels} for p in val]
    (tmp_path / "p.json").write_text(json.dumps(pseudo))
    both = add_pseudo_labels(train, replace(cfg, pseudo_labels=str(tmp_path / "p.json")), schema, False, [held, test])
    assert both.table.paths == [train.table.paths[r] for r in train.rows] + [val[0], val[2], val[3]]
    assert len(both.images) == len(train) + 3


def test_with_distillation_every_pseudo_image_is_kept_for_the_soft_targets(
    tiny_data: Path, cache_dir: Path, tmp_path: Path
):
    """Noisy Student: with loss.distill_from, an image with no confident group still trains, on the teacher's
    soft targets alone (its hard labels are all unknown, masked in the loss)."""
    over = tiny_overrides(tiny_data, cache_dir, tmp_path, **{"train.epochs": 1, "data.test_holdout": 0.2})
    teacher = fit(load_config(None, [*over, "name=teacher"]))
    out = tmp_path / "pseudo.json"
    assert cli(["pseudo-label", str(teacher), "--splits", "val,test", "--threshold", "0.5", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    for i, img in enumerate(data["images"]):
        img["labels"] = {g: (1 if i < 10 and g == "sleeve" else -1) for g in img["labels"]}
    out.write_text(json.dumps(data))
    cfg = load_config(None, [*over, "name=student", f"data.pseudo_labels={out}", f"loss.distill_from=[{teacher}]"])
    student = fit(cfg)
    log = (student / "train.log").read_text()
    assert "34 of 44 images have no label above its threshold; kept for the teachers' soft targets" in log
    assert "pseudo-labels: 44 images added to" in log
    # the soft targets cover the training images and then all 44 pseudo images, each the teacher's softmax(z / T)
    schema, train, held, test = load_train_eval(cfg.data, progress=False)
    both = add_pseudo_labels(train, cfg.data, schema, False, [held, test], soft_targets=True)
    assert len(both) == len(train) + 44
    assert both.labels is not None and (both.labels["sleeve"][len(train) :] >= 0).sum() == 10
    want = soften(schema, Predictor.from_run(teacher).scores(both.pixels()), cfg.loss.distill_temperature)
    with np.load(student / CACHE) as z:
        for g in schema.names:
            assert z[g].shape[0] == len(train) + 44
            assert np.allclose(z[g], want[g], atol=1e-6)
    # without distillation the 34 images would teach nothing: left out, as before
    plain = add_pseudo_labels(train, cfg.data, schema, False, [held, test])
    assert len(plain) == len(train) + 10
