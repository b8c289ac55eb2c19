"""``fashattr select``: which photos of a tagged catalog are worth a person's time to label next.

Strategies (the active-learning literature's usual ones):

- ``margin``: the smallest gap between a group's two most likely classes, averaged over the single-label groups
  (uncertainty sampling by margin; Scheffer et al. 2001);
- ``entropy``: the predicted distribution's entropy over its classes, divided by ``log C`` so that every group
  weighs alike, averaged over the groups;
- ``kcenter``: k-center greedy on the model's embeddings (Sener & Savarese 2018, "core-set"): each pick is the
  photo farthest (cosine) from everything picked or already labelled, so the batch covers the catalog;
- ``margin+kcenter``: k-center greedy among the ``4 n`` photos of smallest margin: uncertain, and not all alike;
- ``badge``: k-means++ seeding on gradient embeddings (Ash et al. 2020, BADGE): uncertain and diverse at once,
  with no candidate pool to size;
- ``balanced``: BASE (Emam et al. 2021, "Active Learning at the ImageNet Scale"): every class of every group takes
  its turn, and each turn picks the photo nearest that class's decision boundary, so a rare class gets as many
  photos near its boundary as a common one (uncertainty sampling alone mostly meets the common classes' borders);
- ``random``: the baseline every strategy must beat.

Two more need several stochastic predictions of each photo (Monte Carlo dropout), which a catalog does not store,
so only ``benchmarks/active_learning.py`` runs them (:data:`SAMPLED_STRATEGIES`, :func:`choose_sampled`):

- ``bald``: BALD (Houlsby et al. 2011; Gal et al. 2017, "Deep Bayesian Active Learning with Image Data"): the
  photos whose labels would tell most about the model's weights, the dropout samples' disagreement. Margin and
  entropy also pick photos that are ambiguous to every model (a blurred print, a label the annotators split on);
  BALD's score is near zero there, since every sample agrees that it is unsure;
- ``powerbald``: the batch drawn at random with chances in proportion to BALD's score (Kirsch et al. 2023,
  "Stochastic Batch Acquisition"), so a batch is not a hundred near-copies of the most informative photo.

``benchmarks/active_learning.py`` measures them on the FashionDataset (labels against accuracy, three and ten seeds).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from fashattr.catalog.db import image_paths, predictions
from fashattr.catalog.export import label_config, label_studio_task
from fashattr.catalog.search import SearchError, resolve_model
from fashattr.catalog.similar import latest_paths, load_embeddings

STRATEGIES = ("margin", "entropy", "kcenter", "margin+kcenter", "badge", "balanced", "random")
SAMPLED_STRATEGIES = ("bald", "powerbald")  # need (draws, N, C) samples per group: see choose_sampled
CANDIDATES = 4  # margin+kcenter: k-center among this many times n of the most uncertain photos


def margin_uncertainty(probs: dict[str, np.ndarray]) -> np.ndarray:
    """Per image, the mean over groups of ``1 - (p1 - p2)``: 1 where the two best classes tie, 0 where one is
    certain. ``probs``: per group ``(N, C)`` probabilities."""
    parts = []
    for p in probs.values():
        top = -np.sort(-np.asarray(p, dtype=np.float64), axis=1)
        second = top[:, 1] if top.shape[1] > 1 else np.zeros(len(top))
        parts.append(1.0 - (top[:, 0] - second))
    return np.mean(parts, axis=0)


def entropy_uncertainty(probs: dict[str, np.ndarray]) -> np.ndarray:
    """Per image, the mean over groups of the entropy divided by ``log C`` (0: certain, 1: uniform)."""
    parts = []
    for p in probs.values():
        p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1.0)
        c = p.shape[1]
        parts.append(-(p * np.log(p)).sum(1) / np.log(c) if c > 1 else np.zeros(len(p)))
    return np.mean(parts, axis=0)


def bald_information(samples: dict[str, np.ndarray]) -> np.ndarray:
    """Per image, BALD's mutual information between its labels and the model's weights, summed over the groups
    (labeling a photo reveals every group): ``H[mean_t p_t] - mean_t H[p_t]`` in nats. ``samples``: per group
    ``(T, N, C)`` probabilities of ``T`` stochastic forward passes (dropout on). 0 where every pass agrees, however
    unsure; a group adds ``log C`` at most, where the passes are each certain and split evenly over its classes."""
    total: np.ndarray | None = None
    for s in samples.values():
        p = np.clip(np.asarray(s, dtype=np.float64), 1e-12, 1.0)
        mean = p.mean(0)
        part = -(mean * np.log(mean)).sum(1) + (p * np.log(p)).sum(2).mean(0)
        total = part if total is None else total + part
    if total is None:
        raise ValueError("no group to score")
    return np.maximum(total, 0.0)  # the clip can leave -1e-12 where the passes agree


def power_sample(scores: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` row indices drawn without replacement with chances in proportion to ``scores`` (>= 0), by Gumbel
    top-k: ``argsort(log s + Gumbel noise)`` (Kirsch et al. 2023). A score of 0 is drawn only once every positive
    score is taken."""
    s = np.asarray(scores, dtype=np.float64)
    if (s < 0).any():
        raise ValueError("power sampling needs scores >= 0")
    gumbel = np.random.default_rng(seed).gumbel(size=len(s))
    with np.errstate(divide="ignore"):
        keys = np.where(s > 0, np.log(s) + gumbel, -np.inf)
    # ties at -inf (zero scores) fall back to the Gumbel order alone: random among them
    return np.lexsort((-gumbel, -keys))[: min(n, len(s))]


