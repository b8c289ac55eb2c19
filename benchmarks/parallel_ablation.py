"""An ablation's (row, seed) runs several at a time, for a machine with cores (and a GPU) to spare.

    python benchmarks/parallel_ablation.py benchmarks/pretrained_gpu_sweep.yaml --jobs 4 --deadline 480 \\
        --plan "cpu_pretrained:0,11,12" "224 px:0,11,12" "layer decay 0.8:0" ... \\
        --set train.threads=4 data.workers=4 --out runs/gpu_sweep --results benchmarks/results/pretrained_gpu_sweep

Each (row, seed) of ``--plan`` (in that order: the first ones matter most) is one
``accuracy_ablation.py SPEC --only ROW --seeds SEED`` process; ``--jobs`` of them run at once, and none starts after
``--deadline`` seconds (the ones running are then stopped, their rows left out of the table). The parts are merged
into one RESULTS.json / RESULTS.md in accuracy_ablation's format, with the machine line of the host they ran on.
On a 2-core CPU run one job at a time (``accuracy_ablation.py`` itself): two torch jobs slow each other several-fold.
Every row must be standalone (none may need another row's model).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_ablation import METRICS, markdown, plan, slug, summarize
from machine import machine_line

HERE = Path(__file__).resolve().parent


def jobs_of(plan_args: list[str]) -> list[tuple[str, int]]:
    """``"ROW:S1,S2"`` arguments as (row, seed) pairs, in the order given: list first what matters most, since a
    deadline drops the last ones."""
    jobs = []
    for item in plan_args:
        row, _, seeds = item.rpartition(":")
        jobs += [(row, int(s)) for s in seeds.split(",")]
    return jobs


def merge(parts: list[Path]) -> dict[str, Any]:
    """The per-seed results of finished parts, keyed ``"row|seed"`` as accuracy_ablation's state keeps them."""
    results: dict[str, Any] = {}
    for part in parts:
        if not part.is_file():
            continue
        recorded = json.loads(part.read_text())
        meta = recorded["meta"]
        for entry in recorded["rows"]:
            for i, seed in enumerate(meta["seeds"]):
                results[f"{entry['name']}|{seed}"] = {
                    "command": entry["command"],
                    "train_wall_s": entry["train_wall_s"],
                    "cpu": entry["cpu"],
                    "metrics": {m: entry[m]["per_seed"][i] for m, _ in METRICS} | {"images": meta["test_images"]},
                }
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec")
    ap.add_argument("--plan", nargs="+", required=True, metavar="ROW:SEEDS")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--deadline", type=float, default=float("inf"), help="seconds after which no job starts")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides added to every row")
    ap.add_argument("--out", default="runs/parallel_ablation")
    ap.add_argument("--results", default="benchmarks/results/parallel_ablation")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    spec = yaml.safe_load(Path(args.spec).read_text())
    rows = plan(spec, args.set)
    names = {r["name"] for r in rows}
    jobs = jobs_of(args.plan)
    unknown = sorted({row for row, _ in jobs} - names)
    if unknown:
        raise SystemExit(f"--plan names rows the spec does not have: {unknown}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start, load_before = time.monotonic(), [round(x, 2) for x in os.getloadavg()]
    running: list[tuple[subprocess.Popen, Any, str]] = []  # (process, its open log, what it runs)
    parts, pending = [], list(jobs)
    while pending or running:
        for proc, log, what in list(running):
            if proc.poll() is not None:
                running.remove((proc, log, what))
                log.close()
                print(f"{time.monotonic() - start:6.0f} s  done {what} (exit {proc.returncode})", flush=True)
        late = time.monotonic() - start > args.deadline
        if late and pending:
            print(f"deadline: {len(pending)} jobs not started: {pending}", flush=True)
            pending = []
        while pending and len(running) < args.jobs:
            row, seed = pending.pop(0)
            part = out / "parts" / f"{slug(row)}-s{seed}"
            part.parent.mkdir(parents=True, exist_ok=True)
            cmd = [
                sys.executable,
                str(HERE / "accuracy_ablation.py"),
                args.spec,
                "--only",
                row,
                "--seeds",
                str(seed),
                "--out",
                str(out),
                "--results",
                str(part),
                "--set",
                *args.set,
            ]
            log = (out / f"{slug(row)}-s{seed}.driver.log").open("w")  # closed when the job ends
            running.append(
                (
                    subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True),
                    log,
                    f"{row} seed {seed}",
                )
            )
            parts.append(Path(f"{part}.json"))
            print(f"{time.monotonic() - start:6.0f} s  start {row} seed {seed}", flush=True)
        if late and running and time.monotonic() - start > args.deadline * 1.25:
            for proc, log, what in running:
                os.killpg(proc.pid, signal.SIGTERM)  # the job and the `fashattr` processes it started
                proc.wait()
                log.close()
                print(f"stopped {what}: past the deadline", flush=True)
            running = []
        time.sleep(1)
    results = merge(parts)
    seeds = sorted({int(k.rsplit("|", 1)[1]) for k in results})
    table = summarize(rows, results, seeds)  # each row over the seeds it has
    test_images = next((r["metrics"]["images"] for r in results.values()), None)
    meta = {
        "spec": args.spec,
        "seeds": seeds,
        "set": args.set,
        "resamples": 1000,
        "test_images": test_images,
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "cpu": machine_line(),
        "note": args.note,
        "jobs": args.jobs,
        "wall_s": round(time.monotonic() - start, 1),
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.results}.json").write_text(json.dumps({"meta": meta, "rows": table}, indent=1) + "\n")
    Path(f"{args.results}.md").write_text(markdown(table, meta))
    print(f"written: {args.results}.json and .md ({len(results)} runs in {meta['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
