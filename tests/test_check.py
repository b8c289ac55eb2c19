"""`fashattr data check` and `fashattr data show` on datasets written by the test."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import make_dataset
from PIL import Image


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fashattr", *args], capture_output=True, text=True, cwd=cwd)


def test_check_finds_every_kind_of_problem(tmp_path: Path):
    data = make_dataset(tmp_path / "ds", {"train": 40, "test": 6, "extra": 4}, labeled=("train", "extra"))
    img = data / "img"
    (img / "00005.jpg").unlink()  # missing (train.txt line 6)
    (img / "00007.jpg").write_bytes((img / "00008.jpg").read_bytes()[:300])  # truncated
    shutil.copy(img / "00011.jpg", img / "00012.jpg")  # duplicate within train
    shutil.copy(img / "00013.jpg", img / "00041.jpg")  # train image again in test: leakage
    Image.new("RGB", (8, 20), (9, 9, 9)).save(img / "00020.jpg")  # below --min-size 16
    attr = data / "split" / "extra_attr.txt"
    lines = attr.read_text().splitlines()
    lines[2] = "0 0 0 9 0 0"  # label error: extra_attr.txt line 3
    attr.write_text("\n".join(lines) + "\n")

    r = cli("data", "check", str(data), "--min-size", "16", "--out", "audit", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert report["splits"]["train"]["count"] == 40 and report["splits"]["test"]["count"] == 6
    assert report["splits"]["train"]["labeled"] and not report["splits"]["test"]["labeled"]
    assert sum(report["splits"]["train"]["class_counts"]["sleeve"].values()) == 39  # the missing row has no image
    assert [(m["line"], m["path"]) for m in report["missing"]] == [(6, "img/00005.jpg")]
    assert [u["path"] for u in report["unreadable"]] == ["img/00007.jpg"]
    assert "truncated" in report["unreadable"][0]["problem"]
    assert [(s["path"], s["width"], s["height"]) for s in report["small"]] == [("img/00020.jpg", 8, 20)]
    within = [[i["path"] for i in d["images"]] for d in report["duplicates_within"]]
    assert within == [["img/00011.jpg", "img/00012.jpg"]]
    across = [[(i["split"], i["path"]) for i in d["images"]] for d in report["duplicates_across"]]
    assert across == [[("test", "img/00041.jpg"), ("train", "img/00013.jpg")]]
    assert report["label_errors"][0]["file"].endswith("extra_attr.txt") and report["label_errors"][0]["line"] == 3
    assert report["unread_splits"] == ["extra"]
    assert report["errors"] == 4 and report["warnings"] == 2  # missing, unreadable, label, leakage | small, dup
    assert "exact duplicates across splits (leakage): 1" in r.stdout
    assert "extra_attr.txt:3: column 4 (neckline): class 9 out of range" in r.stdout
    with Image.open(tmp_path / "audit" / "class_distribution.png") as chart:
        assert chart.format == "PNG" and chart.width > 500
    assert (img / "00005.jpg").exists() is False and len(list(img.iterdir())) == 49  # nothing written to the data


def test_check_clean_dataset_exits_zero(tmp_path: Path):
    data = make_dataset(tmp_path / "ds", {"train": 20, "val": 5})
    r = cli("data", "check", str(data), "--out", "audit", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 error(s), 0 warning(s)" in r.stdout


def test_show_draws_samples_and_their_augmentations(tmp_path: Path, tiny_data: Path):
    for args, name in ((["--augment"], "aug.png"), (["--split", "test"], "test.png")):
        r = cli("data", "show", str(tiny_data), "--n", "6", "--size", "48", *args, "--out", name, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        with Image.open(tmp_path / name) as grid:
            assert grid.format == "PNG"
    with Image.open(tmp_path / "aug.png") as aug, Image.open(tmp_path / "test.png") as plain:
        assert aug.height > 1.5 * plain.height  # a second row of augmented samples
        assert np.asarray(aug).std() > 10  # real pixels, not a blank canvas


def test_check_a_csv_dataset_with_reader_options(tmp_path: Path):
    (tmp_path / "pics").mkdir()
    for name in ("a", "b", "c"):
        Image.new("RGB", (40, 40), (ord(name), 0, 0)).save(tmp_path / "pics" / f"{name}.png")
    (tmp_path / "t.csv").write_text("file,colour\npics/a.png,red\npics/b.png,blue\npics/c.png,red\n")
    r = cli(
        "data",
        "check",
        str(tmp_path / "t.csv"),
        "--format",
        "csv",
        "--option",
        "path_column=file",
        "--out",
        "audit",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert report["splits"]["train"]["class_counts"]["colour"] == {"blue": 1, "red": 2}
    r = cli("data", "check", str(tmp_path / "t.csv"), "--format", "csv", "--option", "path_col=file", cwd=tmp_path)
    assert r.returncode == 2 and "did you mean 'path_column'" in r.stderr


def test_check_says_which_splits_it_could_not_read(tmp_path: Path):
    data = make_dataset(tmp_path / "ds", {"train": 12, "test": 4})
    attr = data / "split" / "train_attr.txt"
    lines = attr.read_text().splitlines()
    lines[4] = "0 0 0 9 0 0"  # label error: train_attr.txt line 5
    attr.write_text("\n".join(lines) + "\n")
    (data / "img" / "00003.jpg").unlink()  # train.txt line 4: the unread split's images are still checked
    (data / "img" / "00013.jpg").unlink()  # test.txt line 2
    (data / "img" / "00007.jpg").write_bytes((data / "img" / "00001.jpg").read_bytes())  # a duplicate in train

    r = cli("data", "check", str(data), "--out", "audit", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    out = r.stdout.splitlines()
    assert out[2] == "NOT READ: split 'train' has label errors (listed below); its images are checked without labels"
    assert "train           12  labels not read" in out and "test             4  no" in out
    assert "  train_attr.txt:5: column 4 (neckline): class 9 out of range 0..3" in [
        line.replace(str(data / "split") + "/", "") for line in out
    ]
    assert "missing files: 2" in out
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert report["unread_splits"] == ["train"] and report["images_only_splits"] == ["train"]
    assert sorted((m["split"], m["line"], m["path"]) for m in report["missing"]) == [
        ("test", 2, "img/00013.jpg"),
        ("train", 4, "img/00003.jpg"),
    ]
    assert [[i["path"] for i in d["images"]] for d in report["duplicates_within"]] == [
        ["img/00001.jpg", "img/00007.jpg"]
    ]


def test_check_audits_the_images_of_a_fashionhow_split_with_a_bad_label(tmp_path: Path):
    from fashattr.data.check import audit, format_report

    rows = ["a.jpg,0,0,9,9,3", "b.jpg,0,0,9,9,18", "c.jpg,0,0,9,9,1", "d.jpg,0,0,9,9,2"]
    (tmp_path / "train.csv").write_text("\n".join(["image_name,BBox_xmin,BBox_ymin,BBox_xmax,BBox_ymax,Color", *rows]))
    (tmp_path / "Train").mkdir()
    for name, colour in (("a", 10), ("b", 20), ("c", 10)):  # c repeats a's bytes; d is missing
        Image.new("RGB", (40, 40), (colour, 0, 0)).save(tmp_path / "Train" / f"{name}.jpg")

    report = audit(tmp_path, "fashionhow", progress=False, workers=1)
    assert report["unread_splits"] == ["train"] and report["images_only_splits"] == ["train"]
    assert report["splits"] == {"train": {"count": 4, "labeled": False, "labels_read": False}}
    assert [(e["line"], e["problem"][:27]) for e in report["label_errors"]] == [(3, "column 'Color': unknown cla")]
    assert [(m["line"], m["path"]) for m in report["missing"]] == [(5, "d.jpg")]
    assert [[i["path"] for i in d["images"]] for d in report["duplicates_within"]] == [["a.jpg", "c.jpg"]]
    text = format_report(report).splitlines()
    assert text[2] == "NOT READ: split 'train' has label errors (listed below); its images are checked without labels"
    assert "train            4  labels not read" in text and "missing files: 1" in text
