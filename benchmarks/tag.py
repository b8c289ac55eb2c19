"""End-to-end `fashattr tag` throughput: JPEG files to committed rows, against the model alone.

Side by side in one run, on the real FashionDataset JPEGs and one bundle (the README's CPU recipe,
resnet18 96 px, int8 ONNX):

- **model only**: random uint8 batches through ``Runtime.logits`` (the ceiling), measured right
  before and after each end-to-end run; each ratio uses the mean of its two neighbours;
- **end to end**: ``catalog.tag.tag`` from the files to committed rows (hash, skip check, decode
  threads, model, decode, one transaction per batch) for the local engine and the Ray engine
  (2 actors of 1 thread) into SQLite and into PostgreSQL (a throw-away, durable cluster:
  fsync on, tests/pg_cluster.py), each into a fresh database;
- **re-run**: the whole 7,000-image catalog tagged once (local engine, SQLite and PostgreSQL),
  then the same command again: nothing to do, timed.

Machine load: the busy CPU cores of the whole machine during each phase (/proc/stat; ours
included), so foreign load shows as busy cores beyond what the phase itself uses.

    python benchmarks/tag.py --bundle runs/bundles/tag_resnet18_int8 [--n 7000] [--engines local,ray]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FASHATTR_DATA") or ROOT.parent / "shared" / "data" / "FashionDataset")
sys.path.insert(0, str(ROOT / "tests"))  # the throw-away PostgreSQL cluster of the test suite


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


class Phase:
    """Wall time and the machine's busy cores over a ``with`` block."""

    def __enter__(self) -> Phase:
        self.t0, self.c0 = time.perf_counter(), cpu_ticks()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        busy1, total1 = cpu_ticks()
        cores = os.cpu_count() or 1
        self.busy_cores = cores * (busy1 - self.c0[0]) / max(1, total1 - self.c0[1])


CPU_MS: list[float] = []  # model-only CPU milliseconds per image of each model_only call


