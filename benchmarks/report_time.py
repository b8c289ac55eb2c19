"""How long ``fashattr report`` takes on the FashionDataset: the README's CPU recipe run (cpu_resnet18,
96 px), its test holdout (501 images, 6 groups), Grad-CAM on 32 images, 1000 bootstrap resamples.
The target: under 60 s on this 2-core CPU.

Each repeat builds the whole report in this process (model load, cached pixels, inference, every
figure in PNG + SVG, the HTML and JSON) and records the time of each stage (``report.json``
``seconds``) and the cores other processes used meanwhile (the machine is shared). The first repeat
also warms the image cache and imports; later repeats show the steady state.

With ``--example DIR`` it then writes the committed example report (fewer Grad-CAM images, the
figures the page shows, and a screenshot of the page in headless chromium).

    python benchmarks/report_time.py runs/readme_numbers/resnet18_s0 --example docs/example_report
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def timed_report(run: str, split: str, out: Path, gradcam: int) -> dict[str, Any]:
    from inference import CpuMeter  # benchmarks/inference.py: one way of counting the other jobs' cores

    from fashattr.report.build import build_report

    meter = CpuMeter()
    meter.start()
    build_report([run], out, split=split, options={"gradcam_images": gradcam})
    wall = time.perf_counter() - meter.t0
    usage = {
        "wall_s": round(wall, 2),
        "own_cpu_s": round(meter._own() - meter.o0, 2),
        "foreign_cores": meter.foreign_cores(),
    }
    report = json.loads((out / "report.json").read_text())
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {**usage, "stages_s": report["seconds"], "images": len(report["images"]), "output_mb": round(size / 1e6, 2)}


def write_example(run: str, split: str, folder: Path, gradcam: int) -> dict[str, Any]:
    """The example report: what the page shows (and the PNG + SVG of every plot), plus its screenshot.
    Photo grids keep only the JPEG the page shows; their PNG and SVG are left out to keep the folder small."""
    from fashattr.report.build import build_report

    if folder.exists():
        shutil.rmtree(folder)
    html = build_report([run], folder, split=split, options={"gradcam_images": gradcam, "gradcam_correct": 2})
    dropped = []
    for jpg in (folder / "figures").glob("*.jpg"):
        for ext in (".png", ".svg"):
            big = jpg.with_suffix(ext)
            if big.exists():
                big.unlink()
                dropped.append(big.name)
    (folder / "README.md").write_text(
        "# Example report\n\n"
        f"`fashattr report {run} --split {split} --gradcam {gradcam}`, written by `benchmarks/report_time.py "
        "--example`. Open `report.html` in a browser (it needs no network).\n\n"
        "To keep the repository small, the photo grids (top losses, Grad-CAM) are kept only as the JPEG the page "
        "shows; `fashattr report` also writes them as PNG and SVG. The plots are here in PNG and SVG.\n"
    )
    sys.path.insert(0, str(ROOT / "tests"))
    from browser import open_page

    with open_page(1280, 900) as (page, log):
        page.goto(html.resolve().as_uri())
        page.wait_for_load_state("load")
        broken = page.evaluate("Array.from(document.images).filter(i => !(i.naturalWidth > 0)).map(i => i.src)")
        page.screenshot(path=str(folder / "screenshot.png"))
    if broken or log.problems():
        raise SystemExit(f"the example page has problems: {broken} {log.problems()}")
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {"folder": str(folder.relative_to(ROOT)), "mb": round(size / 1e6, 2), "left_out": sorted(dropped)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--split", default="test_holdout")
    p.add_argument("--gradcam", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="/tmp/report_time")
    p.add_argument("--example", help="also write the example report into this folder")
    p.add_argument("--example-gradcam", type=int, default=8)
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "report_time.json"))
    args = p.parse_args()

    import torch

    repeats = []
    for i in range(args.repeats):
        r = timed_report(args.run, args.split, Path(args.out) / f"r{i}", args.gradcam)
        print(f"repeat {i + 1}: {r['wall_s']:.1f} s (other processes: {r['foreign_cores']} cores) {r['stages_s']}")
        repeats.append(r)
    walls = [r["wall_s"] for r in repeats]
    result: dict[str, Any] = {
        "command": f"python benchmarks/report_time.py {args.run} --split {args.split} --gradcam {args.gradcam}",
        "run": args.run,
        "split": args.split,
        "gradcam_images": args.gradcam,
        "target_s": 60,
        "best_s": min(walls),
        "worst_s": max(walls),
        "under_target": max(walls) < 60,
        "repeats": repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
        },
        "note": "foreign_cores: CPU other processes used during the repeat (other sessions share this 2-core machine).",
    }
    if args.example:
        result["example"] = write_example(args.run, args.split, Path(args.example).resolve(), args.example_gradcam)
        print(f"example: {result['example']}")
    Path(args.results).write_text(json.dumps(result, indent=1) + "\n")
    print(f"best {min(walls):.1f} s, worst {max(walls):.1f} s; written {args.results}")


if __name__ == "__main__":
    main()
