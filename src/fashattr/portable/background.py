"""Background removal: mask the garment's background and paint it in one fill colour.

One step, :meth:`Background.apply`, used by the decode-once cache and by every runtime (predict, the
bundle runner, serve, tag) at the same place of ``images.load_presized``: after the box crop, before
the letterbox. Training-time and runtime pixels are therefore the same bytes.

Two methods:

- ``grabcut``: OpenCV's GrabCut, initialised from a rectangle (the garment's box when the dataset has
  boxes, else a centred rectangle ``margin`` in from every side), run at ``work_size`` pixels on the long
  side (0.5 s for a 300 px photo at full size, ~0.08 s at 128 px on this CPU), its mask scaled back
  bilinearly. Seeded (``cv2.setRNGSeed``) before every call, so the same image gives the same mask.
- ``rembg``: rembg's U²-Net session (``u2net_custom``) on a local ONNX file; nothing is ever downloaded.
  The cutout is rembg's own ``remove(..., bgcolor=fill)``.

Part of :mod:`fashattr.portable` (standard library, NumPy, Pillow; cv2 and rembg imported inside the
functions that need them, never torch), so a bundle's ``predict_onnx.py`` removes backgrounds without fashattr.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .images import fill_color

METHODS = ("grabcut", "rembg")
BUNDLE_MODEL = "background.onnx"  # the model file's name inside a bundle
GRABCUT_SEED = 0
MODEL_HELP = (
    "put a U²-Net ONNX file (rembg's u2net.onnx, or any model with one (1, 3, 320, 320) image input and a "
    "(1, 1, 320, 320) mask output) on this machine and set data.background_model to its path; "
    "fashattr never downloads a model"
)


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def model_sha256(path: str | Path) -> str:
    """:func:`file_sha256` of a model file, remembered per (path, size, mtime): configs ask for it often."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = file_sha256(p)
    return _SHA_CACHE[key]


@dataclass(frozen=True)
class Background:
    """The background-removal step with all its options (picklable: decode workers receive it).

    Attributes:
        method: ``grabcut`` or ``rembg``.
        fill: RGB colour painted where the background was.
        model: rembg only: the local U²-Net ONNX file.
        model_sha256: rembg only: the sha256 of ``model`` (part of the cache key and the bundle config;
            checked when the model is loaded).
        iterations: GrabCut iterations.
        margin: GrabCut's centred rectangle, as a fraction of each side left out (when there is no box).
        work_size: the long side GrabCut works at (smaller images are used as they are).
    """

    method: str
    fill: tuple[int, int, int]
    model: str | None = None
    model_sha256: str | None = None
    iterations: int = 3
    margin: float = 0.05
    work_size: int = 128

    def to_json(self, model: str | None = None) -> dict[str, Any]:
        """The step as the bundle's ``config.json`` records it (``model``: the file's name to record)."""
        out: dict[str, Any] = {"method": self.method, "fill": list(self.fill)}
        if self.method == "rembg":
            out.update(model=model or self.model, model_sha256=self.model_sha256, session="u2net_custom")
        else:
            out.update(iterations=self.iterations, margin=self.margin, work_size=self.work_size, seed=GRABCUT_SEED)
        return out

    def key(self) -> str:
        """Everything the output pixels depend on (the model by its hash, not its path): for the cache key."""
        return repr(sorted(self.to_json(model="-").items()))

    @classmethod
    def from_json(cls, data: dict[str, Any], root: str | Path | None = None) -> Background:
        """The step recorded by :meth:`to_json`; a relative ``model`` is looked up in ``root`` (the bundle).

        Raises:
            ValueError: an unknown method, or a rembg step whose model file is missing.
        """
        method = data.get("method")
        if method not in METHODS:
            raise ValueError(f"unknown background method {method!r}; choose from {list(METHODS)}")
        r, g, b = data["fill"]
        fill = (int(r), int(g), int(b))
        if method == "grabcut":
            return cls(
                "grabcut",
                fill,
                iterations=int(data["iterations"]),
                margin=float(data["margin"]),
                work_size=int(data["work_size"]),
            )
        model = Path(data["model"])
        if root is not None and not model.is_absolute():
            model = Path(root) / model
        if not model.is_file():
            raise ValueError(f"background model {model} not found: {MODEL_HELP}")
        return cls("rembg", fill, model=str(model), model_sha256=str(data["model_sha256"]))

    def load(self) -> None:
        """Load what :meth:`apply` needs now (rembg: the session), so that a missing package or a changed
        model file fails here rather than at the first image.

        Raises:
            ValueError: the model file is missing or changed.
            ImportError: rembg or OpenCV is not installed.
        """
        if self.method == "rembg":
            assert self.model is not None
            rembg_session(self.model, self.model_sha256)
        else:
            try:
                import cv2  # noqa: F401
            except ImportError as e:
                raise ImportError(
                    f"data.background_method=grabcut needs OpenCV: pip install 'fashattr[background]' ({e})"
                ) from None

    def apply(self, img: Image.Image, rect: tuple[float, float, float, float] | None = None) -> Image.Image:
        """``img`` (RGB) with its background painted in :attr:`fill`.

        Args:
            img: the photo, or its box crop: the same pixels the letterbox then resizes.
            rect: GrabCut only: the garment's box ``(x1, y1, x2, y2)`` in ``img``'s pixels; None: the
                centred rectangle :attr:`margin` in from every side.

        Raises:
            ValueError: the image is too small for GrabCut (under 3 pixels a side), or a rembg model
                whose file changed since the config named it.
        """
        if self.method == "rembg":
            return _rembg_apply(self, img)
        alpha = grabcut_mask(img, rect, self.iterations, self.margin, self.work_size)
        return composite(img, alpha, self.fill)


