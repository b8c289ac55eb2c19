"""CPU inference speed of a bundle's backends, side by side in one run: PyTorch eager fp32, PyTorch +
channels_last, ONNX Runtime fp32 and ONNX Runtime int8, plus end-to-end folder prediction.

For each model (random init: speed does not depend on the weights' values), at ``--size`` px and
``--threads`` threads:

- **batch-1 latency** (p50, p99 over every call of every round) and **batch-32 throughput**;
- the variants take turns within each round, in a rotated order, and each ratio to eager is the
  median over rounds of that round's ratio: this machine is shared and its speed drifts by 2x within
  a minute, so single readings are noise while paired per-round ratios are much steadier. Each
  round also records how many cores other processes used meanwhile (``/proc/stat``).
- every variant starts from the same uint8 NHWC letterboxed batch (what every runtime feeds), so the
  cast, normalisation and transpose are timed for all of them: in the ONNX graph for ONNX Runtime,
  in PyTorch for eager (NCHW copy) and channels_last (the NHWC batch is already channels_last);
- the ONNX files are exported and quantised by fashattr's own code (``deploy.onnx.export_onnx``,
  ``deploy.quantize.quantize_int8``, calibrated on real training images) into a bundle folder, and
  run by ``onnx_runner.OnnxRunner``: the session fashattr predict uses;
- **end to end** (first model only): real FashionDataset JPEG files -> JSON Lines through
  ``Runtime.predict_files`` (decode in worker threads, batches of 32), against the same backend's
  model-only throughput on ready batches, interleaved the same way.

    python benchmarks/inference.py                                  # resnet18 + convnext_atto, 96 px
    python benchmarks/inference.py --models resnet18 --rounds 3     # quicker
    python benchmarks/inference.py --explore                        # export / int8 / session variants

Writes ``results/inference.json`` and ``results/inference.md`` (``--explore``: ``inference_explore.*``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fashattr.config import ModelConfig
from fashattr.deploy.bundle import write_hashes
from fashattr.deploy.onnx import PixelModel, export_onnx
from fashattr.deploy.quantize import quantize_int8
from fashattr.models import create_model
from fashattr.portable import bundle as bundle_format
from fashattr.portable import onnx_runner
from fashattr.portable.images import fill_color, load_presized
from fashattr.schema import ai6126_schema

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data" / "FashionDataset"
QUIET_CORES = 0.5  # a round in which other processes used at most this many cores counts as quiet
PAUSE_S = 0.05  # between variants: the previous one's threads stop spin-waiting before the next starts
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
Fn = Callable[[np.ndarray], Any]


# ---------------------------------------------------------------------------------------------- machine
def cpu_info() -> dict[str, Any]:
    """lscpu's model name and flags, and what they mean for int8 (VNNI) and fp32 (AVX-512)."""
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = fields.get("Flags", "").split()
    return {
        "model_name": fields.get("Model name"),
        "vendor": fields.get("Vendor ID"),
        "family": fields.get("CPU family"),
        "model": fields.get("Model"),
        "cpus": os.cpu_count(),
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
        "vnni": any(f in flags for f in ("avx512_vnni", "avx_vnni")),
        "amx": any(f.startswith("amx") for f in flags),
        "flags": " ".join(flags),
    }


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime as ort
    import PIL
    import timm

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
    }


class CpuMeter:
    """Cores used by other processes during a span: all busy jiffies minus this process's CPU time."""

    def __init__(self) -> None:
        self.hz = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as f:
            v = [float(x) for x in f.readline().split()[1:]]
        return sum(v) - v[3] - v[4]  # minus idle and iowait

    @staticmethod
    def _own() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        c = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime

    def start(self) -> None:
        self.t0, self.b0, self.o0 = time.perf_counter(), self._busy(), self._own()

    def foreign_cores(self) -> float:
        wall = time.perf_counter() - self.t0
        busy = (self._busy() - self.b0) / self.hz
        return round(max(0.0, busy - (self._own() - self.o0)) / wall, 2)


# ---------------------------------------------------------------------------------------------- models
def bundle_config(name: str, size: int) -> dict[str, Any]:
    """The parts of a bundle config that export and the ONNX runtime read (random-init model)."""
    return {
        "format": bundle_format.FORMAT,
        "format_version": bundle_format.FORMAT_VERSION,
        "schema": ai6126_schema().to_dict(),
        "model": dataclasses.asdict(ModelConfig(backbone=name)),
        "preprocess": {"image_size": size, "fill": list(fill_color(MEAN)), "mean": list(MEAN), "std": list(STD)},
        "decoding": {"multi_label_threshold_logit": 0.0, "calibration": None, "logit_adjust": None},
        "source": {"run": f"benchmark-random-{name}"},
    }


