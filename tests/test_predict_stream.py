"""Streaming `fashattr predict PATHS`: bad images reported per file and the rest predicted, output written
as it goes (JSON Lines / CSV / JSON), and memory bounded whatever the number of files."""

from __future__ import annotations

import csv
import json
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_overrides
from PIL import Image

from fashattr.cli import main
from fashattr.config import load_config
from fashattr.deploy.bundle import write_bundle
from fashattr.deploy.output import predict_to_file
from fashattr.deploy.runtime import Runtime
from fashattr.engine.trainer import fit
from fashattr.errors import ImageError


@pytest.fixture(scope="module")
def bundle(tiny_data: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    run = fit(load_config(None, tiny_overrides(tiny_data, cache_dir, out, name="s", **{"train.epochs": 1})))
    return write_bundle(run, out / "bundle")


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A 57-byte PNG whose header claims ``width`` x ``height`` (Pillow refuses it before decoding)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    return path


def shop_folder(root: Path, tiny_data: Path, n_good: int = 7) -> Path:
    """Good photos plus a corrupt JPEG, a 0-byte file and a 30,000 x 30,000 PNG header, in sorted order."""
    root.mkdir(parents=True)
    for i in range(n_good):
        (root / f"good{i}.jpg").write_bytes((tiny_data / "img" / f"{i:05d}.jpg").read_bytes())
    good = (root / "good0.jpg").read_bytes()
    (root / "good3.jpg").write_bytes(good[: len(good) // 3])  # truncated mid-scan
    (root / "empty.jpg").write_bytes(b"")
    png_claiming(root / "bomb.png", 30_000, 30_000)
    return root


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fashattr", *args], capture_output=True, text=True, cwd=cwd)


def test_bad_images_are_reported_and_the_rest_predicted(bundle: Path, tiny_data: Path, tmp_path: Path):
    shop = shop_folder(tmp_path / "shop", tiny_data)
    r = cli("predict", str(bundle), "shop", "--out", "p.jsonl", "--batch-size", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [Path(x["path"]).name for x in records] == ["bomb.png", "empty.jpg"] + [f"good{i}.jpg" for i in range(7)]
    errors = {Path(x["path"]).name: x["error"] for x in records if "error" in x}
    assert set(errors) == {"bomb.png", "empty.jpg", "good3.jpg"}
    assert errors["bomb.png"].startswith("image too large (decompression-bomb limit): Image size (900000000 pixels)")
    assert errors["empty.jpg"] == "not an image Pillow can identify"
    assert errors["good3.jpg"].startswith("truncated or corrupt image")
    # Each named once on stderr, beside the progress bar; the summary line counts them.
    for name, why in errors.items():
        assert r.stderr.count(f"warning: {Path('shop') / name}: {why}") == 1
    assert "img/s" in r.stderr and "errors=3" in r.stderr
    assert "wrote predictions for 6 of 9 images to p.jsonl (" in r.stdout
    assert r.stdout.rstrip().endswith("; 3 unreadable, each reported above and as an error record there")
    # The good photos get what the list-returning Predictor gives them.
    from fashattr.predictor import Predictor

    want = Predictor.from_bundle(bundle).predict_files([shop / f"good{i}.jpg" for i in (0, 1, 2, 4, 5, 6)])
    got = [x for x in records if "groups" in x]
    # Same classes; probabilities equal up to float rounding: the CLI ran batches of 3, this call one of 6, and
    # some CPUs' kernels (oneDNN with AVX-512) sum in another order for another batch size.
    assert [{g: v["class"] for g, v in x["groups"].items()} for x in got] == [
        {g: v["class"] for g, v in x["groups"].items()} for x in want
    ]
    for g_rec, w_rec in zip(got, want, strict=True):
        for group, value in g_rec["groups"].items():
            assert value["prob"] == pytest.approx(w_rec["groups"][group]["prob"], abs=1e-5)

    r = cli("predict", str(bundle), "shop", "--out", "p.csv", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0 and r.stderr.count("warning: ") == 3
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == 9 and list(rows[0])[-1] == "error"
    assert rows[1]["error"] == "not an image Pillow can identify" and rows[1]["sleeve"] == ""
    assert rows[2]["error"] == "" and rows[2]["sleeve"] == got[0]["groups"]["sleeve"]["class"]


def test_on_bad_image_error_stops_at_the_first(bundle: Path, tiny_data: Path, tmp_path: Path):
    shop = shop_folder(tmp_path / "shop", tiny_data)
    out = tmp_path / "p.jsonl"
    assert main(["predict", str(bundle), str(shop), "--out", str(out), "--on-bad-image", "error"]) == 2
    with pytest.raises(ImageError, match=r"bomb.png: image too large"):
        predict_to_file(Runtime.from_bundle(bundle), sorted(shop.iterdir()), out, on_bad_image="error")


def test_no_images_and_nothing_predictable(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos here")
    assert main(["predict", str(bundle), str(tmp_path / "empty"), "--out", str(tmp_path / "p.jsonl")]) == 2
    assert f"no image files (.bmp .gif .jpeg .jpg .png .tif .tiff .webp) found in ['{tmp_path / 'empty'}']" in (
        capsys.readouterr().err
    )
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"")
    assert main(["predict", str(bundle), str(tmp_path / "bad"), "--out", str(tmp_path / "p.jsonl")]) == 1
    assert json.loads((tmp_path / "p.jsonl").read_text()) == {
        "path": str(tmp_path / "bad" / "a.jpg"),
        "error": "not an image Pillow can identify",
    }


def test_json_output_is_one_array(bundle: Path, tiny_data: Path, tmp_path: Path):
    files = [tiny_data / "img" / f"{i:05d}.jpg" for i in range(3)]
    assert main(["predict", str(bundle), *map(str, files), "--out", str(tmp_path / "p.json"), "--no-progress"]) == 0
    data = json.loads((tmp_path / "p.json").read_text())
    assert [x["path"] for x in data] == [str(f) for f in files] and all("groups" in x for x in data)


def test_memory_stays_bounded_for_many_files(bundle: Path, tmp_path: Path):
    """2,000 files through a 16-image batch and 2 batches ahead: at most 48 decoded images are ever held,
    and Python/NumPy memory peaks far below what holding every image would take."""
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2000):
        Image.fromarray(rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    rt = Runtime.from_bundle(bundle)
    paths = sorted(folder.iterdir())
    every_image_bytes = len(paths) * rt.image_size**2 * 3  # 6.1 MB at 32 px
    tracemalloc.start()
    n = 0
    for record in rt.predict_files(paths, batch_size=16, workers=2, ahead=2):
        assert "groups" in record
        n += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == 2000
    assert rt.peak_in_flight == 48  # (ahead + 1) * batch_size, and never more
    assert peak < every_image_bytes / 4, (peak, every_image_bytes)
