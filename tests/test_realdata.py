"""On the real FashionDataset in ../shared/data (never copied into the repository)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fashattr.config import load_config
from fashattr.data.cache import cache_images
from fashattr.data.formats import create_reader
from fashattr.engine.trainer import fit
from fashattr.predictor import eval_run, predict_split
from fashattr.schema import ai6126_schema

MAJORITY = 6 / 26  # average per-class accuracy of always predicting each group's majority class


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real_cache")


@pytest.mark.realdata
def test_splits_labels_and_every_image_decodes(real_data: Path, real_cache: Path):
    reader = create_reader("ai6126", real_data)
    assert reader.schema() == ai6126_schema()  # class names read from list_attr_cloth.txt
    tables = {s: reader.read(s) for s in ("train", "val", "test")}
    assert {s: len(t) for s, t in tables.items()} == {"train": 5000, "val": 1000, "test": 1000}
    assert tables["train"].labeled and not tables["val"].labeled and not tables["test"].labeled
    counts = tables["train"].class_counts(ai6126_schema())
    assert counts["neckline"][2] == 19 and counts["fabric"][4] == 48 and counts["fabric"][2] == 3399
    assert sum(c.sum() for c in counts.values()) == 6 * 5000
    for split, table in tables.items():  # decodes all 7000 images (raises naming any bad file)
        pixels = cache_images(table, 48, cache_dir=real_cache, workers=2, progress=False).pixels
        assert pixels.shape == (len(table), 48, 48, 3), split
        assert 40 < float(pixels[::50].mean()) < 250


@pytest.mark.realdata
def test_short_cpu_training_learns_and_writes_challenge_files(real_data: Path, real_cache: Path, tmp_path: Path):
    cfg = load_config(
        Path(__file__).parents[1] / "configs/recipes/cpu_quick.yaml",
        [
            f"data.root={real_data}",
            f"data.cache_dir={real_cache}",
            "data.image_size=48",
            "train.epochs=3",
            "train.progress=false",
            f"out_dir={tmp_path}",
            "name=real",
        ],
    )
    run = fit(cfg)
    summary = json.loads((run / "summary.json").read_text())
    best = summary["best"]
    # Learning is real: clearly above the majority-class predictor on the stratified holdout.
    assert best["avg_class_acc"] > MAJORITY + 0.08, best
    metrics = eval_run(run, "holdout")
    assert metrics.avg_class_acc == pytest.approx(best["avg_class_acc"], abs=1e-6)
    sizes = [g.num_classes for g in ai6126_schema().groups]
    for split in ("test", "val"):
        out = tmp_path / f"{split}_prediction.txt"
        assert predict_split(run, split, out) == 1000
        rows = np.loadtxt(out, dtype=np.int64)
        assert rows.shape == (1000, 6)
        assert all(((rows[:, j] >= 0) & (rows[:, j] < s)).all() for j, s in enumerate(sizes))


PROBE = """
import pytest


@pytest.mark.realdata
def test_reads_the_data(real_data):
    assert (real_data / "split" / "train.txt").is_file()
"""


def run_probe(tmp_path: Path, data: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    """Run a realdata test under this suite's conftest in a fresh pytest, with FASHATTR_DATA=data."""
    root = tmp_path / "probe"
    root.mkdir(exist_ok=True)
    shutil.copy(Path(__file__).with_name("conftest.py"), root / "conftest.py")
    (root / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"FASHATTR_DATA": str(data)}
    if ci is not None:
        env["CI"] = ci
    cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-o", "markers=realdata: real", "."]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_missing_real_data_skips_locally_and_fails_under_ci(tmp_path: Path):
    missing = tmp_path / "nowhere" / "FashionDataset"
    local = run_probe(tmp_path, missing, ci=None)
    assert local.returncode == 0, local.stdout
    assert "1 skipped" in local.stdout
    assert f": real FashionDataset not found at {missing}\n" in local.stdout
    ci = run_probe(tmp_path, missing, ci="true")
    assert ci.returncode == 1, ci.stdout
    assert (
        f"ERROR test_probe.py::test_reads_the_data - real FashionDataset not found at {missing}; "
        "CI=true needs the real data (set FASHATTR_DATA)"
    ) in ci.stdout


def test_real_data_found_through_fashattr_data_passes_under_ci(tmp_path: Path):
    (tmp_path / "data" / "split").mkdir(parents=True)
    (tmp_path / "data" / "split" / "train.txt").write_text("img/00000.jpg\n")
    result = run_probe(tmp_path, tmp_path / "data", ci="true")
    assert result.returncode == 0, result.stdout
    assert "1 passed" in result.stdout
