"""Training throughput of the pretrained backbones on this CPU: EfficientNet-Lite0/1/2 beside resnet10t,
channels_last against NCHW, glibc's default malloc against fashattr's setting (``fashattr.memory``).

Why this exists: a first fine-tune of Lite0 trained at about 30 img/s at 192 px with almost as much
system time as user time. Each variant runs in a child process of its own (the allocator setting is
per process), timing optimizer steps (forward, backward, AdamW; the six FashionDataset heads and
cross-entropy; batch 32) on fixed random tensors: the model's own ceiling, which the trainer's input
pipeline reaches to within a few percent. The variants take turns for ``--rounds`` rounds so drift on
a shared machine hits all alike; each row reports the median img/s, the share of CPU time spent in the
kernel, the minor page faults per step, and the median over rounds of its ratio to the first variant.

    python benchmarks/pretrained_speed.py
    python benchmarks/pretrained_speed.py --infer --batch 64 --out benchmarks/results/pretrained_speed_infer \
        --variants tf_efficientnet_lite2:260:cl:tuned,tf_efficientnet_lite2:260:cl:default
    python benchmarks/pretrained_speed.py --rounds 2 \
        --variants tf_efficientnet_lite0:192:cl:tuned,tf_efficientnet_lite0:192:cl:default
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_line

DEFAULT = (
    "resnet10t:160:cl:tuned,"
    "tf_efficientnet_lite0:192:cl:tuned,tf_efficientnet_lite0:192:cl:default,tf_efficientnet_lite0:192:nchw:tuned,"
    "efficientnet_lite0:192:cl:tuned,"  # timm's symmetric-padding twin: what TF's dynamic "same" padding costs
    "tf_efficientnet_lite0:224:cl:tuned,tf_efficientnet_lite1:240:cl:tuned,tf_efficientnet_lite2:260:cl:tuned"
)


def child(model: str, size: int, layout: str, malloc: str, batch: int, steps: int, infer: bool) -> dict[str, float]:
    """One variant's measurement, in this (fresh) process: optimizer steps, or forward passes under
    ``torch.inference_mode`` (what the feature cache and prediction run) when ``infer``."""
    if malloc == "tuned":
        from fashattr.memory import keep_freed_memory

        assert keep_freed_memory()
    import torch

    from fashattr.config import LossConfig, ModelConfig
    from fashattr.losses import create_loss
    from fashattr.models import create_model
    from fashattr.schema import ai6126_schema

    torch.manual_seed(0)
    schema = ai6126_schema()
    net = create_model(ModelConfig(backbone=model), schema)
    fmt = torch.channels_last if layout == "cl" else torch.contiguous_format
    net = net.to(memory_format=fmt).train(not infer)
    loss_fn = create_loss(LossConfig(), schema)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=fmt)
    y = {g.name: torch.randint(0, g.num_classes, (batch,)) for g in schema.groups}

    def step() -> None:
        if infer:
            with torch.inference_mode():
                net(x)
            return
        loss = loss_fn(net(x), y)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    step()  # warm-up: oneDNN primitives, the allocator's first growth
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    return {
        "img_s": steps * batch / wall,
        "sys_share": system / max(user + system, 1e-9),
        "faults_per_step": (r1.ru_minflt - r0.ru_minflt) / steps,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=DEFAULT, help="MODEL:SIZE:cl|nchw:tuned|default, comma-separated")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--infer", action="store_true", help="time forward passes (inference) instead of training steps")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "pretrained_speed"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        model, size, layout, malloc = args.child.split(":")
        print(json.dumps(child(model, int(size), layout, malloc, args.batch, args.steps, args.infer)))
        return
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    started = time.perf_counter()
    for r in range(args.rounds):
        for v in variants:
            cmd = [sys.executable, __file__, "--child", v, "--batch", str(args.batch), "--steps", str(args.steps)]
            cmd += ["--infer"] if args.infer else []
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            runs[v].append(json.loads(out))
            print(f"round {r + 1}/{args.rounds} {v:>40}: {runs[v][-1]['img_s']:6.1f} img/s", flush=True)
    ref = variants[0]
    rows = []
    for v in variants:
        model, size, layout, malloc = v.split(":")
        ratios = [a["img_s"] / b["img_s"] for a, b in zip(runs[v], runs[ref], strict=True)]
        rows.append(
            {
                "variant": v,
                "model": model,
                "size": int(size),
                "layout": "channels_last" if layout == "cl" else "NCHW",
                "malloc": "fashattr (keep_freed_memory)" if malloc == "tuned" else "glibc default",
                "img_s": round(statistics.median(x["img_s"] for x in runs[v]), 1),
                "ratio": round(statistics.median(ratios), 3),
                "sys_share": round(statistics.median(x["sys_share"] for x in runs[v]), 3),
                "faults_per_step": round(statistics.median(x["faults_per_step"] for x in runs[v])),
            }
        )
    result = {
        "cpu": machine_line(),
        "command": "python benchmarks/pretrained_speed.py " + " ".join(sys.argv[1:]),
        "batch": args.batch,
        "mode": "inference" if args.infer else "training",
        "steps": args.steps,
        "rounds": args.rounds,
        "threads": runs[ref][0]["threads"],
        "wall_s": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# {'Inference' if args.infer else 'Training'} throughput of the pretrained backbones "
        f"(compute only, {'one forward pass' if args.infer else 'one optimizer step'})",
        "",
        f"`{result['command']}`; {result['cpu']}, {result['threads']} threads, batch {args.batch}, "
        f"{args.rounds} rounds of {args.steps} steps per variant, each in its own process; {result['wall_s']:.0f} s.",
        "",
        f"ratio = median over rounds of img/s against `{ref}` in the same round; kernel share = system time / "
        "(user + system) CPU time; faults = minor page faults per step.",
        "",
        "| backbone | px | layout | malloc | img/s | ratio | kernel share | faults / step |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['size']} | {row['layout']} | {row['malloc']} | {row['img_s']} "
            f"| {row['ratio']:.2f}x | {row['sys_share']:.0%} | {row['faults_per_step']:,} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