def choose_sampled(strategy: str, n: int, samples: dict[str, np.ndarray], seed: int = 0) -> np.ndarray:
    """The ``n`` row indices ``strategy`` (one of :data:`SAMPLED_STRATEGIES`) picks, best first, from per group
    ``(T, N, C)`` probabilities of ``T`` stochastic forward passes.

    Raises:
        ValueError: an unknown strategy.
    """
    if strategy not in SAMPLED_STRATEGIES:
        raise ValueError(f"unknown sampled strategy {strategy!r}; choose from {list(SAMPLED_STRATEGIES)}")
    info = bald_information(samples)
    if strategy == "bald":
        return np.argsort(-info, kind="stable")[: min(n, len(info))]
    return power_sample(info, n, seed)


def kcenter_greedy(embeddings: np.ndarray, n: int, labelled: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """``n`` row indices of ``embeddings`` (unit vectors), each the farthest by cosine distance from the rows
    picked before it and from ``labelled`` (unit vectors already labelled; none: the first pick is random)."""
    emb = np.asarray(embeddings, dtype=np.float32)
    n = min(n, len(emb))
    picked: list[int] = []
    if labelled is not None and len(labelled):
        nearest = np.full(len(emb), np.inf, dtype=np.float32)
        for start in range(0, len(labelled), 1024):  # (N x 1024) at a time: bounded memory
            sims = emb @ np.asarray(labelled[start : start + 1024], dtype=np.float32).T
            nearest = np.minimum(nearest, (1.0 - sims).min(1))
    else:
        first = int(np.random.default_rng(seed).integers(len(emb))) if len(emb) else 0
        picked.append(first)
        nearest = 1.0 - emb @ emb[first]
    while len(picked) < n:
        nearest[picked] = -np.inf
        k = int(np.argmax(nearest))
        picked.append(k)
        nearest = np.minimum(nearest, 1.0 - emb @ emb[k])
    return np.asarray(picked[:n], dtype=np.int64)


def residuals(probs: dict[str, np.ndarray]) -> np.ndarray:
    """Per image, ``p - onehot(argmax p)`` of every group side by side: the last layer's loss gradient with
    respect to its logits if the predicted class were the true one (BADGE's "hallucinated" label)."""
    parts = []
    for p in probs.values():
        p = np.asarray(p, dtype=np.float64)
        r = p.copy()
        r[np.arange(len(p)), p.argmax(1)] -= 1.0
        parts.append(r)
    return np.concatenate(parts, axis=1)


def badge(probs: dict[str, np.ndarray], embeddings: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` row indices by BADGE (Ash et al., 2020): k-means++ seeding on each photo's gradient embedding
    ``residual (x) embedding`` (the last layer's gradient under the predicted labels, every group's side by side).
    A confident photo's gradient is near zero and k-means++ draws in proportion to the squared distance from the
    picks so far, so a batch is both uncertain and spread out, with no knob to set. The first pick is the largest
    gradient, as the paper's code does. The gradients (classes x features per photo) are never built:
    ``<g_i, g_j> = <x_i, x_j> <r_i, r_j>``, so each pick costs one pass over the embeddings."""
    x = np.asarray(embeddings, dtype=np.float64)
    r = residuals(probs)
    count = len(x)
    n = min(n, count)
    norms = (x * x).sum(1) * (r * r).sum(1)

    def distance2(c: int) -> np.ndarray:
        return np.maximum(norms + norms[c] - 2.0 * (x @ x[c]) * (r @ r[c]), 0.0)

    rng = np.random.default_rng(seed)
    picked = [int(np.argmax(norms))] if n else []
    nearest = distance2(picked[0]) if n else np.zeros(0)
    while len(picked) < n:
        nearest[picked] = 0.0
        total = nearest.sum()
        if total > 0:
            k = int(rng.choice(count, p=nearest / total))
        else:  # every photo left sits on a pick already: any of them
            k = int(rng.choice(np.setdiff1d(np.arange(count), picked)))
        picked.append(k)
        nearest = np.minimum(nearest, distance2(k))
    return np.asarray(picked, dtype=np.int64)


def class_boundary_distance(p: np.ndarray, c: int) -> np.ndarray:
    """Per image, how far class ``c`` is from the top: ``|p_c - max_{c' != c} p_c'|`` (0 on ``c``'s decision
    boundary; large where ``c`` is certain either way). ``p``: ``(N, C)`` probabilities, ``C >= 2``."""
    p = np.asarray(p, dtype=np.float64)
    others = np.delete(p, c, axis=1).max(1)
    return np.abs(p[:, c] - others)


def balanced_boundary(probs: dict[str, np.ndarray], n: int, seed: int = 0) -> np.ndarray:
    """``n`` row indices by BASE (Emam et al. 2021): the classes of every group take turns (in an order shuffled
    by ``seed``, the same every round), and each turn picks the photo not picked yet nearest that class's decision
    boundary (:func:`class_boundary_distance`). Each class gets an equal share of the batch, whatever its
    frequency: the class-balanced counterpart of margin sampling. A group of one class has no boundary and no turn."""
    groups = [np.asarray(p, dtype=np.float64) for p in probs.values()]
    orders = [
        np.argsort(class_boundary_distance(p, c), kind="stable")
        for p in groups
        if p.shape[1] > 1
        for c in range(p.shape[1])
    ]
    count = len(groups[0]) if groups else 0
    n = min(n, count)
    if not orders:  # no group with a boundary: nothing to rank by
        return np.random.default_rng(seed).permutation(count)[:n]
    turns = np.random.default_rng(seed).permutation(len(orders))
    taken = np.zeros(count, dtype=bool)
    at = [0] * len(orders)  # each class's place in its own ranking
    picked: list[int] = []
    while len(picked) < n:
        for t in turns:
            order = orders[t]
            while taken[order[at[t]]]:  # skip photos another class took; n <= count keeps one free
                at[t] += 1
            k = int(order[at[t]])
            taken[k] = True
            picked.append(k)
            if len(picked) == n:
                break
    return np.asarray(picked, dtype=np.int64)


def choose(
    strategy: str,
    n: int,
    probs: dict[str, np.ndarray],
    embeddings: np.ndarray | None = None,
    labelled: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """The ``n`` row indices ``strategy`` picks, best first, from per-group probabilities ``(N, C)`` and (for the
    k-center strategies) unit embeddings ``(N, F)``; ``labelled``: embeddings of the photos already labelled.

    Raises:
        ValueError: an unknown strategy, or a k-center strategy without embeddings.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {list(STRATEGIES)}")
    count = len(next(iter(probs.values()))) if probs else (0 if embeddings is None else len(embeddings))
    n = min(n, count)
    if strategy == "random":
        return np.random.default_rng(seed).permutation(count)[:n]
    if strategy == "balanced":
        return balanced_boundary(probs, n, seed)
    if strategy in ("margin", "entropy"):
        score = margin_uncertainty(probs) if strategy == "margin" else entropy_uncertainty(probs)
        return np.argsort(-score, kind="stable")[:n]
    if embeddings is None:
        raise ValueError(f"strategy {strategy!r} needs the model's embeddings")
    if strategy == "kcenter":
        return kcenter_greedy(embeddings, n, labelled, seed)
    if strategy == "badge":
        return badge(probs, embeddings, n, seed)
    pool = np.argsort(-margin_uncertainty(probs), kind="stable")[: CANDIDATES * n]
    return pool[kcenter_greedy(embeddings[pool], n, labelled, seed)]


def catalog_probabilities(
    engine: Engine, model_id: str, schema: dict[str, Any], shas: list[str]
) -> dict[str, np.ndarray]:
    """Per single-label group, ``(N, C)`` probabilities of the images ``shas`` rebuilt from the catalog's top-k
    rows (the top classes' probabilities; what they leave, spread evenly over the other classes)."""
    single = [g for g in schema["groups"] if g.get("kind", "single") == "single"]
    row_of = {s: i for i, s in enumerate(shas)}
    out = {g["name"]: np.zeros((len(shas), len(g["classes"]))) for g in single}
    filled = {g["name"]: np.zeros(len(shas), dtype=bool) for g in single}
    q = sa.select(predictions.c.sha256, predictions.c.group_name, predictions.c.top_k).where(
        predictions.c.model_id == model_id, predictions.c.group_name.in_([g["name"] for g in single])
    )
    with engine.connect() as conn:
        for row in conn.execution_options(stream_results=True, yield_per=10_000).execute(q):
            i = row_of.get(row.sha256)
            if i is None:
                continue
            top = row.top_k if isinstance(row.top_k, list) else json.loads(row.top_k or "[]")
            p = out[row.group_name][i]
            for entry in top:
                p[int(entry["index"])] = float(entry["prob"])
            rest = np.flatnonzero(p == 0)
            if len(rest):
                p[rest] = max(0.0, 1.0 - p.sum()) / len(rest)
            filled[row.group_name][i] = True
    for name, ok in filled.items():
        if not ok.all():
            missing = shas[int(np.flatnonzero(~ok)[0])]
            raise SearchError(f"image {missing} has no {name!r} prediction of model {model_id[:12]} in the catalog")
    return out


def select(
    engine: Engine,
    strategy: str,
    n: int,
    out: str | Path,
    model: str | None = None,
    labelled: str | Path | None = None,
    tasks: str | Path | None = None,
    image_root: str | Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Rank ``n`` catalog photos for labeling with ``strategy`` and write them to ``out`` (CSV: rank, sha256,
    path, uncertainty) and, with ``tasks``, as Label Studio tasks with the model's predictions pre-filled.
    ``labelled``: a file of paths or content hashes already labelled (one per line, or a CSV with a ``path``
    column): never picked, and the k-center strategies count them as covered.

    Raises:
        ValueError: an unknown strategy.
        SearchError: no such model in the catalog (naming the ones there), every photo labelled already, or a
            k-center strategy on a model whose embeddings are missing (naming a photo without one).
    Fewer unlabelled photos than ``n`` are all picked.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {list(STRATEGIES)}")
    with engine.connect() as conn:
        model_id, schema = resolve_model(conn, model)
        shas = list(
            conn.scalars(
                sa.select(predictions.c.sha256).where(predictions.c.model_id == model_id).distinct().order_by("sha256")
            )
        )
    done = _labelled_shas(engine, labelled) if labelled else set()
    pool_shas = [s for s in shas if s not in done]
    if not pool_shas:
        raise SearchError(f"every photo model {model_id[:12]} tagged is labelled already")
    probs = catalog_probabilities(engine, model_id, schema, pool_shas)
    emb = covered = None
    if "kcenter" in strategy or strategy == "badge":  # only the diversity strategies read the embeddings
        emb_shas, vectors = load_embeddings(engine, model_id)
        row = {s: i for i, s in enumerate(emb_shas)}
        lacking = next((s for s in pool_shas if s not in row), None)
        if lacking is not None:
            raise SearchError(f"image {lacking} has no embedding of model {model_id[:12]}: tag it again to add one")
        emb = vectors[[row[s] for s in pool_shas]]
        covered = vectors[[row[s] for s in sorted(done) if s in row]] if done else None
    picks = choose(strategy, n, probs, emb, covered, seed)
    margin = margin_uncertainty(probs)
    paths = latest_paths(engine, [pool_shas[i] for i in picks])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["rank", "sha256", "path", "margin_uncertainty"])
        for rank, i in enumerate(picks, 1):
            w.writerow([rank, pool_shas[i], paths.get(pool_shas[i], ""), f"{margin[i]:.6f}"])
    info: dict[str, Any] = {"out": str(out), "model_id": model_id, "selected": len(picks), "pool": len(pool_shas)}
    if tasks:
        info.update(_write_tasks(engine, model_id, schema, [pool_shas[i] for i in picks], paths, tasks, image_root))
    return info


def _labelled_shas(engine: Engine, path: str | Path) -> set[str]:
    """Content hashes of the photos a file names (paths, matched through image_paths, or sha256 values)."""
    text = Path(path).read_text(encoding="utf-8").splitlines()
    if text and text[0].split(",")[0].strip().lower() == "path":
        names = [row["path"] for row in csv.DictReader(text)]
    else:
        names = [line.strip() for line in text if line.strip()]
    shas = {s for s in names if len(s) == 64 and all(c in "0123456789abcdef" for c in s)}
    wanted = [s for s in names if s not in shas]
    with engine.connect() as conn:
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            rows = conn.execute(
                sa.select(image_paths.c.sha256, image_paths.c.path).where(image_paths.c.path.in_(chunk))
            )
            shas |= {r.sha256 for r in rows}
    return shas


def _write_tasks(
    engine: Engine,
    model_id: str,
    schema: dict[str, Any],
    shas: list[str],
    paths: dict[str, str],
    out: str | Path,
    image_root: str | Path | None,
) -> dict[str, Any]:
    """The picks as Label Studio tasks (in rank order) and the labeling config beside them."""
    groups: dict[str, dict[str, tuple[str, float]]] = {s: {} for s in shas}
    q = sa.select(predictions.c.sha256, predictions.c.group_name, predictions.c.class_name, predictions.c.probability)
    q = q.where(predictions.c.model_id == model_id, predictions.c.sha256.in_(shas))
    with engine.connect() as conn:
        for row in conn.execute(q):
            groups[row.sha256][row.group_name] = (row.class_name, float(row.probability))
    items = [{"sha256": s, "path": paths.get(s), "groups": groups[s]} for s in shas]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([label_studio_task(i, schema, model_id, image_root) for i in items], indent=1) + "\n")
    config = out.with_name(out.name.removesuffix(out.suffix) + ".label_config.xml")
    config.write_text(label_config(schema), encoding="utf-8")
    return {"tasks": str(out), "config": str(config)}
