"""DeepFashion Category and Attribute Prediction Benchmark layout, on fixture files written here
in the exact format: count line, header line, columns padded with runs of spaces."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import PALETTE, tiny_overrides
from PIL import Image

from fashattr.config import load_config
from fashattr.data.formats import create_reader
from fashattr.data.formats import deepfashion as df
from fashattr.engine.trainer import fit
from fashattr.errors import DatasetError

CATEGORIES = [("Anorak", 1), ("Blouse", 1), ("Tee", 1), ("Shorts", 2), ("Skirt", 2), ("Dress", 3), ("Kaftan", 3)]
USED = 6  # Kaftan (id 7) is never used, like 4 of DeepFashion's 50
ATTRIBUTES = [  # names with spaces, types interleaved like the real list
    ("a-line", 3),
    ("abstract", 1),
    ("abstract chevron", 1),
    ("cotton", 2),
    ("floral", 1),
    ("denim", 2),
    ("long sleeve", 4),
    ("v-neck", 4),
    ("boho", 5),
    ("striped", 1),
    ("maxi", 3),
    ("lace", 2),
    ("chic", 5),
    ("pocket", 4),
    ("graphic print", 1),
]
N_ATTR = len(ATTRIBUTES)
SPLITS = {"train": 84, "val": 18, "test": 18}


def _pad(name: str, value: object, width: int = 32) -> str:
    return f"{name:<{width}}{value}"  # the real files pad the first column with spaces


def write_deepfashion(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a small benchmark tree; returns the file values (category ids, attribute values)."""
    rng = np.random.default_rng(seed)
    (root / "Anno").mkdir(parents=True)
    (root / "Eval").mkdir()
    n = sum(SPLITS.values())
    cats = np.array([1 + i % USED for i in range(n)])  # every used category in every split
    attrs = rng.choice([-1, -1, 1, 0], size=(n, N_ATTR))
    attrs[np.arange(n), (cats - 1) % N_ATTR] = 1  # one attribute tied to the category
    paths = []
    for i, c in enumerate(cats):
        path = f"img/{CATEGORIES[c - 1][0]}_{i % 3}/img_{i:08d}.jpg"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        img = np.clip(rng.normal(PALETTE[c - 1], 15, size=(44, 36, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / path, quality=95)
        paths.append(path)
    splits = [s for s, k in SPLITS.items() for _ in range(k)]
    anno = root / "Anno"
    (anno / "list_category_cloth.txt").write_text(
        f"{len(CATEGORIES)}\ncategory_name  category_type\n" + "".join(_pad(c, t, 24) + "\n" for c, t in CATEGORIES)
    )
    (anno / "list_attr_cloth.txt").write_text(
        f"{N_ATTR}\nattribute_name  attribute_type\n" + "".join(_pad(a, t, 28) + "\n" for a, t in ATTRIBUTES)
    )
    (anno / "list_category_img.txt").write_text(
        f"{n}\nimage_name  category_label\n" + "".join(_pad(p, c, 56) + "\n" for p, c in zip(paths, cats, strict=True))
    )
    (anno / "list_attr_img.txt").write_text(
        f"{n}\nimage_name  attribute_labels\n"
        + "".join(_pad(p, " ".join(f"{v:2d}" for v in a), 56) + "\n" for p, a in zip(paths, attrs, strict=True))
    )
    (anno / "list_bbox.txt").write_text(
        f"{n}\nimage_name  x_1  y_1  x_2  y_2\n"
        + "".join(_pad(p, f"{1 + i % 5:03d} 002 {30 + i % 6:03d} 040") + "\n" for i, p in enumerate(paths))
    )
    (root / "Eval" / "list_eval_partition.txt").write_text(
        f"{n}\nimage_name  evaluation_status\n"
        + "".join(_pad(p, s, 56) + "\n" for p, s in zip(paths, splits, strict=True))
    )
    return {"cats": cats, "attrs": attrs, "splits": np.array(splits)}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("deepfashion") / "DeepFashion"
    return root, write_deepfashion(root)


@pytest.fixture
def copy(bench: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> Path:
    """A copy of the list files (images shared by symlink) that a test may break."""
    root = tmp_path / "DeepFashion"
    (root / "Eval").mkdir(parents=True)
    (root / "Anno").mkdir()
    for f in ("Anno", "Eval"):
        for p in (bench[0] / f).iterdir():
            (root / f / p.name).write_bytes(p.read_bytes())
    (root / "img").symlink_to(bench[0] / "img")
    return root


def test_schema_from_the_name_lists(bench):
    root, _ = bench
    s = create_reader("deepfashion", root).schema()
    assert s.names == ["category", "texture", "fabric", "shape", "part", "style"]
    assert s["category"].kind == "single" and s["category"].classes == tuple(c for c, _ in CATEGORIES)
    assert s["texture"].classes == ("abstract", "abstract chevron", "floral", "striped", "graphic print")
    assert s["fabric"].classes == ("cotton", "denim", "lace") and s["fabric"].kind == "multi"
    assert s["style"].classes == ("boho", "chic")


def test_splits_labels_and_boxes(bench):
    root, truth = bench
    r = create_reader("deepfashion", root)
    assert r.splits() == ["test", "train", "val"]
    t = r.read("val")
    rows = np.flatnonzero(truth["splits"] == "val")
    assert len(t) == SPLITS["val"] and t.paths[0].startswith("img/") and (t.root / t.paths[0]).is_file()
    assert t.labels is not None
    assert t.labels["category"].tolist() == (truth["cats"][rows] - 1).tolist()  # 1-based ids -> 0-based
    # 1 -> 1, -1 -> 0, 0 -> unknown (-1); columns picked per type in list order
    texture_cols = [i for i, (_, k) in enumerate(ATTRIBUTES) if k == 1]
    expected = np.select([truth["attrs"] == 1, truth["attrs"] == -1], [1, 0], -1)[rows][:, texture_cols]
    assert t.labels["texture"].dtype == np.int8 and np.array_equal(t.labels["texture"], expected)
    assert (t.labels["texture"] == -1).any() and (t.labels["texture"] == 1).any()
    assert t.bboxes is not None
    i = int(rows[0])
    assert t.bboxes[0].tolist() == [1 + i % 5, 2, 30 + i % 6, 40]
    assert create_reader("deepfashion", root).read("train").labels["category"].max() == USED - 1


def test_chunked_parse_equals_one_chunk(bench, monkeypatch):
    root, _ = bench
    whole = create_reader("deepfashion", root).read("train")
    monkeypatch.setattr(df, "CHUNK", 5)  # 84 rows -> 17 chunks, the last one partial
    chunked = create_reader("deepfashion", root).read("train")
    assert whole.labels is not None and chunked.labels is not None
    for g in ("texture", "fabric", "shape", "part", "style"):
        assert np.array_equal(whole.labels[g], chunked.labels[g])


def test_category_only_never_reads_the_attribute_file(copy: Path):
    (copy / "Anno" / "list_attr_img.txt").write_text("garbage\n")
    r = create_reader("deepfashion", copy, {"groups": ["category"]})
    assert r.schema().names == ["category"]
    t = r.read("train")
    assert t.labels is not None and list(t.labels) == ["category"]
    with pytest.raises(ValueError, match="choose one or more of"):
        create_reader("deepfashion", copy, {"groups": ["colour"]})
    with pytest.raises(ValueError, match="did you mean 'groups'"):
        create_reader("deepfashion", copy, {"group": ["category"]})


def _replace_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


def _line_of(path: Path, split_row: int) -> tuple[int, str]:
    """1-based line number and text of the train split's ``split_row``-th image in ``path``."""
    return 3 + split_row, path.read_text().splitlines()[2 + split_row]


@pytest.mark.parametrize(
    ("file", "row", "edit", "message"),
    [
        ("list_attr_img.txt", 4, lambda ln: ln + " 1", r"list_attr_img.txt:7: expected 15 values of 1, -1 or 0"),
        ("list_attr_img.txt", 5, lambda ln: ln[:-2] + " 2", r"list_attr_img.txt:8: expected 15 values"),
        ("list_attr_img.txt", 6, lambda ln: ln[:-2] + " x", r"list_attr_img.txt:9: expected 15 values"),
        ("list_attr_img.txt", 7, lambda ln: ln[:-2] + "1.5", r"list_attr_img.txt:10: expected 15 values"),
        ("list_category_img.txt", 3, lambda ln: ln[:-1] + "0", r"list_category_img.txt:6: category '0' is not an id"),
        ("list_category_img.txt", 3, lambda ln: ln[:-1] + "8", r"list_category_img.txt:6: category '8' is not an id"),
        ("list_category_img.txt", 9, lambda ln: "img/elsewhere.jpg 1", r":12: image 'img/elsewhere.jpg' is not in"),
        ("list_bbox.txt", 2, lambda ln: ln.split()[0] + " 050 002 010 040", r"bbox.txt:5: box '050 002 010 040' needs"),
        ("list_bbox.txt", 2, lambda ln: ln.split()[0] + " 1 2 3", r"list_bbox.txt:5: expected 4 numbers"),
    ],
)
def test_bad_lines_are_named(copy: Path, file, row, edit, message):
    path = copy / "Anno" / file
    number, text = _line_of(path, row)
    _replace_line(path, number, edit(text))
    with pytest.raises(DatasetError, match=message):
        create_reader("deepfashion", copy).read("train")


def test_duplicate_and_lost_image_lines(copy: Path):
    path = copy / "Anno" / "list_category_img.txt"
    lines = path.read_text().splitlines()
    lines[4] = lines[3]  # image of line 4 twice; image of line 5 has no line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as e:
        create_reader("deepfashion", copy).read("train")
    text = str(e.value)
    assert "list_category_img.txt:5: second line for image" in text
    assert "no line for 1 image(s) of the split" in text


@pytest.mark.parametrize(
    ("file", "number", "text", "message"),
    [
        ("Anno/list_attr_img.txt", 1, "121", r"list_attr_img.txt:1: count line says 121 rows but 120 follow"),
        ("Anno/list_attr_img.txt", 1, "many", r"list_attr_img.txt:1: line 1 should be the number of rows"),
        ("Anno/list_attr_img.txt", 2, "image_name labels", r"list_attr_img.txt:2: line 2 should be the header"),
        ("Anno/list_attr_cloth.txt", 5, "floral   6", r"list_attr_cloth.txt:5: expected a name and a type in 1..5"),
        ("Anno/list_attr_cloth.txt", 5, "abstract 1", r"list_attr_cloth.txt: names listed twice .*'abstract'"),
        ("Anno/list_category_cloth.txt", 3, "Anorak", r"list_category_cloth.txt:3: expected a name and a type"),
        ("Eval/list_eval_partition.txt", 4, "img/x.jpg", r"list_eval_partition.txt:4: expected an image path"),
    ],
)
def test_bad_list_files_are_named(copy: Path, file, number, text, message):
    _replace_line(copy / file, number, text)
    with pytest.raises(DatasetError, match=message):
        create_reader("deepfashion", copy).read("train")


def test_missing_image_is_an_error_or_recorded(copy: Path):
    # the first train image renamed, in every list, to a file that does not exist
    first = create_reader("deepfashion", copy).read("train").paths[0]
    partition = copy / "Eval" / "list_eval_partition.txt"
    lines = partition.read_text().splitlines()
    lines[2] = lines[2].replace(first, "img/gone/img_99999999.jpg")
    partition.write_text("\n".join(lines) + "\n")
    for f in ("list_category_img.txt", "list_attr_img.txt", "list_bbox.txt"):
        p = copy / "Anno" / f
        p.write_text(p.read_text().replace(first, "img/gone/img_99999999.jpg"))
    with pytest.raises(DatasetError, match=r"list_eval_partition.txt:3: listed image 'img/gone/img_99999999.jpg'"):
        create_reader("deepfashion", copy).read("train")
    t = create_reader("deepfashion", copy).read("train", allow_missing=True)
    assert len(t) == SPLITS["train"] - 1 and t.missing[0][1:] == (3, "img/gone/img_99999999.jpg")
    assert t.labels is not None and len(t.labels["texture"]) == len(t)


def test_trains_and_reports_the_benchmark_metrics(bench, cache_dir: Path, tmp_path: Path):
    root, _ = bench
    extra = {"data.format": "deepfashion", "data.eval_split": "val", "train.epochs": 3}
    over = tiny_overrides(root, cache_dir, tmp_path, name="df", **extra)
    run = fit(load_config(None, over))
    best = json.loads((run / "summary.json").read_text())["best"]
    assert {"category/top3", "category/top5", "texture/top3_recall", "texture/mAP", "attributes/top5_recall"} <= set(
        best
    )
    assert "fabric/top3_recall" not in best  # 3 classes: top-3 would always be 1
    # colour encodes the category: 3 epochs beat chance (1/6) by far
    assert best["category/acc"] > 0.4
    out = subprocess.run(
        [sys.executable, "-m", "fashattr", "eval", str(run), "--split", "test"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "top3_recall" in out.stdout and "all attributes" in out.stdout and "absent" in out.stdout  # Kaftan


def test_data_check_on_the_benchmark_layout(bench, tmp_path: Path):
    root, _ = bench
    cmd = ["data", "check", str(root), "--format", "deepfashion", "--out", str(tmp_path)]
    out = subprocess.run([sys.executable, "-m", "fashattr", *cmd], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads((tmp_path / "report.json").read_text())
    assert {s: v["count"] for s, v in data["splits"].items()} == SPLITS
    assert data["splits"]["train"]["class_counts"]["texture"]["abstract chevron"] >= 1
    assert (tmp_path / "class_distribution.png").stat().st_size > 0
