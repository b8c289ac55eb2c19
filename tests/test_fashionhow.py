"""FASHION-HOW sub-task CSVs and the model-size budget."""

from __future__ import annotations

from pathlib import Path

import pytest
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
    with pytest.raises(DatasetError, match=r"no train\.csv"):
        create_reader("fashionhow", tmp_path)
    with pytest.raises(DatasetError, match=r"nope.csv: split CSV not found"):
        create_reader("fashionhow", tmp_path, {"splits": {"train": "nope.csv"}})


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
