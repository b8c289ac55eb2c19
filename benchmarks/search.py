"""Catalog search at scale: attribute search over 1 million prediction rows, and the vector index at 1 million.

Part ``sql``: a catalog of synthetic rows in the real tables (``catalog.db``): 166,667 images x the six
ai6126 groups = 1,000,002 prediction rows, classes drawn with skewed frequencies (like the real data) and
probabilities from a Beta distribution; written to SQLite (a file) and to PostgreSQL (a throw-away cluster,
tests/pg_cluster.py, durable settings). Then two-attribute searches through ``catalog.search.search`` (the
function ``fashattr search`` calls: model lookup, schema check and the one SELECT), random conditions,
with and without ``--min-prob``, limit 50: p50 / p95 / max latency per database.

Part ``vectors``: 1 million synthetic unit vectors of dimension 512 (the pooled features of resnet18, the
CPU recipe's backbone; see ``synthetic_vectors``), 1,000 queries from the same distribution;
exact search (``faiss.knn``) as ground truth; each index kind of ``catalog.index``: build time, recall@10
against exact, single-query latency p50 / p95, and memory.

    python benchmarks/search.py [--part sql|vectors|all] [--rows 1000000] [--vectors 1000000] [--kinds ivf,hnsw]

Writes benchmarks/results/search.json (parts merged: a run of one part keeps the other's numbers) and
search.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "tests"))  # pg_cluster.py: the test suite's throw-away PostgreSQL


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


# ---------------------------------------------------------------------------------------------- sql
def fill_catalog(url: str, n_images: int, seed: int = 0) -> dict[str, Any]:
    """Write ``n_images`` synthetic images with one prediction per ai6126 group into the catalog at ``url``."""
    from fashattr.catalog import db
    from fashattr.schema import ai6126_schema

    schema = ai6126_schema()
    engine = db.open_db(url)
    rng = np.random.default_rng(seed)
    model_id = "b" * 64
    now = db.now()
    config = {"schema": schema.to_dict(), "source": {"run": "synthetic"}}
    start = time.perf_counter()
    with engine.begin() as conn:
        db.register_model(conn, model_id, config, "synthetic")
    chunk = 20_000
    for lo in range(0, n_images, chunk):
        hi = min(n_images, lo + chunk)
        shas = [f"{i:064x}" for i in range(lo, hi)]
        imgs = [
            {"sha256": s, "bytes": 10_000, "width": 300, "height": 400, "first_seen": now, "last_seen": now}
            for s in shas
        ]
        paths = [
            {"sha256": s, "path": f"/catalog/{i // 1000:04d}/{i:07d}.jpg", "first_seen": now, "last_seen": now}
            for i, s in zip(range(lo, hi), shas, strict=True)
        ]
        preds = []
        for g in schema.groups:
            c = len(g.classes)
            p = np.arange(c, 0, -1, dtype=np.float64) ** 1.5
            cls = rng.choice(c, hi - lo, p=p / p.sum())
            prob = rng.beta(5, 2, hi - lo)
            for s, k, pr in zip(shas, cls, prob, strict=True):
                preds.append(
                    {
                        "sha256": s, "model_id": model_id, "group_name": g.name, "class_name": g.classes[k],
                        "class_index": int(k), "probability": float(pr), "top_k": None, "decoding": None,
                        "created": now,
                    }
                )  # fmt: skip
        with engine.begin() as conn:
            conn.execute(sa.insert(db.images), imgs)
            conn.execute(sa.insert(db.image_paths), paths)
            conn.execute(sa.insert(db.predictions), preds)
    fill_s = time.perf_counter() - start
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE"))  # planner statistics, as a maintained database has them
        rows = db.count_rows(conn, db.predictions)
    engine.dispose()
    return {"prediction_rows": rows, "images": n_images, "fill_s": round(fill_s, 1), "model_id": model_id}


def make_queries(n: int, seed: int = 1) -> list[tuple[list[Any], float]]:
    """``n`` random two-attribute searches over the ai6126 schema, half of them with ``--min-prob 0.6``."""
    from fashattr.catalog.search import Condition
    from fashattr.schema import ai6126_schema

    schema = ai6126_schema()
    rng = np.random.default_rng(seed)
    queries = []
    for _ in range(n):
        g1, g2 = rng.choice(len(schema.groups), 2, replace=False)
        conds = [Condition(schema.groups[g].name, str(rng.choice(schema.groups[g].classes))) for g in (g1, g2)]
        queries.append((conds, 0.6 if rng.random() < 0.5 else 0.0))
    return queries


def query_plan(engine: Any, conds: list[Any]) -> list[str]:
    """The database's plan for one search, for the record."""
    from fashattr.catalog.search import check_conditions, resolve_model, search_query

    with engine.connect() as conn:
        mid, sch = resolve_model(conn)
        q = search_query(mid, conds, check_conditions(sch, conds), 0.6, 50, engine.dialect.name)
        sql = str(q.compile(engine, compile_kwargs={"literal_binds": True}))
        prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
        return [" ".join(str(v) for v in r) for r in conn.execute(sa.text(prefix + sql))]


