"""Uploaded images: read from the request within the limits, checked, and decoded like ``fashattr predict``.

Nothing here trusts a file name: names are only echoed back (their last component), never joined to
a path. Bytes are sniffed by Pillow before anything is decoded: the declared content type, the format
and the pixel count (from the header) are checked first, so a decompression bomb costs a header read.
Decoding then goes through ``Runtime.preprocess`` (``images.load_presized``: the pixels of
``fashattr predict`` and of training) from a private temporary file.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile

from fashattr.errors import ImageError
from fashattr.serve.settings import IMAGE_CONTENT_TYPES, ServeSettings


@dataclass
class Upload:
    """One image of a request: the name the client gave (last component only), bytes, declared type."""

    name: str
    data: bytes
    content_type: str | None


def safe_name(name: str | None, index: int) -> str:
    """The last component of a client's file name, printable characters only (for echoing back)."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(ch for ch in base if ch.isprintable())[:200]
    return base if base not in ("", ".", "..") else f"image{index}"


def _media_type(value: str | None) -> str | None:
    return value.split(";", 1)[0].strip().lower() if value else None


async def read_uploads(request: Request, settings: ServeSettings) -> list[Upload]:
    """The images of a request: every file part of a multipart form, or the raw body with an image type.

    Raises:
        HTTPException: 415 for another content type, 400 for no image or a malformed form, 413 for
            more than ``max_images`` images (the body limit itself is enforced while it streams in).
    """
    ctype = _media_type(request.headers.get("content-type"))
    uploads: list[Upload] = []
    if ctype == "multipart/form-data":
        # max_files stops the parser one file past the limit; parts beyond 1 MB spill to a temp file.
        form = await request.form(max_files=settings.max_images, max_fields=32)
        try:
            for _, value in form.multi_items():
                if isinstance(value, UploadFile):
                    data = await value.read()
                    uploads.append(Upload(safe_name(value.filename, len(uploads)), data, value.content_type))
        finally:
            await form.close()
    elif ctype in IMAGE_CONTENT_TYPES:
        name = safe_name(request.headers.get("x-filename"), 0)
        uploads.append(Upload(name, await request.body(), ctype))
    else:
        allowed = ", ".join(t for t in IMAGE_CONTENT_TYPES)
        raise HTTPException(
            415, f"content type {ctype or 'missing'!r}: send multipart/form-data with image files, or one of {allowed}"
        )
    if not uploads:
        raise HTTPException(400, "no image in the request (multipart/form-data with one or more file parts)")
    if len(uploads) > settings.max_images:
        raise HTTPException(413, f"{len(uploads)} images in one request; the limit is {settings.max_images}")
    return uploads


def check_upload(upload: Upload, settings: ServeSettings) -> tuple[str, int, int]:
    """Sniff an upload without decoding it: ``(format, width, height)``.

    Raises:
        HTTPException: 415 declared type or sniffed format not served, 422 empty or not an image,
            413 over the pixel limit.
    """
    from PIL import Image

    declared = _media_type(upload.content_type)
    if declared and declared not in IMAGE_CONTENT_TYPES:
        raise HTTPException(415, f"{upload.name}: content type {declared!r} is not an image type the service takes")
    if not upload.data:
        raise HTTPException(422, f"{upload.name}: empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(upload.data)) as img:  # reads the header only
            fmt, (width, height) = img.format or "unknown", img.size
    except Image.UnidentifiedImageError:
        raise HTTPException(422, f"{upload.name}: not an image Pillow can identify") from None
    except Image.DecompressionBombError as e:
        raise HTTPException(413, f"{upload.name}: image too large: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise HTTPException(422, f"{upload.name}: unreadable image header: {e}") from None
    if fmt not in settings.formats:
        raise HTTPException(415, f"{upload.name}: {fmt} images are not served; send {', '.join(settings.formats)}")
    if width * height > settings.max_pixels:
        raise HTTPException(
            413,
            f"{upload.name}: {width}x{height} = {width * height:,} pixels, over the limit of {settings.max_pixels:,}",
        )
    return fmt, width, height


def decode_upload(
    upload: Upload, runtime: Any, settings: ServeSettings, tmp_dir: Path, display: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Check and decode an upload: the model's ``(S, S, 3)`` uint8 pixels, and (``display`` > 0) the same
    photo letterboxed at ``display`` pixels for Grad-CAM overlays. Runs in a decode thread.

    Raises:
        HTTPException: from :func:`check_upload`; 422 (413 for Pillow's own bomb limit) when decoding fails.
    """
    from fashattr.portable import images

    check_upload(upload, settings)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, suffix=".img")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(upload.data)
        pixels = runtime.preprocess(tmp)
        big = None
        if display:
            big = images.letterbox(images.open_image(tmp), display, runtime.fill)
    except ImageError as e:
        status = 413 if e.message.startswith("image too large") else 422
        raise HTTPException(status, f"{upload.name}: {e.message}") from None
    finally:
        os.unlink(tmp)
    return pixels, big
