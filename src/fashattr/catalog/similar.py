"""Similar items and duplicates from the embeddings a tagging run stores beside its predictions.

``fashattr similar --db URL photo.jpg --bundle BUNDLE [-k 10] [--same sleeve,length]``: the photo is embedded
by the bundle it names (the models table records a bundle's hash, its schema and metrics, not where the
bundle lives: a catalog outlives folders, and several machines tag into one database), and the bundle's hash
must be a model of the catalog, so the query and the catalog vectors come from the same model. Its nearest
catalog items by cosine come back best first, the photo's own content (same sha256) left out; ``--same``
keeps only items whose predicted class equals the photo's in each named group.

``fashattr duplicates --db URL [--threshold 0.995]``: byte-identical contents first (one sha256 seen under
several paths that still exist: a moved file's old path is not a duplicate), then pairs of different
contents whose embeddings' cosine similarity is at least the threshold, most similar first. The default
threshold comes from the FashionDataset tagged by the CPU recipe's resnet18 (int8): its pooled features
are non-negative, so unrelated photos already have cosines around 0.9. At 0.995 or more it finds 7 pairs
(besides the 6 byte-identical ones): 6 are one photo saved twice with other bytes (checked by eye), one is
two different maxi dresses (0.9957); 0.97 gave 3,071 pairs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from fashattr.catalog.db import embeddings, image_paths, predictions
from fashattr.catalog.index import VectorIndex, build_index, normalise
from fashattr.catalog.search import SearchError, resolve_model

DUPLICATE_THRESHOLD = 0.995


@dataclass
class Neighbour:
    sha256: str
    path: str | None
    score: float
    classes: dict[str, str] = field(default_factory=dict)


@dataclass
class SimilarResult:
    model_id: str
    query: dict[str, str]  # the photo's predicted class per group
    neighbours: list[Neighbour]
    index: str  # the index kind that answered


@dataclass
class DuplicatePair:
    kind: str  # "identical" (same bytes) or "near" (embedding cosine >= threshold)
    similarity: float
    a: str
    b: str
    sha256_a: str
    sha256_b: str


def load_embeddings(engine: Engine, model_id: str) -> tuple[list[str], np.ndarray]:
    """Every stored embedding of ``model_id``: content hashes and unit vectors ``(N, F)``, by hash.

    Raises:
        SearchError: the model has no embeddings (tagged by a bundle without features output), or rows
            whose vectors do not have one size.
    """
    shas: list[str] = []
    chunks: list[np.ndarray] = []
    q = (
        sa.select(embeddings.c.sha256, embeddings.c.dim, embeddings.c.vector)
        .where(embeddings.c.model_id == model_id)
        .order_by(embeddings.c.sha256)
    )
    dim = None
    with engine.connect() as conn:
        for row in conn.execution_options(stream_results=True, yield_per=10_000).execute(q):
            v = np.frombuffer(row.vector, dtype="<f4")
            if dim is None:
                dim = row.dim
            if row.dim != dim or len(v) != dim:
                raise SearchError(f"embedding of {row.sha256} has {len(v)} values (dim {row.dim}); others have {dim}")
            shas.append(row.sha256)
            chunks.append(v)
    if not shas:
        raise SearchError(
            f"model {model_id[:12]} has no embeddings in the catalog: tag with a bundle exported by this fashattr "
            "(its ONNX files carry the features output; the torch backend always has it)"
        )
    return shas, normalise(np.stack(chunks))


def catalog_index(
    engine: Engine, model_id: str, kind: str = "auto", cache: str | Path | None = None
) -> tuple[list[str], VectorIndex]:
    """The content hashes and a vector index of ``model_id``'s embeddings.

    With ``cache`` (a folder), the index and the unit vectors are kept there (``index.faiss``,
    ``vectors.npy``, read memory-mapped, ``meta.json``) and reused while the catalog holds the same
    embeddings (the sha256 of the model id, the kind and the sorted content hashes): building an HNSW
    index over a million vectors takes minutes, loading it seconds. Without, it is built in memory.
    """
    import hashlib

    import faiss

    if cache is None:
        shas, vectors = load_embeddings(engine, model_id)
        return shas, build_index(vectors, kind)
    cache = Path(cache)
    q = sa.select(embeddings.c.sha256).where(embeddings.c.model_id == model_id).order_by(embeddings.c.sha256)
    with engine.connect() as conn:
        listed = list(conn.execute(q).scalars())
    h = hashlib.sha256(f"{model_id}\n{kind}\n".encode())
    for sha in listed:
        h.update(sha.encode())
    fingerprint = h.hexdigest()
    meta_path = cache / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") == fingerprint:
            vectors = np.load(cache / "vectors.npy", mmap_mode="r")
            return listed, VectorIndex(meta["kind"], faiss.read_index(str(cache / "index.faiss")), vectors)
    shas, vectors = load_embeddings(engine, model_id)
    if shas != listed:  # tagging wrote rows in between: build from what was read, cache nothing
        return shas, build_index(vectors, kind)
    index = build_index(vectors, kind)
    cache.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)  # meta.json last: a half-written cache never matches
    np.save(cache / "vectors.npy", vectors)
    faiss.write_index(index.index, str(cache / "index.faiss"))
    tmp = cache / "meta.json.tmp"
    tmp.write_text(json.dumps({"fingerprint": fingerprint, "kind": index.kind, "model_id": model_id, "n": len(shas)}))
    os.replace(tmp, meta_path)
    return shas, index


def latest_paths(engine: Engine, shas: Sequence[str], chunk: int = 500) -> dict[str, str]:
    """The most recently seen path of each content."""
    out: dict[str, tuple[Any, str]] = {}
    with engine.connect() as conn:
        for i in range(0, len(shas), chunk):
            part = list(shas[i : i + chunk])
            q = sa.select(image_paths.c.sha256, image_paths.c.path, image_paths.c.last_seen).where(
                image_paths.c.sha256.in_(part)
            )
            for r in conn.execute(q):
                if r.sha256 not in out or (r.last_seen, r.path) > out[r.sha256]:
                    out[r.sha256] = (r.last_seen, r.path)
    return {s: p for s, (_, p) in out.items()}


def classes_of(engine: Engine, model_id: str, shas: Sequence[str]) -> dict[str, dict[str, str]]:
    """Predicted class per group of each content."""
    out: dict[str, dict[str, str]] = {s: {} for s in shas}
    with engine.connect() as conn:
        for i in range(0, len(shas), 500):
            q = sa.select(predictions.c.sha256, predictions.c.group_name, predictions.c.class_name).where(
                predictions.c.model_id == model_id, predictions.c.sha256.in_(list(shas[i : i + 500]))
            )
            for r in conn.execute(q):
                out[r.sha256][r.group_name] = r.class_name
    return out


def bundle_model_id(bundle: str | Path) -> str:
    """A bundle's model id (its ``bundle_hash``), after verifying its files."""
    from fashattr.portable.bundle import verify_bundle

    return verify_bundle(bundle)