def time_searches(urls: dict[str, str], n_queries: int, warmup: int = 20) -> dict[str, Any]:
    """The same searches on every database, interleaved (query i on each database in turn, the order
    rotated), so load from other programs hits them alike; latency of each ``search()`` call, limit 50."""
    from fashattr.catalog.search import open_catalog, search

    engines = {name: open_catalog(url) for name, url in urls.items()}
    queries = make_queries(n_queries + warmup)
    times: dict[str, list[float]] = {n: [] for n in engines}
    counts: dict[str, list[int]] = {n: [] for n in engines}
    names = list(engines)
    loads = [os.getloadavg()[0]]
    for i, (conds, min_prob) in enumerate(queries):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            t0 = time.perf_counter()
            res = search(engines[name], conds, min_prob=min_prob, limit=50)
            dt_ms = (time.perf_counter() - t0) * 1e3
            if i >= warmup:  # the first ones warm the caches and the connection pools
                times[name].append(dt_ms)
                counts[name].append(len(res.matches))
    loads.append(os.getloadavg()[0])
    out: dict[str, Any] = {}
    for name, engine in engines.items():
        t = times[name]
        out[name] = {
            "queries": len(t),
            "p50_ms": round(pct(t, 50), 2),
            "p95_ms": round(pct(t, 95), 2),
            "max_ms": round(max(t), 2),
            "mean_matches": round(statistics.mean(counts[name]), 1),
            "load_average_1min_start_end": [round(v, 2) for v in loads],
            "plan": query_plan(engine, queries[0][0]),
        }
        engine.dispose()
    same = all(counts[n] == counts[names[0]] for n in names)
    out["same_match_counts_on_every_database"] = same
    return out


