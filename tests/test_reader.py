"""FashionDataset reader: any split, unlabeled splits, and every malformed row named."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_dataset

from fashattr.data.formats import create_reader
from fashattr.data.table import stratified_holdout
from fashattr.errors import DatasetError
from fashattr.schema import ai6126_schema


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "ds", {"train": 30, "val": 6, "extra": 4}, labeled=("train", "extra"), bbox=True)


def test_reads_labeled_unlabeled_and_any_split(data: Path):
    r = create_reader("ai6126", data)
    assert r.splits() == ["extra", "train", "val"]
    train = r.read("train")
    assert len(train) == 30 and train.labeled and train.bboxes is not None
    assert train.labels is not None and set(train.labels) == set(ai6126_schema().names)
    assert not r.read("val").labeled
    assert r.read("extra").paths == [f"img/{i:05d}.jpg" for i in range(36, 40)]


def test_unknown_format_and_split(data: Path):
    with pytest.raises(ValueError, match="did you mean 'ai6126'"):
        create_reader("ai6216", data)
    with pytest.raises(DatasetError, match=r"no split 'tset'; splits here: \['extra', 'train', 'val'\]"):
        create_reader("ai6126", data).read("tset")


def edit(path: Path, line: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("file", "line", "text", "message"),
    [
        ("train_attr.txt", 3, "1 2 0 1", r"train_attr.txt:3: expected 6 class indices, got 4"),
        ("train_attr.txt", 4, "1 x 0 1 2 0", r"train_attr.txt:4: column 2 \(sleeve\): 'x' is not an integer"),
        ("train_attr.txt", 5, "7 0 0 0 0 0", r"train_attr.txt:5: column 1 \(pattern\): class 7 out of range 0..6"),
        ("train_attr.txt", 6, "0 0 0 0 0 -1", r"train_attr.txt:6: column 6 \(fit\): class -1 out of range"),
        ("train.txt", 2, "img/99999.jpg", r"train.txt:2: listed image 'img/99999.jpg' not found"),
        ("train.txt", 7, "img/00000.jpg", r"train.txt:7: duplicate entry 'img/00000.jpg' \(first on line 1\)"),
        ("train.txt", 8, "img/00001.jpg extra", r"train.txt:8: expected one image path"),
        ("train_bbox.txt", 2, "1 2 3", r"train_bbox.txt:2: expected 4 numbers"),
        ("train_bbox.txt", 3, "1 2 a 4", r"train_bbox.txt:3: box '1 2 a 4' is not 4 numbers"),
        ("train_bbox.txt", 4, "10 2 5 40", r"train_bbox.txt:4: box '10 2 5 40' needs 0 <= x1 < x2"),
    ],
)
def test_bad_rows_are_named(data: Path, file: str, line: int, text: str, message: str):
    edit(data / "split" / file, line, text)
    with pytest.raises(DatasetError, match=message):
        create_reader("ai6126", data).read("train")


def test_every_bad_row_is_listed(data: Path):
    for line in (2, 9, 17):
        edit(data / "split" / "train_attr.txt", line, "0 0 0 9 0 0")
    with pytest.raises(DatasetError) as info:
        create_reader("ai6126", data).read("train")
    assert [ln for ln, _ in info.value.problems] == [2, 9, 17]


def test_line_counts_must_agree(data: Path):
    attr = data / "split" / "train_attr.txt"
    attr.write_text("".join(attr.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(DatasetError, match=r"train_attr.txt: has 29 lines but its split file lists 30 images"):
        create_reader("ai6126", data).read("train")


def test_missing_image_file(data: Path):
    (data / "img" / "00003.jpg").unlink()
    with pytest.raises(DatasetError, match=r"train.txt:4: listed image 'img/00003.jpg' not found"):
        create_reader("ai6126", data).read("train")


def test_class_names_come_from_list_attr_cloth(data: Path):
    lines = ["26", "attribute_name attribute_type"]
    for gi, g in enumerate(ai6126_schema().groups, start=1):
        lines += [f"{c.upper()} {gi}" for c in g.classes]
    (data / "split" / "list_attr_cloth.txt").write_text("\n".join(lines) + "\n")
    schema = create_reader("ai6126", data).schema()
    assert schema["pattern"].classes[0] == "FLORAL"
    assert "list_attr_cloth" not in create_reader("ai6126", data).splits()


def test_stratified_holdout_keeps_rare_classes_on_both_sides(tmp_path: Path):
    root = make_dataset(tmp_path / "h", {"train": 200})
    table = create_reader("ai6126", root).read("train")
    schema = ai6126_schema()
    train, hold = stratified_holdout(table, schema, 0.1, seed=3)
    assert len(np.intersect1d(train, hold)) == 0 and len(train) + len(hold) == 200
    assert 15 <= len(hold) <= 25
    full = table.class_counts(schema)
    a, b = table.subset(train).class_counts(schema), table.subset(hold).class_counts(schema)
    for g in schema.names:
        for c, n in enumerate(full[g]):
            if n >= 2:
                assert a[g][c] >= 1 and b[g][c] >= 1, (g, c, n)
    again = stratified_holdout(table, schema, 0.1, seed=3)
    assert np.array_equal(again[1], hold)
    assert not np.array_equal(stratified_holdout(table, schema, 0.1, seed=4)[1], hold)


def test_reader_copies_nothing(data: Path, tmp_path: Path):
    shutil.copytree(data, tmp_path / "copy")
    before = sorted(p.name for p in (tmp_path / "copy").rglob("*"))
    create_reader("ai6126", tmp_path / "copy").read("train")
    assert sorted(p.name for p in (tmp_path / "copy").rglob("*")) == before