def composite(img: Image.Image, alpha: np.ndarray, fill: tuple[int, int, int]) -> Image.Image:
    """``img * alpha + fill * (1 - alpha)`` for a uint8 ``alpha`` (255: garment), in integers, rounded half up."""
    a = alpha.astype(np.uint32)[:, :, None]
    pixels = np.asarray(img, dtype=np.uint32)
    out = (pixels * a + np.asarray(fill, np.uint32) * (255 - a) + 127) // 255
    return Image.fromarray(out.astype(np.uint8))


def grabcut_rect(
    width: int, height: int, rect: tuple[float, float, float, float] | None, margin: float, scale: float
) -> tuple[int, int, int, int]:
    """GrabCut's ``(x, y, w, h)`` in an image of ``width`` x ``height`` (the working size): ``rect`` (given at
    ``1 / scale`` of it) or the centred rectangle ``margin`` in, kept at least one pixel inside every edge so
    that GrabCut has background to learn from."""
    if rect is None:
        x1, y1, x2, y2 = margin * width, margin * height, (1 - margin) * width, (1 - margin) * height
    else:
        x1, y1, x2, y2 = (v * scale for v in rect)
    left, top = max(1, round(x1)), max(1, round(y1))
    right, bottom = min(width - 1, round(x2)), min(height - 1, round(y2))
    if right <= left or bottom <= top:  # a box hugging the whole image: the largest rectangle GrabCut takes
        left, top, right, bottom = 1, 1, width - 1, height - 1
    return left, top, right - left, bottom - top


