"""Background removal: what it costs in the decode-once cache, and what GrabCut does to the CPU recipe.

Speed (default): cache build time per image, one process, of ~100 real FashionDataset photos (every 70th of
img/) at 64 px, for: the photos as they are (``keep``), GrabCut at its default working size (128 px long
side, 3 iterations), GrabCut on the full photo (for the cost of that choice), and rembg's ``u2net_custom``
session on two models of realistic cost built here: U²-Net and U²-Netp, the architectures of rembg's
``u2net.onnx`` / ``u2netp.onnx`` (RSU blocks, six side outputs) with random weights, exported to ONNX.
No trained U²-Net can be downloaded here, so the masks are meaningless; the compute is the real one.

    python benchmarks/background.py [--n 100] [--out benchmarks/results/background]

Accuracy (``--accuracy``): trains ``configs/recipes/cpu_quick.yaml`` twice with the same seed, once with
``data.background=keep`` and once with ``data.background=remove`` (GrabCut), one after the other, and reads
``fashattr eval RUN --split test_holdout`` of each.

    python benchmarks/background.py --accuracy [--runs runs/background]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fashattr.data.cache import cache_images
from fashattr.data.formats import create_reader
from fashattr.data.table import Table
from fashattr.portable.background import Background, model_sha256

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("FASHATTR_DATA", ROOT.parent / "shared" / "data" / "FashionDataset"))
FILL = (124, 116, 104)  # the letterbox fill of the ImageNet mean


# ---------------------------------------------------------------------------------------------- U²-Net
class REBNConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation), nn.BatchNorm2d(cout), nn.ReLU(True)
        )


def up_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=False)


class RSU(nn.Module):
    """U²-Net's residual U-block of ``height`` levels (RSU-7 ... RSU-4): pooling encoder, dilated bottom."""

    def __init__(self, height: int, cin: int, mid: int, cout: int) -> None:
        super().__init__()
        self.inp = REBNConv(cin, cout)
        self.enc = nn.ModuleList([REBNConv(cout, mid)] + [REBNConv(mid, mid) for _ in range(height - 2)])
        self.bottom = REBNConv(mid, mid, 2)
        self.dec = nn.ModuleList([REBNConv(2 * mid, mid) for _ in range(height - 2)] + [REBNConv(2 * mid, cout)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hin = self.inp(x)
        feats, h = [], hin
        for i, conv in enumerate(self.enc):
            if i > 0:
                h = F.max_pool2d(h, 2, 2, ceil_mode=True)
            h = conv(h)
            feats.append(h)
        d = self.bottom(h)
        for i, conv in enumerate(self.dec):
            skip = feats[-1 - i]
            d = conv(torch.cat([up_like(d, skip), skip], 1))
        return d + hin


class RSUF(nn.Module):
    """RSU-4F: dilations 1, 2, 4, 8 instead of pooling."""

    def __init__(self, cin: int, mid: int, cout: int) -> None:
        super().__init__()
        self.inp = REBNConv(cin, cout)
        self.enc = nn.ModuleList([REBNConv(cout, mid, 1), REBNConv(mid, mid, 2), REBNConv(mid, mid, 4)])
        self.bottom = REBNConv(mid, mid, 8)
        self.dec = nn.ModuleList([REBNConv(2 * mid, mid, 4), REBNConv(2 * mid, mid, 2), REBNConv(2 * mid, cout, 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hin = self.inp(x)
        feats, h = [], hin
        for conv in self.enc:
            h = conv(h)
            feats.append(h)
        d = self.bottom(h)
        for i, conv in enumerate(self.dec):
            d = conv(torch.cat([d, feats[-1 - i]], 1))
        return d + hin


class U2Net(nn.Module):
    """U²-Net (``small=False``, 44.0 M parameters, rembg's u2net.onnx) or U²-Netp (1.1 M, u2netp.onnx)."""

    def __init__(self, small: bool = False) -> None:
        super().__init__()
        if small:
            enc = [(7, 3, 16, 64), (6, 64, 16, 64), (5, 64, 16, 64), (4, 64, 16, 64), (0, 64, 16, 64), (0, 64, 16, 64)]
            dec = [(0, 128, 16, 64), (4, 128, 16, 64), (5, 128, 16, 64), (6, 128, 16, 64), (7, 128, 16, 64)]
        else:
            enc = [(7, 3, 32, 64), (6, 64, 32, 128), (5, 128, 64, 256), (4, 256, 128, 512)]
            enc += [(0, 512, 256, 512), (0, 512, 256, 512)]
            dec = [(0, 1024, 256, 512), (4, 1024, 128, 256), (5, 512, 64, 128), (6, 256, 32, 64), (7, 128, 16, 64)]

        def block(h: int, cin: int, mid: int, cout: int) -> nn.Module:
            return RSUF(cin, mid, cout) if h == 0 else RSU(h, cin, mid, cout)

        self.enc = nn.ModuleList([block(*b) for b in enc])
        self.dec = nn.ModuleList([block(*b) for b in dec])
        side_in = [*[b[3] for b in dec][::-1], enc[-1][3]]  # stage1d ... stage5d, stage6
        self.side = nn.ModuleList([nn.Conv2d(c, 1, 3, padding=1) for c in side_in])
        self.out = nn.Conv2d(6, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats, h = [], x
        for i, stage in enumerate(self.enc):
            if i > 0:
                h = F.max_pool2d(h, 2, 2, ceil_mode=True)
            h = stage(h)
            feats.append(h)
        decoded, d = [], feats[-1]
        for i, stage in enumerate(self.dec):
            skip = feats[-2 - i]
            d = stage(torch.cat([up_like(d, skip), skip], 1))
            decoded.append(d)
        maps = [*decoded[::-1], feats[-1]]  # stage1d (full size) ... stage5d, stage6
        sides = [up_like(conv(m), x) for conv, m in zip(self.side, maps, strict=True)]
        d0 = self.out(torch.cat(sides, 1))
        return tuple(torch.sigmoid(s) for s in (d0, *sides))


def export_u2net(path: Path, small: bool) -> dict[str, Any]:
    """Random-init U²-Net(p) exported as rembg's files are: ``input.1`` (1, 3, 320, 320), seven masks out."""
    torch.manual_seed(0)
    model = U2Net(small).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 320, 320),), str(path), input_names=["input.1"], dynamo=False)
    params = sum(p.numel() for p in model.parameters())
    return {"params_million": round(params / 1e6, 2), "file_mb": round(path.stat().st_size / 1e6, 1)}


# ---------------------------------------------------------------------------------------------- speed
def photos(n: int) -> Table:
    table = create_reader("ai6126", str(DATA), {}).read("train")
    step = max(1, len(table) // n)
    return Table(table.root, table.paths[::step][:n], split="train")


def time_build(table: Table, size: int, step: Background | None) -> dict[str, float]:
    """Wall and CPU seconds of one cache build of ``table`` (one process, a fresh cache folder), after a
    warm-up image (imports, the rembg session) that is not counted."""
    if step is not None:
        step.load()
        warm = Table(table.root, table.paths[:1], split="warm")
        with tempfile.TemporaryDirectory() as d:
            cache_images(warm, size, cache_dir=d, workers=1, progress=False, fill=FILL, background=step)
    with tempfile.TemporaryDirectory() as d:
        wall, cpu = time.perf_counter(), time.process_time()
        cache_images(table, size, cache_dir=d, workers=1, progress=False, fill=FILL, background=step)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"ms_per_image": round(1000 * wall / len(table), 1), "cpu_ms_per_image": round(1000 * cpu / len(table), 1)}


def speed(args: argparse.Namespace) -> dict[str, Any]:
    table = photos(args.n)
    load_before = os.getloadavg()
    out: dict[str, Any] = {"images": len(table), "image_size": args.size, "load_before": load_before}
    with tempfile.TemporaryDirectory() as models:
        u2 = Path(models) / "u2net.onnx"
        u2p = Path(models) / "u2netp.onnx"
        out["models"] = {"u2net": export_u2net(u2, False), "u2netp": export_u2net(u2p, True)}
        methods: dict[str, Background | None] = {
            "keep": None,
            "grabcut (128 px, 3 iterations)": Background("grabcut", FILL),
            "grabcut (full photo, 3 iterations)": Background("grabcut", FILL, work_size=100_000),
            "rembg u2netp (random weights)": Background("rembg", FILL, str(u2p), model_sha256(u2p)),
            "rembg u2net (random weights)": Background("rembg", FILL, str(u2), model_sha256(u2)),
        }
        out["methods"] = {}
        for name, step in methods.items():
            out["methods"][name] = time_build(table, args.size, step)
            print(name, out["methods"][name], flush=True)
    out["load_after"] = os.getloadavg()
    return out


# ---------------------------------------------------------------------------------------------- accuracy
def accuracy(args: argparse.Namespace) -> dict[str, Any]:
    fashattr = [sys.executable, "-m", "fashattr"]
    out: dict[str, Any] = {"recipe": "configs/recipes/cpu_quick.yaml", "load_before": os.getloadavg(), "runs": {}}
    for name, background in (("keep", "keep"), ("grabcut", "remove")):
        run = Path(args.runs) / name
        overrides = [f"data.background={background}", f"out_dir={args.runs}", f"name={name}"]
        wall = time.perf_counter()
        subprocess.run([*fashattr, "train", "configs/recipes/cpu_quick.yaml", *overrides], check=True, cwd=ROOT)
        wall = time.perf_counter() - wall
        ev = subprocess.run(
            [*fashattr, "eval", str(run), "--split", "test_holdout"],
            check=True,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        summary = json.loads((ROOT / run / "summary.json").read_text())
        out["runs"][name] = {
            "train_wall_s": round(wall, 1),
            "eval_table": ev.stdout,
            "test_holdout": summary.get("test_holdout"),
            "test_holdout_images": summary.get("test_holdout_images"),
            "best_epoch": summary.get("best_epoch"),
        }
        print(name, ev.stdout, flush=True)
    out["load_after"] = os.getloadavg()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="real photos to time")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--accuracy", action="store_true", help="train cpu_quick with keep and with GrabCut")
    ap.add_argument("--runs", default="runs/background")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "background"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    result = accuracy(args) if args.accuracy else speed(args)
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}
    path = Path(f"{args.out}_{'accuracy' if args.accuracy else 'speed'}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
