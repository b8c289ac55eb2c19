"""DeepFashion fine-grained variant: 26 multi-hot attributes in 6 groups plus a category."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SIZES, tiny_overrides

from fashattr.config import load_config
from fashattr.data.formats import create_reader
from fashattr.engine.trainer import fit
from fashattr.errors import DatasetError


@pytest.fixture
def fine(tiny_data: Path, tmp_path: Path) -> Path:
    """The tiny FashionDataset rewritten in the fine-grained layout (multi-hot + categories)."""
    root = tmp_path / "fine"
    shutil.copytree(tiny_data, root)
    split = root / "split"
    attr = np.loadtxt(split / "train_attr.txt", dtype=np.int64)
    offsets = np.cumsum([0, *SIZES[:-1]])
    hot = np.zeros((len(attr), 26), np.int64)
    for j, off in enumerate(offsets):
        hot[np.arange(len(attr)), off + attr[:, j]] = 1
    (split / "train_attr.txt").write_text("".join(" ".join(map(str, r)) + "\n" for r in hot))
    (split / "train_cate.txt").write_text("".join(f"{1 + (i % 3)}\n" for i in range(len(attr))))
    (split / "list_category_cloth.txt").write_text("3\ncategory_name category_type\nBlouse 1\nShorts 2\nDress 3\n")
    return root


def test_groups_labels_and_unlabeled_split(fine: Path, tiny_data: Path):
    r = create_reader("deepfashion-fine", fine)
    s = r.schema()
    assert s.names == ["pattern", "sleeve", "length", "neckline", "fabric", "fit", "category"]
    assert all(g.kind == "multi" for g in s.groups[:6]) and s["category"].kind == "single"
    assert s["category"].classes == ("Blouse", "Shorts", "Dress")
    assert r.splits() == ["test", "train", "val"]
    t = r.read("train")
    original = np.loadtxt(tiny_data / "split" / "train_attr.txt", dtype=np.int64)
    assert t.labels is not None
    assert np.array_equal(t.labels["sleeve"].argmax(1), original[:, 1])  # one positive per group here
    assert t.labels["fabric"].shape == (len(t), 6) and set(np.unique(t.labels["fabric"])) == {0, 1}
    assert t.labels["category"][:4].tolist() == [0, 1, 2, 0]
    assert not r.read("val").labeled


@pytest.mark.parametrize(
    ("file", "line", "text", "message"),
    [
        ("train_attr.txt", 2, " ".join(["0"] * 27), r"train_attr.txt:2: expected 26 values of 0 or 1"),
        ("train_attr.txt", 3, " ".join(["2"] + ["0"] * 25), r"train_attr.txt:3: expected 26 values of 0 or 1"),
        ("train_cate.txt", 4, "0", r"train_cate.txt:4: category '0' is not an id in 1\.\.3"),
        ("train_cate.txt", 5, "x", r"train_cate.txt:5: category 'x' is not an id in 1\.\.3"),
    ],
)
def test_bad_lines_are_named(fine: Path, file: str, line: int, text: str, message: str):
    path = fine / "split" / file
    lines = path.read_text().splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=message):
        create_reader("deepfashion-fine", fine).read("train")


def test_trains_on_multi_hot_groups_and_category(fine: Path, cache_dir: Path, tmp_path: Path):
    over = tiny_overrides(fine, cache_dir, tmp_path, name="fine", **{"data.format": "deepfashion-fine"})
    run = fit(load_config(None, over))
    best = json.loads((run / "summary.json").read_text())["best"]
    assert {"category/acc", "pattern/acc", "fit/avg_class_acc"} <= set(best)


@pytest.mark.parametrize("text", ["", "three\nname type\nBlouse 1\n", "2\nname type\nBlouse 1\n"])
def test_bad_category_list_is_named(fine: Path, text: str):
    (fine / "split" / "list_category_cloth.txt").write_text(text)
    with pytest.raises(DatasetError, match=r"list_category_cloth.txt"):
        create_reader("deepfashion-fine", fine).schema()
