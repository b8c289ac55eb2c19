"""Every number the README quotes about runs on the real data and the demo, from one script.

Each job runs a README command in its own process (so its wall time and peak RSS are its own)
and records what the README quotes:

- ``demo``: ``fashattr demo`` end to end (synthetic data, train, eval, predict): wall time and
  the synthetic val split's metrics.
- ``quick_s0`` / ``quick_s0_again`` / ``quick_s1`` / ``quick_s2``: ``cpu_quick`` with seeds 0, 0
  again (is a re-run on the same machine and thread count bit-for-bit the same?), 1 and 2 (the
  spread from the seed alone).
- ``resnet18_s0`` / ``resnet18_s1``: the ``cpu_resnet18`` recipe with seeds 0 and 1.
- ``lr_find``: ``fashattr lr-find`` on ``resnet34_fine_tune`` from scratch at 64 px (heads only,
  as in that recipe's frozen first epoch): both suggestions.

Every training job reports two numbers per metric: on the *selection holdout* (the split the
best epoch was chosen on: optimistic) and on the *test holdout* (``data.test_holdout``: a fixed
stratified part of train that neither training nor selection saw; the honest one). Results are
merged into ``benchmarks/results/readme_numbers.{json,md}`` job by job, so an interrupted run
keeps what it finished.

    python benchmarks/readme_numbers.py                     # every job (about 45 min here)
    python benchmarks/readme_numbers.py --jobs demo lr_find
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs" / "readme_numbers"
RECIPES = ROOT / "configs" / "recipes"
COMMON = ["train.device=cpu", "train.threads=2", "train.progress=false", f"out_dir={RUNS}"]


def _train(recipe: str, seed: int, name: str) -> list[str]:
    return ["train", str(RECIPES / f"{recipe}.yaml"), *COMMON, f"train.seed={seed}", f"name={name}"]


JOBS: dict[str, list[str]] = {
    "demo": ["demo", "--out", str(RUNS / "demo")],
    "quick_s0": _train("cpu_quick", 0, "quick_s0"),
    "quick_s0_again": _train("cpu_quick", 0, "quick_s0_again"),
    "quick_s1": _train("cpu_quick", 1, "quick_s1"),
    "quick_s2": _train("cpu_quick", 2, "quick_s2"),
    "resnet18_s0": _train("cpu_resnet18", 0, "resnet18_s0"),
    "resnet18_s1": _train("cpu_resnet18", 1, "resnet18_s1"),
    "lr_find": [
        "lr-find",
        str(RECIPES / "resnet34_fine_tune.yaml"),
        "model.pretrained=false",
        "data.image_size=64",
        "train.threads=2",
        "train.device=cpu",
        "--out",
        str(RUNS / "lr_find"),
    ],
}
HEADLINE = ("avg_class_acc", "overall_acc", "exact_match")


def cpu_info() -> dict[str, str]:
    """The CPU model and its vector-instruction flags: speed numbers only compare within one CPU."""
    info = {"machine": platform.machine(), "cores": str(os.cpu_count())}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return info
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            info["model"] = value.strip()
        elif key.strip() == "Flags":
            wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "fma")
            info["flags"] = " ".join(f for f in value.split() if f in wanted)
    return info


def run_job(name: str) -> dict[str, Any]:
    """Run one job in a child process; wall time and that child's own peak RSS."""
    cmd = [sys.executable, "-m", "fashattr", *JOBS[name]]
    print("$", "fashattr", " ".join(JOBS[name]), file=sys.stderr, flush=True)
    if name == "demo" and (RUNS / "demo").exists():
        shutil.rmtree(RUNS / "demo")  # the demo's first step draws its data: time it from nothing
    start = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=ROOT)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"job {name} failed (exit {os.waitstatus_to_exitcode(status)})")
    row: dict[str, Any] = {
        "command": "fashattr " + " ".join(a.replace(str(ROOT) + "/", "") for a in JOBS[name]),
        "process_s": round(wall, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),  # Linux reports KiB
    }
    if name == "demo":
        report = json.loads((RUNS / "demo" / "run" / "eval_val.json").read_text())
        row["val"] = {k: round(report["summary"][k], 4) for k in HEADLINE}
    elif name == "lr_find":
        found = json.loads((RUNS / "lr_find" / "lr_find.json").read_text())
        row["suggestions"] = {k: v for k, v in found.items() if k in ("suggestion", "valley", "steepest")}
        shutil.copy(RUNS / "lr_find" / "lr_find.png", RESULTS / "lr_find_resnet34.png")
    else:
        row.update(_train_numbers(RUNS / JOBS[name][-1].removeprefix("name=")))
    return row


def _train_numbers(run: Path) -> dict[str, Any]:
    summary = json.loads((run / "summary.json").read_text())
    test = summary.get("test_holdout") or {}
    test = test.get("metrics", test)
    return {
        "best_epoch": summary["best_epoch"],
        "epochs_run": summary["epochs_run"],
        "train_s": summary["wall_s"],
        "parameters_m": round(summary["parameters"] / 1e6, 2),
        "selection_holdout": {k: round(summary["best"][k], 4) for k in HEADLINE},
        "test_holdout": {k: round(test[k], 4) for k in HEADLINE if k in test},
        "test_holdout_groups": {k: round(v, 4) for k, v in test.items() if "/" in k},
    }


def write(rows: dict[str, dict[str, Any]]) -> None:
    """Merge ``rows`` into readme_numbers.json and rewrite readme_numbers.md from it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "readme_numbers.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    jobs = old.get("jobs", {}) | rows
    path.write_text(json.dumps({"cpu": cpu_info(), "jobs": jobs}, indent=2) + "\n")
    lines = [
        f"CPU: {cpu_info().get('model', '?')}, {os.cpu_count()} cores; 2 threads per run",
        "",
        "| job | command | selection holdout avg/overall | test holdout avg/overall | best epoch | train s |"
        " process s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in jobs.items():
        if "selection_holdout" not in r:
            continue
        sel, test = r["selection_holdout"], r["test_holdout"]
        lines.append(
            f"| {name} | `{r['command']}` | {sel['avg_class_acc']:.4f} / {sel['overall_acc']:.4f} | "
            f"{test.get('avg_class_acc', float('nan')):.4f} / {test.get('overall_acc', float('nan')):.4f} | "
            f"{r['best_epoch']}/{r['epochs_run']} | {r['train_s']:.0f} | {r['process_s']:.0f} | {r['peak_rss_mb']} |"
        )
    if "demo" in jobs:
        d = jobs["demo"]
        lines += ["", f"demo: `{d['command']}` {d['process_s']:.0f} s, val {d['val']}"]
    if "lr_find" in jobs:
        lines += ["", f"lr-find: `{jobs['lr_find']['command']}` {jobs['lr_find']['suggestions']}"]
    (RESULTS / "readme_numbers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stderr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    args = p.parse_args()
    for name in args.jobs:
        write({name: run_job(name)})


if __name__ == "__main__":
    main()
