"""A bundle's ONNX model in an onnxruntime CPU session, and streaming prediction of image files with it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import (
    FEATURES_OUTPUT,
    Preprocess,
    background_step,
    onnx_output_problem,
    preprocess,
    read_bundle_config,
    tta_mode,
    verify_bundle,
)
from .decoding import decode, decoding_for
from .errors import BundleError, ImageError
from .tta import tta_apply, tta_views


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
        self.image_size = Preprocess.of(self.config, self.bundle_dir / "config.json").image_size
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
