"""How much a bundle's model gains from batches on this machine: the ceiling on what micro-batching can gain.

A server's sustainable rate is set by the work each request costs: HTTP parsing, the multipart body, the JPEG
decode and resize (all per image, whatever the batching) plus the model's share. Micro-batching can only shrink
the model's share, and only by what the model itself gains from running images in batches. So if the model alone
runs ``r`` times as many images a second in batches of 16 as in batches of 1, no server on this machine can
sustain more than ``r`` times the rate by batching (less, since the per-request work does not shrink).

Per backend (``onnx``, ``onnx-int8`` when the bundle has ``model.int8.onnx``, ``torch``) and thread count
(onnxruntime's / torch's default, and 1), images/s on random uint8 batches of 1, 4 and 16 (``Runtime.logits``,
what ``fashattr serve`` calls, with the bundle's TTA): the variants take turns within each round and each ratio
is the median over rounds of that round's ratio, because this machine's speed drifts.

    python benchmarks/batch_gain.py runs/bundles/cpu_best --out benchmarks/results/batch_gain_cpu_best

Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_line

from fashattr.deploy.runtime import Runtime

BATCHES = (1, 4, 16)


def rate(rt: Runtime, n: int, seconds: float) -> float:
    """Images/s of ``rt.logits`` on one random batch of ``n``, run for about ``seconds`` after a warm-up call."""
    x = np.random.default_rng(n).integers(0, 255, (n, rt.image_size, rt.image_size, 3), dtype=np.uint8)
    rt.logits(x)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        rt.logits(x)
        done += n
    return done / (time.perf_counter() - start)


def measure(bundle: Path, rounds: int, seconds: float) -> list[dict[str, Any]]:
    """Every variant's images/s per batch size and its batch-16 / batch-1 ratio (median over rounds)."""
    backends = ["onnx", *(["onnx-int8"] if (bundle / "model.int8.onnx").is_file() else []), "torch"]
    torch_default = torch.get_num_threads()
    variants = {(b, t): Runtime.from_bundle(bundle, backend=b, threads=t) for b in backends for t in (None, 1)}
    runs: dict[tuple[str, int | None], list[dict[int, float]]] = {k: [] for k in variants}
    for r in range(rounds):
        keys = list(variants)
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:  # a rotated order: drift hits all alike
            if key[0] == "torch":  # torch's thread count is per process: set it for each torch variant's turn
                torch.set_num_threads(key[1] or torch_default)
            runs[key].append({n: rate(variants[key], n, seconds) for n in BATCHES})
            print(
                f"round {r + 1}/{rounds} {key[0]} threads={key[1] or 'default'}: "
                + ", ".join(f"{n}: {v:.1f}" for n, v in runs[key][-1].items()),
                flush=True,
            )
    out = []
    for (backend, threads), rs in runs.items():
        out.append(
            {
                "backend": backend,
                "threads": threads or "default",
                "img_s": {str(n): round(statistics.median(x[n] for x in rs), 1) for n in BATCHES},
                "ratio_16_1": round(statistics.median(x[16] / x[1] for x in rs), 2),
                "ratio_4_1": round(statistics.median(x[4] / x[1] for x in rs), 2),
            }
        )
    return out


def write_md(res: dict[str, Any], path: Path) -> None:
    best = max(res["rows"], key=lambda r: r["ratio_16_1"])
    lines = [
        f"# What the model gains from batches ({res['bundle']}, {res['image_size']} px, {res['machine']})",
        "",
        f"`{res['command']}`: random uint8 batches through `Runtime.logits` (the bundle's TTA included), "
        f"{res['rounds']} rounds of {res['seconds']:g} s per batch size, variants in a rotated order; "
        "images/s and ratios are medians over rounds.",
        "",
        "| backend | threads | batch 1 img/s | batch 4 img/s | batch 16 img/s | 4 vs 1 | 16 vs 1 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        s = r["img_s"]
        lines.append(
            f"| {r['backend']} | {r['threads']} | {s['1']} | {s['4']} | {s['16']} | {r['ratio_4_1']}x | "
            f"**{r['ratio_16_1']}x** |"
        )
    lines += [
        "",
        f"- The largest gain from batches of 16 over batches of 1: **{best['ratio_16_1']}x** ({best['backend']}, "
        f"threads {best['threads']}). Micro-batching cannot raise a server's sustainable rate by more than the "
        "model gains, since the per-request work (HTTP, multipart, JPEG decode) does not batch.",
    ]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="per batch size, variant and round")
    ap.add_argument("--out", default="benchmarks/results/batch_gain")
    args = ap.parse_args()
    bundle = Path(args.bundle)
    rows = measure(bundle, args.rounds, args.seconds)
    config = json.loads((bundle / "config.json").read_text()) if (bundle / "config.json").is_file() else {}
    res = {
        "command": "python benchmarks/batch_gain.py " + " ".join(sys.argv[1:]),
        "bundle": str(bundle),
        "image_size": config.get("preprocess", {}).get("image_size"),
        "machine": machine_line(),
        "rounds": args.rounds,
        "seconds": args.seconds,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    write_md(res, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
