"""Run a fashattr bundle's ONNX model with only onnxruntime, NumPy and Pillow; and the one copy of the pixel code.

This file stands alone: it imports the standard library, NumPy, Pillow and (inside the functions that
need it) onnxruntime, nothing of fashattr. ``fashattr export`` copies it into every bundle as
``predict_onnx.py``::

    python predict_onnx.py BUNDLE photo.jpg shop_folder/ [--int8] [--out preds.jsonl]

Inside fashattr it is ``fashattr.runtime_onnx``: ``fashattr.data.images`` re-exports its pixel code, so
training, evaluation, the torch runtime and this runtime prepare an image with the same lines.
Preprocessing depends on the decoded pixels only, never on the file format: every image is decoded at
full resolution (no JPEG reduced-scale "draft" decoding, which no other format can reproduce),
EXIF-oriented, cropped, resized once and letterboxed by one integer rule.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

FORMAT = "fashattr-bundle"
FORMAT_VERSION = 1  # the newest bundle format this file reads
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


# ---------------------------------------------------------------------------------------------- errors
# Defined here (not in fashattr.errors) so this file stands alone; fashattr.errors re-exports these very
# classes, so ``except fashattr.errors.ImageError`` catches what this module raises.
class FashattrError(Exception):
    """Base class of every error fashattr raises on purpose."""


class ImageError(FashattrError):
    """An image file that cannot be decoded (missing, truncated, corrupt, too large)."""

    def __init__(self, file: str | Path, message: str) -> None:
        self.file, self.message = str(file), message
        super().__init__(f"{self.file}: {message}")


class BundleError(FashattrError):
    """A model bundle that cannot be used: a missing, changed or unlisted file, or a newer format."""

    def __init__(self, file: str | Path, message: str) -> None:
        self.file, self.message = str(file), message
        super().__init__(f"{self.file}: {message}")


# ---------------------------------------------------------------------------------------------- pixels
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
    ``background`` (a ``fashattr.data.background.Background``, see :func:`background_step`) paints the
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


def background_step(config: dict[str, Any], root: str | Path | None = None) -> Any:
    """The background-removal step of a bundle's ``preprocess.background`` (None for bundles without one):
    a ``fashattr.data.background.Background``, or, where fashattr is not installed, the same class from the
    bundle's copy of that module (``fashattr_background.py`` beside this file). ``root``: where a relative
    model file is (the bundle folder).

    Raises:
        BundleError: the step names a model file that is not there, or an unknown method.
    """
    spec = config["preprocess"].get("background")
    if not spec:
        return None
    step_class: Any
    try:
        from fashattr.data.background import Background as step_class
    except ImportError:  # predict_onnx.py in a bundle, without fashattr: the bundle's copy of the module
        step_class = _bundled_background(Path(root) if root is not None else Path(__file__).resolve().parent)
    try:
        step = step_class.from_json(spec, root)
        step.load()  # rembg: its session now, so a missing package or changed file fails before any image
    except (ValueError, KeyError, TypeError) as e:
        raise BundleError(Path(root or ".") / "config.json", f"preprocess.background: {e}") from None
    return step


def _bundled_background(root: Path) -> Any:
    """The ``Background`` class of a bundle's ``fashattr_background.py``, imported without writing a
    ``__pycache__`` into the bundle (a file its hashes do not list would fail the next verification)."""
    import importlib.util

    path = root / "fashattr_background.py"
    spec = importlib.util.spec_from_file_location("fashattr_background", path)
    if not path.is_file() or spec is None or spec.loader is None:
        raise BundleError(
            path, "missing: this model removes backgrounds, and without fashattr installed its code is here"
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    before, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = before
    return module.Background


def preprocess(config: dict[str, Any], path: str | Path, background: Any = None) -> np.ndarray:
    """One image file as the bundle's model takes it: uint8 ``(S, S, 3)``, letterboxed with its fill, its
    background removed by ``background`` (:func:`background_step` of the same config) when given."""
    pre = config["preprocess"]
    r, g, b = pre["fill"]
    return load_presized(path, int(pre["image_size"]), fill=(int(r), int(g), int(b)), background=background)


# ---------------------------------------------------------------------------------------------- test-time augmentation
# ``tta`` (config.json's top-level "tta", ``--tta``): "none", "flip", "zoom" or "flip+zoom". The views are made
# here, on the uint8 letterboxed pixels, before any backend sees them, so torch, ONNX and this file run the
# same pixels. Outputs are averaged in LOGIT space: every decoding step (logit-adjustment offsets, temperatures,
# multi-label logit thresholds) is defined on logits, so the mean stays a logit they apply to unchanged (a
# probability mean would have to be mapped back, and a multi-label threshold fitted on logits would no longer
# mean what it meant). For a softmax the logit mean is the renormalised geometric mean of the views' probabilities.
TTA_VIEWS = ("flip", "zoom")
TTA_ZOOM = 0.875  # "zoom": the central 87.5% of the canvas scaled back up (a second, larger scale)


def tta_views(tta: str | None) -> list[tuple[bool, bool]]:
    """The views of a ``tta`` setting as ``(flipped, zoomed)`` pairs, the plain image first.

    Raises:
        ValueError: an unknown setting, naming the choices.
    """
    if tta in (None, "", "none"):
        return [(False, False)]
    parts = tta.split("+")
    if len(set(parts)) != len(parts) or any(p not in TTA_VIEWS for p in parts):
        raise ValueError(f"unknown tta {tta!r}; choose from ['none', 'flip', 'zoom', 'flip+zoom']")
    flips = [False, True] if "flip" in parts else [False]
    zooms = [False, True] if "zoom" in parts else [False]
    return [(f, z) for z in zooms for f in flips]


def tta_view(batch: np.ndarray, flipped: bool, zoomed: bool) -> np.ndarray:
    """One view of ``(N, S, S, 3)`` uint8 pixels: mirrored left-right and/or centre-zoomed by 1 / TTA_ZOOM."""
    out = batch[:, :, ::-1] if flipped else batch
    if zoomed:
        s = batch.shape[1]
        c = max(1, round(s * TTA_ZOOM))
        o = (s - c) // 2
        resize = Image.Resampling.BILINEAR
        out = np.stack(
            [
                np.asarray(Image.fromarray(np.ascontiguousarray(im[o : o + c, o : o + c])).resize((s, s), resize))
                for im in out
            ]
        )
    return np.ascontiguousarray(out)


def tta_apply(run: Any, batch: np.ndarray, tta: str | None) -> Any:
    """``run(batch)`` averaged over the views of ``tta`` (:func:`tta_views`); ``run`` returns a dict of arrays
    (logits per group) or a tuple of such dicts and arrays (logits and features), averaged alike, in float32."""
    views = tta_views(tta)
    if len(views) == 1:
        return run(batch)
    outs = [run(tta_view(batch, f, z)) for f, z in views]

    def mean(items: list[Any]) -> Any:
        if isinstance(items[0], dict):
            return {k: mean([x[k] for x in items]) for k in items[0]}
        if isinstance(items[0], tuple):
            return tuple(mean([x[i] for x in items]) for i in range(len(items[0])))
        return (np.sum(np.stack([np.asarray(x, np.float64) for x in items]), 0) / len(items)).astype(np.float32)

    return mean(outs)


def tta_mode(config: dict[str, Any]) -> str:
    """The bundle's test-time augmentation (``"tta"`` of config.json; ``"none"`` for bundles without it)."""
    tta = config.get("tta") or "none"
    tta_views(tta)  # an unknown setting fails when the bundle is loaded
    return str(tta)


