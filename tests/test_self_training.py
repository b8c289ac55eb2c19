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
from fashattr.data.prepare import load_train_eval
from fashattr.engine.pseudo import add_pseudo_labels, pseudo_label, threshold_labels
from fashattr.engine.trainer import fit
from fashattr.losses import create_loss
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


def test_pseudo_labels_train_and_never_touch_the_holdouts(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    over = tiny_overrides(tiny_data, cache_dir, tmp_path, **{"train.epochs": 1, "data.test_holdout": 0.2})
    teacher = fit(load_config(None, [*over, "name=teacher", "data.unlabeled_splits=[val,test]"]))
    out = tmp_path / "pseudo.json"
    assert cli(["pseudo-label", str(teacher), "--threshold", "0.5", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["splits"] == ["val", "test"] and len(data["images"]) == 24 + 20
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