def part_sql(rows: int, queries: int) -> dict[str, Any]:
    from pg_cluster import PgCluster

    n_images = -(-rows // 6)
    with tempfile.TemporaryDirectory(prefix="fashattr-search-") as tmp, PgCluster(durable=True) as cluster:
        urls = {"sqlite": f"sqlite:///{tmp}/catalog.db", "postgresql": cluster.create_database("search_bench")}
        fills = {name: fill_catalog(url, n_images) for name, url in urls.items()}
        print("filled", fills, flush=True)
        timed = time_searches(urls, queries)
        out: dict[str, Any] = {name: {**fills[name], **timed[name]} for name in urls}
        out["sqlite"]["file_mb"] = round(Path(tmp, "catalog.db").stat().st_size / 1e6, 1)
        out["same_match_counts_on_every_database"] = timed["same_match_counts_on_every_database"]
    for name in urls:
        print(name, {k: v for k, v in out[name].items() if k != "plan"}, flush=True)
    return out


# ---------------------------------------------------------------------------------------------- vectors
def synthetic_vectors(n: int, dim: int, centres: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors with the structure of image embeddings: a low intrinsic dimension (points of a
    32-dimensional Gaussian mixture of ``centres`` clusters, projected linearly to ``dim``) plus isotropic
    noise at 10% of the signal; returns the vectors and their cluster ids. Uniformly random vectors in 512
    dimensions would have no neighbours worth the name (every pair nearly orthogonal)."""
    from fashattr.catalog.index import normalise

    latent = 32
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, latent), dtype=np.float32) * 2.0
    w = rng.standard_normal((latent, dim), dtype=np.float32) / np.sqrt(latent)
    ids = rng.integers(0, centres, n)
    out = np.empty((n, dim), np.float32)
    for lo in range(0, n, 100_000):  # in chunks: keep the temporaries small
        hi = min(n, lo + 100_000)
        z = c[ids[lo:hi]] + rng.standard_normal((hi - lo, latent), dtype=np.float32)
        x = z @ w
        x += rng.standard_normal(x.shape, dtype=np.float32) * (0.1 * float(np.sqrt((x**2).mean())))
        out[lo:hi] = normalise(x)
    return out, ids


def part_vectors(n: int, dim: int, kinds: list[str], n_queries: int = 1000) -> dict[str, Any]:
    import faiss

    from fashattr.catalog.index import build_index, exact_search, recall_at_k

    xall, _ = synthetic_vectors(n + n_queries, dim, 10_000, seed=0)
    xb, xq = xall[:n], np.ascontiguousarray(xall[n:])  # queries: fresh points around the same centres
    t0 = time.perf_counter()
    _, truth = exact_search(xb, xq, 10)
    exact_batch_s = time.perf_counter() - t0
    out: dict[str, Any] = {
        "vectors": n,
        "dim": dim,
        "queries": n_queries,
        "faiss": faiss.__version__,
        "threads": faiss.omp_get_max_threads(),
        "exact_batch_s": round(exact_batch_s, 2),
        "kinds": {},
    }
    single = []
    for q in xq[:100]:
        t = time.perf_counter()
        exact_search(xb, q[None], 10)
        single.append((time.perf_counter() - t) * 1e3)
    out["exact_single_query_p50_ms"] = round(pct(single, 50), 2)
    print("exact", out, flush=True)
    for kind in kinds:
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        ix = build_index(xb, kind)
        build_s = time.perf_counter() - t0
        settings: list[tuple[str, Any]] = []
        if kind == "hnsw":
            settings = [("efSearch", v) for v in (32, 64, 128)]
        elif kind == "ivf":
            settings = [("nprobe", v) for v in (8, 16, 32, 64)]
        rows = []
        for name, value in settings or [("", None)]:
            if name == "efSearch":
                ix.index.hnsw.efSearch = value
            elif name == "nprobe":
                ix.index.nprobe = value
            _, found = ix.search(xq, 10)
            lat = []
            for q in xq[:300]:
                t = time.perf_counter()
                ix.search(q[None], 10)
                lat.append((time.perf_counter() - t) * 1e3)
            rows.append(
                {
                    name or "setting": value,
                    "recall_at_10": round(recall_at_k(found, truth), 4),
                    "p50_ms": round(pct(lat, 50), 3),
                    "p95_ms": round(pct(lat, 95), 3),
                }
            )
            print(kind, rows[-1], flush=True)
        extra = (
            {"nlist": ix.index.nlist} if kind == "ivf" else {"M": 32, "efConstruction": 80} if kind == "hnsw" else {}
        )
        out["kinds"][kind] = {"build_s": round(build_s, 1), **extra, "settings": rows, "load_average_1min": load0}
        del ix
    out["peak_rss_gb"] = round(rss_gb(), 2)
    return out


# ---------------------------------------------------------------------------------------------- report
def write_md(res: dict[str, Any]) -> str:
    lines = ["# Catalog search benchmark (benchmarks/search.py)", ""]
    if "sql" in res:
        s = res["sql"]
        lines += [
            f"Attribute search, two conditions, limit 50, {s['sqlite']['prediction_rows']:,} synthetic prediction rows "
            f"({s['sqlite']['images']:,} images x 6 groups); latency of `catalog.search.search` (what `fashattr "
            "search` runs), half of the queries with `--min-prob 0.6`.",
            "",
            "| database | queries | p50 ms | p95 ms | max ms | fill s |",
            "|---|---|---|---|---|---|",
        ]
        for name in ("sqlite", "postgresql"):
            r = s[name]
            lines.append(f"| {name} | {r['queries']} | {r['p50_ms']} | {r['p95_ms']} | {r['max_ms']} | {r['fill_s']} |")
        loads = s["sqlite"]["load_average_1min_start_end"]
        lines += [
            "",
            f"The two databases answered the same queries interleaved, in one run; load average (1 min) "
            f"{loads[0]:.1f} at the start and {loads[1]:.1f} at the end of the timed queries (other jobs on "
            f"this shared machine). Measured {s['when']} on {s['machine']}.",
            "",
        ]
    if "vectors" in res:
        v = res["vectors"]
        lines += [
            f"Vector index, {v['vectors']:,} synthetic unit vectors of dimension {v['dim']} "
            "(32-d latent mixture of 10,000 clusters), "
            f"{v['queries']} queries, recall@10 against exact search (faiss.knn: {v['exact_batch_s']} s for all "
            f"queries, {v['exact_single_query_p50_ms']} ms p50 per single query); FAISS {v['faiss']}, "
            f"{v['threads']} threads; peak RSS {v['peak_rss_gb']} GB.",
            "",
            "| index | build s | setting | recall@10 | p50 ms | p95 ms |",
            "|---|---|---|---|---|---|",
        ]
        for kind, r in v["kinds"].items():
            for row in r["settings"]:
                key = next(iter(row))
                lines.append(
                    f"| {kind} | {r['build_s']} | {key}={row[key]} | {row['recall_at_10']} | {row['p50_ms']} | "
                    f"{row['p95_ms']} |"
                )
        loads = ", ".join(f"{k} {r['load_average_1min']:.1f}" for k, r in v["kinds"].items())
        lines += [
            "",
            f"Load average (1 min) when each build started: {loads} (other jobs on this shared machine: the "
            f"latencies are upper bounds). Measured {v['when']} on {v['machine']}.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", default="all", choices=["sql", "vectors", "all"])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--vectors", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--kinds", default="ivf,hnsw")
    ap.add_argument("--out", default=str(RESULTS / "search.json"))
    args = ap.parse_args()
    out = Path(args.out)
    res: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if args.part in ("sql", "all"):
        res["sql"] = {**part_sql(args.rows, args.queries), "when": when, "machine": machine}
    if args.part in ("vectors", "all"):
        res["vectors"] = {
            **part_vectors(args.vectors, args.dim, args.kinds.split(",")),
            "when": when,
            "machine": machine,
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    out.with_suffix(".md").write_text(write_md(res))
    print(write_md(res))


if __name__ == "__main__":
    main()
