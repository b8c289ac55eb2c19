"""Generic CSV / Parquet and folder-per-class readers; training runs unchanged on them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_overrides
from PIL import Image

from fashattr.config import load_config
from fashattr.data.formats import create_reader
from fashattr.engine.trainer import fit
from fashattr.errors import DatasetError
from fashattr.predictor import eval_run
from fashattr.schema import AI6126_GROUPS

CSV = """path,pattern,sleeve,tags,x1,y1,x2,y2,split
img/a.png,floral,2,casual|summer,1,2,30,40,train
img/b.png,solid,0,,,,,,train
img/c.png,,1,summer,0,0,10,10,val
img/d.png,floral,0,casual,,,,,val
"""


@pytest.fixture
def table_dir(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    for name in "abcd":
        Image.new("RGB", (40, 50), (10, 20, 30)).save(tmp_path / "img" / f"{name}.png")
    (tmp_path / "labels.csv").write_text(CSV)
    return tmp_path


def test_csv_schema_labels_boxes_and_splits(table_dir: Path):
    r = create_reader("csv", table_dir / "labels.csv", {"classes": {"sleeve": ["long", "short", "none"]}})
    s = r.schema()
    assert s.names == ["pattern", "sleeve", "tags"]
    assert s["pattern"].classes == ("floral", "solid") and s["pattern"].kind == "single"
    assert s["sleeve"].classes == ("long", "short", "none")  # indices named by the option
    assert s["tags"].kind == "multi" and s["tags"].classes == ("casual", "summer")
    assert r.splits() == ["train", "val"]
    train, val = r.read("train"), r.read("val")
    assert train.paths == ["img/a.png", "img/b.png"] and val.paths == ["img/c.png", "img/d.png"]
    assert val.labels is not None and train.labels is not None
    assert val.labels["pattern"].tolist() == [-1, 0]  # empty cell: unknown
    assert train.labels["sleeve"].tolist() == [2, 0]
    assert train.labels["tags"].tolist() == [[1, 1], [-1, -1]]
    assert train.bboxes is not None and train.bboxes[0].tolist() == [1, 2, 30, 40]
    assert np.isnan(train.bboxes[1]).all()  # no box: the whole image


def test_csv_without_split_or_boxes_and_with_index_labels(tmp_path: Path, table_dir: Path):
    (table_dir / "plain.csv").write_text("path,colour\nimg/a.png,1\nimg/b.png,3\n")
    r = create_reader("csv", table_dir / "plain.csv")
    assert r.splits() == ["train"]
    assert r.schema()["colour"].classes == ("0", "1", "2", "3")
    t = r.read("train")
    assert t.bboxes is None and t.labels is not None and t.labels["colour"].tolist() == [1, 3]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("img/a.png,floral,7,,,,,,train", r"labels.csv:3: column 'sleeve': unknown class '7'"),
        ("img/a.png,floral,1,,1,2,x,4,train", r"labels.csv:3: bbox columns .*: box '1,2,x,4' is not 4 numbers"),
        ("img/a.png,floral,1,,5,2,3,4,train", r"labels.csv:3: bbox columns .*: box '5,2,3,4' needs 0 <= x1 < x2"),
        ("img/a.png,floral,1,,1,2,inf,4,train", r"labels.csv:3: bbox columns .*: box '1,2,inf,4' is not 4 finite"),
        ("img/zz.png,floral,1,,,,,,train", r"labels.csv:3: image 'img/zz.png' not found"),
        ("img/a.png,solid,1,,,,,,train", r"labels.csv:3: duplicate image 'img/a.png' \(first on line 2\)"),
    ],
)
def test_csv_bad_rows_are_named(table_dir: Path, row: str, message: str):
    lines = CSV.splitlines()
    lines[2] = row
    (table_dir / "labels.csv").write_text("\n".join(lines) + "\n")
    options = {"classes": {"pattern": ["floral", "solid"], "sleeve": ["long", "short", "none"]}}
    with pytest.raises(DatasetError, match=message):
        create_reader("csv", table_dir / "labels.csv", options).read("train")


def test_csv_structural_errors(table_dir: Path):
    (table_dir / "extra.csv").write_text("path,colour\nimg/a.png,red,oops\n")
    with pytest.raises(DatasetError, match=r"extra.csv:2: 3 cells for 2 columns"):
        create_reader("csv", table_dir / "extra.csv")
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['file'\]"):
        create_reader("csv", table_dir / "labels.csv", {"path_column": "file"})
    with pytest.raises(ValueError, match=r"unknown data.reader_options key 'path_col'.*did you mean 'path_column'"):
        create_reader("csv", table_dir / "labels.csv", {"path_col": "path"})
    with pytest.raises(ValueError, match=r"unknown data\.reader_options key"):
        create_reader("ai6126", table_dir, {"anything": 1})
    (table_dir / "one.csv").write_text("path,colour\nimg/a.png,red\nimg/b.png,red\n")
    with pytest.raises(DatasetError, match=r"one.csv: column 'colour': group 'colour' needs at least 2 classes"):
        create_reader("csv", table_dir / "one.csv")


def test_parquet_reads_like_csv(table_dir: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = [line.split(",") for line in CSV.strip().splitlines()]
    columns = {name: [row[k] or None for row in lines[1:]] for k, name in enumerate(lines[0])}
    pq.write_table(pa.table(columns), table_dir / "labels.parquet")
    a = create_reader("csv", table_dir / "labels.csv").read("val")
    b = create_reader("csv", table_dir / "labels.parquet").read("val")
    assert a.paths == b.paths and a.labels is not None and b.labels is not None
    assert all(np.array_equal(a.labels[g], b.labels[g]) for g in a.labels)


def test_folder_per_class_with_and_without_split_folders(tmp_path: Path):
    for root, splits in ((tmp_path / "flat", [""]), (tmp_path / "split", ["train", "val"])):
        for split in splits:
            for colour, n in (("red", 2), ("blue", 3)):
                folder = root / split / colour
                folder.mkdir(parents=True)
                for k in range(n):
                    Image.new("RGB", (8, 8)).save(folder / f"{k}.jpg")
        (root / splits[0] / "red" / "notes.txt").write_text("not an image: ignored by suffix")
    flat = create_reader("folder", tmp_path / "flat", {"group": "colour"})
    assert flat.schema().names == ["colour"] and flat.schema()["colour"].classes == ("blue", "red")
    t = flat.read("train")
    assert t.labels is not None and t.labels["colour"].tolist() == [0, 0, 0, 1, 1]
    split = create_reader("folder", tmp_path / "split")
    assert split.splits() == ["train", "val"] and len(split.read("val")) == 5
    assert split.read("val").paths[0] == "val/blue/0.jpg"


def test_training_and_eval_run_unchanged_on_a_csv_with_a_multi_label_group(
    tiny_data: Path, cache_dir: Path, tmp_path: Path
):
    """The tiny FashionDataset's images and labels as a CSV with names, plus a multi-label column."""
    attr = np.loadtxt(tiny_data / "split" / "train_attr.txt", dtype=np.int64)
    paths = (tiny_data / "split" / "train.txt").read_text().split()
    names = [list(v) for v in AI6126_GROUPS.values()]
    rows = ["path,pattern,sleeve,tags"]
    for p, a in zip(paths, attr, strict=True):
        tags = "|".join(t for t, on in (("busy", a[0] < 3), ("bare", a[1] == 2)) if on) or ""
        rows.append(f"{p},{names[0][a[0]]},{names[1][a[1]]},{tags}")
    shutil.copytree(tiny_data / "img", tmp_path / "img")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    over = tiny_overrides(
        tmp_path / "labels.csv",
        cache_dir,
        tmp_path / "runs",
        name="csv",
        **{"data.format": "csv", "data.reader_options": "{multi_label: [tags]}", "loss.pos_weight": "auto"},
    )
    run = fit(load_config(None, over))
    summary = json.loads((run / "summary.json").read_text())
    assert {"pattern/acc", "sleeve/acc", "tags/acc"} <= set(summary["best"])
    metrics = eval_run(run, "holdout")
    assert metrics.groups["tags"].kind == "multi" and metrics.groups["tags"].support[0] > 0
