"""The datasets as they are downloaded: DeepFashion's Img/img tree, the fine-grained release's
Anno_fine/ lists, landmark files beside the splits, header lines, BOMs, and one error per read
that lists the bad lines of every file."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_dataset
from PIL import Image
from test_deepfashion import write_deepfashion

from fashattr.data.check import audit
from fashattr.data.formats import create_reader
from fashattr.data.formats.lists import GatheredError
from fashattr.data.table import parse_box
from fashattr.errors import DatasetError
from fashattr.schema import AI6126_GROUPS

BOM = "\ufeff"
FINE_SPLITS = {"train": 12, "val": 4, "test": 4}
CATEGORIES = ("Blouse", "Shorts", "Dress")


def _prepend(path: Path, text: str) -> None:
    path.write_text(text + path.read_text())


def _edit(path: Path, line: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")


# --- DeepFashion Category and Attribute Prediction ---------------------------------------


@pytest.fixture
def official(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """The benchmark as Img/img.zip unpacks: images under Img/img/..., lists naming img/..."""
    root = tmp_path / "DeepFashion"
    truth = write_deepfashion(root)
    (root / "Img").mkdir()
    (root / "img").rename(root / "Img" / "img")
    return root, truth


def test_deepfashion_images_under_img_img_are_found(official):
    root, truth = official
    t = create_reader("deepfashion", root).read("val")
    assert t.root == root / "Img"
    assert len(t) == int((truth["splits"] == "val").sum()) and all(f.is_file() for f in t.files())
    assert t.paths[0].startswith("img/")  # the lists' paths, unchanged


def test_deepfashion_without_images_names_every_root_tried(official):
    root, _ = official
    shutil.rmtree(root / "Img" / "img")
    (root / "Img" / "img.zip").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip, not unpacked
    with pytest.raises(DatasetError) as e:
        create_reader("deepfashion", root).read("train")
    first = str(e.value).splitlines()[0]
    tried = f"any image root tried: {root / 'Img'}, {root}; {root / 'Img' / 'img.zip'} is not unpacked"
    assert first.startswith(f"{root / 'Eval' / 'list_eval_partition.txt'}:3: listed image 'img/") and tried in first


def test_deepfashion_errors_of_every_file_in_one_report(official):
    root, _ = official
    anno = root / "Anno"
    _edit(anno / "list_category_img.txt", 3, _edit_value(anno / "list_category_img.txt", 3, "99"))
    _edit(anno / "list_bbox.txt", 4, _edit_value(anno / "list_bbox.txt", 4, "9 9 1 1", 4))
    with pytest.raises(GatheredError) as e:
        create_reader("deepfashion", root).read("train")
    assert [Path(err.file).name for err in e.value.errors] == ["list_category_img.txt", "list_bbox.txt"]
    assert e.value.file == str(anno)
    assert e.value.problems == [
        (None, "list_category_img.txt:3: category '99' is not an id in 1..7"),
        (None, "list_bbox.txt:4: box '9 9 1 1' needs 0 <= x1 < x2 and 0 <= y1 < y2"),
    ]
    text = str(e.value)
    assert text.startswith("2 problem(s) in 2 files:\n")
    assert f"{anno / 'list_category_img.txt'}:3: category '99'" in text and f"{anno / 'list_bbox.txt'}:4: box" in text


def _edit_value(path: Path, line: int, value: str, width: int = 1) -> str:
    """Line ``line`` of ``path`` with its last ``width`` values replaced by ``value``."""
    parts = path.read_text().splitlines()[line - 1].split()
    return " ".join([*parts[:-width], value])


def test_deepfashion_line_of_an_image_in_no_split_is_reported_once(official, tmp_path: Path):
    root, _ = official
    bbox = root / "Anno" / "list_bbox.txt"
    _edit(bbox, 5, "img/Nowhere/img_99999999.jpg 1 2 30 40")  # and line 5's own image loses its line
    stray = "image 'img/Nowhere/img_99999999.jpg' is not in list_eval_partition.txt"
    with pytest.raises(DatasetError) as e:
        create_reader("deepfashion", root).read("train")  # the partition's first split is charged
    assert (5, stray) in e.value.problems
    create_reader("deepfashion", root).read("val")  # the stray line is none of val's business
    report = audit(root, "deepfashion", progress=False, workers=1)
    assert [err["problem"] for err in report["label_errors"]].count(stray) == 1
    assert report["unread_splits"] == ["train"]


def test_deepfashion_bom_in_list_files(official):
    root, truth = official
    for f in ("Eval/list_eval_partition.txt", "Anno/list_category_img.txt", "Anno/list_bbox.txt"):
        _prepend(root / f, BOM)
    t = create_reader("deepfashion", root).read("train")
    assert t.labels is not None and t.labels["category"][0] == truth["cats"][0] - 1


# --- the fine-grained release -------------------------------------------------------------


def write_fine_release(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """The fine-grained release as downloaded: lists in Anno_fine/ naming img/... relative to
    Img/, images in Img/img/..., landmark files (the release's own spelling) beside them."""
    rng = np.random.default_rng(seed)
    anno = root / "Anno_fine"
    anno.mkdir(parents=True)
    attr_lines = ["26", "attribute_name   attribute_type"]
    for g, classes in enumerate(AI6126_GROUPS.values(), start=1):
        attr_lines += [f"{c:<20} {g}" for c in classes]
    (anno / "list_attr_cloth.txt").write_text("\n".join(attr_lines) + "\n")
    (anno / "list_category_cloth.txt").write_text(
        f"{len(CATEGORIES)}\ncategory_name  category_type\n"
        + "".join(f"{c:<16} {k}\n" for k, c in enumerate(CATEGORIES, 1))
    )
    truth: dict[str, np.ndarray] = {}
    k = 0
    for split, n in FINE_SPLITS.items():
        paths, hot, cats = [], np.zeros((n, 26), np.int64), []
        for i in range(n):
            path = f"img/WOMEN/Dresses/id_{k:08d}/02_{i % 4 + 1}_front.jpg"
            (root / "Img" / path).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (40, 32, 3), dtype=np.uint8)).save(root / "Img" / path)
            start = 0
            for size in (len(c) for c in AI6126_GROUPS.values()):
                hot[i, start + int(rng.integers(size))] = 1
                start += size
            cats.append(1 + (k % len(CATEGORIES)))
            paths.append(path)
            k += 1
        (anno / f"{split}.txt").write_text("".join(p + "\n" for p in paths))
        (anno / f"{split}_attr.txt").write_text("".join(" ".join(map(str, r)) + "\n" for r in hot))
        (anno / f"{split}_cate.txt").write_text("".join(f"{c}\n" for c in cats))
        (anno / f"{split}_bbox.txt").write_text("".join(f"{1 + i % 3} 2 30 {36 + i % 4}\n" for i in range(n)))
        landmarks = "".join(" ".join(str(v) for v in rng.integers(0, 32, 16)) + "\n" for _ in range(n))
        (anno / f"{split}_landmards.txt").write_text(landmarks)
        truth[f"{split}_attr"], truth[f"{split}_cate"] = hot, np.array(cats)
    return truth


