"""The one inference path: decode -> presize -> normalise -> backend -> decoding -> labels.

``fashattr predict``, the HTTP service and catalog tagging all call :class:`Runtime`. It imports
neither the trainer, the dataset readers, the augmentations, the batch loader nor the cache
(a test checks ``sys.modules``): a bundle needs torch + timm + fashattr's model code for the
``torch`` backend, and only onnxruntime + NumPy + Pillow for the ``onnx`` ones.

Pixels are prepared by the same function the training cache uses (``load_presized``), and the
torch backend normalises exactly as training-time evaluation does (``inference.predict_scores``),
so the same file gives the same logits here and in ``fashattr eval``.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import itertools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from fashattr.errors import BundleError, ImageError
from fashattr.portable import bundle as bundle_format
from fashattr.portable import decoding, images, onnx_runner, tta
from fashattr.schema import Schema

BACKENDS = ("torch", "onnx", "onnx-int8")
BACKEND_CHOICES = ("auto", *BACKENDS)  # what the commands' --backend takes; auto: resolve_backend


def is_run_folder(path: str | Path) -> bool:
    """A training run's folder (``config.yaml``, no bundle ``config.json``), as opposed to a bundle."""
    path = Path(path)
    return (path / "config.yaml").is_file() and not (path / "config.json").is_file()


def resolve_backend(path: str | Path, backend: str = "auto") -> str:
    """The backend ``predict``, ``serve``, ``tag`` and ``similar`` run ``path`` on: one rule, so one bundle gives
    one answer whichever command asks. ``auto``: fp32 ONNX when the bundle holds it, else torch (a run folder:
    torch). int8 only when asked for: it is a different model (its labels differ on a few percent of photos).
    A backend named explicitly is kept; loading it says when the bundle lacks its file."""
    if backend != "auto":
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose from {list(BACKEND_CHOICES)}")
        return backend
    if is_run_folder(path):
        return "torch"
    onnx = bundle_format.read_bundle_config(path).get("onnx") or {}
    return "onnx" if onnx.get("fp32") else "torch"


OnBadImage = Literal["report", "error"]


