"""How `fashattr predict` should decode in parallel: threads or processes, how many (2-core CPU).

Decodes the same real FashionDataset JPEGs with ``images.load_presized`` (the runtime's and the
cache's pixel code) sequentially, with a thread pool and with a process pool, in alternating rounds so
that load from other programs on the machine hits every variant alike; then the whole streaming path
(``Runtime.predict_files``: decode + resnet18 on torch, batch 32) with 1 and 2 decode threads against
the model alone on the same pixels. Writes benchmarks/results/predict_workers.json.

    python benchmarks/predict_workers.py [--n 400] [--size 96] [--rounds 3]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from fashattr.portable.images import load_presized

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FASHATTR_DATA") or ROOT.parent / "shared" / "data" / "FashionDataset")


def decode(path: Path, size: int) -> np.ndarray:
    return load_presized(path, size)


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_info() -> dict[str, str]:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = info.get("Flags", "").split()
    return {
        "model": info.get("Model name", "").strip(),
        "cpus": info.get("CPU(s)", "").strip(),
        "avx2": str("avx2" in flags),
        "avx512_vnni": str("avx512_vnni" in flags),
        "load_average_at_start": " ".join(f"{v:.1f}" for v in os.getloadavg()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    paths = [DATA / "img" / f"{i:05d}.jpg" for i in range(args.n)]
    torch.set_num_threads(2)

    threads = {w: cf.ThreadPoolExecutor(w) for w in (1, 2, 3, 4)}
    procs = {w: cf.ProcessPoolExecutor(w) for w in (2,)}
    list(procs[2].map(decode, paths[:8], [args.size] * 8))  # start the workers outside the timing
    variants = {
        "sequential": lambda: [decode(p, args.size) for p in paths],
        **{
            f"threads_{w}": (lambda ex=ex: list(ex.map(decode, paths, [args.size] * len(paths))))
            for w, ex in threads.items()
        },
        "processes_2": lambda: list(procs[2].map(decode, paths, [args.size] * len(paths), chunksize=8)),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            times[name].append(timed(fn))
    decode_rate = {k: round(args.n / statistics.median(v), 1) for k, v in times.items()}

    # The streaming path end to end against the model alone (resnet18, random init, the CPU recipe's size).
    from fashattr.config import ModelConfig
    from fashattr.deploy.runtime import Runtime, TorchBackend
    from fashattr.models import create_model
    from fashattr.schema import ai6126_schema

    schema = ai6126_schema()
    model = create_model(ModelConfig(backbone="resnet18"), schema, args.size)
    config = {"schema": schema.to_dict(), "preprocess": {"image_size": args.size, "fill": [124, 116, 104]}}
    rt = Runtime(config, TorchBackend(model, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    pixels = np.stack([decode(p, args.size) for p in paths])
    rt.logits(pixels[:32])  # warm-up

    def model_only() -> None:
        for i in range(0, len(pixels), 32):
            rt.decode(rt.logits(pixels[i : i + 32]))

    e2e = {"model_only": model_only}
    for w in (1, 2):
        e2e[f"stream_threads_{w}"] = lambda w=w: sum(1 for _ in rt.predict_files(paths, batch_size=32, workers=w))
    e2e_times: dict[str, list[float]] = {k: [] for k in e2e}
    for _ in range(args.rounds):
        for name, fn in e2e.items():
            e2e_times[name].append(timed(fn))
    e2e_rate = {k: round(args.n / statistics.median(v), 1) for k, v in e2e_times.items()}
    result = {
        "command": f"python benchmarks/predict_workers.py --n {args.n} --size {args.size} --rounds {args.rounds}",
        "cpu": cpu_info(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "images": args.n,
        "size": args.size,
        "decode_images_per_s": decode_rate,
        "decode_seconds": times,
        "end_to_end_images_per_s": e2e_rate,
        "end_to_end_seconds": e2e_times,
        "stream_vs_model_only": {
            k: round(v / e2e_rate["model_only"], 3) for k, v in e2e_rate.items() if k != "model_only"
        },
    }
    out = ROOT / "benchmarks" / "results" / "predict_workers.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        json.dumps(
            {k: result[k] for k in ("cpu", "decode_images_per_s", "end_to_end_images_per_s", "stream_vs_model_only")},
            indent=1,
        )
    )
    for ex in [*threads.values(), *procs.values()]:
        ex.shutdown()


if __name__ == "__main__":
    main()