def calibration_images(n: int, size: int) -> np.ndarray:
    """The first ``n`` FashionDataset train images, prepared as every runtime prepares them."""
    paths = sorted((DATA / "img").glob("*.jpg"))[:n]
    return np.stack([load_presized(p, size, fill=fill_color(MEAN)) for p in paths])


def make_bundle(
    model: torch.nn.Module, config: dict[str, Any], folder: Path, calib: np.ndarray, **export_kw: Any
) -> dict[str, Any]:
    """A bundle folder with model.onnx and model.int8.onnx, exported and quantised by fashattr's code."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    t = time.perf_counter()
    export_onnx(model, config, folder / "model.onnx", **export_kw)
    export_s = time.perf_counter() - t
    t = time.perf_counter()
    quantize_int8(folder / "model.onnx", folder / "model.int8.onnx", calib)
    quant_s = time.perf_counter() - t
    names = [g["name"] for g in config["schema"]["groups"]]
    config = {**config, "onnx": {"fp32": "model.onnx", "int8": "model.int8.onnx", "input": "image", "outputs": names}}
    (folder / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    write_hashes(folder)
    return {
        "export_s": round(export_s, 1),
        "quantize_s": round(quant_s, 1),
        "onnx_mb": round((folder / "model.onnx").stat().st_size / 1e6, 2),
        "int8_mb": round((folder / "model.int8.onnx").stat().st_size / 1e6, 2),
        **export_kw,
    }


def torch_variant(model: torch.nn.Module, channels_last: bool) -> Fn:
    """uint8 NHWC in, logits out, in PyTorch: the cast, normalisation and layout are part of the time."""
    net = copy.deepcopy(model).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    wrapped = PixelModel(net, MEAN, STD, list(net.heads)).eval()

    def run(batch: np.ndarray) -> Any:
        with torch.inference_mode():
            x = torch.from_numpy(batch)
            if not channels_last:  # eager: the plain NCHW layout a user's script feeds
                x = x.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
            return wrapped(x)

    return run


def ort_session(path: Path, threads: int, spinning: bool = False, opt_level: str = "all") -> Any:
    """A plain onnxruntime session (explore mode), not the runtime's."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    }[opt_level]
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def raw_session(path: Path, threads: int, spinning: bool = False, opt_level: str = "all") -> Fn:
    sess = ort_session(path, threads, spinning, opt_level)
    name = sess.get_inputs()[0].name
    return lambda batch: sess.run(None, {name: batch})


def quantize_variant(
    fp32: Path, out: Path, calib: np.ndarray, fmt: str, per_channel: bool, reduce_range: bool, weights: str
) -> Path:
    """int8 variants for explore mode (the shipped one is ``deploy.quantize.quantize_int8``)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from fashattr.deploy.quantize import _Batches

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre))
    quantize_static(
        str(pre),
        str(out),
        _Batches(calib, "image", 16),  # type: ignore[arg-type]
        quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
        per_channel=per_channel,
        reduce_range=reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8 if weights == "s8" else QuantType.QUInt8,
    )
    return out


class _Bare(torch.nn.Module):
    """The model alone, float NCHW normalised input, a tuple of logits: what the in-graph prefix saves."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.names = model, list(model.heads)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out[n] for n in self.names)


def bare_variant(model: torch.nn.Module, path: Path, size: int, threads: int) -> Fn:
    """float32 NCHW input, normalised outside the graph (and outside the timing): the prefix's cost."""
    bare = _Bare(copy.deepcopy(model).eval()).eval()
    with torch.no_grad():
        torch.onnx.export(
            bare,
            (torch.randn(2, 3, size, size),),
            str(path),
            input_names=["x"],
            output_names=bare.names,
            opset_version=17,
            dynamo=False,
            dynamic_axes={"x": {0: "batch"}, **{n: {0: "batch"} for n in bare.names}},
        )
    sess = ort_session(path, threads, spinning=False)
    ready: dict[int, np.ndarray] = {}
    mean, std = np.array(MEAN, np.float32), np.array(STD, np.float32)

    def run(batch: np.ndarray) -> Any:
        if len(batch) not in ready:
            ready[len(batch)] = np.ascontiguousarray(((batch / np.float32(255) - mean) / std).transpose(0, 3, 1, 2))
        return sess.run(None, {"x": ready[len(batch)]})

    return run