@pytest.fixture
def release(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "fine"
    return root, write_fine_release(root)


def test_fine_release_is_read_as_downloaded(release):
    root, truth = release
    r = create_reader("deepfashion-fine", root)
    assert r.splits() == ["test", "train", "val"]  # the landmark files are not splits
    assert r.schema().names == [*AI6126_GROUPS, "category"] and r.schema()["category"].classes == CATEGORIES
    t = r.read("train")
    assert t.root == root / "Img" and all(f.is_file() for f in t.files())
    assert t.paths[0] == "img/WOMEN/Dresses/id_00000000/02_1_front.jpg"
    assert t.labels is not None
    assert np.array_equal(t.labels["pattern"], truth["train_attr"][:, :7])
    assert np.array_equal(t.labels["fit"], truth["train_attr"][:, 23:])
    assert t.labels["category"].tolist() == (truth["train_cate"] - 1).tolist()
    assert t.bboxes is not None and t.bboxes[1].tolist() == [2, 2, 30, 37]


def test_fine_release_with_img_unpacked_at_the_root(release):
    root, _ = release
    (root / "Img" / "img").rename(root / "img")
    t = create_reader("deepfashion-fine", root).read("val")
    assert t.root == root and all(f.is_file() for f in t.files())


def test_fine_release_errors_of_both_label_files_in_one_report(release):
    root, _ = release
    _edit(root / "Anno_fine" / "train_attr.txt", 2, " ".join(["0"] * 25))
    _edit(root / "Anno_fine" / "train_cate.txt", 3, "9")
    (root / "Img" / "img" / "WOMEN" / "Dresses" / "id_00000004" / "02_1_front.jpg").unlink()
    with pytest.raises(GatheredError) as e:
        create_reader("deepfashion-fine", root).read("train")
    assert e.value.problems == [
        (
            None,
            f"train.txt:5: listed image 'img/WOMEN/Dresses/id_00000004/02_1_front.jpg' not found under {root / 'Img'}",
        ),
        (None, "train_attr.txt:2: expected 26 values of 0 or 1, got '" + " ".join(["0"] * 25) + "'"),
        (None, "train_cate.txt:3: category '9' is not an id in 1..3"),
    ]


def test_fine_release_bom_in_lists(release):
    root, truth = release
    for f in ("train.txt", "train_attr.txt", "train_cate.txt", "list_category_cloth.txt"):
        _prepend(root / "Anno_fine" / f, BOM)
    t = create_reader("deepfashion-fine", root).read("train")
    assert t.paths[0] == "img/WOMEN/Dresses/id_00000000/02_1_front.jpg"
    assert t.labels is not None and np.array_equal(t.labels["sleeve"], truth["train_attr"][:, 7:10])


def test_each_reader_names_the_format_a_folder_has(release, tmp_path: Path):
    root, _ = release
    with pytest.raises(
        DatasetError, match=r"Anno_fine/ here is the DeepFashion fine-grained release: use data.format deepfashion-fine"
    ):
        create_reader("ai6126", root)
    with pytest.raises(
        DatasetError, match=r"Anno_fine/ here is the fine-grained release: use data.format deepfashion-fine"
    ):
        create_reader("deepfashion", root)
    with pytest.raises(DatasetError, match=r"split/ here is the FashionDataset layout: use data.format ai6126"):
        create_reader("deepfashion", make_dataset(tmp_path / "ds", {"train": 2}))
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DatasetError,
        match=r"neither Anno_fine/ .* nor split/ here: not a DeepFashion fine-grained \(deepfashion-fine\) layout",
    ):
        create_reader("deepfashion-fine", tmp_path / "empty")


