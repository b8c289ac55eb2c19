"""CPU per image of `fashattr tag`'s writer (`catalog.batch.write_batch`), on SQLite and PostgreSQL.

640 images of synthetic rows (the FashionDataset schema's 6 groups decoded with top-5, a 512-float
embedding, one path each) written 32 to a transaction into a fresh database, as the writer thread
does. Measured: the writing process's CPU seconds (``time.process_time``; PostgreSQL's server CPU
is not in it) and wall seconds, per image. ``--against REV`` runs the same measurement on the code
of git revision REV too (``git archive`` into a temp folder), alternating, so the two are compared
side by side on the same machine.

    python benchmarks/tag_write.py [--against 8607497] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "tests"))  # the throw-away PostgreSQL cluster of the test suite


def measure(url: str, n: int = 640, batch: int = 32) -> dict[str, float]:
    """Writer CPU and wall milliseconds per image into ``url`` (run in a child process per code version)."""
    import numpy as np

    from fashattr.catalog import db
    from fashattr.catalog.batch import write_batch
    from fashattr.catalog.work import Work
    from fashattr.portable import decoding
    from fashattr.schema import AI6126_GROUPS

    groups = [{"name": k, "classes": list(v), "kind": "single"} for k, v in AI6126_GROUPS.items()]
    config = {"schema": {"groups": groups}, "decoding": {}}
    rng = np.random.default_rng(0)
    logits = {g["name"]: rng.normal(size=(n, len(g["classes"]))).astype(np.float32) for g in groups}
    records = decoding.decode(config, logits, top_k=5)
    feats = rng.normal(size=(n, 512)).astype(np.float32)
    works = [Work(f"{i:064x}", f"/photos/{i}.jpg", 1000 + i, width=200, height=300) for i in range(n)]
    model_id = "m" * 64
    engine = db.open_db(url)
    with engine.begin() as conn:
        db.register_model(conn, model_id, config)
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(0, n, batch):
        part = works[i : i + batch]
        write_batch(engine, model_id, part, {w.sha256: (records[i + j], feats[i + j]) for j, w in enumerate(part)})
    out = {"cpu_ms": (time.process_time() - cpu) / n * 1e3, "wall_ms": (time.perf_counter() - wall) / n * 1e3}
    engine.dispose()
    return out


def child(src: Path, url: str) -> dict[str, float]:
    """``measure(url)`` in a fresh interpreter importing fashattr from ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    code = f"import json, sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import tag_write; "
    code += f"print(json.dumps(tag_write.measure({url!r})))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--against", help="also measure this git revision's code, side by side")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "tag_write"))
    args = ap.parse_args()
    from pg_cluster import PgCluster

    versions = {"this": ROOT / "src"}
    tmp = Path(tempfile.mkdtemp(prefix="tagwrite-"))
    if args.against:
        archive = subprocess.run(
            ["git", "archive", args.against, "src/fashattr"], cwd=ROOT, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
        versions[args.against] = tmp / "src"
    result: dict[str, Any] = {"command": "python " + " ".join(sys.argv), "loadavg_before": os.getloadavg(), "runs": []}
    pg = PgCluster(durable=True)
    try:
        for r in range(args.rounds):
            for name, src in versions.items():
                for dbname in ("sqlite", "postgresql"):
                    tag = f"{name.replace('/', '_')}_{dbname}_{r}"
                    url = f"sqlite:///{tmp / (tag + '.db')}" if dbname == "sqlite" else pg.create_database(tag)
                    row = {"code": name, "db": dbname, "round": r} | {
                        k: round(v, 3) for k, v in child(src, url).items()
                    }
                    print(json.dumps(row), flush=True)
                    result["runs"].append(row)
    finally:
        pg.stop()
    result["loadavg_after"] = os.getloadavg()
    Path(args.out + ".json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
