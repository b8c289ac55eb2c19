"""The image module on real files of every awkward kind, written by the tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashattr.errors import ImageError
from fashattr.portable.images import PAD_COLOR, load_presized, open_image


def test_exif_orientation_applied(tmp_path: Path):
    # A 40x20 image whose left half is red; orientation 6 means "rotate 90° clockwise to view".
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "o.jpg", exif=exif.tobytes(), quality=95)
    out = open_image(tmp_path / "o.jpg")
    assert out.size == (20, 40)
    px = np.asarray(out)
    assert px[5, 10, 0] > 200 and px[35, 10, 0] < 60  # red now on top


def test_cmyk_jpeg(tmp_path: Path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # pure red in CMYK
    out = open_image(tmp_path / "c.jpg")
    r, g, b = np.asarray(out)[8, 8]
    assert out.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path: Path):
    arr = np.full((8, 8), 32896, np.uint16)  # 0.5 of the 16-bit range
    Image.fromarray(arr).save(tmp_path / "g16.png")
    out = open_image(tmp_path / "g16.png")
    assert out.mode == "RGB"
    assert np.asarray(out)[0, 0].tolist() == [128, 128, 128]


def test_palette_with_transparency_on_white(tmp_path: Path):
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((0, 0), 1)
    img.info["transparency"] = 0  # index 0 (black) is transparent
    img.save(tmp_path / "p.png", transparency=0)
    px = np.asarray(open_image(tmp_path / "p.png"))
    assert px[0, 0].tolist() == [255, 0, 0]
    assert px[4, 4].tolist() == [255, 255, 255]


@pytest.mark.parametrize(("mode", "color"), [("LA", (100, 0)), ("RGBA", (10, 20, 30, 0)), ("L", 77)])
def test_alpha_and_gray_modes(tmp_path: Path, mode: str, color):
    Image.new(mode, (4, 4), color).save(tmp_path / "x.png")
    px = np.asarray(open_image(tmp_path / "x.png"))
    want = [77, 77, 77] if mode == "L" else [255, 255, 255]  # fully transparent -> white
    assert px[0, 0].tolist() == want


def test_truncated_and_not_an_image(tmp_path: Path):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "JPEG")
    (tmp_path / "t.jpg").write_bytes(buf.getvalue()[:200])
    (tmp_path / "text.jpg").write_text("hello")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match=r"t.jpg: truncated or corrupt"):
        open_image(tmp_path / "t.jpg")
    for name in ("text.jpg", "empty.jpg"):
        with pytest.raises(ImageError, match=rf"{name}: not an image"):
            open_image(tmp_path / name)
    with pytest.raises(ImageError, match="file not found"):
        open_image(tmp_path / "missing.jpg")


def test_decompression_bomb_limit_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    Image.new("L", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 px > 2 x limit: Pillow refuses
    with pytest.raises(ImageError, match="decompression-bomb"):
        open_image(tmp_path / "big.png")


def test_letterbox_keeps_aspect_and_pads(tmp_path: Path):
    Image.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "w.png")
    out = load_presized(tmp_path / "w.png", 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert out[16, 16].tolist() == [255, 0, 0]
    assert out[0, 16].tolist() == list(PAD_COLOR) and out[31, 16].tolist() == list(PAD_COLOR)


def test_bbox_crop_with_margin(tmp_path: Path):
    arr = np.zeros((100, 100, 3), np.uint8)
    arr[40:60, 20:80] = (0, 255, 0)  # a 60 x 20 green box
    Image.fromarray(arr).save(tmp_path / "b.png")
    out = load_presized(tmp_path / "b.png", 30, bbox=(20, 40, 80, 60))
    assert (out[11:19, :, 1] > 250).all()  # the box fills the width: 60x20 -> a 30x10 band, rows 10..20
    assert out[5, 15].tolist() == list(PAD_COLOR)
    wide = load_presized(tmp_path / "b.png", 30, bbox=(20, 40, 80, 60), margin=0.25)
    assert wide[15, 0, 1] == 0  # margin brings black border in at the left edge
    with pytest.raises(ImageError, match="bad bbox"):
        load_presized(tmp_path / "b.png", 30, bbox=(200, 200, 300, 300))


def test_bbox_crop_in_full_resolution_coordinates(tmp_path: Path):
    arr = np.zeros((400, 400, 3), np.uint8)
    arr[100:300, 200:400] = 255  # white square at right half, rows 100..300
    Image.fromarray(arr).save(tmp_path / "d.jpg", quality=95)
    out = load_presized(tmp_path / "d.jpg", 32, bbox=(200, 100, 400, 300))
    assert out.mean() > 240