# --- the FashionDataset (ai6126) -----------------------------------------------------------


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "ds", {"train": 12, "val": 4, "test": 4}, bbox=True)


def test_landmark_files_are_not_splits(data: Path, caplog: pytest.LogCaptureFixture):
    for split in ("train", "val", "test"):
        (data / "split" / f"{split}_landmarks.txt").write_text("1 2 3 4 5 6 7 8\n" * 3)
    (data / "split" / "val_landmards.txt").write_text("1 2\n")
    (data / "split" / "README.md").write_text("notes\n")
    with caplog.at_level(logging.DEBUG, logger="fashattr.data.formats.fashiondataset"):
        r = create_reader("ai6126", data)
        assert r.splits() == ["test", "train", "val"]
        assert r.splits() == ["test", "train", "val"]
    ignored = [rec.getMessage() for rec in caplog.records if "ignored" in rec.getMessage()]
    assert len(ignored) == 1
    assert (
        "'README.md', 'test_landmarks.txt', 'train_landmarks.txt', 'val_landmards.txt', 'val_landmarks.txt'"
        in ignored[0]
    )
    with pytest.raises(DatasetError, match=r"no split 'train_landmarks'; splits here: \['test', 'train', 'val'\]"):
        r.read("train_landmarks")
    report = audit(data, "ai6126", progress=False, workers=1)
    assert report["label_errors"] == [] and sorted(report["splits"]) == ["test", "train", "val"]