def explore_variants(
    model: torch.nn.Module, config: dict[str, Any], folder: Path, calib: np.ndarray, threads: int
) -> dict[str, Fn]:
    """Export, int8 and session choices, each against eager: what the shipped defaults were chosen from.
    Sessions sleep between operators (fashattr's choice) unless the name says ``spin``."""
    fp32, size = folder / "model.onnx", int(config["preprocess"]["image_size"])
    legacy = export_onnx(model, config, folder / "legacy17.onnx", opset=17, exporter="legacy")
    v: dict[str, Fn] = {
        "eager": torch_variant(model, channels_last=False),
        "ort_fp32_dynamo18": raw_session(fp32, threads),
        "ort_fp32_dynamo18_spin": raw_session(fp32, threads, spinning=True),
        "ort_fp32_dynamo18_extended": raw_session(fp32, threads, opt_level="extended"),
        "ort_fp32_legacy17": raw_session(legacy, threads),
        "ort_fp32_legacy17_float_nchw_input": bare_variant(model, folder / "bare.onnx", size, threads),
        "ort_int8_qdq_pc_s8": raw_session(folder / "model.int8.onnx", threads),
        "ort_int8_qdq_pc_s8_spin": raw_session(folder / "model.int8.onnx", threads, spinning=True),
    }
    for fmt, pc, rr, w in (
        ("qdq", True, True, "s8"),
        ("qdq", True, False, "u8"),
        ("qop", True, False, "s8"),
        ("qdq", False, False, "s8"),
    ):
        tag = f"ort_int8_{fmt}_{'pc' if pc else 'pt'}_{w}{'_rr' if rr else ''}"
        v[tag] = raw_session(quantize_variant(fp32, folder / f"{tag}.onnx", calib, fmt, pc, rr, w), threads)
    return v


def onnx_variant(bundle: Path, variant: str, threads: int) -> Fn:
    runner = onnx_runner.OnnxRunner(bundle, variant=variant, threads=threads)
    return runner.logits


# ---------------------------------------------------------------------------------------------- timing
def time_rounds(
    variants: dict[str, Fn], size: int, rounds: int, lat_iters: int, thr_iters: int, batch: int, seed: int = 0
) -> dict[str, Any]:
    """Batch-1 latency and batch-``batch`` throughput of every variant, taking turns in each round."""
    rng = np.random.default_rng(seed)
    x1 = rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    xb = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    names = list(variants)
    for fn in variants.values():  # warm-up: first-call allocations, oneDNN primitive creation
        for _ in range(3):
            fn(x1)
        fn(xb)
    lat: dict[str, list[list[float]]] = {n: [] for n in names}
    thr: dict[str, list[float]] = {n: [] for n in names}
    foreign: list[float] = []
    meter = CpuMeter()
    for r in range(rounds):
        meter.start()
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate: no variant always goes first
        for n in order:
            fn = variants[n]
            time.sleep(PAUSE_S)
            calls = []
            for _ in range(lat_iters):
                t = time.perf_counter()
                fn(x1)
                calls.append((time.perf_counter() - t) * 1000)
            lat[n].append(calls)
            time.sleep(PAUSE_S)
            t = time.perf_counter()
            for _ in range(thr_iters):
                fn(xb)
            thr[n].append(batch * thr_iters / (time.perf_counter() - t))
        foreign.append(meter.foreign_cores())
    base = names[0]
    quiet = [r for r, f in enumerate(foreign) if f <= QUIET_CORES]
    out: dict[str, Any] = {"foreign_cores_per_round": foreign, "quiet_rounds": quiet, "variants": {}}
    for n in names:
        every = [c for calls in lat[n] for c in calls]
        med_per_round = [statistics.median(c) for c in lat[n]]
        out["variants"][n] = {
            "b1_ms_p50": round(float(np.percentile(every, 50)), 3),
            "b1_ms_p99": round(float(np.percentile(every, 99)), 3),
            f"b{batch}_img_s": round(statistics.median(thr[n]), 1),
            "b1_ms_median_per_round": [round(v, 3) for v in med_per_round],
            f"b{batch}_img_s_per_round": [round(v, 1) for v in thr[n]],
            # speed-up over the first variant (eager): median over rounds of the round's ratio
            "b1_speedup": round(
                statistics.median(
                    statistics.median(b) / statistics.median(c) for b, c in zip(lat[base], lat[n], strict=True)
                ),
                3,
            ),
            f"b{batch}_speedup": round(statistics.median(v / b for b, v in zip(thr[base], thr[n], strict=True)), 3),
            # the same over the rounds in which other processes used at most QUIET_CORES cores
            "b1_speedup_quiet": round(
                statistics.median(statistics.median(lat[base][r]) / statistics.median(lat[n][r]) for r in quiet), 3
            )
            if quiet
            else None,
            f"b{batch}_speedup_quiet": round(statistics.median(thr[n][r] / thr[base][r] for r in quiet), 3)
            if quiet
            else None,
        }
    return out


