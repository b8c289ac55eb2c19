"""Bundles: `fashattr export RUN --format bundle`, verification against hashes.json, loading with torch,
the model card, and every bad bundle named by its file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_overrides

from fashattr.cli import main
from fashattr.config import load_config
from fashattr.deploy.bundle import bundle_hash, load_bundle_torch, verify_bundle, write_bundle
from fashattr.engine.trainer import fit
from fashattr.errors import BundleError
from fashattr.predictor import Predictor


@pytest.fixture(scope="module")
def run(tiny_data: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained run with a test holdout (so its card has both metric columns)."""
    out = tmp_path_factory.mktemp("runs")
    extra = {"data.test_holdout": 0.2, "train.epochs": 1, "recipe": "tiny test recipe"}
    return fit(load_config(None, tiny_overrides(tiny_data, cache_dir, out, name="b", **extra)))


@pytest.fixture(scope="module")
def bundle(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    assert main(["export", str(run), "--format", "bundle", "--out", str(out)]) == 0
    return out


def fresh_copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "copy"))


def test_bundle_layout_config_and_hash(bundle: Path, run: Path):
    assert sorted(p.name for p in bundle.iterdir()) == ["README.md", "config.json", "hashes.json", "model.safetensors"]
    assert (bundle / "model.safetensors").read_bytes() == (run / "best.safetensors").read_bytes()
    config = verify_bundle(bundle)
    assert config["format"] == "fashattr-bundle" and config["format_version"] == 1
    assert [g["name"] for g in config["schema"]["groups"]] == [
        "pattern",
        "sleeve",
        "length",
        "neckline",
        "fabric",
        "fit",
    ]
    assert config["model"]["backbone"] == "test_resnet" and config["model"]["pretrained"] is False
    assert config["preprocess"] == {
        "image_size": 32,
        "fill": [124, 116, 104],  # round(255 * ImageNet mean)
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "bbox_crop": False,
        "bbox_margin": 0.1,
        "resample": "bilinear",
        "letterbox": "fashattr-v1",
    }
    summary = json.loads((run / "summary.json").read_text())
    assert config["metrics"]["test_holdout"] == summary["test_holdout"]
    assert config["metrics"]["selection_holdout"] == summary["best"]
    seen = config["source"]["trained_on"]
    assert {k: seen[k] for k in ("format", "root", "train_split")} == {
        "format": "ai6126",
        "root": "FashionDataset",
        "train_split": "train",
    }
    # The counts the run logged: the test holdout's as in summary.json, all three adding up to the 160 rows.
    assert seen["test_holdout_images"] == summary["test_holdout_images"] == 31
    assert seen["train_images"] + seen["selection_images"] + seen["test_holdout_images"] == 160
    hashes = json.loads((bundle / "hashes.json").read_text())
    assert sorted(hashes["files"]) == ["README.md", "config.json", "model.safetensors"]
    assert bundle_hash(bundle) == hashes["bundle_hash"] and len(hashes["bundle_hash"]) == 64


def test_export_is_reproducible_and_replaces_only_a_bundle(run: Path, bundle: Path, tmp_path: Path):
    again = write_bundle(run, tmp_path / "again")
    assert bundle_hash(again) == bundle_hash(bundle)  # same run, same bytes: the same model id
    write_bundle(run, again)  # an existing bundle is replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="mine exists and is not a fashattr bundle"):
        write_bundle(run, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind


def test_model_card(bundle: Path, run: Path):
    card = (bundle / "README.md").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert card.startswith("# fashattr model: test_resnet — 6 attribute groups")
    assert "`ai6126` layout, root `FashionDataset`, split `train`: 98 training images, 31 in the selection" in card
    assert "recipe: tiny test recipe" in card and "random initialisation (from scratch)" in card
    test, sel = summary["test_holdout"]["avg_class_acc"], summary["best"]["avg_class_acc"]
    assert f"| avg_class_acc | {test:.4f} | {sel:.4f} |" in card
    assert "| sleeve | single-label | long_sleeve, short_sleeve, sleeveless |" in card
    assert "## Intended use and limits" in card


def test_torch_load_gives_the_runs_predictions(bundle: Path, run: Path, tiny_data: Path):
    model, config = load_bundle_torch(bundle)
    assert not model.training and config["model"]["backbone"] == "test_resnet"
    files = [tiny_data / "img" / f"{i:05d}.jpg" for i in range(5)]
    from_bundle = Predictor.from_bundle(bundle)
    from_run = Predictor.from_run(run)
    assert from_bundle.predict_files(files) == from_run.predict_files(files)
    pixels = np.stack([from_run.load(f) for f in files])
    a, b = from_bundle.scores(pixels), from_run.scores(pixels)
    assert all(np.array_equal(a[g], b[g]) for g in a)


def test_changed_missing_and_unlisted_files_are_named(bundle: Path, tmp_path: Path):
    b = fresh_copy(bundle, tmp_path)
    want = json.loads((b / "hashes.json").read_text())["files"]["model.safetensors"]
    with open(b / "model.safetensors", "r+b") as f:  # flip one byte of the weights
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(BundleError) as e:
        Predictor.from_bundle(b)
    assert e.value.file == str(b / "model.safetensors")
    assert str(e.value).startswith(f"{b / 'model.safetensors'}: changed: expected sha256 {want}, found ")
    # The CLI says it in one line, exit code 2.
    assert main(["predict", str(b), str(b / "README.md"), "--out", str(tmp_path / "p.jsonl")]) == 2

    b = fresh_copy(bundle, tmp_path / "2")
    (b / "model.safetensors").unlink()
    with pytest.raises(BundleError, match=r"model.safetensors: missing \(listed in hashes.json\)"):
        verify_bundle(b)

    b = fresh_copy(bundle, tmp_path / "3")
    (b / "model.onnx").write_bytes(b"an ONNX file slipped in")
    with pytest.raises(BundleError, match=r"model.onnx: not listed in hashes.json"):
        load_bundle_torch(b)
    (b / "model.onnx").unlink()
    (b / ".DS_Store").write_bytes(b"hidden files are not part of a bundle")
    verify_bundle(b)


def test_newer_format_version_says_upgrade(bundle: Path, tmp_path: Path):
    b = fresh_copy(bundle, tmp_path)
    config = json.loads((b / "config.json").read_text())
    (b / "config.json").write_text(json.dumps({**config, "format_version": 2}))
    with pytest.raises(BundleError) as e:
        Predictor.from_bundle(b)
    assert str(e.value) == (
        f"{b / 'config.json'}: written by a newer fashattr (format version 2; this fashattr reads 1); upgrade"
    )


def test_not_a_bundle(run: Path, tmp_path: Path):
    with pytest.raises(BundleError, match=r"config\.json: missing"):
        verify_bundle(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"last.safetensors not found"):
        (run / "last.safetensors").rename(run / "last.kept")
        try:
            write_bundle(run, tmp_path / "x", weights="last")
        finally:
            (run / "last.kept").rename(run / "last.safetensors")


def test_export_checks_the_size_budget(run: Path, tmp_path: Path):
    import yaml

    other = Path(shutil.copytree(run, tmp_path / "run"))
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["model"]["max_mb"] = 0.001
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=r"model.safetensors: [0-9.]+ MB, over the budget model.max_mb = 0.001 MB"):
        write_bundle(other, tmp_path / "b")
    assert not (tmp_path / "b").exists()