def grabcut_mask(
    img: Image.Image,
    rect: tuple[float, float, float, float] | None = None,
    iterations: int = 3,
    margin: float = 0.05,
    work_size: int = 128,
) -> np.ndarray:
    """GrabCut's foreground of ``img`` as uint8 alpha ``(H, W)`` (255: garment, 0: background).

    Raises:
        ValueError: the image is under 3 pixels on a side (no room for a background border).
    """
    import cv2

    scale = min(1.0, work_size / max(img.width, img.height))
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    if w < 3 or h < 3:
        raise ValueError(f"background removal: a {img.width}x{img.height} image is too small for GrabCut")
    small = img if (w, h) == img.size else img.resize((w, h), Image.Resampling.BILINEAR)
    bgr = np.ascontiguousarray(np.asarray(small)[:, :, ::-1])
    mask = np.zeros((h, w), np.uint8)
    bg_model, fg_model = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(GRABCUT_SEED)  # GrabCut's k-means draws from this thread's RNG: same image, same mask
    box = grabcut_rect(w, h, rect, margin, scale)
    cv2.grabCut(bgr, mask, box, bg_model, fg_model, iterations, cv2.GC_INIT_WITH_RECT)
    fg = np.where(mask & 1, 255, 0).astype(np.uint8)  # GC_FGD (1) and GC_PR_FGD (3)
    if (w, h) == img.size:
        return fg
    return np.asarray(Image.fromarray(fg).resize(img.size, Image.Resampling.BILINEAR))


# ---------------------------------------------------------------------------------------------- rembg
_SESSIONS: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


def rembg_session(model: str, sha256: str | None) -> Any:
    """rembg's ``u2net_custom`` session on the local file ``model`` (one per process and file).

    The session's ONNX file is the given path, never a download: rembg's own ``download_models`` for
    ``u2net_custom`` only accepts files under its home folder (``~/.u2net``), so the session class here is
    rembg's with that one method returning the path. One intra-op thread: the mask is then the same bytes
    in a decode process and in a runtime thread (and decode runs one process or thread per core anyway).

    Raises:
        ValueError: the file is missing, or its sha256 is not ``sha256``.
        ImportError: rembg is not installed (``pip install 'fashattr[background]'``).
    """
    path = os.path.abspath(model)
    key = (path, sha256 or "")
    with _LOCK:
        if key in _SESSIONS:
            return _SESSIONS[key]
        if not os.path.isfile(path):
            raise ValueError(f"background model {path} not found: {MODEL_HELP}")
        if sha256 is not None and model_sha256(path) != sha256:
            raise ValueError(f"background model {path} changed: expected sha256 {sha256}, found {model_sha256(path)}")
        try:
            import onnxruntime as ort
            from rembg import new_session  # noqa: F401  (rembg's API; imported to fail early when missing)
            from rembg.sessions.u2net_custom import U2netCustomSession
        except ImportError as e:
            raise ImportError(
                f"data.background_method=rembg needs rembg: pip install 'fashattr[background]' ({e})"
            ) from None

        class LocalU2net(U2netCustomSession):
            @classmethod
            def download_models(cls, *args: Any, **kwargs: Any) -> str:
                return str(kwargs["model_path"])  # the local file, as given: never a download

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        session = LocalU2net("u2net_custom", opts, model_path=path, providers=["CPUExecutionProvider"])
        _SESSIONS[key] = session
        return session


def _rembg_apply(step: Background, img: Image.Image) -> Image.Image:
    from rembg import remove

    assert step.model is not None
    session = rembg_session(step.model, step.model_sha256)
    out = remove(img, session=session, bgcolor=(*step.fill, 255))  # rembg's cutout, then its alpha composite
    return out.convert("RGB")


def background_for(data: Any) -> Background | None:
    """The step a ``DataConfig`` asks for (``data.background``: ``keep`` -> None), with the model's sha256.

    Raises:
        ValueError: a rembg step whose model file is missing (naming where to put it).
    """
    if data.background == "keep":
        return None
    fill: tuple[int, int, int] = fill_color(data.mean)
    if data.background_fill is not None:
        r, g, b = data.background_fill
        fill = (int(r), int(g), int(b))
    if data.background_method == "rembg":
        path = Path(data.background_model).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"data.background_model {path} not found: {MODEL_HELP}")
        return Background("rembg", fill, model=str(path), model_sha256=model_sha256(path))
    return Background(
        "grabcut",
        fill,
        iterations=data.grabcut_iterations,
        margin=data.grabcut_margin,
        work_size=data.grabcut_size,
    )