class Backend(Protocol):
    def logits(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``(N, S, S, 3)`` uint8 letterboxed pixels -> logits per group, float32 ``(N, C)``."""
        ...


class TorchBackend:
    """An AttributeModel on a torch device, normalising like training-time evaluation."""

    def __init__(
        self,
        model: Any,
        mean: Iterable[float],
        std: Iterable[float],
        device: str = "cpu",
        channels_last: bool = True,
        threads: int | None = None,
    ) -> None:
        import torch

        from fashattr.device import resolve_device

        if threads:
            torch.set_num_threads(threads)
        self.device = resolve_device(device)
        self.channels_last = channels_last
        model = model.to(self.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.eval()
        # augment.normalize's arithmetic: (x - 255 * mean) / (255 * std), in float32 on the device.
        self.mean = torch.tensor(tuple(mean), device=self.device).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(tuple(std), device=self.device).view(1, -1, 1, 1) * 255.0

    def logits(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True).permute(0, 3, 1, 2)
            x = (x.float() - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return {g: v.float().cpu().numpy() for g, v in self.model(x).items()}

    def infer(self, batch: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Logits per group and the pooled features ``(N, F)`` float32, from one forward pass."""
        import torch

        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True).permute(0, 3, 1, 2)
            x = (x.float() - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            f = self.model.features(x)  # AttributeModel.forward, in its two steps
            logits = {g: head(f).float().cpu().numpy() for g, head in self.model.heads.items()}
            return logits, f.float().cpu().numpy()


def _onnx_backend(bundle: Path, variant: str, threads: int | None) -> Backend:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ImportError("the onnx backends need onnxruntime: pip install 'fashattr[export]'") from None
    # The bundle was verified by the caller: no second pass over its files.
    return onnx_runner.OnnxRunner(bundle, variant=variant, threads=threads, verify=False)


class Runtime:
    """A trained model with its preprocessing and decoding, on one backend.

    Example:
        >>> rt = Runtime.from_bundle("bundles/resnet18", backend="onnx")
        >>> next(rt.predict_files(["my_dress.jpg"]))["groups"]["sleeve"]
        {'class': 'sleeveless', 'index': 2, 'prob': 0.93}
    """

    def __init__(
        self,
        config: dict[str, Any],
        backend: Backend,
        source: Path | None = None,
        *,
        decode: str | None = None,
        tta: str | None = None,
    ) -> None:
        """``decode``: the decoding mode used whenever a caller names none (None: the bundle's default);
        ``tta``: the test-time augmentation of every call (None: the bundle's own). Both are fixed here, so
        every path through this runtime decodes and averages alike.

        Raises:
            ValueError: a decoding mode the model does not carry, or an unknown ``tta``, naming the choices.
        """
        self.config = config
        self.backend = backend
        self.source = source
        self.schema = Schema.from_dict(config["schema"])
        # Image size, fill, normalisation, background step.
        self.prep = bundle_format.Preprocess.of(config, source / "config.json" if source else "config.json")
        self.image_size: int = self.prep.image_size
        self.fill: tuple[int, int, int] = self.prep.fill
        # Background removal (preprocess.background; None when the model was trained on photos as they are):
        # the same step the training cache ran, its model file found in the bundle folder.
        self.background: Any = bundle_format.background_step(config, source)
        # The decoding modes the model carries (`fashattr calibrate`: "accuracy", "balanced"; [] for none; "none",
        # the raw model, is accepted besides them) and the one used when a caller names none.
        self.decode_modes: list[str] = decoding.decode_modes(config)
        self.default_decode: str | None = decoding.default_decode(config)
        if decode is not None:
            self.check_decode(decode)  # an unknown mode fails here, before any image
            self.default_decode = decode
        # Test-time augmentation (portable.tta.tta_views).
        self.tta: str = bundle_format.tta_mode(config if tta is None else {"tta": tta})
        # Peak number of decoded images held at once by predict_files (the queue bound, observed).
        self.peak_in_flight = 0

    @classmethod
    def from_bundle(
        cls,
        bundle: str | Path,
        backend: str = "torch",
        device: str = "cpu",
        threads: int | None = None,
        *,
        decode: str | None = None,
        tta: str | None = None,
    ) -> Runtime:
        """Load a bundle folder (verified against its hashes first) on ``backend`` (``auto``:
        :func:`resolve_backend`); ``decode`` and ``tta`` as in :class:`Runtime`."""
        from fashattr.deploy.bundle import ONNX_FP32, ONNX_INT8, load_bundle_torch, verify_bundle

        bundle = Path(bundle)
        backend = resolve_backend(bundle, backend)
        if backend == "torch":
            model, config = load_bundle_torch(bundle)
            pre, src = bundle_format.Preprocess.of(config), config.get("source", {})
            torch_backend = TorchBackend(model, pre.mean, pre.std, device, src.get("channels_last", True), threads)
            return cls(config, torch_backend, bundle, decode=decode, tta=tta)
        config = verify_bundle(bundle)
        variant = "int8" if backend == "onnx-int8" else "fp32"
        name = ONNX_INT8 if variant == "int8" else ONNX_FP32
        if not (bundle / name).is_file():
            fmt = "onnx-int8" if variant == "int8" else "onnx"
            raise BundleError(bundle / name, f"not in this bundle; export with `fashattr export RUN --format {fmt}`")
        if device != "cpu":
            raise ValueError(f"the {backend} backend runs on the CPU (device {device!r} asked for)")
        return cls(config, _onnx_backend(bundle, variant, threads), bundle, decode=decode, tta=tta)

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        weights: str = "best",
        backend: str = "torch",
        device: str = "cpu",
        threads: int | None = None,
        *,
        decode: str | None = None,
        tta: str | None = None,
    ) -> Runtime:
        """Load a run folder's ``{weights}.safetensors`` directly (torch backend; export for onnx); ``decode``
        and ``tta`` as in :class:`Runtime`."""
        from fashattr.deploy.bundle import bundle_config, model_from_config

        run_dir = Path(run_dir)
        if backend != "torch":
            raise ValueError(
                f"backend {backend!r} needs a bundle with ONNX files: `fashattr export {run_dir} --format "
                f"{'onnx-int8' if backend == 'onnx-int8' else 'onnx'} --out BUNDLE`, then predict with BUNDLE"
            )
        path = run_dir / f"{weights}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; is {run_dir} a fashattr run folder with a finished epoch?")
        config = bundle_config(run_dir, weights)
        pre = bundle_format.Preprocess.of(config)
        model = model_from_config(config, path)
        return cls(
            config,
            TorchBackend(model, pre.mean, pre.std, device, config["source"]["channels_last"], threads),
            run_dir,
            decode=decode,
            tta=tta,
        )

    @classmethod
    def load(cls, path: str | Path, backend: str = "auto", weights: str = "best", **kw: Any) -> Runtime:
        """A bundle folder (it has ``config.json``) or a run folder (``config.yaml``), on ``backend``
        (``auto``: :func:`resolve_backend`)."""
        path = Path(path)
        backend = resolve_backend(path, backend)
        if not is_run_folder(path):
            return cls.from_bundle(path, backend, **kw)
        return cls.from_run(path, weights, backend, **kw)

    # --- the steps --------------------------------------------------------------------------

    def preprocess(self, path: str | Path) -> np.ndarray:
        """One image file as the training cache prepares it: ``(S, S, 3)`` uint8 (no box; the background
        removed when the model was trained so)."""
        return images.load_presized(path, self.image_size, fill=self.fill, background=self.background)

    def logits(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Logits per group for ``(N, S, S, 3)`` uint8 pixels from :meth:`preprocess` (averaged over the
        views of :attr:`tta` when it is on)."""
        return tta.tta_apply(self.backend.logits, batch, self.tta)

    @property
    def has_features(self) -> bool:
        """Whether :meth:`infer` can return features (False for ONNX bundles exported before them)."""
        return bool(getattr(self.backend, "has_features", hasattr(self.backend, "infer")))

    def infer(self, batch: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Logits per group and the pooled features ``(N, F)`` float32 (the image embedding that
        catalog similarity search uses), from ONE forward pass over :meth:`preprocess` pixels.

        Raises:
            BundleError: an ONNX bundle exported before the features output existed (re-export it).
        """
        infer = getattr(self.backend, "infer", None)
        if infer is None:
            raise BundleError(self.source or "model", "this backend gives no features; re-export the bundle")
        logits, features = tta.tta_apply(infer, batch, self.tta)  # both averaged over the views
        return logits, features

    def decode(self, logits: dict[str, np.ndarray], top_k: int = 1, decode: str | None = None) -> list[dict[str, Any]]:
        """Per image, ``{"groups": {group: {class, index, prob}}, "decoding": mode}`` after the bundle's
        decoding (``decoding.decode``: the one decoding path of every backend and of predict_onnx.py).

        Args:
            logits: per group, ``(N, C)`` logits from :meth:`logits`.
            top_k: also list the ``top_k`` best classes of single-label groups (when > 1).
            decode: a mode of :attr:`decode_modes`, ``"none"`` (the raw model), or None for :attr:`default_decode`.

        Raises:
            ValueError: an unknown mode, naming the choices.
        """
        return decoding.decode(self.config, logits, top_k, self.default_decode if decode is None else decode)

    def check_decode(self, decode: str | None) -> str | None:
        """The mode name ``decode`` (None: :attr:`default_decode`) resolves to; None when the model has no
        modes (its decoding as exported).

        Raises:
            ValueError: an unknown mode, naming the choices.
        """
        return decoding.decoding_for(self.config, self.default_decode if decode is None else decode)[0]

    def predict_arrays(self, batch: np.ndarray, decode: str | None = None) -> list[dict[str, Any]]:
        """Decoded predictions (``{"groups": ..., "decoding": ...}`` per image) for already prepared pixels."""
        return self.decode(self.logits(batch), decode=decode)

    def predict_files(
        self,
        paths: Iterable[str | Path],
        batch_size: int = 32,
        workers: int = 2,
        on_bad_image: OnBadImage = "report",
        ahead: int = 2,
        on_result: Callable[[dict[str, Any]], None] | None = None,
        decode: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Stream predictions, one record per path in order: ``{"path", "groups"}``, or ``{"path",
        "error"}`` for a file that cannot be decoded (``on_bad_image="report"``).

        Files are decoded by ``workers`` threads (Pillow releases the GIL while decoding and
        resizing), ``batch_size`` at a time, at most ``ahead`` batches beyond the one the model is
        on: memory stays constant for any number of files.

        ``decode`` names the decoding mode (:meth:`decode`); records carry it as ``"decoding"``.

        Raises:
            ImageError: with ``on_bad_image="error"``, at the first file that cannot be decoded.
            ValueError: an unknown ``decode`` mode (before any file is read).
        """
        self.check_decode(decode)
        if on_bad_image not in ("report", "error"):
            raise ValueError(f"on_bad_image {on_bad_image!r}; choose 'report' or 'error'")
        if batch_size < 1 or workers < 1:
            raise ValueError(f"batch_size ({batch_size}) and workers ({workers}) must be at least 1")
        pending: collections.deque[list[tuple[Path, cf.Future[np.ndarray]]]] = collections.deque()
        it = iter(paths)
        with cf.ThreadPoolExecutor(workers, thread_name_prefix="fashattr-decode") as pool:
            try:
                while True:
                    chunk = [Path(p) for p in itertools.islice(it, batch_size)]
                    if chunk:
                        pending.append([(p, pool.submit(self.preprocess, p)) for p in chunk])
                        self.peak_in_flight = max(self.peak_in_flight, sum(len(c) for c in pending))
                    if pending and (len(pending) > ahead or not chunk):
                        for record in self._finish(pending.popleft(), on_bad_image, decode):
                            if on_result is not None:
                                on_result(record)
                            yield record
                    elif not chunk:
                        return
            finally:  # stopped early (error, consumer gone): drop what is queued, quickly
                for c in pending:
                    for _, f in c:
                        f.cancel()

    def _finish(
        self, chunk: list[tuple[Path, cf.Future[np.ndarray]]], on_bad_image: str, decode: str | None = None
    ) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        arrays, where = [], []
        for path, future in chunk:
            try:
                arrays.append(future.result())
                where.append(len(records))
                records.append({"path": str(path)})
            except ImageError as e:
                if on_bad_image == "error":
                    raise
                records.append({"path": str(path), "error": str(e).removeprefix(f"{e.file}: ")})
        if arrays:
            for i, decoded in zip(where, self.predict_arrays(np.stack(arrays), decode), strict=True):
                records[i].update(decoded)
        return records
