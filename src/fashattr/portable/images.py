"""The one place that opens image files.

Every path into the model (training cache, evaluation, prediction, serving, tagging, a bundle's
``predict_onnx.py``) goes through :func:`load_presized`, so train and test images are prepared the same way.
Preprocessing depends on the decoded pixels only, never on the file format: every image is decoded at full
resolution (no JPEG reduced-scale "draft" decoding, which no other format can reproduce), EXIF-oriented,
cropped, resized once and letterboxed by one integer rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .errors import ImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)


def fill_color(mean: Sequence[float]) -> tuple[int, int, int]:
    """The one fill colour of letterbox bars and augmentation borders: ``mean`` (0-1) as 0-255
    integers, rounded half up, so padding normalizes to (nearly) zero for the model's own mean."""
    r, g, b = (math.floor(m * 255.0 + 0.5) for m in mean)
    return r, g, b


# The fill for DataConfig's default (ImageNet) mean; callers with a config pass fill_color(cfg.mean).
PAD_COLOR = fill_color(IMAGENET_MEAN)
REDUCING_GAP = 2.0  # see letterbox
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    Transparent pixels are composited on white (product photos sit on white); 16-bit
    grayscale is scaled to 8 bits rather than clipped, which Pillow's own ``convert`` does.
    """
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.clip(arr / 257.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.size and arr.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def open_image(path: str | Path) -> Image.Image:
    """Open an image at full resolution as RGB, with its EXIF orientation applied.

    Raises:
        ImageError: the file is missing, not an image, truncated, corrupt, or larger than
            Pillow's decompression-bomb limit (which is kept).
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(ImageOps.exif_transpose(img))
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageError(path, "is a directory, not an image") from None
    except Image.DecompressionBombError as e:
        raise ImageError(path, f"image too large (decompression-bomb limit): {e}") from None
    except Image.UnidentifiedImageError:
        raise ImageError(path, "not an image Pillow can identify") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(path, f"truncated or corrupt image: {e}") from None


def expand_box(
    box: tuple[float, float, float, float], margin: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """Grow ``(x1, y1, x2, y2)`` by ``margin`` of its size on every side, clipped to the image."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    left, top = max(0, math.floor(x1 - dx)), max(0, math.floor(y1 - dy))
    right, bottom = min(width, math.ceil(x2 + dx)), min(height, math.ceil(y2 + dy))
    if right <= left or bottom <= top:
        raise ValueError(f"empty box {box} in a {width}x{height} image")
    return left, top, right, bottom


def letterbox_geometry(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """Where a ``width`` x ``height`` region lands in a ``size`` square: ``(w, h, x, y)``.

    The longer side becomes ``size``; the shorter ``size * short / long`` rounded half up (at
    least 1); the offset is the floor of half the leftover. Integer arithmetic only, so the
    same full-resolution size always gives the same placement (Pillow's ``ImageOps.pad``
    rounds the offset half to even, moving odd leftovers by a pixel depending on parity).
    """
    long = max(width, height)
    short = max(1, (2 * min(width, height) * size + long) // (2 * long))
    w, h = (size, short) if width >= height else (short, size)
    return w, h, (size - w) // 2, (size - h) // 2


def letterbox(
    img: Image.Image,
    size: int,
    fill: tuple[int, int, int] = PAD_COLOR,
    box: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Resize ``img`` (or its ``box`` region) into a ``size`` square, keeping the aspect ratio.

    Bilinear (antialiased) resampling from the full-resolution pixels, which Pillow starts with
    an integer box ``reduce`` when shrinking by 4x or more (``reducing_gap=2``: 5-12% faster at
    64 px in benchmarks/decode.py, the same work at larger sizes); the bars are ``fill``.

    Returns:
        uint8 array of shape ``(size, size, 3)``.
    """
    if box is not None:
        img = img.crop(box)  # not resize(box=): its filter reaches past the box, blending in what is outside
    w, h, x, y = letterbox_geometry(img.width, img.height, size)
    out = np.empty((size, size, 3), np.uint8)
    out[...] = fill
    out[y : y + h, x : x + w] = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP))
    return out


def load_presized(
    path: str | Path,
    size: int,
    bbox: tuple[float, float, float, float] | None = None,
    margin: float = 0.0,
    fill: tuple[int, int, int] = PAD_COLOR,
    background: Any = None,
) -> np.ndarray:
    """Decode, optionally crop to ``bbox`` (+ margin), optionally remove the background, letterbox to
    ``size`` x ``size``.

    The aspect ratio is kept and the short side padded with ``fill`` (pass
    ``fill_color(cfg.data.mean)``), so garments are never stretched. Boxes are
    ``(x1, y1, x2, y2)`` in pixels of the EXIF-oriented image. The result depends only on
    the decoded pixels: a JPEG and a lossless copy of its pixels in any format give the same array.
    ``background`` (a :class:`.background.Background`, see ``bundle.background_step``) paints the
    background of the (cropped) photo in its fill before the letterbox; GrabCut starts from ``bbox``.

    Returns:
        uint8 array of shape ``(size, size, 3)``.

    Raises:
        ImageError: the file cannot be decoded, or the box lies outside the image.
    """
    img = open_image(path)
    box = None
    if bbox is not None:
        try:
            box = expand_box(bbox, margin, img.width, img.height)
        except ValueError as e:
            raise ImageError(path, f"bad bbox {bbox}: {e}") from None
    if background is not None:
        rect = None
        if box is not None:  # the crop first; GrabCut's rectangle is the box itself, inside its margin
            img = img.crop(box)
            assert bbox is not None
            rect = (bbox[0] - box[0], bbox[1] - box[1], bbox[2] - box[0], bbox[3] - box[1])
        try:
            img, box = background.apply(img, rect), None
        except ValueError as e:
            raise ImageError(path, str(e)) from None
    return letterbox(img, size, fill, box)


def expand_paths(items: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to the image files inside them (recursively, sorted).

    Raises:
        FileNotFoundError: an item does not exist, or no image file was found at all.
    """
    out: list[Path] = []
    items = list(items)
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    if not out:
        suffixes = " ".join(sorted(IMAGE_SUFFIXES))
        raise FileNotFoundError(f"no image files ({suffixes}) found in {[str(i) for i in items]}")
    return out