def model_only(runtime: Any, batch: int, steps: int) -> float:
    """Images/s of ``Runtime.logits`` on random uint8 batches (after one warm-up batch); its CPU
    milliseconds per image (this process, all model threads) are appended to ``CPU_MS``."""
    s = runtime.image_size
    x = np.random.default_rng(0).integers(0, 256, size=(batch, s, s, 3), dtype=np.uint8)
    runtime.logits(x)
    t, c = time.perf_counter(), time.process_time()
    for _ in range(steps):
        runtime.logits(x)
    CPU_MS.append((time.process_time() - c) / (batch * steps) * 1e3)
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default=str(ROOT / "runs/bundles/tag_resnet18_int8"))
    ap.add_argument("--backend", default="onnx-int8")
    ap.add_argument("--n", type=int, default=7000, help="images per end-to-end run (7000: the whole FashionDataset)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--model-steps", type=int, default=20)
    ap.add_argument("--skip-full", action="store_true", help="no 7,000-image catalog + re-run")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/tag"))
    args = ap.parse_args()

    from pg_cluster import PgCluster

    from fashattr.catalog.tag import tag
    from fashattr.deploy.runtime import Runtime

    files = sorted((DATA / "img").glob("*.jpg"))
    subset = Path(tempfile.mkdtemp(prefix="tagbench-")) / "subset.csv"
    subset.write_text("path\n" + "".join(f"{p}\n" for p in files[: args.n]))
    runtime = Runtime.from_bundle(args.bundle, args.backend)
    work = Path(tempfile.mkdtemp(prefix="tagbench-db-"))
    result: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "bundle": args.bundle,
        "backend": args.backend,
        "image_size": runtime.image_size,
        "images": args.n,
        "batch_size": args.batch_size,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_at_start": os.getloadavg()},
        "runs": [],
    }
    pg = PgCluster(durable=True)
    try:
        urls = {"sqlite": lambda name: f"sqlite:///{work / (name + '.db')}", "postgresql": pg.create_database}
        if "ray" in args.engines.split(","):
            from fashattr.catalog.engines import init_ray

            with Phase() as ph:
                init_ray(None, num_cpus=os.cpu_count())
            result["ray_init_s"] = round(ph.seconds, 2)
        before = model_only(runtime, args.batch_size, args.model_steps)
        for engine in args.engines.split(","):
            for dbname, make_url in urls.items():
                url = make_url(f"{engine}_{dbname}")
                workers = 2
                cpu = time.process_time()
                with Phase() as ph:
                    s = tag(
                        args.bundle,
                        [subset],
                        url,
                        backend=args.backend,
                        batch_size=args.batch_size,
                        workers=workers,
                        threads=1 if engine == "ray" else None,
                        engine=engine,
                        progress=False,
                    )
                cpu = time.process_time() - cpu
                after = model_only(runtime, args.batch_size, args.model_steps)
                e2e = s.tagged / ph.seconds
                ref = (before + after) / 2
                row = {
                    "engine": engine,
                    "db": dbname,
                    "tagged": s.tagged,
                    "errors": sum(s.errors.values()),
                    "seconds": round(ph.seconds, 2),
                    "first_result_s": None if s.first_result_s is None else round(s.first_result_s, 2),
                    "images_per_s": round(e2e, 1),
                    "model_only_before": round(before, 1),
                    "model_only_after": round(after, 1),
                    "ratio": round(e2e / ref, 3),
                    "busy_cores": round(ph.busy_cores, 2),
                    # CPU of this process per image (not PostgreSQL's server, not Ray's actors) vs the model's.
                    "cpu_ms_per_image": round(cpu / max(1, s.tagged) * 1e3, 2),
                    "model_only_cpu_ms_per_image": round((CPU_MS[-2] + CPU_MS[-1]) / 2, 2),
                    "driver_seconds": {k: round(v, 2) for k, v in sorted(s.timings.items())},
                }
                print(json.dumps(row), flush=True)
                result["runs"].append(row)
                before = after
        if not args.skip_full:
            result["full"] = []
            for dbname, make_url in urls.items():
                url = make_url(f"full_{dbname}")

                kwargs = {"backend": args.backend, "batch_size": args.batch_size, "workers": 2, "progress": False}
                with Phase() as ph:
                    s = tag(args.bundle, [DATA / "img"], url, **kwargs)
                with Phase() as again:  # the same command once more: everything is done already
                    r = tag(args.bundle, [DATA / "img"], url, **kwargs)
                row = {
                    "db": dbname,
                    "tagged": s.tagged,
                    "duplicates": s.duplicates,
                    "errors": sum(s.errors.values()),
                    "seconds": round(ph.seconds, 1),
                    "images_per_s": round(s.tagged / ph.seconds, 1),
                    "rerun_seconds": round(again.seconds, 2),
                    "rerun_skipped": r.skipped_done + r.duplicates,
                    "rerun_tagged": r.tagged,
                    "busy_cores": round(ph.busy_cores, 2),
                }
                print(json.dumps(row), flush=True)
                result["full"].append(row)
    finally:
        pg.stop()
    result["machine"]["load_at_end"] = os.getloadavg()
    Path(args.out + ".json").write_text(json.dumps(result, indent=1) + "\n")
    Path(args.out + ".md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"`{r['command']}`  ",
        f"bundle {Path(r['bundle']).name} ({r['backend']}, {r['image_size']} px), {r['images']} FashionDataset JPEGs "
        f"per run, batch {r['batch_size']}, {r['machine']['cpus']} CPUs; load average at start "
        f"{', '.join(f'{v:.1f}' for v in r['machine']['load_at_start'])}, at end "
        f"{', '.join(f'{v:.1f}' for v in r['machine']['load_at_end'])}"
        + (f"; Ray start-up {r['ray_init_s']} s (not in the times)" if "ray_init_s" in r else ""),
        "",
        "| engine | database | images/s end to end | first rows committed after | model only (before, after) | ratio "
        "| busy cores | CPU ms/image: this process, model only |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for x in r["runs"]:
        lines.append(
            f"| {x['engine']} | {x['db']} | {x['images_per_s']} "
            f"| {'-' if x.get('first_result_s') is None else str(x['first_result_s']) + ' s'} "
            f"| {x['model_only_before']}, {x['model_only_after']} "
            f"| **{x['ratio']}** | {x['busy_cores']} "
            f"| {x.get('cpu_ms_per_image', '-')}, {x.get('model_only_cpu_ms_per_image', '-')} |"
        )
    if r.get("full"):
        lines += [
            "",
            "| database | 7,000 images: tagged, dup., errors | time | re-run (nothing to do) |",
            "|---|---|---|---|",
        ]
        for x in r["full"]:
            lines.append(
                f"| {x['db']} | {x['tagged']}, {x['duplicates']}, {x['errors']} | {x['seconds']} s "
                f"({x['images_per_s']} img/s) | **{x['rerun_seconds']} s** ({x['rerun_skipped']} skipped, "
                f"{x['rerun_tagged']} tagged) |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
