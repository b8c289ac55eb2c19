"""The one place that opens image files.

Every path into the model (training cache, evaluation, prediction on a user's photos)
goes through :func:`load_presized`, so train and test images are prepared the same way.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fashattr.errors import ImageError

# Letterbox padding: the ImageNet mean, so padding normalizes to about zero.
PAD_COLOR = (124, 116, 104)
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


def open_image(path: str | Path, min_size: int | None = None, region: float | None = None) -> tuple[Image.Image, float]:
    """Open an image as RGB with its EXIF orientation applied.

    Args:
        path: the image file.
        min_size: when given, JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8)
            at which a square of side ``region`` full-resolution pixels still spans at
            least ``min_size`` pixels: 2-4x faster when downscaling, same result after resize.
        region: side of the region that must keep ``min_size`` pixels; the image's longer
            side when None.

    Returns:
        The RGB image and the scale it was decoded at (decoded / full-resolution pixels).

    Raises:
        ImageError: the file is missing, not an image, truncated, corrupt, or larger than
            Pillow's decompression-bomb limit (which is kept).
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            full_w = img.width
            if min_size is not None and img.format == "JPEG":
                factor = min_size / max(region or max(img.size), 1.0)
                img.draft("RGB", (math.ceil(img.width * factor), math.ceil(img.height * factor)))
            scale = img.width / full_w
            img.load()
            return to_rgb(ImageOps.exif_transpose(img)), scale
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


def load_presized(
    path: str | Path,
    size: int,
    bbox: tuple[float, float, float, float] | None = None,
    margin: float = 0.0,
) -> np.ndarray:
    """Decode, optionally crop to ``bbox`` (+ margin), letterbox to ``size`` x ``size``.

    The aspect ratio is kept and the short side padded, so garments are never stretched.
    Boxes are ``(x1, y1, x2, y2)`` in full-resolution pixels of the EXIF-oriented image.

    Returns:
        uint8 array of shape ``(size, size, 3)``.
    """
    region = None if bbox is None else max(bbox[2] - bbox[0], bbox[3] - bbox[1])
    img, scale = open_image(path, min_size=size, region=region)
    if bbox is not None:
        try:
            box = expand_box(tuple(v * scale for v in bbox), margin, img.width, img.height)  # type: ignore[arg-type]
        except ValueError as e:
            raise ImageError(path, f"bad bbox {bbox}: {e}") from None
        img = img.crop(box)
    img = ImageOps.pad(img, (size, size), method=Image.Resampling.BILINEAR, color=PAD_COLOR)
    return np.asarray(img, dtype=np.uint8)