def e2e_rounds(
    bundle: Path, setups: list[str], threads: int, n_images: int, rounds: int, workers: int
) -> list[dict[str, Any]]:
    """JPEG files -> JSON Lines through Runtime.predict_files, against the same runtime's model-only
    throughput on ready batches (decoding to records included), every setup in turn in each round.

    A setup is a backend (``torch``, ``onnx``, ``onnx-int8``: the runtime as shipped), optionally with
    ``+spin`` or ``+nospin``: the same file in a session whose threads spin-wait between operators
    (onnxruntime's default) or sleep, for comparison with fashattr's own session options.
    """
    from fashattr.deploy.output import predict_to_file
    from fashattr.deploy.runtime import Runtime

    # test split images: never the calibration ones (those are the first train images)
    paths = sorted((DATA / "img").glob("*.jpg"))[-n_images:]
    runtimes = {}
    for setup in setups:
        backend, _, spin = setup.partition("+")
        rt = Runtime.from_bundle(bundle, backend=backend, threads=threads)
        if spin:  # the same model file in a session whose threads spin-wait (spin) or sleep (nospin)
            runner = rt.backend
            runner.session = ort_session(runner.path, threads, spinning=spin == "spin")  # type: ignore[attr-defined]
        runtimes[setup] = rt
    size = next(iter(runtimes.values())).image_size
    ready = np.random.default_rng(1).integers(0, 256, (32, size, size, 3), dtype=np.uint8)
    for rt in runtimes.values():
        rt.logits(ready)
    e2e: dict[str, list[float]] = {k: [] for k in runtimes}
    model_only: dict[str, list[float]] = {k: [] for k in runtimes}
    foreign: list[float] = []
    lines = {}
    meter = CpuMeter()
    n_batches = max(1, n_images // 32)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            meter.start()
            names = list(runtimes)
            for k in names[r % len(names) :] + names[: r % len(names)]:
                rt = runtimes[k]
                time.sleep(PAUSE_S)
                t = time.perf_counter()
                for _ in range(n_batches):
                    rt.decode(rt.logits(ready))  # decoding to JSON records included, as in predict
                model_only[k].append(32 * n_batches / (time.perf_counter() - t))
                time.sleep(PAUSE_S)
                out = Path(tmp) / f"{k}.jsonl"
                s = predict_to_file(rt, paths, out, batch_size=32, workers=workers, progress=False)
                if s.errors:
                    raise RuntimeError(f"{s.errors} of {len(paths)} images failed to decode")
                e2e[k].append(s.images_per_s)
                lines[k] = len(out.read_text().splitlines())
            foreign.append(meter.foreign_cores())
    return [
        {
            "setup": k,
            "images": len(paths),
            "workers": workers,
            "jsonl_lines": lines[k],
            "e2e_img_s": round(statistics.median(e2e[k]), 1),
            "model_only_img_s": round(statistics.median(model_only[k]), 1),
            "e2e_over_model_only": round(
                statistics.median(e / m for e, m in zip(e2e[k], model_only[k], strict=True)), 3
            ),
            "e2e_img_s_per_round": [round(v, 1) for v in e2e[k]],
            "model_only_img_s_per_round": [round(v, 1) for v in model_only[k]],
            "foreign_cores_per_round": foreign,
        }
        for k in runtimes
    ]


# ---------------------------------------------------------------------------------------------- report
def markdown(result: dict[str, Any]) -> str:
    cpu = result["cpu"]
    lines = [
        f"# Inference speed ({result['command']})",
        "",
        f"CPU: {cpu['model_name']} ({cpu['vendor']} family {cpu['family']} model {cpu['model']}), "
        f"{cpu['cpus']} cores; AVX2 {cpu['avx2']}, AVX-512 {cpu['avx512f']}, VNNI {cpu['vnni']}. "
        f"{result['threads']} threads, {result['size']} px, random-init weights. The machine was shared "
        "with other jobs (the foreign-cores column: cores other processes used during each round).",
        "",
        "Speed-ups are over eager PyTorch fp32: the median over rounds of each round's ratio (in brackets: over",
        f"the quiet rounds only, those in which other processes used at most {QUIET_CORES} cores; - when none was).",
        "",
        "| model | variant | batch-1 p50 ms | batch-1 p99 ms | batch-1 speed-up | batch-32 img/s | batch-32 speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in result["models"].items():
        for v, r in m["timing"]["variants"].items():
            q1, q32 = r["b1_speedup_quiet"], r["b32_speedup_quiet"]
            lines.append(
                f"| {name} | {v} | {r['b1_ms_p50']:.2f} | {r['b1_ms_p99']:.2f} | **{r['b1_speedup']:.2f}x** "
                f"({'-' if q1 is None else f'{q1:.2f}x'}) | {r['b32_img_s']:.0f} | **{r['b32_speedup']:.2f}x** "
                f"({'-' if q32 is None else f'{q32:.2f}x'}) |"
            )
    lines.append("")
    for name, m in result["models"].items():
        lines.append(
            f"- {name}: model.onnx {m['bundle']['onnx_mb']} MB, model.int8.onnx {m['bundle']['int8_mb']} MB; "
            f"foreign cores per round {m['timing']['foreign_cores_per_round']}"
        )
    for e in result.get("e2e", []):
        lines.append(
            f"- end to end, {e['model']} {e['setup']}, {e['images']} FashionDataset JPEGs -> JSON Lines, "
            f"{e['workers']} decode threads: {e['e2e_img_s']} img/s vs model-only {e['model_only_img_s']} img/s: "
            f"**{e['e2e_over_model_only']:.2f}x** (foreign cores per round {e['foreign_cores_per_round']})"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18,convnext_atto")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--lat-iters", type=int, default=20, help="batch-1 calls per variant per round")
    p.add_argument("--thr-iters", type=int, default=3, help="batch-32 calls per variant per round")
    p.add_argument("--calib", type=int, default=64, help="train images that calibrate int8")
    p.add_argument("--e2e-images", type=int, default=320, help="0: skip the end-to-end measurement")
    p.add_argument("--e2e-rounds", type=int, default=3)
    p.add_argument("--e2e-backends", default="onnx-int8,onnx-int8+spin,onnx,torch")
    p.add_argument("--workers", type=int, default=2, help="decode threads of the end-to-end run")
    p.add_argument("--explore", action="store_true", help="export / int8 / session variants (first model)")
    p.add_argument("--out", default=str(ROOT / "results"))
    args = p.parse_args()
    stem = "inference_explore" if args.explore else "inference"
    if args.threads != 2:  # 2 threads is the issue's setting; other counts get their own files
        stem += f"_threads{args.threads}"

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    result: dict[str, Any] = {
        "command": "python benchmarks/inference.py " + " ".join(sys.argv[1:]),
        "cpu": cpu_info(),
        "versions": versions(),
        "threads": args.threads,
        "size": args.size,
        "machine_shared": True,
        "loadavg_start": os.getloadavg(),
        "models": {},
        "e2e": [],
    }
    calib = calibration_images(args.calib, args.size)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fashattr-bench-") as tmp:
        for i, name in enumerate(args.models.split(",")):
            config = bundle_config(name, args.size)
            model = create_model(ModelConfig(backbone=name), ai6126_schema(), args.size).eval()
            folder = Path(tmp) / name
            info = make_bundle(model, config, folder, calib)
            info["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
            if args.explore:
                variants = explore_variants(model, config, folder, calib, args.threads)
                timing = time_rounds(variants, args.size, args.rounds, args.lat_iters, args.thr_iters, 32)
                result["models"][name] = {"bundle": info, "timing": timing}
                break
            variants = {
                "eager": torch_variant(model, channels_last=False),
                "channels_last": torch_variant(model, channels_last=True),
                "ort_fp32": onnx_variant(folder, "fp32", args.threads),
                "ort_int8": onnx_variant(folder, "int8", args.threads),
            }
            timing = time_rounds(variants, args.size, args.rounds, args.lat_iters, args.thr_iters, 32)
            result["models"][name] = {"bundle": info, "timing": timing}
            print(json.dumps({name: {k: v for k, v in timing["variants"].items()}}, indent=1), flush=True)
            if i == 0 and args.e2e_images:
                setups = args.e2e_backends.split(",")
                for e in e2e_rounds(folder, setups, args.threads, args.e2e_images, args.e2e_rounds, args.workers):
                    result["e2e"].append({"model": name, **e})
                    print(json.dumps(result["e2e"][-1]), flush=True)
    result["loadavg_end"] = os.getloadavg()
    result["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
