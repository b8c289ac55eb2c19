"""The portable runtime (fashattr.portable, copied into every ONNX bundle beside predict_onnx.py): one copy of
the pixel code, bundle verification, decoding, OnnxRunner, and predict_onnx.py in a venv with only onnxruntime,
NumPy and Pillow, giving the same classes as the torch runtime."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_overrides
from PIL import Image

import fashattr.errors as errors
import fashattr.portable.images as images
from fashattr.config import load_config
from fashattr.deploy.bundle import write_bundle
from fashattr.deploy.isolated import onnx_only_venv, run_standalone
from fashattr.deploy.runtime import Runtime
from fashattr.engine.trainer import fit
from fashattr.portable import bundle as bundle_format
from fashattr.portable import errors as portable_errors
from fashattr.portable import onnx_runner
from fashattr.portable.bundle import compute_hashes, verify_bundle
from fashattr.portable.decoding import decode
from fashattr.portable.errors import BundleError
from fashattr.portable.onnx_runner import OnnxRunner

GROUPS = ["pattern", "sleeve", "length", "neckline", "fabric", "fit"]


# ---------------------------------------------------------------------------------------- one pixel code
def test_fashattr_errors_are_the_portable_classes():
    assert errors.ImageError is portable_errors.ImageError and errors.BundleError is portable_errors.BundleError
    assert (
        issubclass(errors.ConfigError, portable_errors.FashattrError)
        and errors.FashattrError is portable_errors.FashattrError
    )


def test_image_error_from_the_runtime_is_caught_as_fashattr_error(tmp_path: Path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"plain text, not an image")
    with pytest.raises(errors.ImageError) as e:
        images.load_presized(bad, 32)
    assert e.value.file == str(bad) and str(e.value) == f"{bad}: not an image Pillow can identify"
    assert isinstance(e.value, errors.FashattrError) and isinstance(e.value, errors.USER_ERRORS)


# ---------------------------------------------------------------------------------------- verify_bundle
def small_bundle(root: Path, version: int = 1) -> Path:
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"format": "fashattr-bundle", "format_version": version}))
    (root / "model.onnx").write_bytes(b"weights")
    (root / "sub").mkdir()
    (root / "sub" / "notes.txt").write_text("x")
    (root / "hashes.json").write_text(json.dumps(compute_hashes(root)))
    return root


def test_verify_bundle_returns_the_hash_of_every_file(tmp_path: Path):
    root = small_bundle(tmp_path / "b")
    (root / ".DS_Store").write_text("hidden files are not part of a bundle")
    files = {
        n: hashlib.sha256((root / n).read_bytes()).hexdigest() for n in ("config.json", "model.onnx", "sub/notes.txt")
    }
    assert json.loads((root / "hashes.json").read_text())["files"] == files
    lines = "".join(f"{n}  {files[n]}\n" for n in sorted(files))  # sha256sum's format
    assert verify_bundle(root) == hashlib.sha256(lines.encode()).hexdigest()


def test_verify_bundle_names_the_file_at_fault(tmp_path: Path):
    root = small_bundle(tmp_path / "b")
    expected = hashlib.sha256(b"weights").hexdigest()
    (root / "model.onnx").write_bytes(b"weightz")
    with pytest.raises(BundleError) as e:
        verify_bundle(root)
    found = hashlib.sha256(b"weightz").hexdigest()
    assert str(e.value) == f"{root / 'model.onnx'}: changed: expected sha256 {expected}, found {found}"
    (root / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx: missing \(listed in hashes\.json\)"):
        verify_bundle(root)
    (root / "model.onnx").write_bytes(b"weights")
    (root / "model.int8.onnx").write_bytes(b"smuggled")
    with pytest.raises(BundleError) as e:
        verify_bundle(root)
    assert str(e.value) == (
        f"{root / 'model.int8.onnx'}: not listed in hashes.json (expected only config.json, model.onnx, sub/notes.txt)"
    )
    (root / "model.int8.onnx").unlink()
    (root / "hashes.json").unlink()
    with pytest.raises(BundleError, match=r"hashes\.json: missing"):
        verify_bundle(root)


def test_newer_format_and_not_a_bundle(tmp_path: Path):
    newer = small_bundle(tmp_path / "newer", version=2)
    with pytest.raises(BundleError) as e:
        verify_bundle(newer)
    assert str(e.value) == (
        f"{newer / 'config.json'}: written by a newer fashattr (format version 2; this fashattr reads 1); upgrade"
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match=r"empty/config\.json: missing"):
        bundle_format.read_bundle_config(tmp_path / "empty")
    with pytest.raises(BundleError, match=r"nowhere: no such bundle folder"):
        bundle_format.read_bundle_config(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------- decode
def toy_config(decoding: dict | None = None) -> dict:
    return {
        "schema": {
            "groups": [
                {"name": "sleeve", "kind": "single", "classes": ["long", "short", "none"]},
                {"name": "style", "kind": "multi", "classes": ["boho", "retro", "sport"]},
            ]
        },
        "decoding": decoding or {"multi_label_threshold_logit": 0.0, "calibration": None, "logit_adjust": None},
    }


def test_decode_hand_computed():
    logits = {
        "sleeve": np.array([[0.0, np.log(3.0), -np.inf], [2.0, 0.0, 0.0]], dtype=np.float32),
        "style": np.array([[1.0, -1.0, 0.0], [-2.0, -3.0, -0.5]], dtype=np.float32),
    }
    out = decode(toy_config(), logits)
    # softmax(0, ln 3, -inf) = (0.25, 0.75, 0); a logit of exactly 0 is absent; sigmoid(1) = 0.731059.
    assert out[0] == {
        "groups": {
            "sleeve": {"class": "short", "index": 1, "prob": 0.75, "unsure": False},  # 0.75 >= 0.5
            "style": [{"class": "boho", "index": 0, "prob": 0.731059}],
        },
        "decoding": None,
    }
    assert out[1]["groups"]["style"] == [] and out[1]["groups"]["sleeve"]["class"] == "long"
    top = decode(toy_config(), logits, top_k=2)[0]["groups"]["sleeve"]["top"]
    assert [t["class"] for t in top] == ["short", "long"] and top[1]["prob"] == 0.25
    adjusted = toy_config(
        {
            "multi_label_threshold_logit": -0.6,
            "logit_adjust": {"offsets": {"sleeve": [0.0, 0.0, 10.0]}},
            "calibration": {"temperature": {"sleeve": 2.0}},
        }
    )
    a = decode(adjusted, logits)
    assert a[1]["groups"]["sleeve"]["class"] == "none"  # (0 + 10) / 2 beats 2 / 2
    assert [s["class"] for s in a[1]["groups"]["style"]] == ["sport"]  # -0.5 > -0.6
    # unsure: below the bundle's threshold (default 0.5); softmax(2, 0, 0) = e^2 / (e^2 + 2) = 0.787
    strict = decode(toy_config({"unsure_below": 0.8}), logits)
    assert strict[0]["groups"]["sleeve"]["unsure"] and strict[1]["groups"]["sleeve"]["unsure"]
    assert not decode(toy_config({"unsure_below": 0.78}), logits)[1]["groups"]["sleeve"]["unsure"]
    flat = {"sleeve": np.zeros((1, 3), np.float32), "style": np.zeros((1, 3), np.float32)}
    assert decode(toy_config(), flat)[0]["groups"]["sleeve"] == {
        "class": "long",
        "index": 0,
        "prob": 0.333333,
        "unsure": True,
    }


# ---------------------------------------------------------------------------------------- real bundles
@pytest.fixture(scope="module")
def bundle(tiny_data: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    run = fit(load_config(None, tiny_overrides(tiny_data, cache_dir, out, name="o", **{"train.epochs": 1})))
    return write_bundle(run, tmp_path_factory.mktemp("bundles") / "tiny", formats=("onnx",))


def folder_with_bad_images(tiny_data: Path, tmp_path: Path, n: int = 12) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir()
    for f in sorted((tiny_data / "img").glob("*.jpg"))[:n]:
        shutil.copyfile(f, photos / f.name)
    (photos / "00003.jpg").write_bytes((photos / "00003.jpg").read_bytes()[:200])  # truncated
    (photos / "empty.png").write_bytes(b"")  # 0 bytes
    return photos


def test_onnx_runner_matches_the_torch_runtime(bundle: Path, tiny_data: Path, tmp_path: Path):
    runner = OnnxRunner(bundle)
    assert runner.output_names == GROUPS and runner.bundle_hash == verify_bundle(bundle)
    torch_rt = Runtime.from_bundle(bundle, backend="torch")
    files = sorted((tiny_data / "img").glob("*.jpg"))[:40]
    x = np.stack([bundle_format.preprocess(runner.config, f) for f in files])
    assert (x == np.stack([torch_rt.preprocess(f) for f in files])).all()
    a, b = runner.logits(x), torch_rt.logits(x)
    assert max(float(np.abs(a[g] - b[g]).max()) for g in GROUPS) <= 1e-4
    with pytest.raises(ValueError, match=r"expected uint8 images of shape \(N, 32, 32, 3\), got float32"):
        runner.logits(x.astype(np.float32))


def test_predict_files_reports_each_bad_image_and_predicts_the_rest(bundle: Path, tiny_data: Path, tmp_path: Path):
    photos = folder_with_bad_images(tiny_data, tmp_path)
    paths = images.expand_paths([photos])
    records = list(onnx_runner.predict_files(OnnxRunner(bundle), paths, batch_size=5, workers=2))
    assert [r["path"] for r in records] == [str(p) for p in paths]  # every file, in order
    bad = {Path(r["path"]).name: r["error"] for r in records if "error" in r}
    assert set(bad) == {"00003.jpg", "empty.png"}
    assert bad["empty.png"] == "not an image Pillow can identify"
    assert bad["00003.jpg"].startswith("truncated or corrupt image")
    good = [r for r in records if "groups" in r]
    assert len(good) == 11 and all(list(r["groups"]) == GROUPS for r in good)


def test_outputs_that_do_not_match_the_bundle_schema(bundle: Path, tmp_path: Path):
    copy = Path(shutil.copytree(bundle, tmp_path / "b"))
    config = json.loads((copy / "config.json").read_text())
    config["schema"]["groups"] = config["schema"]["groups"][::-1]  # a schema the model was not exported for
    (copy / "config.json").write_text(json.dumps(config))
    (copy / "hashes.json").write_text(json.dumps(compute_hashes(copy)))
    with pytest.raises(BundleError) as e:
        OnnxRunner(copy)
    assert str(e.value).startswith(f"{copy / 'model.onnx'}: outputs {GROUPS} do not match the schema's groups")
    with pytest.raises(BundleError, match="this bundle has no int8 ONNX model; export it with"):
        OnnxRunner(bundle, "int8")


# ---------------------------------------------------------------------------------------- isolated venv
def test_predict_onnx_py_runs_with_only_onnxruntime_numpy_pillow(bundle: Path, tiny_data: Path, tmp_path: Path):
    python = onnx_only_venv(tmp_path / "venv")
    photos = folder_with_bad_images(tiny_data, tmp_path)
    out = tmp_path / "preds.jsonl"
    proc = run_standalone(python, bundle, str(photos), "--out", str(out), "--batch-size", "4")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    expected = list(Runtime.from_bundle(bundle, backend="torch").predict_files(images.expand_paths([photos])))
    assert len(records) == len(expected) == 13
    for got, want in zip(records, expected, strict=True):
        assert got["path"] == want["path"]
        if "error" in want:
            assert got["error"] == want["error"]
        else:
            assert {g: v["class"] for g, v in got["groups"].items()} == {
                g: v["class"] for g, v in want["groups"].items()
            }
    assert f"skipped {photos / 'empty.png'}: not an image Pillow can identify" in proc.stderr
    assert "11 image(s) predicted, 2 unreadable" in proc.stderr
    # A changed file is refused there too, naming it.
    copy = Path(shutil.copytree(bundle, tmp_path / "tampered"))
    (copy / "model.onnx").write_bytes((copy / "model.onnx").read_bytes() + b"\0")
    proc = run_standalone(python, copy, str(photos))
    assert proc.returncode == 2 and f"error: {copy / 'model.onnx'}: changed: expected sha256" in proc.stderr


@pytest.mark.realdata
def test_standalone_gives_the_torch_runtimes_classes_on_200_real_images(bundle: Path, real_data: Path, tmp_path: Path):
    python = onnx_only_venv(tmp_path / "venv")
    files = [real_data / "img" / f"{i:05d}.jpg" for i in range(3, 7000, 35)]
    listed = tmp_path / "photos"
    listed.mkdir()
    for f in files:  # links, not copies: the images stay in the shared data folder
        (listed / f.name).symlink_to(f)
    out = tmp_path / "preds.jsonl"
    proc = run_standalone(python, bundle, str(listed), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in out.read_text().splitlines()]
    want = list(Runtime.from_bundle(bundle, backend="torch").predict_files(sorted(listed.iterdir())))
    assert len(got) == len(want) == 200
    classes = [[r["groups"][g]["class"] for g in GROUPS] for r in got]
    assert classes == [[r["groups"][g]["class"] for g in GROUPS] for r in want]
    probs = np.array([[r["groups"][g]["prob"] for g in GROUPS] for r in got])
    assert np.abs(probs - np.array([[r["groups"][g]["prob"] for g in GROUPS] for r in want])).max() <= 2e-6
    assert Image.open(files[0]).size  # the real photos were read, not placeholders


# ---------------------------------------------------------------------------------------- Preprocess
def test_preprocess_block_round_trips_and_names_what_is_missing():
    from fashattr.portable.bundle import Preprocess

    block = {
        "image_size": 64,
        "fill": [124, 116, 104],
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "bbox_crop": True,
        "bbox_margin": 0.1,
        "resample": "bilinear",
        "letterbox": "fashattr-v1",
    }
    pre = Preprocess.of({"preprocess": block})
    assert pre.image_size == 64 and pre.fill == (124, 116, 104) and pre.mean == (0.485, 0.456, 0.406)
    assert pre.background is None and pre.to_json() == block  # no "background" key unless there is a step
    with pytest.raises(BundleError, match=r"config.json: preprocess: missing or malformed 'fill'"):
        Preprocess.of({"preprocess": {k: v for k, v in block.items() if k != "fill"}})
    with pytest.raises(BundleError, match=r"preprocess: missing or malformed"):
        Preprocess.of({"preprocess": {**block, "mean": [0.5, 0.5]}})  # three values expected
