"""Synthetic garments: the FashionDataset layout, deterministic, with real frequencies, learnable."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from fashattr.config import load_config
from fashattr.data.formats import create_reader
from fashattr.data.synthetic import TRAIN_COUNTS, sample_labels
from fashattr.engine.trainer import fit
from fashattr.predictor import eval_run
from fashattr.schema import ai6126_schema

MAJORITY = 6 / 26


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_synth_cli_layout_and_determinism(tmp_path: Path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "fashattr",
                "synth",
                str(tmp_path / name),
                "--n",
                "40",
                "--size",
                "48",
                "--seed",
                str(seed),
            ],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")
    reader = create_reader("ai6126", tmp_path / "a")
    assert reader.schema() == ai6126_schema()
    sizes = {s: len(reader.read(s)) for s in reader.splits()}
    assert sizes == {"train": 28, "val": 6, "test": 6}
    assert reader.read("train").labeled and reader.read("val").labeled and not reader.read("test").labeled
    with __import__("PIL").Image.open(tmp_path / "a" / "img" / "00000.jpg") as img:
        assert img.size == (48, 48) and img.mode == "RGB"


def test_class_frequencies_follow_the_real_train_split():
    labels = sample_labels(20000, np.random.default_rng(0), balance=0.0)
    for j, counts in enumerate(TRAIN_COUNTS.values()):
        real = np.asarray(counts) / sum(counts)
        drawn = np.bincount(labels[:, j], minlength=len(real)) / len(labels)
        assert np.abs(drawn - real).max() < 0.015
    flat = sample_labels(20000, np.random.default_rng(0))  # the default flattens halfway to uniform
    assert (np.bincount(flat[:, 3]) / 20000)[2] > 0.1  # square_neckline: 0.4% real, >10% here


def test_synthetic_garments_are_learnable(tmp_path: Path, cache_dir: Path):
    from fashattr.data.synthetic import synthesize

    data = synthesize(tmp_path / "synth", 1500, 64, seed=1)
    cfg = load_config(
        Path(__file__).parents[1] / "configs/recipes/demo_synthetic.yaml",
        [
            f"data.root={data}",
            f"data.cache_dir={cache_dir}",
            "train.epochs=12",
            "train.progress=false",
            f"out_dir={tmp_path}",
            "name=learn",
        ],
    )
    run = fit(cfg)
    metrics = eval_run(run, "val")
    summary = json.loads((run / "summary.json").read_text())
    assert metrics.avg_class_acc is not None and metrics.overall_acc is not None
    # A few CPU minutes at most: far above the majority predictor on every count.
    assert metrics.avg_class_acc > 0.6, summary["best"]
    assert metrics.overall_acc > 0.7
    assert all(g.avg_class_acc is not None and g.avg_class_acc > MAJORITY for g in metrics.groups.values())


def test_demo_refuses_to_replace_a_folder_it_did_not_write(tmp_path: Path):
    mine = tmp_path / "my_project"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    r = subprocess.run(
        [sys.executable, "-m", "fashattr", "demo", "--out", str(mine), "--n", "20"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "is not a demo folder" in r.stderr
    assert (mine / "thesis.tex").read_text() == "precious"
