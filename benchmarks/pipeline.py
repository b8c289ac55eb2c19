"""Is input ever the bottleneck? Three training throughputs of one model, side by side in one run.

(1) compute only: random tensors already on the device (the model's own ceiling);
(2) fashattr end to end: presized uint8 cache -> batches -> augmentation on the device -> step;
(3) baseline: per-sample PIL decode + torchvision transforms in DataLoader workers -> step.

Same model, batch size, resolution, memory format (channels_last) and augmentations in all
three: ``--augment recipe`` is flip + affine, as the cpu_resnet18 recipe; ``heavy`` adds
colour jitter and erasing. The modes take turns for ``--rounds`` rounds of ``--steps`` steps;
ratios are the median over rounds of each round's ratio, because this shared machine drifts
by 10-20% within a minute. Results go to ``benchmarks/results/``.

    python benchmarks/pipeline.py --model test_resnet --size 64 --augment recipe
    python benchmarks/pipeline.py --model resnet18 --size 128 --augment recipe --rounds 4 --steps 6
    python benchmarks/pipeline.py --model resnet50 --size 224 --device cuda --amp bf16
    python benchmarks/pipeline.py --memory --model resnet18 --size 224   # peak RSS, all 7000 images at 224 px
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_loader import baseline_loader

from fashattr.config import AugmentConfig, LossConfig, ModelConfig
from fashattr.data.augment import BatchAugment
from fashattr.data.cache import cache_images
from fashattr.data.formats import create_reader
from fashattr.data.loader import BatchLoader
from fashattr.data.pipeline import Prefetcher, augmented_batches
from fashattr.device import autocast, prefetch_depth
from fashattr.losses import create_loss
from fashattr.models import create_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "FashionDataset"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
AUGMENTS = {
    # the cpu_resnet18 recipe's augmentations
    "recipe": AugmentConfig(hflip=0.5, degrees=10, translate=0.05, scale=(0.9, 1.1)),
    # plus colour jitter and erasing
    "heavy": AugmentConfig(
        hflip=0.5,
        degrees=10,
        translate=0.05,
        scale=(0.9, 1.1),
        brightness=0.2,
        contrast=0.2,
        saturation=0.2,
        erasing=0.25,
    ),
}
Batch = tuple[torch.Tensor, dict[str, torch.Tensor]]


def peak_rss_mb() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"self": round(own, 1), "largest_child": round(children, 1)}


class Step:
    """One optimizer step of the benchmark model on a prepared batch."""

    def __init__(self, args: argparse.Namespace, schema, device: torch.device) -> None:
        torch.manual_seed(0)
        self.model = create_model(ModelConfig(backbone=args.model), schema).to(device)
        self.channels_last = not args.nchw
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if args.compile else self.model
        self.loss = create_loss(LossConfig(), schema).to(device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.device = device
        self.amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)

    def __call__(self, x: torch.Tensor, y: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.amp):
            out = self.forward(x)
        loss = self.loss(out, y)["loss"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()


def timed(
    batches: Iterator[Batch],
    step: Step,
    prepare: Callable[[Batch], Batch],
    warmup: int,
    steps: int,
    device: torch.device,
) -> float:
    """Images per second over ``steps`` steps, after ``warmup`` untimed ones."""
    n, start = 0, 0.0
    last = None
    for i, batch in enumerate(batches):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        if i == warmup + steps:
            break
        x, y = prepare(batch)
        last = step(x, y)
        if i >= warmup:
            n += x.shape[0]
    if last is not None:
        float(last)  # wait for the device
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def forever(make: Callable[[int], Iterator[Batch]]) -> Iterator[Batch]:
    epoch = 0
    while True:
        yield from make(epoch)
        epoch += 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="test_resnet")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=15, help="timed steps per mode per round")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="baseline DataLoader workers")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    p.add_argument("--nchw", action="store_true", help="NCHW instead of the default channels_last")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--prefetch", type=int, default=None, help="fashattr: batches prepared ahead (default: auto)")
    p.add_argument("--augment", default="heavy", choices=sorted(AUGMENTS))
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--memory", action="store_true", help="cache all 7000 images and train; report peak RSS")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args()
    device = torch.device(args.device)
    reader = create_reader("ai6126", args.data)
    schema, table = reader.schema(), reader.read("train")
    assert table.labels is not None

    t0 = time.perf_counter()
    images = cache_images(table, args.size, cache_dir=args.cache_dir).pixels
    cache_s = time.perf_counter() - t0
    cache_mb = images.nbytes / 2**20
    rows = np.arange(len(table))
    result: dict = {
        "model": args.model,
        "size": args.size,
        "batch": args.batch,
        "device": str(device),
        "amp": args.amp,
        "channels_last": not args.nchw,
        "threads": torch.get_num_threads(),
        "cache_build_or_load_s": round(cache_s, 1),
        "cache_mb_train": round(cache_mb, 1),
    }
    if args.memory:
        result.update(memory_check(args, reader, schema, device))
        write(result, args, "memory")
        return

    step = Step(args, schema, device)
    augment = BatchAugment(AUGMENTS[args.augment], MEAN, STD, {g.name: g.num_classes for g in schema.groups})
    gen = torch.Generator(device).manual_seed(0)
    loader = BatchLoader(images, table.labels, args.batch, shuffle=True, drop_last=True, rows=rows)
    depth = prefetch_depth(device, args.prefetch)
    result["prefetch"] = depth

    fmt = torch.contiguous_format if args.nchw else torch.channels_last
    fixed_x = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=fmt)
    fixed_y = {g.name: torch.randint(0, g.num_classes, (args.batch,), device=device) for g in schema.groups}

    def compute_only() -> Iterator[Batch]:
        while True:
            yield fixed_x, fixed_y

    def fashattr_epochs() -> Iterator:
        # exactly the trainer's input path: loader -> device -> augment, prefetched in a thread
        return forever(
            lambda e: iter(Prefetcher(augmented_batches(loader, augment, gen, device, e, 0, not args.nchw), depth))
        )

    def to_device(batch: Batch) -> Batch:
        x, y = batch
        x = x.to(device, non_blocking=True).contiguous(memory_format=fmt)
        return x, {g: v.to(device, non_blocking=True) for g, v in y.items()}

    modes: dict[str, tuple[Callable[[], Iterator[Batch]], Callable[[Batch], Batch]]] = {
        "compute_only": (compute_only, lambda b: b),
        "fashattr": (fashattr_epochs, lambda b: (b[0], b[1])),
    }
    base = None
    if not args.skip_baseline:
        base = baseline_loader(table, rows.tolist(), args.size, args.batch, args.workers, MEAN, STD)
        modes["baseline"] = (lambda: forever(lambda e: iter(base)), to_device)

    runs: dict[str, list[float]] = {m: [] for m in modes}
    streams = {m: make() for m, (make, _) in modes.items()}
    for r in range(args.rounds):
        for m, (_, prepare) in modes.items():
            # warm-up only in round 0 (it also starts the baseline's workers); later rounds continue the stream
            runs[m].append(timed(streams[m], step, prepare, args.warmup if r == 0 else 1, args.steps, device))
            print(f"round {r + 1} {m:>13}: {runs[m][-1]:8.1f} img/s", flush=True)
    ips = {m: statistics.median(v) for m, v in runs.items()}
    result["img_s"] = {m: round(v, 1) for m, v in ips.items()}
    result["img_s_all_rounds"] = {m: [round(x, 1) for x in v] for m, v in runs.items()}

    def paired(a: str, b: str) -> float:
        # median over rounds of the ratio within each round: the modes of one round ran
        # seconds apart, so slow drifts of this shared machine cancel out
        return round(statistics.median(x / y for x, y in zip(runs[a], runs[b], strict=True)), 3)

    result["fashattr_over_compute"] = paired("fashattr", "compute_only")
    if "baseline" in ips:
        result["fashattr_over_baseline"] = paired("fashattr", "baseline")
        result["compute_over_baseline"] = paired("compute_only", "baseline")
    result["peak_rss_mb"] = peak_rss_mb()
    write(result, args, f"{args.model}_{args.size}_{device.type}_{args.augment}")


def memory_check(args: argparse.Namespace, reader, schema, device: torch.device) -> dict:
    """Cache all splits (7000 images), read every cached row once, train a few steps: peak RSS."""
    caches = {
        s: cache_images(reader.read(s), args.size, cache_dir=args.cache_dir).pixels for s in ("train", "val", "test")
    }
    total_mb = sum(c.nbytes for c in caches.values()) / 2**20
    for c in caches.values():  # touch every page, as an epoch over all of them would
        for start in range(0, len(c), 256):
            np.asarray(c[start : start + 256]).sum()
    table = reader.read("train")
    step = Step(args, schema, device)
    augment = BatchAugment(AUGMENTS[args.augment], MEAN, STD, {g.name: g.num_classes for g in schema.groups})
    gen = torch.Generator(device).manual_seed(0)
    loader = BatchLoader(caches["train"], table.labels, args.batch, shuffle=True, drop_last=True)
    for i, (pixels, y) in enumerate(loader.batches(0)):
        if i == args.steps:
            break
        yd = {g: v.to(device) for g, v in y.items()}
        x, yd = augment(pixels.to(device), yd, gen)
        step(x, yd)
    return {"cache_mb_all_splits": round(total_mb, 1), "train_steps": args.steps, "peak_rss_mb": peak_rss_mb()}


def write(result: dict, args: argparse.Namespace, name: str, prefix: str = "pipeline_") -> None:
    """Save ``result`` as ``{args.out}/{prefix}{name}.json`` and print it."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{prefix}{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