def similar(
    engine: Engine,
    photo: str | Path,
    runtime: Any,
    model_id: str | None,
    k: int = 10,
    same: Sequence[str] = (),
    index_kind: str = "auto",
    index_cache: str | Path | None = None,
) -> SimilarResult:
    """The catalog items nearest to ``photo`` (see the module docstring).

    Args:
        engine: the catalog database.
        photo: an image file.
        runtime: a ``deploy.runtime.Runtime`` of the bundle whose id is ``model_id``; None: the photo must be in
            the catalog already (by content), and its stored embedding and labels are the query.
        model_id: the catalog model the embeddings were stored under (the runtime's bundle hash); None: the
            model registered most recently.
        k: neighbours to return.
        same: groups whose predicted class a neighbour must share with the photo.
        index_kind: ``catalog.index`` kind. ``auto``: exact search, unless ``index_cache`` is given and the
            catalog has 50,000 items or more (then HNSW): one query against a million vectors takes 0.6 s
            exactly, building the HNSW graph 13 minutes (benchmarks/search.py), so a graph pays only
            when it is kept.
        index_cache: a folder that keeps the built index between calls (:func:`catalog_index`).

    Raises:
        SearchError: an unknown group in ``same``, a model with no embeddings; ImageError: an unreadable photo.
    """
    if k < 1:
        raise SearchError(f"-k {k} must be at least 1")
    with engine.connect() as conn:
        model_id, schema = resolve_model(conn, model_id)
    groups = [g["name"] for g in schema["groups"]]
    unknown = [g for g in same if g not in groups]
    if unknown:
        raise SearchError(f"--same: unknown group(s) {unknown}; groups: {groups}")
    from fashattr.portable.bundle import file_sha256

    own = file_sha256(Path(photo))
    kind = "flat" if index_kind == "auto" and index_cache is None else index_kind
    shas, index = catalog_index(engine, model_id, kind, index_cache)
    row_of = {s: i for i, s in enumerate(shas)}
    if runtime is None:  # the catalog's own model: the photo's stored embedding and labels
        if own not in row_of:
            raise SearchError(
                f"{photo} is not in the catalog of model {model_id[:12]}: pass --bundle BUNDLE (the bundle that "
                "tagged it) to embed a new photo"
            )
        features = index.vectors[row_of[own]][None]
        with engine.connect() as conn:
            q = sa.select(predictions.c.group_name, predictions.c.class_name).where(
                predictions.c.model_id == model_id, predictions.c.sha256 == own
            )
            query = {str(g): str(c) for g, c in conn.execute(q)}
    else:
        pixels = runtime.preprocess(photo)[None]
        logits, features = runtime.infer(pixels)
        decoded = runtime.decode(logits)[0]["groups"]
        query = {g: v["class"] if isinstance(v, dict) else "|".join(x["class"] for x in v) for g, v in decoded.items()}
    if index.vectors.shape[1] != features.shape[1]:
        raise SearchError(f"the bundle gives {features.shape[1]} features, the catalog stores {index.vectors.shape[1]}")
    allowed: set[str] = set(shas)
    if same:
        with engine.connect() as conn:
            for g in same:
                q = sa.select(predictions.c.sha256).where(
                    predictions.c.model_id == model_id,
                    predictions.c.group_name == g,
                    predictions.c.class_name == query[g],
                )
                allowed &= set(conn.execute(q).scalars())
    allowed.discard(own)
    ids = np.array(sorted(row_of[s] for s in allowed), dtype=np.int64)
    if not len(ids):
        return SimilarResult(model_id, query, [], index.kind)
    scores, found = index.search(normalise(features), k, None if len(ids) == len(shas) else ids)
    hits = [(shas[j], float(s)) for j, s in zip(found[0], scores[0], strict=True) if j >= 0 and shas[j] != own]
    paths = latest_paths(engine, [h for h, _ in hits])
    cls = classes_of(engine, model_id, [h for h, _ in hits])
    return SimilarResult(
        model_id, query, [Neighbour(h, paths.get(h), round(s, 6), cls[h]) for h, s in hits[:k]], index.kind
    )


