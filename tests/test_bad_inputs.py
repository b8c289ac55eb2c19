"""The bad-input corpus: every awkward file a catalogue holds, written by the test itself.

Each file is either decoded correctly (orientation, size and value range asserted) or
reported with a typed error naming it. Training with ``data.on_bad_image: skip`` never
crashes on them, counts and lists what it skipped, and never modifies a source file.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_dataset, tiny_overrides
from PIL import Image

from fashattr.config import load_config
from fashattr.engine.trainer import fit
from fashattr.errors import ImageError
from fashattr.portable.images import load_presized, open_image

# A 32x16 reference whose quadrants tell every orientation apart (colour at each quadrant centre).
QUADRANTS = {(8, 4): (255, 0, 0), (24, 4): (0, 255, 0), (8, 12): (0, 0, 255), (24, 12): (255, 255, 255)}


def reference() -> np.ndarray:
    ref = np.zeros((16, 32, 3), np.uint8)
    for (x, y), colour in QUADRANTS.items():
        ref[y - 4 : y + 4, x - 8 : x + 8] = colour
    return ref


# What the camera stored, for each EXIF orientation, so that viewing it correctly gives the reference
# (EXIF 2.3: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 CW, 7 transverse, 8 rotate 90 CCW).
STORED = {
    1: lambda r: r,
    2: np.fliplr,
    3: lambda r: np.rot90(r, 2),
    4: np.flipud,
    5: lambda r: r.transpose(1, 0, 2),
    6: lambda r: np.rot90(r, 1),
    7: lambda r: np.rot90(r, 2).transpose(1, 0, 2),
    8: lambda r: np.rot90(r, -1),
}


def write_corpus(folder: Path) -> dict[str, Path]:
    """Every kind of file the issue lists; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def path(name: str) -> Path:
        files[name] = folder / name
        return files[name]

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    path("truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) * 6 // 10])
    path("zero.jpg").write_bytes(b"")
    Image.new("1", (15000, 15000)).save(path("bomb.png"))  # 225 Mpx > 2 x Pillow's limit, a few KB on disk
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(path("cmyk.jpg"))
    Image.fromarray(np.full((10, 20), 65535, np.uint16)).save(path("gray16.png"))
    pal = Image.new("P", (20, 10), 0)
    pal.putpalette([0, 0, 0, 0, 128, 255] + [0] * 762)
    pal.paste(1, (0, 0, 10, 10))
    pal.save(path("palette_transparent.png"), transparency=0)
    Image.new("LA", (20, 10), (90, 255)).save(path("la.png"))
    Image.new("RGBA", (20, 10), (10, 200, 30, 255)).save(path("rgba.png"))
    for o, stored in STORED.items():
        img = Image.fromarray(np.ascontiguousarray(stored(reference())))
        exif = img.getexif()
        exif[0x0112] = o
        img.save(path(f"orientation{o}.jpg"), quality=95, subsampling=0, exif=exif.tobytes())
    Image.new("RGB", (20, 10), (1, 2, 3)).save(path("tiff_named.jpg"), format="TIFF")
    path("text_named.jpg").write_text("this is not an image\n")
    Image.new("RGB", (1, 1), (200, 100, 50)).save(path("one_pixel.png"))
    return files


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("truncated.jpg", "truncated or corrupt"),
        ("zero.jpg", "not an image"),
        ("bomb.png", "decompression-bomb"),
        ("text_named.jpg", "not an image"),
    ],
)
def test_unreadable_files_get_a_typed_error_naming_them(corpus: dict[str, Path], name: str, message: str):
    with pytest.raises(ImageError, match=rf"{name}: .*{message}") as info:
        load_presized(corpus[name], 32)
    assert info.value.file == str(corpus[name])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_eight_exif_orientations(corpus: dict[str, Path], orientation: int):
    img = open_image(corpus[f"orientation{orientation}.jpg"])
    assert img.size == (32, 16)
    px = np.asarray(img).astype(int)
    for (x, y), colour in QUADRANTS.items():
        assert np.abs(px[y, x] - colour).max() < 40, (orientation, (x, y), px[y, x], colour)


@pytest.mark.parametrize(
    ("name", "size", "pixel"),
    [
        ("cmyk.jpg", (20, 10), (255, 0, 0)),
        ("gray16.png", (20, 10), (255, 255, 255)),  # 65535 -> 255, not clipped garbage
        ("palette_transparent.png", (20, 10), (0, 128, 255)),  # the opaque palette colour
        ("la.png", (20, 10), (90, 90, 90)),
        ("rgba.png", (20, 10), (10, 200, 30)),
        ("tiff_named.jpg", (20, 10), (1, 2, 3)),  # recognised by content, not by name
        ("one_pixel.png", (1, 1), (200, 100, 50)),
    ],
)
def test_awkward_but_valid_files_decode_correctly(corpus: dict[str, Path], name: str, size, pixel):
    img = open_image(corpus[name])
    assert img.mode == "RGB" and img.size == size
    assert np.abs(np.asarray(img)[0, 0].astype(int) - pixel).max() <= 3
    out = load_presized(corpus[name], 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_transparent_palette_pixels_become_white(corpus: dict[str, Path]):
    px = np.asarray(open_image(corpus["palette_transparent.png"]))
    assert px[5, 15].tolist() == [255, 255, 255]


def sha(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_training_skips_bad_images_when_asked_and_never_modifies_sources(
    corpus: dict[str, Path], cache_dir: Path, tmp_path: Path
):
    data = make_dataset(tmp_path / "ds", {"train": 80, "test": 6})
    bad = {
        "img/00003.jpg": "truncated.jpg",
        "img/00010.jpg": "zero.jpg",
        "img/00021.jpg": "bomb.png",
        "img/00042.jpg": "text_named.jpg",
        "img/00050.jpg": "cmyk.jpg",
        "img/00051.jpg": "one_pixel.png",
        "img/00081.jpg": "text_named.jpg",
    }  # the last one is in the test split
    for target, source in bad.items():
        (data / target).write_bytes(corpus[source].read_bytes())
    before = sha(data)

    over = tiny_overrides(data, cache_dir, tmp_path, **{"data.holdout": 0.2, "train.epochs": 1})
    with pytest.raises(ImageError, match=r"00003\.jpg: truncated or corrupt"):
        fit(load_config(None, [*over, "name=strict"]))
    run = fit(load_config(None, [*over, "name=lenient", "data.on_bad_image=skip"]))

    listed = dict(line.split("\t") for line in (run / "skipped_images.txt").read_text().splitlines())
    assert sorted(listed) == ["img/00003.jpg", "img/00010.jpg", "img/00021.jpg", "img/00042.jpg"]
    assert "decompression-bomb" in listed["img/00021.jpg"]
    assert "skipped" in (run / "train.log").read_text()
    assert sha(data) == before  # nothing read was written to

    # A challenge file needs a line for every listed image: skipping cannot apply there.
    r = subprocess.run(
        [sys.executable, "-m", "fashattr", "predict", str(run), "--split", "test", "--out", str(tmp_path / "p.txt")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "00081.jpg" in r.stderr and "submission needs every image" in r.stderr
    assert not (tmp_path / "p.txt").exists()
    assert sha(data) == before
