"""FASHION-HOW sub-task CSVs and the model-size budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_overrides
from PIL import Image
from safetensors.torch import save_file

from fashattr.config import ModelConfig, load_config
from fashattr.data.formats import create_reader
from fashattr.engine.trainer import fit
from fashattr.errors import DatasetError
from fashattr.models import create_model
from fashattr.models.model import weights_mb
from fashattr.schema import ai6126_schema

HEADER1 = "image_name,BBox_xmin,BBox_ymin,BBox_xmax,BBox_ymax,Daily,Gender,Embellishment"
HEADER2 = "image_name,BBox_xmin,BBox_ymin,BBox_xmax,BBox_ymax,Color"


def write(root: Path, name: str, header: str, rows: list[str]) -> None:
    (root / name).write_text("\n".join([header, *rows]) + "\n")
    for row in rows:
        path = root / row.split(",")[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            Image.new("RGB", (60, 80), (100, 50, 20)).save(path)


def test_subtask1_schema_from_every_split_and_boxes(tmp_path: Path):
    write(tmp_path, "train.csv", HEADER1, ["tr/a.jpg,2,3,50,70,0,1,2", "tr/b.jpg,0,0,60,80,3,0,0"])
    write(tmp_path, "val.csv", HEADER1, ["va/c.jpg,1,1,40,40,5,1,1"])  # Daily 5 appears only in val
    r = create_reader("fashionhow", tmp_path, {"classes": {"Gender": ["male", "female"]}})
    s = r.schema()
    assert s.names == ["Daily", "Gender", "Embellishment"]
    assert s["Daily"].num_classes == 6 and s["Gender"].classes == ("male", "female")
    assert r.splits() == ["train", "val"]
    t = r.read("train")
    assert t.split == "train" and t.paths == ["tr/a.jpg", "tr/b.jpg"]
    assert t.labels is not None and t.labels["Daily"].tolist() == [0, 3]
    assert t.bboxes is not None and t.bboxes[0].tolist() == [2, 3, 50, 70]
    assert r.read("val").labels["Daily"].tolist() == [5]  # type: ignore[index]


def test_subtask2_color_has_18_classes_and_bad_rows_are_named(tmp_path: Path):
    write(tmp_path, "train.csv", HEADER2, ["x/a.jpg,0,0,10,10,3", "x/b.jpg,0,0,10,10,7"])
    assert create_reader("fashionhow", tmp_path).schema()["Color"].num_classes == 18
    write(tmp_path, "train.csv", HEADER2, ["x/a.jpg,0,0,10,10,3", "x/b.jpg,0,0,10,10,19"])
    with pytest.raises(DatasetError, match=r"train.csv:3: column 'Color': unknown class '19'"):
        create_reader("fashionhow", tmp_path, {"classes": {"Color": [str(k) for k in range(18)]}}).read("train")
    write(tmp_path, "train.csv", HEADER2, ["x/a.jpg,0,0,10,10,3", "x/b.jpg,9,0,5,10,7"])
    with pytest.raises(DatasetError, match=r"train.csv:3: bbox .* needs 0 <= x1 < x2"):
        create_reader("fashionhow", tmp_path).read("train")


def test_missing_split_files_are_named(tmp_path: Path):
    with pytest.raises(DatasetError, match=r"no CSV named like train / val / test here"):
        create_reader("fashionhow", tmp_path)
    with pytest.raises(DatasetError, match=r"nope.csv: split CSV not found"):
        create_reader("fashionhow", tmp_path, {"splits": {"train": "nope.csv"}})


def write_package(
    root: Path, csv_name: str, folder: str, header: str, rows: list[str], encoding: str = "utf-8", bom: bool = False
) -> None:
    """A CSV as the challenge ships it (its encoding, maybe a BOM); images under root/folder."""
    text = "\r\n".join([header, *rows]) + "\r\n"
    (root / csv_name).write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode(encoding))
    for row in rows:
        path = root / folder / row.split(",")[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (60, 80), (100, 50, 20)).save(path)


def test_challenge_package_with_per_split_image_folders(tmp_path: Path):
    write_package(tmp_path, "info_etri20_emotion_train.csv", "Train", HEADER1, ["1209/a.jpg,0,0,50,70,1,4,0"])
    write_package(tmp_path, "info_etri20_emotion_validation.csv", "Validation", HEADER1, ["1209/a.jpg,0,0,9,9,2,1,1"])
    write_package(tmp_path, "info_etri20_emotion_test_sample.csv", "Test_sample", HEADER1, ["x/b.jpg,0,0,9,9,0,0,2"])
    r = create_reader("fashionhow", tmp_path)
    assert r.splits() == ["test", "train", "val"]
    for split, folder in (("train", "Train"), ("val", "Validation"), ("test", "Test_sample")):
        t = r.read(split)
        assert t.root == tmp_path / folder and t.file(0).is_file()
    assert r.read("val").labels["Daily"].tolist() == [2]  # type: ignore[index]
    # An explicit folder wins (train's 1209/a.jpg is also under Validation); the others are still found.
    r = create_reader("fashionhow", tmp_path, {"image_dirs": {"train": "Validation"}})
    assert [r.read(s).root for s in ("train", "val", "test")] == [
        tmp_path / d for d in ("Validation",) * 2 + ("Test_sample",)
    ]
    (tmp_path / "Test_sample" / "x" / "b.jpg").rename(tmp_path / "b.jpg")  # in no folder: read from root, named
    with pytest.raises(DatasetError, match=rf"test_sample\.csv:2: image 'x/b\.jpg' not found under {tmp_path}$"):
        create_reader("fashionhow", tmp_path).read("test")
    with pytest.raises(DatasetError, match=r"Nope: image folder of split 'train' not found"):
        create_reader("fashionhow", tmp_path, {"image_dirs": {"train": "Nope"}})
    with pytest.raises(ValueError, match=r"image_dirs: no split \['tain'\]; splits are \['test', 'train', 'val'\]"):
        create_reader("fashionhow", tmp_path, {"image_dirs": {"tain": "Train"}})


def test_bom_and_euc_kr_csvs_and_decode_errors_name_the_file(tmp_path: Path):
    write_package(tmp_path, "train.csv", "Train", HEADER2, ["a.jpg,0,0,10,10,3"], bom=True)
    t = create_reader("fashionhow", tmp_path).read("train")
    assert t.paths == ["a.jpg"] and t.labels["Color"].tolist() == [3]  # type: ignore[index]

    write_package(tmp_path, "train.csv", "Train", HEADER2, ["a.jpg,0,0,10,10,3", "상의/가.jpg,0,0,10,10,5"], "euc-kr")
    t = create_reader("fashionhow", tmp_path, {"encoding": "euc-kr"}).read("train")
    assert t.paths == ["a.jpg", "상의/가.jpg"] and t.file(1).is_file()
    assert t.labels["Color"].tolist() == [3, 5]  # type: ignore[index]
    # "상" is 0xBB 0xF3 in EUC-KR: not UTF-8, on line 3
    with pytest.raises(
        DatasetError, match=r"train\.csv:3: byte 0xbb is not utf-8 text; set data\.reader_options\.encoding"
    ):
        create_reader("fashionhow", tmp_path)
    # One package, two encodings: the BOM marks the UTF-8 file, the option names the other's.
    write_package(tmp_path, "val.csv", "Validation", HEADER2, ["하의/v.jpg,0,0,10,10,7"], bom=True)
    r = create_reader("fashionhow", tmp_path, {"encoding": "euc-kr"})
    assert r.read("val").paths == ["하의/v.jpg"] and r.read("train").paths[1] == "상의/가.jpg"
    (tmp_path / "val.csv").write_bytes(b"\xef\xbb\xbf" + HEADER2.encode() + b"\nv\xff.jpg,0,0,10,10,7\n")
    with pytest.raises(
        DatasetError, match=r"val\.csv:2: byte 0xff is not utf-8 text; the file starts with a UTF-8 BOM"
    ):
        create_reader("fashionhow", tmp_path, {"encoding": "euc-kr"})
    with pytest.raises(ValueError, match=r"unknown encoding 'euc-kt'"):
        create_reader("fashionhow", tmp_path, {"encoding": "euc-kt"})


def test_class_counts_are_the_tasks_not_the_largest_label(tmp_path: Path):
    # A sample whose labels stop at 1 / 4 / 0: the heads keep the task's 6, 5, 3 classes.
    write(tmp_path, "train.csv", HEADER1, ["a.jpg,0,0,9,9,1,4,0", "b.jpg,0,0,9,9,0,2,0"])
    assert [g.num_classes for g in create_reader("fashionhow", tmp_path).schema().groups] == [6, 5, 3]
    model = create_model(ModelConfig(backbone="test_resnet"), create_reader("fashionhow", tmp_path).schema()).eval()
    logits = model(torch.zeros(1, 3, 32, 32))
    assert {name: out.shape[1] for name, out in logits.items()} == {"Daily": 6, "Gender": 5, "Embellishment": 3}
    s = create_reader("fashionhow", tmp_path, {"classes": {"Daily": 7, "Embellishment": ["none", "some", "lots"]}})
    assert s.schema()["Daily"].num_classes == 7 and s.schema()["Embellishment"].classes == ("none", "some", "lots")
    write(tmp_path, "train.csv", HEADER1, ["a.jpg,0,0,9,9,1,4,0", "b.jpg,0,0,9,9,6,2,0"])
    with pytest.raises(DatasetError, match=r"train\.csv:3: column 'Daily': unknown class '6'"):
        create_reader("fashionhow", tmp_path).read("train")
    with pytest.raises(ValueError, match=r"'Dialy' is no label column of the CSVs; did you mean 'Daily'\?"):
        create_reader("fashionhow", tmp_path, {"classes": {"Dialy": 7}})
    write(tmp_path, "train.csv", HEADER2 + ",Style", ["a.jpg,0,0,9,9,1,4"])
    with pytest.raises(DatasetError, match=r"train\.csv:1: column 'Style' is no FASHION-HOW label"):
        create_reader("fashionhow", tmp_path)
    assert create_reader("fashionhow", tmp_path, {"classes": {"Style": 5}}).schema()["Style"].num_classes == 5


def test_weights_mb_matches_the_saved_file(tmp_path: Path):
    model = create_model(ModelConfig(backbone="test_resnet"), ai6126_schema())
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    size = (tmp_path / "w.safetensors").stat().st_size / 1e6
    assert weights_mb(model) == pytest.approx(size, rel=0.02)  # the file adds only a small header


def test_over_budget_model_is_rejected_before_training(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    with pytest.raises(ValueError, match=r"'resnet18' .* 11\.\d+ M parameters = 4\d\.\d MB .* model\.max_mb = 25 MB"):
        create_model(ModelConfig(backbone="resnet18", max_mb=25), ai6126_schema())
    assert create_model(ModelConfig(backbone="resnet10t", max_mb=25), ai6126_schema()) is not None
    over = tiny_overrides(tiny_data, cache_dir, tmp_path, name="budget", **{"model.max_mb": 0.1})
    with pytest.raises(ValueError, match="over the budget"):
        fit(load_config(None, over))
    assert not (tmp_path / "budget" / "last.safetensors").exists()  # no training happened
