"""ONNX export of an AttributeModel: uint8 pixels in, one named logits output per group out.

The graph takes ``image``: uint8 ``(N, S, S, 3)``, the letterboxed pixels every fashattr runtime
prepares (``images.load_presized``), and does the cast, the mean/std normalisation and the
NHWC -> NCHW transpose itself, so no runtime can get normalisation wrong. It returns one float32
``(N, C)`` logits output per group, named after the group, in schema order; the batch axis is dynamic.
Bundles (:func:`export_bundle_onnx`) add one last output, ``__features__`` (``bundle_format.FEATURES_OUTPUT``):
the pooled float32 ``(N, F)`` features the heads read, computed by the same pass, so catalog tagging stores
an image's embedding beside its predictions at no extra cost; runtimes that only want logits never fetch it.
What that costs (onnxruntime's profiler, resnet18 at 96 px, 2 threads): the transpose 0.6% of kernel time
at batch 1 and 0.3% at batch 32, the cast and normalisation about 0.1%; the convolutions 96-98%.

Exporter: torch's dynamo exporter (``torch.export`` + onnxscript), the one PyTorch maintains. The
legacy TorchScript exporter (``dynamo=False``, deprecated) gives graphs with the same operators after
onnxruntime's optimisation (same speed within the noise of this machine: resnet10t, test_convnext,
test_vit at 64 px) and exports in 2 s instead of 20 s, but names the batch axis after an internal node
and is on its way out; ``exporter="legacy"`` keeps it reachable.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fashattr.errors import BundleError
from fashattr.portable import bundle as bundle_format
from fashattr.portable import images

log = logging.getLogger("fashattr")

INPUT_NAME = "image"
FEATURES = bundle_format.FEATURES_OUTPUT
DEFAULT_OPSET = 18
EXPORTERS = ("dynamo", "legacy")


class PixelModel(nn.Module):
    """``model`` behind uint8 NHWC input and in-graph normalisation, returning a tuple in group order
    (then the pooled features, with ``features``: ``model`` is an AttributeModel)."""

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        group_names: Sequence[str],
        features: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.group_names = list(group_names)
        self.with_features = features
        # (x/255 - mean)/std == x * scale - shift: one multiply-add per pixel.
        m, s = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        self.scale: torch.Tensor
        self.shift: torch.Tensor
        self.register_buffer("scale", (1.0 / (255.0 * s)).view(1, 3, 1, 1))
        self.register_buffer("shift", (m / s).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = image.permute(0, 3, 1, 2).float() * self.scale - self.shift
        if not self.with_features:
            out = self.model(x)
            return tuple(out[name] for name in self.group_names)
        # AttributeModel.forward's two steps, spelled out so the features leave the graph too.
        model: Any = self.model  # an AttributeModel
        f = model.features(x)
        return (*(model.heads[name](f) for name in self.group_names), f)


# The exporter's own libraries log every optimisation pass at INFO ("Removed 443 unused nodes"): at the CLI's
# INFO level that buried export's own lines. Their warnings and errors still show.
EXPORT_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx", "torch.export")


@contextlib.contextmanager
def quiet_loggers(*names: str, level: int = logging.WARNING) -> Iterator[None]:
    """The loggers ``names`` at ``level`` or above for the duration (their levels restored after)."""
    loggers = [logging.getLogger(n) for n in names]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(level, lg.level))
    try:
        yield
    finally:
        for lg, old in zip(loggers, before, strict=True):
            lg.setLevel(old)


def group_names(config: dict[str, Any]) -> list[str]:
    return [g["name"] for g in config["schema"]["groups"]]


def export_onnx(
    model: nn.Module,
    config: dict[str, Any],
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    exporter: str = "dynamo",
    features: bool = False,
) -> Path:
    """Write ``model`` (an AttributeModel) as an ONNX file for the bundle ``config`` describes.

    Args:
        model: the trained model; a CPU float32 copy of it is exported (``model`` is left as it is).
        config: the bundle config (``schema`` gives the output names, ``preprocess`` size, mean, std).
        path: the ``.onnx`` file to write (weights inside it, no external data file).
        opset: the ONNX opset.
        exporter: ``dynamo`` (default) or ``legacy`` (TorchScript).
        features: add the last output ``__features__``: the pooled features ``(N, F)`` (bundles do).

    Returns:
        ``path``, after checking that the file's outputs match the schema (:func:`check_onnx`).

    Raises:
        ValueError: an unknown exporter; ``features`` with a group named ``__features__``.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown ONNX exporter {exporter!r}; choose from {list(EXPORTERS)}")
    path = Path(path)
    pre = bundle_format.Preprocess.of(config)
    names = group_names(config)
    if features and FEATURES in names:
        raise ValueError(f"a group is named {FEATURES!r}, the name of the features output; rename the group")
    net = copy.deepcopy(model).float().cpu().eval()
    net = net.to(memory_format=torch.contiguous_format)
    wrapped = PixelModel(net, pre.mean, pre.std, names, features).eval()
    outputs = [*names, FEATURES] if features else names
    size = pre.image_size
    # Batch >= 2 when tracing, so nothing specialises the batch axis to 1.
    example = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    printed = io.StringIO()  # the dynamo exporter prints its progress; keep it out of the CLI's output
    with torch.no_grad(), contextlib.redirect_stdout(printed), quiet_loggers(*EXPORT_LOGGERS):
        if exporter == "dynamo":
            torch.onnx.export(
                wrapped,
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=outputs,
                opset_version=opset,
                dynamo=True,
                external_data=False,
                dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch")}},
                verbose=False,
            )
        else:
            torch.onnx.export(
                wrapped,
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=outputs,
                opset_version=opset,
                dynamo=False,
                dynamic_axes={INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in outputs}},
            )
    log.debug("torch.onnx.export said:\n%s", printed.getvalue())
    check_onnx(path, config)
    return path