def test_attr_header_line_of_group_names(data: Path):
    attr = data / "split" / "train_attr.txt"
    plain = create_reader("ai6126", data).read("train")
    _prepend(attr, "Pattern Sleeve Length Neckline Fabric Fit\n")
    t = create_reader("ai6126", data).read("train")
    assert plain.labels is not None and t.labels is not None
    assert all(np.array_equal(plain.labels[g], t.labels[g]) for g in AI6126_GROUPS)
    _edit(attr, 4, "0 0 0 9 0 0")  # the file's 4th line is the 3rd image's: numbered as in the file
    with pytest.raises(DatasetError, match=r"train_attr.txt:4: column 4 \(neckline\): class 9 out of range"):
        create_reader("ai6126", data).read("train")


def test_attr_header_line_must_not_contradict_the_schema(data: Path):
    attr = data / "split" / "train_attr.txt"
    _prepend(attr, "pattern sleeve neckline length fabric fit\n")
    message = (
        "train_attr.txt:1: header column 3 is 'neckline', but the schema's group 3 is 'length' ('neckline' is group 4)"
    )
    with pytest.raises(DatasetError, match=re.escape(message)):
        create_reader("ai6126", data).read("train")
    _edit(attr, 1, "pattern sleeve length neckline fabric")
    with pytest.raises(DatasetError, match=r"train_attr.txt:1: header line names 5 columns .* the schema has 6 groups"):
        create_reader("ai6126", data).read("train")


def test_the_header_copy_of_the_fashiondataset(data: Path, caplog: pytest.LogCaptureFixture):
    # A later public copy heads split/train.txt with `picture_filename` and train_attr.txt with generic names:
    # both are headers, the images and labels are the plain copy's, and line numbers stay the file's own.
    plain = create_reader("ai6126", data).read("train")
    _prepend(data / "split" / "train.txt", "picture_filename\n")
    _prepend(data / "split" / "train_attr.txt", "category1 category2 category3 category4 category5 category6\n")
    _prepend(data / "split" / "train_bbox.txt", "x_1 y_1 x_2 y_2\n")
    with caplog.at_level(logging.INFO, logger="fashattr.data.formats.fashiondataset"):
        t = create_reader("ai6126", data).read("train")
    assert t.paths == plain.paths
    assert t.labels is not None and plain.labels is not None
    assert all(np.array_equal(plain.labels[g], t.labels[g]) for g in AI6126_GROUPS)
    assert t.bboxes is not None and np.array_equal(t.bboxes, plain.bboxes)
    notes = " ".join(r.getMessage() for r in caplog.records)
    assert "'picture_filename' names no image: read as a header line" in notes
    assert "['category1', 'category2', 'category3', 'category4', 'category5', 'category6'] read as" in notes
    _edit(data / "split" / "train.txt", 3, "img/missing.jpg")  # numbered as in the file: the header is line 1
    with pytest.raises(DatasetError, match=r"train.txt:3: .*img/missing.jpg"):
        create_reader("ai6126", data).read("train")
    report = audit(data, "ai6126", progress=False, workers=1)
    assert report["missing"][0]["line"] == 3 and report["label_errors"] == []


def test_bom_in_split_and_attr_files(data: Path):
    plain = create_reader("ai6126", data).read("train")
    for f in ("train.txt", "train_attr.txt", "train_bbox.txt"):
        _prepend(data / "split" / f, BOM)
    t = create_reader("ai6126", data).read("train")
    assert t.paths == plain.paths and t.paths[0] == "img/00000.jpg"
    assert t.labels is not None and plain.labels is not None
    assert np.array_equal(t.labels["pattern"], plain.labels["pattern"])


def test_errors_of_every_file_in_one_report(data: Path):
    _edit(data / "split" / "train.txt", 3, "img/00002.jpg extra")
    _edit(data / "split" / "train_attr.txt", 5, "0 0 0 0 0 7")
    _edit(data / "split" / "train_bbox.txt", 2, "5 2 1 40")
    with pytest.raises(GatheredError) as e:
        create_reader("ai6126", data).read("train")
    assert e.value.problems == [
        (None, "train.txt:3: expected one image path, got 'img/00002.jpg extra'"),
        (None, "train_attr.txt:5: column 6 (fit): class 7 out of range 0..2"),
        (None, "train_bbox.txt:2: box '5 2 1 40' needs 0 <= x1 < x2 and 0 <= y1 < y2"),
    ]


