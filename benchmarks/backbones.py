"""Which backbone and resolution does a 60-minute CPU budget afford? Training throughput side by side.

Issue 14 asks for the backbone and resolution "for the budget": on 2 cores, throughput decides how
many epochs fit, and the ablation showed epochs are worth more than anything else measured
(20 epochs instead of 10: +3.6 / +1.4 points). This script times one optimizer step (forward,
backward, AdamW; channels_last; the recipe's batch of 64; the FashionDataset's six heads and
balanced-softmax loss) of each candidate on fixed random tensors: the model's own ceiling, which
fashattr's input pipeline reaches to within 0.92-1.00x (benchmarks/pipeline.py).

The candidates take turns for ``--rounds`` rounds, so drift on this shared machine hits all of
them alike; each row's ratio is the median over rounds of (its img/s / the reference's img/s in
the same round). ``epochs_in_50_min`` is what the ratio buys against the measured reference:
50 minutes of training at the reference's end-to-end rate from the ablation's "20 epochs" row
(``--ref-epoch-s``, seconds per epoch of resnet18 at 96 px on this host), scaled by the ratio.

    python benchmarks/backbones.py                           # default candidates at 96 px
    python benchmarks/backbones.py --models resnet18,resnet10t --sizes 96,128 --rounds 2
    python benchmarks/backbones.py --models resnet18 --sizes 96 --compile   # eager against torch.compile

``--compile`` adds each model once more under ``torch.compile`` (the trainer's ``train.compile``),
named ``MODEL+compile``; its one-off compilation falls in the first round's untimed warm-up step
and is reported as ``compile_s``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_line
from pipeline import DATA, Step, timed

from fashattr.data.formats import create_reader

CANDIDATES = (
    "resnet18,resnet10t,resnet14t,resnet18d,resnet26d,resnet34,"
    "mobilenetv4_conv_small,mobilenetv3_large_100,efficientnet_b0,convnext_atto,regnety_004"
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=CANDIDATES, help="comma-separated timm names; the first is the reference")
    p.add_argument("--sizes", default="96", help="comma-separated square input sizes")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=3, help="timed steps per candidate per round")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--train-images", type=int, default=4049, help="images per epoch (the recipe's training rows)")
    p.add_argument(
        "--ref-epoch-s",
        type=float,
        default=155.1,
        help=(
            "seconds per epoch of the reference (first model, first size) in a real run: the ablation's "
            "'20 epochs' row took 3102 s for 20 epochs here, per-epoch holdout evaluation included"
        ),
    )
    p.add_argument("--compile", action="store_true", help="also time each model under torch.compile")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "backbones"))
    args = p.parse_args()
    device = torch.device("cpu")
    schema = create_reader("ai6126", args.data).schema()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.compile:
        models = [v for m in models for v in (m, f"{m}+compile")]
    sizes = [int(s) for s in args.sizes.split(",")]
    combos = [(m, s) for s in sizes for m in models]

    steps: dict[str, Step] = {}
    params: dict[str, float] = {}
    for model, _ in combos:
        if model not in params:
            name, _, mode = model.partition("+")
            ns = argparse.Namespace(model=name, nchw=False, compile=mode == "compile", amp="off")
            step = Step(ns, schema, device)
            params[model] = sum(q.numel() for q in step.model.parameters()) / 1e6
            steps[model] = step
    y = {g.name: torch.randint(0, g.num_classes, (args.batch,)) for g in schema.groups}

    rates: dict[tuple[str, int], list[float]] = {c: [] for c in combos}
    first_s: dict[tuple[str, int], float] = {}
    t0 = time.perf_counter()
    for r in range(args.rounds):
        for model, size in combos:
            x = torch.randn(args.batch, 3, size, size).contiguous(memory_format=torch.channels_last)

            def fixed(x: torch.Tensor = x):
                while True:
                    yield x, y

            started = time.perf_counter()
            rate = timed(fixed(), steps[model], lambda b: b, args.warmup, args.steps, device)
            if r == 0:  # the first round's warm-up holds a compiled model's compilation
                first_s[(model, size)] = time.perf_counter() - started - args.steps * args.batch / rate
            rates[(model, size)].append(rate)
            print(f"round {r + 1}/{args.rounds} {model:>24} {size:>4} px: {rate:6.1f} img/s", flush=True)

    ref = combos[0]
    rows = []
    for model, size in combos:
        ratio = statistics.median(a / b for a, b in zip(rates[(model, size)], rates[ref], strict=True))
        epoch_s = args.ref_epoch_s / ratio
        rows.append(
            {
                "model": model,
                "size": size,
                "params_m": round(params[model], 2),
                "img_s": round(statistics.median(rates[(model, size)]), 1),
                "ratio": round(ratio, 3),
                "epoch_s_est": round(epoch_s, 1),
                "epochs_in_50_min": round(50 * 60 / epoch_s, 1),
                "compile_s": round(first_s[(model, size)], 1) if model.endswith("+compile") else None,
            }
        )
    result = {
        "cpu": machine_line(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch": args.batch,
        "rounds": args.rounds,
        "steps": args.steps,
        "reference": {"model": ref[0], "size": ref[1], "epoch_s": args.ref_epoch_s},
        "train_images": args.train_images,
        "wall_s": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Training throughput by backbone (compute only, one optimizer step)",
        "",
        f"`python benchmarks/backbones.py --models {args.models} --sizes {args.sizes} --rounds {args.rounds}"
        f"{' --compile' if args.compile else ''}`; "
        f"{result['cpu']}, {result['threads']} threads, torch {result['torch']}, batch {args.batch}, "
        f"{args.rounds} rounds of {args.steps} steps, {result['wall_s']:.0f} s.",
        "",
        f"ratio = median over rounds of img/s against {ref[0]} at {ref[1]} px in the same round; the epoch time "
        f"scales that row's measured {args.ref_epoch_s:g} s per epoch ({args.train_images} images, end to end).",
        "",
        "| backbone | px | params (M) | img/s | ratio | est. s / epoch | epochs in 50 min |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['size']} | {row['params_m']} | {row['img_s']} | {row['ratio']:.2f}x "
            f"| {row['epoch_s_est']:.0f} | {row['epochs_in_50_min']} |"
        )
    compiled = [r for r in rows if r["compile_s"] is not None]
    if compiled:
        lines += [
            "",
            "One-off compilation (the first step, untimed): "
            + "; ".join(f"{r['model']} at {r['size']} px {r['compile_s']:.0f} s" for r in compiled)
            + ".",
        ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