def check_onnx(path: str | Path, config: dict[str, Any]) -> None:
    """Check an ONNX file against the bundle schema: input ``image`` uint8 ``(N, S, S, 3)``, outputs one
    per group by name, in order, with the group's class count.

    Raises:
        BundleError: naming the file and what does not match.
    """
    import onnx

    path = Path(path)
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as e:  # protobuf's DecodeError and friends
        raise BundleError(path, f"not a readable ONNX model: {e}") from None

    def dims(value: Any) -> list[Any]:
        return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]

    sizes = [dims(o)[-1] if dims(o) else None for o in graph.output]
    problem = bundle_format.onnx_output_problem(config, [o.name for o in graph.output], sizes)
    if problem:
        raise BundleError(path, problem)
    inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    s = bundle_format.Preprocess.of(config).image_size
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        raise BundleError(path, f"inputs {[i.name for i in inputs]}; expected one named {INPUT_NAME!r}")
    shape, elem = dims(inputs[0]), inputs[0].type.tensor_type.elem_type
    if elem != onnx.TensorProto.UINT8 or shape[1:] != [s, s, 3] or isinstance(shape[0], int):
        raise BundleError(
            path,
            f"input {INPUT_NAME!r} is {onnx.TensorProto.DataType.Name(elem)} {shape}; expected UINT8 [N, {s}, {s}, 3]",
        )


def session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session with full graph optimisation."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_logits(
    path: str | Path, images: np.ndarray, batch_size: int = 64, threads: int | None = None
) -> dict[str, np.ndarray]:
    """Logits per group of an exported file for uint8 ``(N, S, S, 3)`` images, in batches (without the
    features output)."""
    sess = session(path, threads)
    names = [o.name for o in sess.get_outputs() if o.name != FEATURES]
    chunks: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i in range(0, len(images), batch_size):
        out = sess.run(names, {INPUT_NAME: np.ascontiguousarray(images[i : i + batch_size])})
        for n, v in zip(names, out, strict=True):
            chunks[n].append(v)
    return {n: np.concatenate(v) for n, v in chunks.items()}


def torch_logits(
    model: nn.Module, images: np.ndarray, config: dict[str, Any], batch_size: int = 64
) -> dict[str, np.ndarray]:
    """Logits of the PyTorch model by the path evaluation and ``fashattr predict`` take (fp32, CPU)."""
    from fashattr.inference import predict_scores

    pre = config["preprocess"]
    net = copy.deepcopy(model).float().cpu()
    return predict_scores(net, images, tuple(pre["mean"]), tuple(pre["std"]), batch_size, torch.device("cpu"))


def check_parity(
    model: nn.Module, onnx_path: str | Path, batch: np.ndarray, config: dict[str, Any] | None = None
) -> float:
    """Max |logit difference| between ``model`` in PyTorch and the ONNX file on uint8 NHWC ``batch``.

    ``config`` (the bundle config) gives mean and std; without it the ImageNet ones are used.
    """
    if config is None:
        config = {"preprocess": {"mean": images.IMAGENET_MEAN, "std": (0.229, 0.224, 0.225)}}
    ref = torch_logits(model, batch, config)
    got = onnx_logits(onnx_path, batch)
    missing = sorted(set(ref) - set(got))
    if missing:
        raise BundleError(onnx_path, f"has no output for groups {missing}")
    return max(float(np.abs(ref[g].astype(np.float64) - got[g]).max()) for g in ref)


def onnx_features_dim(path: str | Path) -> int:
    """The feature size F of a file's ``__features__`` output (``(N, F)``).

    Raises:
        BundleError: the file has no features output or its size is not fixed.
    """
    import onnx

    for o in onnx.load(str(path), load_external_data=False).graph.output:
        if o.name == FEATURES:
            dim = o.type.tensor_type.shape.dim[-1]
            if dim.HasField("dim_value"):
                return int(dim.dim_value)
    raise BundleError(path, f"no {FEATURES!r} output of fixed size")


def file_mb(path: str | Path) -> float:
    return Path(path).stat().st_size / 1e6


def check_budget(path: str | Path, max_mb: float | None) -> None:
    """FASHION-HOW's budget on an exported file (MB of 10^6 bytes, as ``model.max_mb``)."""
    if max_mb is not None and (mb := file_mb(path)) > max_mb:
        raise ValueError(f"{Path(path).name}: {mb:.2f} MB, over the budget model.max_mb = {max_mb:g} MB")
