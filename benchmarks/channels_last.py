"""Compute-only training throughput of a model in NCHW vs channels_last (NHWC), alternating runs.

    python benchmarks/channels_last.py --model test_resnet --size 64
    python benchmarks/channels_last.py --model resnet18 --size 128 --steps 3

Random tensors, batch 64, AdamW; the formats alternate ``--rounds`` times so drift hits both.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from pipeline import write  # the same results writer (this folder is on sys.path when run as a script)

from fashattr.config import ModelConfig
from fashattr.models import create_model
from fashattr.schema import ai6126_schema


def throughput(model_name: str, size: int, channels_last: bool, steps: int, batch: int) -> float:
    torch.manual_seed(0)
    model = create_model(ModelConfig(backbone=model_name), ai6126_schema())
    x = torch.randn(batch, 3, size, size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters())

    def step() -> None:
        loss = sum(v.sum() for v in model(x).values())
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()

    step()
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="test_resnet")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args()
    runs: dict[str, list[float]] = {"nchw": [], "channels_last": []}
    for _ in range(args.rounds):
        for fmt in runs:
            runs[fmt].append(throughput(args.model, args.size, fmt == "channels_last", args.steps, args.batch))
    result = {
        "model": args.model,
        "size": args.size,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "img_s_all_rounds": {k: [round(v, 1) for v in vs] for k, vs in runs.items()},
        "channels_last_over_nchw": round(
            statistics.median(c / n for c, n in zip(runs["channels_last"], runs["nchw"], strict=True)), 3
        ),
    }
    write(result, args, f"channels_last_{args.model}_{args.size}", prefix="")


if __name__ == "__main__":
    main()