def identical_groups(engine: Engine, include_missing: bool = False) -> list[tuple[str, list[str]]]:
    """Contents seen under two or more paths: ``(sha256, sorted paths)``, by hash (paths that no longer
    exist dropped unless ``include_missing``)."""
    multi = sa.select(image_paths.c.sha256).group_by(image_paths.c.sha256).having(sa.func.count() > 1)
    q = (
        sa.select(image_paths.c.sha256, image_paths.c.path)
        .where(image_paths.c.sha256.in_(multi))
        .order_by(image_paths.c.sha256, image_paths.c.path)
    )
    groups: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for r in conn.execute(q):
            if include_missing or os.path.exists(r.path):
                groups.setdefault(r.sha256, []).append(r.path)
    return [(s, p) for s, p in groups.items() if len(p) > 1]


def duplicates(
    engine: Engine,
    threshold: float = DUPLICATE_THRESHOLD,
    model: str | None = None,
    k: int = 10,
    include_missing: bool = False,
    index_kind: str = "auto",
    index_cache: str | Path | None = None,
) -> list[DuplicatePair]:
    """Byte-identical pairs first, then near-duplicate pairs by embedding (see the module docstring).

    Near duplicates need the model's embeddings (``model``: default the most recent model); a catalog
    without any lists the identical pairs alone.
    """
    if not 0.0 < threshold <= 1.0:
        raise SearchError(f"--threshold {threshold} must be in (0, 1]")
    pairs = [
        DuplicatePair("identical", 1.0, paths[0], other, sha, sha)
        for sha, paths in identical_groups(engine, include_missing)
        for other in paths[1:]
    ]
    with engine.connect() as conn:
        has_models = conn.execute(sa.select(sa.func.count()).select_from(embeddings)).scalar_one() > 0
        model_id = resolve_model(conn, model)[0] if (has_models or model) else None
    if model_id is None:
        return pairs
    shas, index = catalog_index(engine, model_id, index_kind, index_cache)
    vectors = index.vectors
    near: dict[tuple[int, int], float] = {}
    for lo in range(0, len(shas), 4096):
        scores, found = index.search(vectors[lo : lo + 4096], min(k + 1, len(shas)))
        for r, (srow, frow) in enumerate(zip(scores, found, strict=True)):
            i = lo + r
            for s, j in zip(srow, frow, strict=True):
                if j >= 0 and j != i and s >= threshold:
                    near[(min(i, j), max(i, j))] = max(float(s), near.get((min(i, j), max(i, j)), -1.0))
    order = sorted(near.items(), key=lambda kv: (-kv[1], kv[0]))
    paths = latest_paths(engine, sorted({shas[x] for (i, j), _ in order for x in (i, j)}))
    for (i, j), s in order:
        a, b = shas[i], shas[j]
        pairs.append(DuplicatePair("near", round(min(s, 1.0), 6), paths.get(a, ""), paths.get(b, ""), a, b))
    return pairs


def format_rows(rows: list[dict[str, Any]], fmt: str) -> str:
    """``table`` (aligned columns), ``csv`` or ``jsonl`` text for a list of flat dicts."""
    import csv
    import io

    if fmt not in ("table", "csv", "jsonl"):
        raise SearchError(f"unknown format {fmt!r}; choose from ['table', 'csv', 'jsonl']")
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in rows)
    if not rows:
        return "" if fmt == "csv" else "(none)\n"
    buf = io.StringIO()
    if fmt == "csv":
        w = csv.DictWriter(buf, list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    head = list(rows[0])
    cells = [[str(r[h]) for h in head] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *cells, strict=True)]
    for line in [head, *cells]:
        buf.write("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n")
    return buf.getvalue()