def test_csv_with_a_bom(tmp_path: Path):
    (tmp_path / "img").mkdir()
    for name in "ab":
        Image.new("RGB", (20, 20)).save(tmp_path / "img" / f"{name}.png")
    (tmp_path / "t.csv").write_text(BOM + "path,colour\nimg/a.png,red\nimg/b.png,blue\n")
    r = create_reader("csv", tmp_path / "t.csv")
    assert r.schema().names == ["colour"] and r.read("train").paths == ["img/a.png", "img/b.png"]


# --- one box rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ("1 2 30 40", (1.0, 2.0, 30.0, 40.0)),
        ("0 0 1.5 2.25", (0.0, 0.0, 1.5, 2.25)),
        ("007 002 030 040", (7.0, 2.0, 30.0, 40.0)),
    ],
)
def test_parse_box_accepts(values: str, expected: tuple[float, ...]):
    assert parse_box(values.split()) == expected


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ("1 2 3", "expected 4 numbers 'x1 y1 x2 y2', got '1 2 3'"),
        ("1 2 x 4", "box '1 2 x 4' is not 4 numbers"),
        ("1 2 nan 4", "box '1 2 nan 4' is not 4 finite numbers"),
        ("1 2 inf 4", "box '1 2 inf 4' is not 4 finite numbers"),
        ("-1 2 30 40", "box '-1 2 30 40' needs 0 <= x1 < x2 and 0 <= y1 < y2"),
        ("5 2 5 40", "box '5 2 5 40' needs 0 <= x1 < x2 and 0 <= y1 < y2"),
        ("1 40 30 40", "box '1 40 30 40' needs 0 <= x1 < x2 and 0 <= y1 < y2"),
    ],
)
def test_parse_box_rejects(values: str, message: str):
    with pytest.raises(ValueError) as e:
        parse_box(values.split())
    assert str(e.value) == message


def test_every_reader_applies_the_same_box_rule(data: Path, official, tmp_path: Path):
    """A negative x1, accepted by the DeepFashion reader before, and a decimal box, refused by
    the FashionDataset reader before: the same verdict from all three."""
    _edit(data / "split" / "train_bbox.txt", 1, "-1 2 30 40")
    _edit(data / "split" / "train_bbox.txt", 2, "1.5 2 30.5 40")
    with pytest.raises(DatasetError) as e:
        create_reader("ai6126", data).read("train")
    assert e.value.problems == [(1, "box '-1 2 30 40' needs 0 <= x1 < x2 and 0 <= y1 < y2")]
    root, _ = official
    bbox = root / "Anno" / "list_bbox.txt"
    _edit(bbox, 3, _edit_value(bbox, 3, "-1 2 30 40", 4))
    _edit(bbox, 4, _edit_value(bbox, 4, "1.5 2 30.5 40", 4))
    with pytest.raises(DatasetError) as e:
        create_reader("deepfashion", root).read("train")
    assert e.value.problems == [(3, "box '-1 2 30 40' needs 0 <= x1 < x2 and 0 <= y1 < y2")]
    (tmp_path / "img").mkdir()
    for name in "ab":
        Image.new("RGB", (40, 50)).save(tmp_path / "img" / f"{name}.png")
    (tmp_path / "t.csv").write_text("path,colour,x1,y1,x2,y2\nimg/a.png,red,-1,2,30,40\nimg/b.png,blue,1.5,2,30.5,40\n")
    with pytest.raises(DatasetError) as e:
        create_reader("csv", tmp_path / "t.csv").read("train")
    assert e.value.problems == [
        (2, "bbox columns ['x1', 'y1', 'x2', 'y2']: box '-1,2,30,40' needs 0 <= x1 < x2 and 0 <= y1 < y2")
    ]
