"""Decoding real JPEGs to presized arrays: speed, and whether the result depends on the file format.

For ~200 FashionDataset val images at several sizes, four ways from a file to a letterboxed
``size`` x ``size`` array, all with the same letterbox rule and one bilinear resampling:

- ``full``: full-resolution decode, one plain bilinear resize;
- ``full_reduce``: full decode, then Pillow's ``resize(reducing_gap=2)`` (an integer ``reduce``
  first when shrinking 4x or more, then the resize): ``fashattr.portable.images.load_presized``;
- ``draft``: JPEGs decoded at reduced DCT scale (Pillow's ``draft``, the smallest scale whose
  image still covers ``size``), other formats in full; the previous fashattr behaviour;
- ``draft_rule``: one integer factor ``k`` (1, 2, 4, 8: the largest whose image still covers
  ``size``) for every format: JPEGs drafted at ``1/k``, other formats decoded then ``reduce(k)``.

Format independence: each JPEG is decoded in full and its pixels saved as a lossless PNG, and
again rotated with an EXIF orientation tag (6) saying to rotate them back; a variant is
format-independent when all three files give identical arrays for every image.

    python benchmarks/decode.py                     # 200 val images at 64, 96 and 224 px
    python benchmarks/decode.py --n 50 --sizes 64   # quicker
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageOps

from fashattr.portable.images import PAD_COLOR, letterbox, letterbox_geometry, load_presized, open_image, to_rgb

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data" / "FashionDataset"
Loader = Callable[[Path, int], np.ndarray]


def _full(path: Path, size: int) -> np.ndarray:
    """Full decode, one plain bilinear resize (no integer reduce first)."""
    img = open_image(path)
    w, h, x, y = letterbox_geometry(img.width, img.height, size)
    out = np.empty((size, size, 3), np.uint8)
    out[...] = PAD_COLOR
    out[y : y + h, x : x + w] = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR))
    return out


def _draft(path: Path, size: int) -> np.ndarray:
    """JPEG at the smallest DCT scale still covering ``size`` (Pillow picks it); others in full."""
    with Image.open(path) as img:
        if img.format == "JPEG":
            factor = size / max(img.size)
            img.draft("RGB", (math.ceil(img.width * factor), math.ceil(img.height * factor)))
        img.load()
        return letterbox(to_rgb(ImageOps.exif_transpose(img)), size)


def _rule_k(width: int, height: int, size: int) -> int:
    """The largest of 1, 2, 4, 8 whose reduced image still has a long side of at least ``size``."""
    return max(k for k in (1, 2, 4, 8) if k == 1 or -(-max(width, height) // k) >= size)


def _draft_rule(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as img:
        k = _rule_k(img.width, img.height, size)
        if img.format == "JPEG":
            img.draft("RGB", (-(-img.width // k), -(-img.height // k)))  # DCT scale 1/k exactly
            img.load()
            out = img
        else:
            img.load()
            out = img.reduce(k) if k > 1 else img.copy()
        return letterbox(to_rgb(ImageOps.exif_transpose(out)), size)


VARIANTS: dict[str, Loader] = {
    "full": _full,
    "full_reduce": lambda p, s: load_presized(p, s),  # fashattr's choice
    "draft": _draft,
    "draft_rule": _draft_rule,
}


def _copies(paths: list[Path], folder: Path) -> tuple[list[Path], list[Path]]:
    """Per JPEG: a PNG of its full decoded pixels, and a PNG stored rotated with EXIF orientation 6."""
    pngs, rotated = [], []
    for p in paths:
        img = open_image(p)
        pngs.append(folder / f"{p.stem}.png")
        img.save(pngs[-1])
        stored = img.transpose(Image.Transpose.ROTATE_90)  # orientation 6 = "rotate 90° CW to view"
        exif = Image.Exif()
        exif[0x0112] = 6
        rotated.append(folder / f"{p.stem}_exif6.png")
        stored.save(rotated[-1], exif=exif.tobytes())
    return pngs, rotated


def _equality(loader: Loader, paths: list[Path], pngs: list[Path], rotated: list[Path], size: int) -> dict:
    same_png = same_rot = 0
    max_diff = 0
    for jpg, png, rot in zip(paths, pngs, rotated, strict=True):
        a, b, c = loader(jpg, size), loader(png, size), loader(rot, size)
        same_png += int(np.array_equal(a, b))
        same_rot += int(np.array_equal(a, c))
        max_diff = max(max_diff, int(np.abs(a.astype(int) - b).max()))
    n = len(paths)
    return {"png_identical": same_png, "exif_identical": same_rot, "n": n, "max_abs_diff_png": max_diff}


def _time(loader: Loader, paths: list[Path], size: int) -> float:
    t0 = time.perf_counter()
    for p in paths:
        loader(p, size)
    return (time.perf_counter() - t0) / len(paths) * 1e3  # ms per image


def _cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    return names[0] if names else platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 224])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "decode")
    args = ap.parse_args()
    lines = (args.data / "split" / "val.txt").read_text().split()[: args.n]
    paths = [args.data / line for line in lines]
    result: dict = {
        "command": " ".join(["python", "benchmarks/decode.py", *sys.argv[1:]]),
        "cpu": _cpu_model(),
        "pillow": PIL.__version__,
        "images": f"{len(paths)} FashionDataset val JPEGs ({lines[0]} ...)",
        "rounds": args.rounds,
        "sizes": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        pngs, rotated = _copies(paths, Path(tmp))
        for size in args.sizes:
            entry: dict = {}
            for name, loader in VARIANTS.items():
                entry[name] = {"equality": _equality(loader, paths, pngs, rotated, size), "ms_per_image": []}
            for _ in range(args.rounds):  # variants take turns, so drift of the shared machine hits all alike
                for name, loader in VARIANTS.items():
                    entry[name]["ms_per_image"].append(round(_time(loader, paths, size), 4))
            full = entry["full"]["ms_per_image"]
            for name in VARIANTS:
                times = entry[name]["ms_per_image"]
                entry[name]["median_ms"] = round(statistics.median(times), 4)
                # The median of each round's ratio: the machine's drift between rounds cancels out.
                entry[name]["vs_full"] = round(statistics.median(t / f for t, f in zip(times, full, strict=True)), 3)
            result["sizes"][str(size)] = entry
            print(size, {k: (v["median_ms"], v["equality"]["png_identical"]) for k, v in entry.items()}, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(result))


def _markdown(result: dict) -> str:
    rows = [
        f"`{result['command']}` on {result['cpu']}, Pillow {result['pillow']}, {result['images']}; "
        f"ms / image: median of {result['rounds']} rounds; vs full: median of the per-round ratios.",
        "",
        "| size | variant | ms / image | vs full | identical to lossless PNG | identical to EXIF-rotated PNG |",
        "|---|---|---|---|---|---|",
    ]
    for size, entry in result["sizes"].items():
        for name, v in entry.items():
            eq = v["equality"]
            rows.append(
                f"| {size} | {name} | {v['median_ms']:.3f} | {v['vs_full']:.2f} | "
                f"{eq['png_identical']}/{eq['n']} (max diff {eq['max_abs_diff_png']}) | "
                f"{eq['exif_identical']}/{eq['n']} |"
            )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()
