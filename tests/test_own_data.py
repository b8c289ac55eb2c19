"""A user's own label table, first hour (issue 31): `data init` profiles it and writes a config with its classes
declared, typos are caught with their line and closest class, and `data check` tells the format from the path."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fashattr.config import load_config
from fashattr.data.formats import create_reader, infer_format
from fashattr.data.profile import edit_distance, likely_typos
from fashattr.data.starter import SMALL_TABLE, job_recipe
from fashattr.errors import DatasetError
from fashattr.schema import ai6126_schema

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fashattr", *args], capture_output=True, text=True, cwd=cwd)


def test_edit_distance_by_hand():
    assert edit_distance("florall", "floral") == 1  # one letter too many
    assert edit_distance("kint", "knit") == 1  # two neighbours swapped
    assert edit_distance("denim", "dnm") == 2
    assert edit_distance("", "abc") == 3
    assert edit_distance("long_sleeve", "short_sleeve") == 4


def test_likely_typos():
    counts = {"solid": 3000, "floral": 300, "florall": 1, "striped": 200, "stripe": 150}
    assert likely_typos(counts) == [{"class": "florall", "count": 1, "like": "floral", "like_count": 300}]
    # one swap, and a name written two ways whatever the counts
    assert likely_typos({"knit": 100, "kint": 2}) == [{"class": "kint", "count": 2, "like": "knit", "like_count": 100}]
    assert likely_typos({"floral": 60, "Floral": 50}) == [
        {"class": "Floral", "count": 50, "like": "floral", "like_count": 60}
    ]
    assert likely_typos({"long_sleeve": 900, "Long-sleeve": 3})[0]["like"] == "long_sleeve"
    # common look-alikes are classes, not typos; rare classes with no look-alike are rare, not typos
    assert likely_typos({"tight": 300, "light": 200, "faux": 3, "cotton": 3000}) == []


def write_csv(real_data: Path, folder: Path, n: int = 60) -> Path:
    """``n`` FashionDataset rows as a shop would write them: class names, absolute photo paths, a typo on row 6
    (file line 7), empty fabric cells on rows 8 and 10, and a photo that does not exist on row 12."""
    schema = ai6126_schema()
    paths = (real_data / "split" / "train.txt").read_text().split()[:n]
    attrs = [line.split() for line in (real_data / "split" / "train_attr.txt").read_text().splitlines()[:n]]
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "labels.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", *schema.names])
        for i, (p, a) in enumerate(zip(paths, attrs, strict=True)):
            row = [g.classes[int(k)] for g, k in zip(schema.groups, a, strict=True)]
            if i == 5:
                row[0] = "florall"
            if i in (7, 9):
                row[4] = ""
            photo = real_data / p if i != 11 else real_data / "img" / "gone.jpg"
            w.writerow([str(photo.resolve()), *row])
    return table


def test_data_init_writes_a_config_that_stops_on_the_typo(real_data: Path, tmp_path: Path):
    table = write_csv(real_data, tmp_path / "shop")
    done = cli("data", "init", str(table), "--out", "fashattr.yaml", cwd=tmp_path)
    assert done.returncode == 1, done.stderr  # a row training would refuse: said, and the exit status says so
    out = done.stdout
    assert "likely typo: 'florall' (1 image) looks like 'floral'" in out
    assert "empty cells: 2 of 59 rows" in out  # the missing photo's row is not read
    assert "Job 'shop': recipe shop_probe, which optimises overall accuracy" in out
    assert "The recipe for fewer than 3000 labelled photos (59 here); from 3000: shop_pretrained." in out
    assert "1 listed images are missing" in out
    assert f"{table}:7: column 'pattern': unknown class 'florall' (did you mean 'floral'?)" in out
    cfg = load_config(tmp_path / "fashattr.yaml")
    assert cfg.data.format == "csv" and Path(cfg.data.root) == table.resolve()
    # written relative to the config's folder: the config reads the same from any working directory
    assert yaml.safe_load((tmp_path / "fashattr.yaml").read_text())["data"]["root"] == "shop/labels.csv"
    assert cfg.train.select_metric == "overall_acc" and cfg.model.pretrained == "package:efficientnet-lite0"
    assert cfg.train.feature_cache and cfg.train.trainable_stages == 0  # shop_probe: a small table's recipe
    declared = cfg.data.reader_options["classes"]
    assert "florall" not in declared["pattern"] and "floral" in declared["pattern"]
    assert list(declared) == ai6126_schema().names
    # a second init keeps the file unless told
    again = cli("data", "init", str(table), "--out", "fashattr.yaml", cwd=tmp_path)
    assert again.returncode == 2 and "fashattr.yaml exists: pass --force" in again.stderr
    # the typo fixed, the declared config reads every row; the challenge job takes the challenge recipe
    table.write_text(table.read_text().replace(",florall,", ",floral,"))
    reader = create_reader(cfg.data.format, cfg.data.root, cfg.data.reader_options)
    assert len(reader.read("train", allow_missing=True)) == 59  # the missing photo left out, as data check does
    done = cli("data", "init", str(table), "--job", "challenge", "--out", "c.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert load_config(tmp_path / "c.yaml").train.select_metric == "avg_class_acc"
    assert "training stops" not in done.stdout


def test_data_check_tells_the_format_and_takes_a_config(real_data: Path, tmp_path: Path):
    table = write_csv(real_data, tmp_path / "shop", n=40)
    done = cli("data", "check", str(table), "--out", "check", cwd=tmp_path)  # no --format: .csv is csv
    assert done.returncode == 1, done.stderr  # the missing photo is an error
    assert f"dataset {table} (csv)" in done.stdout
    assert "likely typo: 'florall' (1 image) looks like 'floral'" in done.stdout
    assert "empty cells: 2 of 39 rows (5%)" in done.stdout
    report = yaml.safe_load((tmp_path / "check" / "report.json").read_text())
    assert report["labels"]["train"]["fabric"]["empty"] == 2
    assert report["labels"]["train"]["pattern"]["likely_typos"][0]["class"] == "florall"
    # with the config, the declared classes make the typo a label error, named with its line
    cli("data", "init", str(table), "--out", "fashattr.yaml", cwd=tmp_path)
    done = cli("data", "check", "--config", "fashattr.yaml", "--min-count", "3", "--out", "check2", cwd=tmp_path)
    assert "label errors: 1" in done.stdout
    assert f"{table}:7: column 'pattern': unknown class 'florall' (did you mean 'floral'?)" in done.stdout
    # the old default layout on a CSV says what to pass
    done = cli("data", "check", str(table), "--format", "ai6126", cwd=tmp_path)
    assert done.returncode == 2 and "is a file: a CSV or Parquet table of paths and labels is format csv" in done.stderr


def test_infer_format(tmp_path: Path, real_data: Path):
    assert infer_format(real_data) == "ai6126"
    (tmp_path / "t.parquet").write_bytes(b"")
    assert infer_format(tmp_path / "t.parquet") == "csv"
    (tmp_path / "classes" / "floral").mkdir(parents=True)
    assert infer_format(tmp_path / "classes") == "folder"
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"notes.txt: a .txt file is no dataset layout .* pass --format"):
        infer_format(tmp_path / "notes.txt")
    with pytest.raises(DatasetError, match=r"cannot tell this folder's layout; a label table here: pass .*t.parquet"):
        infer_format(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        infer_format(tmp_path / "nowhere.csv")


def test_shop_recipe_is_cpu_pretrained_selected_on_overall_accuracy():
    recipes = ROOT / "configs" / "recipes"
    shop = yaml.safe_load((recipes / "shop_pretrained.yaml").read_text())
    challenge = yaml.safe_load((recipes / "cpu_pretrained.yaml").read_text())
    assert shop.pop("recipe") != challenge.pop("recipe")
    assert shop["train"].pop("select_metric") == "overall_acc"
    assert challenge["train"].pop("select_metric") == "avg_class_acc"
    assert shop == challenge  # nothing else differs: the shop's numbers are cpu_pretrained's model, decoded for it
    small = yaml.safe_load((recipes / "shop_probe.yaml").read_text())
    probe = yaml.safe_load((recipes / "linear_probe.yaml").read_text())
    assert small.pop("recipe") != probe.pop("recipe")
    assert small["train"].pop("select_metric") == "overall_acc"
    assert probe["train"].pop("select_metric") == "avg_class_acc"
    assert small == probe  # the small table's shop recipe is linear_probe, selected on overall accuracy


def test_the_job_recipe_follows_the_table_size():
    assert job_recipe("shop", 1) == job_recipe("shop", SMALL_TABLE - 1) == "shop_probe"
    assert job_recipe("shop", SMALL_TABLE) == "shop_pretrained"
    assert job_recipe("challenge", 10) == job_recipe("challenge", 10_000) == "cpu_pretrained"
    with pytest.raises(ValueError, match=r"unknown job 'shp'; choose from \['challenge', 'shop'\]"):
        job_recipe("shp", 10)


def test_the_own_data_page_walk(tmp_path: Path):
    # docs/own_data.md's walk, command by command, on the example it ships (copied: runs/ and bundles/ land here)
    page = (ROOT / "docs" / "own_data.md").read_text()
    block = page.split("<!-- the test runs every `fashattr` line of the next block, in order -->", 1)[1]
    block = block.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split() for line in block.splitlines() if line.startswith("fashattr ")]
    assert [c[1] for c in commands] == ["data", "data", "train", "calibrate", "export", "predict", "tag", "search"]
    (tmp_path / "examples").mkdir()
    shutil.copytree(ROOT / "examples" / "own_data", tmp_path / "examples" / "own_data")
    for args in commands:
        args = args[1:]
        if args[0] == "train":
            # Quick: 64 px, and used at 64 px too (the shop recipe's data.eval_size is for its 224 px).
            args += ["train.epochs=2", "data.image_size=64", "data.eval_size=null", "train.progress=false"]
        done = cli(*args, cwd=tmp_path)
        assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
        if args[0] == "calibrate":
            assert "default decoding: 'accuracy'" in done.stdout  # a shop run decodes for overall accuracy
    predicted = json.loads((tmp_path / "runs" / "own_predictions.jsonl").read_text().splitlines()[0])
    assert predicted["decoding"] == "accuracy" and set(predicted["groups"]) == set(ai6126_schema().names)
    assert all("unsure" in v for v in predicted["groups"].values())
    assert (tmp_path / "runs" / "own_catalog.db").is_file()


def test_config_paths_are_relative_to_the_config_file(
    tiny_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    # One rule: a relative path in a config file is relative to the file's folder, whatever the working directory;
    # one typed in an override is relative to the working directory.
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    rel = os.path.relpath(tiny_data, project)
    (project / "c.yaml").write_text(f"data:\n  root: {rel}\n  cache_dir: cache\nmodel:\n  backbone: test_resnet\n")
    cfg = load_config(project / "c.yaml")
    assert Path(cfg.data.root) == tiny_data.resolve() and Path(cfg.data.cache_dir) == project / "cache"
    overridden = load_config(project / "c.yaml", ["data.cache_dir=here"])
    assert Path(overridden.data.cache_dir) == Path.cwd() / "here"
    done = cli(
        "train",
        str(project / "c.yaml"),
        "data.image_size=32",
        "train.epochs=1",
        "train.batch_size=16",
        "train.progress=false",
        "train.threads=1",
        "data.workers=1",
        "data.holdout=0.25",
        "out_dir=runs",
        "name=r",
        cwd=elsewhere,
    )
    assert done.returncode == 0, done.stderr
    saved = yaml.safe_load((elsewhere / "runs" / "r" / "config.yaml").read_text())
    assert saved["data"]["root"] == str(tiny_data.resolve())  # the run's copy holds absolute paths
    assert (project / "cache").is_dir()  # the cache went beside the config, not into the working directory
    # a config written before the rule (its path relative to the working directory) still loads, with a warning
    (elsewhere / "old.yaml").write_text(f"data:\n  root: {os.path.relpath(tiny_data, tmp_path)}\n")
    old_cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        with caplog.at_level(logging.WARNING, logger="fashattr.config"):
            old = load_config(elsewhere / "old.yaml")
    finally:
        os.chdir(old_cwd)
    assert Path(old.data.root) == tiny_data.resolve()
    assert "is not found beside the config but is in the working directory" in caplog.text
