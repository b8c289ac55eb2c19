"""The one place that opens image files.

Every path into the model (training cache, evaluation, prediction on a user's photos)
goes through :func:`load_presized`, so train and test images are prepared the same way.
Preprocessing depends on the decoded pixels only, never on the file format: every image is
decoded at full resolution (no JPEG reduced-scale "draft" decoding, which no other format
can reproduce), EXIF-oriented, cropped, resized once and letterboxed by one integer rule.

The code itself lives in :mod:`fashattr.runtime_onnx`, the self-contained runtime that every
exported bundle carries as ``predict_onnx.py``: one copy of the pixel code serves training,
evaluation, the torch runtime and the standalone ONNX runtime. This module keeps the names.
"""

from __future__ import annotations

from fashattr.runtime_onnx import (
    IMAGENET_MEAN,
    PAD_COLOR,
    REDUCING_GAP,
    expand_box,
    fill_color,
    letterbox,
    letterbox_geometry,
    load_presized,
    open_image,
    to_rgb,
)

__all__ = [
    "IMAGENET_MEAN",
    "PAD_COLOR",
    "REDUCING_GAP",
    "expand_box",
    "fill_color",
    "letterbox",
    "letterbox_geometry",
    "load_presized",
    "open_image",
    "to_rgb",
]