# ---------------------------------------------------------------------------------------------- bundle
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bundle_hash(files: dict[str, str]) -> str:
    """The model id: sha256 over ``"NAME  SHA256\\n"`` lines (sha256sum's format) sorted by name."""
    return hashlib.sha256("".join(f"{n}  {s}\n" for n, s in sorted(files.items())).encode()).hexdigest()


def bundle_files(bundle_dir: str | Path) -> list[str]:
    """Every regular file of the bundle but ``hashes.json`` and hidden ones, as sorted POSIX paths."""
    root = Path(bundle_dir)
    names = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if p.is_file() and rel.as_posix() != "hashes.json" and not any(part.startswith(".") for part in rel.parts):
            names.append(rel.as_posix())
    return sorted(names)


def compute_hashes(bundle_dir: str | Path) -> dict[str, Any]:
    """The content of ``hashes.json`` for the files now in ``bundle_dir``."""
    files = {n: file_sha256(Path(bundle_dir) / n) for n in bundle_files(bundle_dir)}
    return {"files": files, "bundle_hash": bundle_hash(files)}


def read_bundle_config(bundle_dir: str | Path) -> dict[str, Any]:
    """``config.json`` of a bundle, after checking its format and version (not the hashes).

    Raises:
        BundleError: no such folder or config.json, not a fashattr bundle, or a newer format version.
    """
    root = Path(bundle_dir)
    path = root / "config.json"
    if not root.is_dir():
        raise BundleError(root, "no such bundle folder")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(path, "missing: a bundle folder holds config.json (is this a fashattr bundle?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(path, f"not readable JSON: {e}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        got = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise BundleError(path, f"not a fashattr bundle config (format {got!r}, expected {FORMAT!r})")
    version = config.get("format_version")
    if not isinstance(version, int):
        raise BundleError(path, f"format_version {version!r} is not an integer")
    if version > FORMAT_VERSION:
        why = f"written by a newer fashattr (format version {version}; this fashattr reads {FORMAT_VERSION}); upgrade"
        raise BundleError(path, why)
    return config


def verify_bundle(bundle_dir: str | Path) -> str:
    """Check a bundle against its ``hashes.json``; return its ``bundle_hash`` (the model id).

    Raises:
        BundleError: (naming the file) a newer format version, ``hashes.json`` missing or unreadable,
            a listed file missing, a file whose sha256 differs, a file not listed, or a wrong bundle_hash.
    """
    root = Path(bundle_dir)
    read_bundle_config(root)
    hpath = root / "hashes.json"
    try:
        recorded = json.loads(hpath.read_text(encoding="utf-8"))
        listed: dict[str, str] = recorded["files"]
        expected_id: str = recorded["bundle_hash"]
        if not isinstance(listed, dict) or not isinstance(expected_id, str):
            raise TypeError("files must be an object and bundle_hash a string")
    except FileNotFoundError:
        raise BundleError(hpath, "missing: every bundle lists its files' sha256 in hashes.json") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BundleError(hpath, f"not a readable hashes file: {e!r}") from None
    for name, sha in sorted(listed.items()):
        path = root / name
        if not path.is_file():
            raise BundleError(path, "missing (listed in hashes.json)")
        found = file_sha256(path)
        if found != sha:
            raise BundleError(path, f"changed: expected sha256 {sha}, found {found}")
    extra = [n for n in bundle_files(root) if n not in listed]
    if extra:
        raise BundleError(root / extra[0], f"not listed in hashes.json (expected only {', '.join(sorted(listed))})")
    if bundle_hash(listed) != expected_id:
        raise BundleError(hpath, f"bundle_hash {expected_id} does not match its files (expected {bundle_hash(listed)})")
    return expected_id


# ---------------------------------------------------------------------------------------------- model
# The extra output of bundles exported since the catalog work: the pooled features (N, F) float32 the heads
# read (AttributeModel.features), last after the group outputs. Export refuses a group of this name.
FEATURES_OUTPUT = "__features__"


def onnx_output_problem(config: dict[str, Any], names: Sequence[str], sizes: Sequence[Any]) -> str | None:
    """Why an ONNX model's outputs (names and last-axis sizes) do not fit the bundle schema, or None.

    A last output named :data:`FEATURES_OUTPUT` (the pooled features) is allowed beside the groups'."""
    groups = config["schema"]["groups"]
    want = [g["name"] for g in groups]
    if list(names)[-1:] == [FEATURES_OUTPUT] and FEATURES_OUTPUT not in want:
        names, sizes = list(names)[:-1], list(sizes)[:-1]
    if list(names) != want:
        return f"outputs {list(names)} do not match the schema's groups {want} (one logits output per group, in order)"
    for g, size in zip(groups, sizes, strict=True):
        if isinstance(size, int) and size != len(g["classes"]):
            return f"output {g['name']!r} has {size} logits but the schema lists {len(g['classes'])} classes"
    return None


def session_options(threads: int | None = None) -> Any:
    """The onnxruntime CPU session options of every fashattr ONNX session (benchmarks/inference.py).

    Full graph optimisation (it includes the NCHWc layout for convolutions: "extended" alone ran
    resnet18 at 96 px at 0.8x the batch-32 speed), one operator at a time on ``threads`` intra-op
    threads, and threads that sleep between operators instead of spin-waiting: predict decodes
    images in threads beside the model, and spinning threads take their cores (JPEG files -> JSON
    Lines, resnet18 int8, 2 cores: 132 img/s with sleeping threads, 110 with spinning ones).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    opts.enable_cpu_mem_arena = True
    if threads:
        opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


class OnnxRunner:
    """A bundle's ONNX model (``variant`` ``fp32`` or ``int8``) in an onnxruntime CPU session.

    Args:
        bundle_dir: the bundle folder (checked against its hashes.json unless ``verify=False``).
        variant: ``fp32`` (model.onnx) or ``int8`` (model.int8.onnx).
        threads: intra-op threads; None lets onnxruntime choose (one per physical core).

    Raises:
        BundleError: the bundle fails verification, has no such variant, or the model's outputs
            do not match the schema.
    """

    def __init__(
        self, bundle_dir: str | Path, variant: str = "fp32", threads: int | None = None, verify: bool = True
    ) -> None:
        import onnxruntime as ort

        self.bundle_dir = Path(bundle_dir)
        self.bundle_hash = verify_bundle(self.bundle_dir) if verify else None
        self.config = read_bundle_config(self.bundle_dir)
        onnx_cfg = self.config.get("onnx") or {}
        if variant not in ("fp32", "int8"):
            raise ValueError(f"unknown ONNX variant {variant!r}; choose from ['fp32', 'int8']")
        if not onnx_cfg.get(variant):
            fmt = "onnx-int8" if variant == "int8" else "onnx"
            raise BundleError(
                self.bundle_dir / "config.json",
                f"this bundle has no {variant} ONNX model; export it with `fashattr export RUN --format {fmt}`",
            )
        self.path = self.bundle_dir / onnx_cfg[variant]
        opts = session_options(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for a bad file
            raise BundleError(self.path, f"onnxruntime cannot load it: {e}") from None
        outputs = self.session.get_outputs()
        problem = onnx_output_problem(self.config, [o.name for o in outputs], [o.shape[-1] for o in outputs])
        if problem:
            raise BundleError(self.path, problem)
        # The group outputs; the features output (bundles exported since it exists) is run by infer() only.
        self.output_names = [o.name for o in outputs if o.name != FEATURES_OUTPUT]
        self.has_features = len(outputs) > len(self.output_names)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.image_size = int(self.config["preprocess"]["image_size"])
        self.background = background_step(self.config, self.bundle_dir)  # None unless the model removes it

    def logits(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Logits per group, float32 ``(N, C)``, for uint8 ``(N, S, S, 3)`` letterboxed pixels."""
        s = self.image_size
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (s, s, 3):
            raise ValueError(f"expected uint8 images of shape (N, {s}, {s}, 3), got {batch.dtype} {batch.shape}")
        out = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(batch)})
        return dict(zip(self.output_names, out, strict=True))

    def infer(self, batch: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Logits per group and the pooled features, float32 ``(N, F)``, from one run of the model.

        Raises:
            BundleError: the bundle was exported before ONNX models had a features output.
        """
        if not self.has_features:
            raise BundleError(
                self.path,
                f"has no {FEATURES_OUTPUT!r} output (exported by an older fashattr); re-export the run with "
                "`fashattr export RUN --format onnx` (or onnx-int8) to get image embeddings",
            )
        s = self.image_size
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (s, s, 3):
            raise ValueError(f"expected uint8 images of shape (N, {s}, {s}, 3), got {batch.dtype} {batch.shape}")
        names = [*self.output_names, FEATURES_OUTPUT]
        *out, features = self.session.run(names, {self.input_name: np.ascontiguousarray(batch)})
        return dict(zip(self.output_names, out, strict=True)), features


# ---------------------------------------------------------------------------------------------- decoding
# The decoding block of config.json (``fashattr calibrate RUN`` fills it; an uncalibrated run has the first
# line only, older bundles may lack the rest): ``multi_label_threshold_logit`` (one logit threshold for every
# multi-label class), ``calibration`` ({"temperature": {group: T}}), ``logit_adjust`` ({"offsets": {group:
# [per class]}}), ``thresholds`` ({group: [per-class logit thresholds]}, multi-label groups), ``modes``
# ({name: {"logit_adjust": ..., "calibration": ...}}: e.g. "accuracy" and "balanced") and ``default`` (the
# mode whose offsets and temperatures the top-level keys repeat, so a reader that knows no modes decodes it).
# A single-label answer whose probability is below this is marked "unsure": on calibrated probabilities
# (`fashattr calibrate`'s temperatures), one more likely wrong than right. ``decoding.unsure_below`` overrides it.
UNSURE_BELOW = 0.5
NO_DECODING = "none"  # the raw model: no offsets, no temperature, threshold 0 (an uncalibrated run's decoding)


def decode_modes(config: dict[str, Any]) -> list[str]:
    """The decoding modes a bundle carries (e.g. ``["accuracy", "balanced"]``); ``[]`` for none."""
    return list((config.get("decoding") or {}).get("modes") or {})


def default_decode(config: dict[str, Any]) -> str | None:
    """The mode used when none is asked for (``decoding.default``); None when the bundle carries no modes."""
    dec = config.get("decoding") or {}
    return dec.get("default") if dec.get("modes") else None


def decoding_for(config: dict[str, Any], mode: str | None = None) -> tuple[str | None, dict[str, Any]]:
    """The decoding block that ``mode`` selects, and the mode's name as predictions record it.

    ``None``: the bundle's default mode (or its top-level block, named None, when it has no modes);
    ``"none"``: the raw model; a name of ``decoding.modes``: the top-level block with that mode's keys.

    Raises:
        ValueError: an unknown mode, naming the choices.
    """
    dec = config.get("decoding") or {}
    modes = dec.get("modes") or {}
    if mode is None:
        mode = default_decode(config)
        if mode is None or mode not in modes:
            return None, dec
    if mode == NO_DECODING:
        return NO_DECODING, {}
    if mode not in modes:
        hint = "" if modes else " (this model has no decoding modes: run `fashattr calibrate RUN`, then export again)"
        raise ValueError(f"unknown decoding mode {mode!r}; choose from {[NO_DECODING, *modes]}{hint}")
    return mode, {**dec, **modes[mode]}


def decision_logits(
    config: dict[str, Any], logits: dict[str, np.ndarray], mode: str | None = None
) -> dict[str, np.ndarray]:
    """The scores decoding decides on, per group: single-label logits plus the ``logit_adjust`` offsets
    (the decoded class is their argmax); multi-label logits plus offsets minus the per-class ``thresholds``
    (or ``multi_label_threshold_logit``), so a class is present when its score is > 0. Temperatures, which
    change no decision, are not applied. ``fashattr eval`` computes its metrics on these."""
    dec = decoding_for(config, mode)[1]
    adjust = (dec.get("logit_adjust") or {}).get("offsets", {})
    thresholds = dec.get("thresholds") or {}
    threshold = float(dec.get("multi_label_threshold_logit", 0.0))
    out = {}
    for g in config["schema"]["groups"]:
        z = np.asarray(logits[g["name"]], dtype=np.float64)
        if g["name"] in adjust:
            z = z + np.asarray(adjust[g["name"]], dtype=np.float64)
        if g["kind"] != "single":
            z = z - (np.asarray(thresholds[g["name"]], dtype=np.float64) if g["name"] in thresholds else threshold)
        out[g["name"]] = z
    return out


def adjusted_logits(
    config: dict[str, Any], logits: dict[str, np.ndarray], mode: str | None = None
) -> dict[str, np.ndarray]:
    """Logits after the bundle's decoding (``mode`` as in :func:`decoding_for`): ``logit_adjust`` offsets
    added per class, then ``calibration`` temperatures divided out, both per group (``{"offsets": {group:
    [per class]}}``, ``{"temperature": {group: T}}``); groups not named are left as they are. The softmax
    (single-label) or sigmoid (multi-label) of these are the probabilities predictions report."""
    dec = decoding_for(config, mode)[1]
    adjust = (dec.get("logit_adjust") or {}).get("offsets", {})
    temps = (dec.get("calibration") or {}).get("temperature", {})
    out = {}
    for g in config["schema"]["groups"]:
        z = np.asarray(logits[g["name"]], dtype=np.float64)
        if g["name"] in adjust:
            z = z + np.asarray(adjust[g["name"]], dtype=np.float64)
        if g["name"] in temps:
            z = z / float(temps[g["name"]])
        out[g["name"]] = z
    return out


def decode(
    config: dict[str, Any], logits: dict[str, np.ndarray], top_k: int = 1, mode: str | None = None
) -> list[dict[str, Any]]:
    """The JSON of ``fashattr predict`` per image (without its ``path``): ``{"groups": {group: ...},
    "decoding": name}`` (``name``: the mode used, see :func:`decoding_for`; None for a bundle without modes).

    Single-label groups: ``{"class", "index", "prob", "unsure"}`` of the top class after the logit adjustment,
    ``unsure`` when ``prob`` is below ``decoding.unsure_below`` (:data:`UNSURE_BELOW`) (``top_k`` > 1 adds
    ``"top"``: the ``top_k`` best as ``{"class", "index", "prob"}``, best first). Multi-label groups: a list
    of such dicts, one per class whose logit (plus offset) exceeds its threshold (``decoding.thresholds``,
    else ``multi_label_threshold_logit``; 0: probability > 0.5). Probabilities come from the adjusted,
    temperature-scaled logits, in float64, rounded to 6 decimals, as in fashattr.

    Raises:
        ValueError: an unknown ``mode``, naming the choices.
    """
    name = decoding_for(config, mode)[0]
    decide = decision_logits(config, logits, mode)
    z = adjusted_logits(config, logits, mode)
    groups = config["schema"]["groups"]
    unsure_below = float((config.get("decoding") or {}).get("unsure_below", UNSURE_BELOW))
    n = len(next(iter(z.values()))) if z else 0
    probs = {}
    for g in groups:
        s = z[g["name"]]
        if g["kind"] == "single":
            e = np.exp(s - s.max(1, keepdims=True))
            probs[g["name"]] = e / e.sum(1, keepdims=True)
        else:
            probs[g["name"]] = 1.0 / (1.0 + np.exp(-s))
    results: list[dict[str, Any]] = []
    for i in range(n):
        out: dict[str, Any] = {}
        for g in groups:
            p, classes = probs[g["name"]][i], g["classes"]

            def entry(k: int, p: np.ndarray = p, classes: list[str] = classes) -> dict[str, Any]:
                return {"class": classes[k], "index": int(k), "prob": round(float(p[k]), 6)}

            if g["kind"] == "single":
                k = int(p.argmax())
                out[g["name"]] = {**entry(k), "unsure": bool(p[k] < unsure_below)}
                if top_k > 1:
                    out[g["name"]]["top"] = [entry(int(j)) for j in np.argsort(-p, kind="stable")[:top_k]]
            else:
                out[g["name"]] = [entry(int(k)) for k in np.flatnonzero(decide[g["name"]][i] > 0)]
        results.append({"groups": out, "decoding": name})
    return results


# ---------------------------------------------------------------------------------------------- files
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


def predict_files(
    runner: OnnxRunner,
    paths: Sequence[str | Path],
    batch_size: int = 32,
    workers: int = 2,
    top_k: int = 1,
    mode: str | None = None,
    tta: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Stream one record per path, in order: ``{"path", "groups", "decoding"}``, or ``{"path", "error"}`` for
    an image that cannot be decoded. Decoding runs in ``workers`` threads (Pillow releases the GIL), a batch
    ahead. ``mode``: the decoding mode (:func:`decoding_for`), checked before any image is read; ``tta``: the
    test-time augmentation (:func:`tta_views`; None: the bundle's own, :func:`tta_mode`)."""
    decoding_for(runner.config, mode)  # an unknown mode fails here, not after the first batch
    tta = tta_mode(runner.config) if tta is None else tta
    tta_views(tta)

    def load(path: str | Path) -> np.ndarray | ImageError:
        try:
            return preprocess(runner.config, path, runner.background)
        except ImageError as e:
            return e

    with ThreadPoolExecutor(max(1, workers)) as pool:
        chunks = [list(paths[i : i + batch_size]) for i in range(0, len(paths), batch_size)]
        pending = pool.map(load, chunks[0]) if chunks else iter(())
        for c, chunk in enumerate(chunks):
            loaded = list(pending)
            if c + 1 < len(chunks):  # decode the next batch while this one runs
                pending = pool.map(load, chunks[c + 1])
            good = [x for x in loaded if isinstance(x, np.ndarray)]
            decoded = (
                iter(decode(runner.config, tta_apply(runner.logits, np.stack(good), tta), top_k, mode))
                if good
                else None
            )
            for path, x in zip(chunk, loaded, strict=True):
                if isinstance(x, ImageError):
                    yield {"path": str(path), "error": x.message}
                else:
                    assert decoded is not None
                    yield {"path": str(path), **next(decoded)}


def main(argv: Sequence[str] | None = None) -> int:
    """``python predict_onnx.py BUNDLE IMAGES... [--int8] [--out preds.jsonl]``: JSON Lines, one per image."""
    ap = argparse.ArgumentParser(
        prog="predict_onnx.py", description="Predict attributes with a fashattr bundle's ONNX model (onnxruntime)."
    )
    ap.add_argument("bundle", help="the bundle folder (config.json, model.onnx, hashes.json, ...)")
    ap.add_argument("images", nargs="+", help="image files and folders (searched recursively)")
    ap.add_argument("--int8", action="store_true", help="run model.int8.onnx instead of model.onnx")
    ap.add_argument("--out", help="write JSON Lines here (default: standard output)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="image decoding threads")
    ap.add_argument("--top-k", type=int, default=1, help="also list the k best classes of single-label groups")
    ap.add_argument(
        "--decode",
        help="decoding mode: 'accuracy' (best overall accuracy), 'balanced' (best average per-class accuracy) "
        "or 'none' (the raw model); default: the bundle's default (`fashattr calibrate` saves them)",
    )
    ap.add_argument(
        "--tta",
        help="test-time augmentation: 'none', 'flip', 'zoom' or 'flip+zoom' (logits averaged over the views); "
        "default: the bundle's own (`fashattr export --tta`)",
    )
    args = ap.parse_args(argv)
    try:
        runner = OnnxRunner(args.bundle, "int8" if args.int8 else "fp32", args.threads)
        decoding_for(runner.config, args.decode)
        tta_views(args.tta)
        paths = expand_paths(args.images)
    except (FashattrError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    ok = bad = 0
    try:
        for rec in predict_files(runner, paths, args.batch_size, args.workers, args.top_k, args.decode, args.tta):
            if "error" in rec:
                bad += 1
                print(f"skipped {rec['path']}: {rec['error']}", file=sys.stderr)
            else:
                ok += 1
            out.write(json.dumps(rec) + "\n")
    finally:
        if args.out:
            out.close()
    print(f"{ok} image(s) predicted, {bad} unreadable", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
