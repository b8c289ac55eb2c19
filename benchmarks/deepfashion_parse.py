"""Reading the DeepFashion attribute benchmark at full size: time and peak memory.

Writes a benchmark tree with the real file sizes (289,222 images, 1000 attributes, 50
categories; partition 209,222 train / 40,000 val / 40,000 test; list_attr_img.txt about
880 MB) into ``--workdir``. Every image is a hard link to one small JPEG, so the reader's
existence check runs as on the real tree. Each measurement runs in a fresh process, so peak
RSS is that read's alone:

- ``category``: ``groups: [category]`` (the attribute file is never opened);
- ``all``: category + the 5 attribute groups for one split.

    python benchmarks/deepfashion_parse.py                    # train split
    python benchmarks/deepfashion_parse.py --split test
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent
N_IMAGES, N_ATTR, N_CAT = 289_222, 1000, 50
SPLITS = (("train", 209_222), ("val", 40_000), ("test", 40_000))


def generate(root: Path, seed: int = 0) -> None:
    """The six list files at full size, plus hard-linked images; skipped when already there."""
    if (root / "complete").exists():
        return
    rng = np.random.default_rng(seed)
    for d in ("Anno", "Eval", "img"):
        (root / d).mkdir(parents=True, exist_ok=True)
    paths = [f"img/Item_{i // 600:04d}/img_{i:08d}.jpg" for i in range(N_IMAGES)]
    for d in sorted({p.rsplit("/", 1)[0] for p in paths}):
        (root / d).mkdir(exist_ok=True)
    for i, p in enumerate(paths):
        source = root / f"source_{i // 60_000}.jpg"  # ext4 allows 65,000 links to one file
        if not source.exists():
            Image.new("RGB", (32, 32), (120, 80, 60)).save(source)
        if not (root / p).exists():
            os.link(source, root / p)
    anno = root / "Anno"
    with (anno / "list_category_cloth.txt").open("w") as f:
        f.write(f"{N_CAT}\ncategory_name  category_type\n")
        f.writelines(f"Category_{c:02d}{'':<12}{1 + c % 3}\n" for c in range(N_CAT))
    with (anno / "list_attr_cloth.txt").open("w") as f:
        f.write(f"{N_ATTR}\nattribute_name  attribute_type\n")
        f.writelines(f"attribute number {a:<20}{1 + a % 5}\n" for a in range(N_ATTR))
    pool = [" ".join(f"{v:2d}" for v in rng.choice([-1] * 30 + [1, 0], N_ATTR)) for _ in range(257)]
    cats = rng.integers(1, 47, N_IMAGES)
    splits = [name for name, n in SPLITS for _ in range(n)]
    with (anno / "list_attr_img.txt").open("w") as f:
        f.write(f"{N_IMAGES}\nimage_name  attribute_labels\n")
        for i, p in enumerate(paths):
            f.write(f"{p:<72}{pool[i % len(pool)]}\n")
    with (anno / "list_category_img.txt").open("w") as f:
        f.write(f"{N_IMAGES}\nimage_name  category_label\n")
        f.writelines(f"{p:<72}{c}\n" for p, c in zip(paths, cats, strict=True))
    with (anno / "list_bbox.txt").open("w") as f:
        f.write(f"{N_IMAGES}\nimage_name  x_1  y_1  x_2  y_2\n")
        f.writelines(f"{p:<72}072 079 232 273\n" for p in paths)
    with (root / "Eval" / "list_eval_partition.txt").open("w") as f:
        f.write(f"{N_IMAGES}\nimage_name  evaluation_status\n")
        f.writelines(f"{p:<72}{s}\n" for p, s in zip(paths, splits, strict=True))
    (root / "complete").touch()


def measure(root: str, split: str, groups: list[str]) -> dict:
    """One read in this process: seconds, peak RSS and the labels' own bytes."""
    from fashattr.data.formats import create_reader

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    table = create_reader("deepfashion", root, {"groups": groups}).read(split)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert table.labels is not None
    label_mb = sum(v.nbytes for v in table.labels.values()) / 2**20
    return {
        "split": split,
        "groups": groups,
        "rows": len(table),
        "seconds": round(seconds, 2),
        "rows_per_s": round(len(table) / seconds),
        "rss_before_mb": round(base),
        "peak_rss_mb": round(peak),
        "peak_increase_mb": round(peak - base),
        "labels_mb": round(label_mb, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="/tmp/fashattr_deepfashion_bench")
    p.add_argument("--split", default="train")
    p.add_argument("--out", default=str(ROOT / "results"))
    p.add_argument("--measure", nargs=3, metavar=("ROOT", "SPLIT", "GROUPS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:  # the child process
        root, split, groups = args.measure
        print(json.dumps(measure(root, split, groups.split(","))))
        return
    root = Path(args.workdir)
    start = time.perf_counter()
    generate(root)
    print(f"benchmark tree ready in {time.perf_counter() - start:.0f} s at {root}", file=sys.stderr)
    size_mb = (root / "Anno" / "list_attr_img.txt").stat().st_size / 2**20
    result: dict = {"list_attr_img_mb": round(size_mb), "images": N_IMAGES, "attributes": N_ATTR, "runs": {}}
    for name, groups in (("category", "category"), ("all", "category,texture,fabric,shape,part,style")):
        cmd = [sys.executable, __file__, "--measure", str(root), args.split, groups]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        result["runs"][name] = json.loads(out.stdout)
        print(name, result["runs"][name], file=sys.stderr)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"deepfashion_parse_{args.split}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
