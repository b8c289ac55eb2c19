"""Vector index over image embeddings (FAISS): cosine similarity as the inner product of unit vectors.

Kinds (``benchmarks/search.py`` measures recall@10 against exact search and query latency at 1 million):

- ``flat``: exact search (``IndexFlatIP``): every query against every vector. The check for the others,
  and the default below :data:`EXACT_BELOW` vectors, where it is fast enough and needs no build.
- ``hnsw``: a graph (``IndexHNSWFlat``, M=32): no training, high recall, fast queries; building costs
  minutes per million vectors on two cores.
- ``ivf``: inverted lists (``IndexIVFFlat``, ``nlist`` ~ 4 sqrt(N) k-means cells up to 2048, ``nprobe``
  of them searched, nlist/32 by default): trains on a sample, builds faster than HNSW, recall set by ``nprobe``.

Filtered queries (``fashattr similar --same sleeve``) search only the allowed rows: exactly, by NumPy,
when few rows are allowed (a graph or a few cells would hold too few of them), else by the index with
FAISS's ID selector.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

# faiss's loader logs at INFO which CPU build it tried; the CLI logs INFO, so keep that out of its output.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

KINDS = ("auto", "flat", "hnsw", "ivf")
EXACT_BELOW = 50_000  # "auto" picks flat (exact) below this many vectors, hnsw from it on
FILTER_EXACT_BELOW = 0.05  # filtered queries allowing under this share of rows run exactly


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32, C-contiguous), so inner product = cosine; zero rows stay zero."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-``k`` by inner product: ``(scores (Q, k), row ids (Q, k))``, best first (-1 past N)."""
    import faiss

    k = min(k, len(vectors))
    if k == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    scores, ids = faiss.knn(np.ascontiguousarray(queries, np.float32), vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    return scores, ids


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth`` (exact ids) that ``found`` contains (ids -1 ignored)."""
    hits = [
        len(set(f[f >= 0]) & set(t[t >= 0])) / max(1, int((t >= 0).sum())) for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits)) if hits else 0.0


@dataclass
class VectorIndex:
    """A FAISS index over ``vectors`` (unit rows; kept for exact and filtered search)."""

    kind: str
    index: Any
    vectors: np.ndarray

    @property
    def size(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows by cosine for unit ``queries``: ``(scores, row ids)``, best first, -1 padded.

        Args:
            queries: ``(Q, F)`` unit vectors.
            k: neighbours per query.
            allowed: row ids a result may have (None: all).
        """
        import faiss as faiss_module

        faiss: Any = faiss_module  # its type stubs lack the search parameter classes
        q = np.ascontiguousarray(queries, np.float32)
        if allowed is None:
            return self.index.search(q, min(k, self.size))
        allowed = np.unique(np.asarray(allowed, np.int64))
        if self.kind == "flat" or len(allowed) < FILTER_EXACT_BELOW * self.size:
            scores, local = exact_search(self.vectors[allowed], q, k)
            return scores, np.where(local >= 0, allowed[np.maximum(local, 0)], -1)
        sel = faiss.IDSelectorBatch(allowed)
        if self.kind == "hnsw":
            params: Any = faiss.SearchParametersHNSW(sel=sel, efSearch=self.index.hnsw.efSearch)
        else:
            params = faiss.SearchParametersIVF(sel=sel, nprobe=self.index.nprobe)
        return self.index.search(q, min(k, len(allowed)), params=params)


def build_index(
    vectors: np.ndarray,
    kind: str = "auto",
    hnsw_m: int = 32,
    ef_construction: int = 80,
    ef_search: int = 64,
    nlist: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
) -> VectorIndex:
    """Index unit ``vectors`` ``(N, F)`` float32 (see the module docstring for the kinds).

    Raises:
        ValueError: an unknown kind; no vectors.
    """
    import faiss

    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose from {list(KINDS)}")
    vectors = np.ascontiguousarray(vectors, np.float32)
    if vectors.ndim != 2 or not len(vectors):
        raise ValueError(f"expected (N, F) vectors with N > 0, got shape {vectors.shape}")
    n, dim = vectors.shape
    if kind == "auto":
        kind = "flat" if n < EXACT_BELOW else "hnsw"
    if kind == "flat":
        index: Any = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
    else:
        # ~4 sqrt(N) cells, at most 2048 (k-means cost grows with cells x sample); FAISS wants >= 39 points a cell.
        nlist = nlist or max(1, min(n // 39, int(4 * np.sqrt(n)), 2048))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        train = vectors
        if n > 40 * nlist:  # k-means on a sample of 40 points a cell
            train = vectors[np.random.default_rng(seed).choice(n, 40 * nlist, replace=False)]
        index.cp.seed = seed
        index.train(train)
        index.nprobe = nprobe or max(1, nlist // 32)
    index.add(vectors)
    return VectorIndex(kind, index, vectors)
