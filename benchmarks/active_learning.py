"""Choosing what to label, simulated on the FashionDataset as the active-learning literature measures it.

The pool is the train split's training rows (the test holdout and the selection holdout left out); their labels are
hidden until a strategy picks them. Each seed starts from the same random ``--start`` labelled photos; every round
each strategy (``fashattr.catalog.select.choose``, the code ``fashattr select`` runs) picks ``--batch`` more from
what is left, using the current model's probabilities and the images' embeddings; the model is retrained on all
labels so far and scored on the fixed test holdout (501 photos nothing selects on), and on the selection holdout
(450 photos: where a user would compare strategies, and where ``--c auto`` chooses C).

The model: the pretrained backbone of ``linear_probe`` (EfficientNet-Lite0 from its PyPI package, 224 px) frozen,
its pooled features computed once and cached (``engine.features``), and heads retrained from scratch every round:

- ``--head logistic`` (the default): the features reduced by PCA fitted on the pool's features (no labels), one
  logistic regression per group (scikit-learn, multinomial, C as ``--c``). ``--c auto`` (the default) chooses C on
  the selection holdout before any curve; ``--pca auto`` chooses the PCA size with it.
- ``--head mlp``: the features standardised (the pool's mean and spread; no labels), one hidden layer shared by
  every group's linear head (PyTorch, AdamW, one-cycle), its width and epochs chosen on the selection holdout
  (``MLP_GRID``) the same way: a second learner, to see whether a strategy's gain is the linear heads' alone.

``--views flip`` trains the heads on each photo's mirror image too and averages both images' probabilities (the
flip augmentation and test-time flip ``linear_probe`` itself uses; the cache holds both views); ``--views auto``
chooses plain or flip with the heads' setting on the selection holdout.

``--mlp 512x60`` fixes the MLP's setting instead of choosing it.

``--evaluate cv`` scores by cross-validation instead of on the selection holdout alone: the pool and the selection
holdout (every labelled photo the test holdout leaves, 4,499) are split once into ``--folds`` folds (10: 449-450 photos
each, a pool of 4,049-4,050 as with the holdouts), and seed i's simulation picks from the other folds and is scored on
fold i mod ``--folds`` (the "held-out folds") and on the test holdout. Ten seeds score on all 4,499 photos instead
of 450, which shrinks the noise of which photos a holdout holds; the heads' setting must be fixed beforehand, since
the folds hold the photos it would be chosen on.

A whole curve costs seconds per round instead of a fine-tune per round. The embeddings the k-center and BADGE strategies
use are the same features, L2-normalised: what ``fashattr tag`` stores.

``bald`` and ``powerbald`` (``fashattr.catalog.select.choose_sampled``) need ``--head mlp``: they score the pool by
the disagreement of ``MC_DRAWS`` forward passes with the MLP's dropout left on (:meth:`MLPHeads.samples`); the model
that is scored keeps its dropout off, as for every other strategy.

Four more were tried here and are not in ``fashattr select`` (``--strategies`` names them; ``TRIED``):

- ``density``: information density (Settles & Craven 2008): margin uncertainty times the photo's density, the mean
  cosine similarity to its ``DENSITY_NEIGHBOURS`` nearest photos of the pool, so an outlier (an odd photo, a label
  nobody agrees on) is not picked for being unsure;
- ``dropquery`` (``--head mlp``): DropQuery (Gupte et al. 2024, "Revisiting Active Learning in the Era of Vision
  Foundation Models"): the photos whose predicted class, of any group, changes in most of ``DROPQUERY_PASSES``
  passes with the input features dropped out at ``DROPQUERY_RATE`` are the candidates; k-means on their embeddings
  into a batch's worth of clusters, and the photo nearest each centre is picked;
- ``margin-per-group``: margin, but the groups take turns, each picking the photo nearest its own boundary (the
  smallest gap between its two best classes) that no group has picked yet, where ``margin`` averages the groups'
  gaps and so favours the groups of many classes;
- ``ensemble-margin`` (``--head mlp``): margin on the mean probabilities of ``ENSEMBLE_MEMBERS`` MLP heads fitted
  on the same labels from different random starts (Beluch et al. 2018, "The power of ensembles for active learning
  in image classification"); the first member is the model that is scored, as for every other strategy, so the
  ensemble only chooses. Not in ``fashattr select``, which ranks one model's catalog: it would need several bundles
  tagging the same photos.

None reaches the target; ``benchmarks/README.md`` has each one's measured curves.

Reported: overall accuracy (the shop's metric; argmax) and average per-class accuracy against the number of
labels, mean and standard deviation over the seeds, and the target of issue 33: the labels each strategy needs to
reach random selection's accuracy at 2,000 labels, and seed by seed each strategy at 1,400 labels (``--budget``)
minus random at 2,000, with two 95% intervals: over the seeds (a t-interval), and by a two-level bootstrap of the
holdout's photos and the seeds (:func:`photo_bootstrap`; it also sees the noise of which photos a holdout holds,
which the seeds cannot show and which makes the two holdouts disagree).

    python benchmarks/active_learning.py --seeds 0,1,2 --results benchmarks/results/active_learning
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fashattr.catalog import select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_line

# Strategies measured here but not offered by fashattr select (see the docstring for each one's reason)
TRIED = ("density", "dropquery", "margin-per-group", "ensemble-margin")
# fashattr select's strategies, random first, then those that need the MLP's dropout samples (not in the default),
# then the tried ones
STRATEGIES = ("random", *(s for s in select.STRATEGIES if s != "random"), *select.SAMPLED_STRATEGIES, *TRIED)
MC_DRAWS = 20  # bald, powerbald: dropout forward passes per round (Gal et al. 2017 use 20)
DENSITY_NEIGHBOURS = 20  # density: how many nearest photos of the pool a photo's density averages over
DROPQUERY_RATE, DROPQUERY_PASSES = 0.5, 3  # dropquery: feature dropout rate and passes (Gupte et al. 2024: 3)
ENSEMBLE_MEMBERS = 5  # ensemble-margin: MLP heads whose probabilities are averaged (Beluch et al. 2018: 5-10)
NEEDS_MLP = (*select.SAMPLED_STRATEGIES, "dropquery", "ensemble-margin")  # strategies the logistic heads cannot run
METRICS = ("overall_acc", "avg_class_acc")  # on the test holdout; "selection_" (or "cv_") + each: the second holdout
HOLDOUT_NAMES = {"test": "test", "selection": "selection", "cv": "held-out folds"}  # table headings
C_GRID = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)  # what --c auto tries on the selection holdout
PCA_GRID = (64, 128, 256, 512)  # what --pca auto tries (with every C of C_GRID under --c auto)
MLP_GRID = ((256, 30), (512, 60))  # (hidden width, epochs) that --head mlp tries on the selection holdout


def select_strategies() -> tuple[str, ...]:
    """What ``fashattr select`` offers, random first: the default ``--strategies``."""
    return tuple(s for s in STRATEGIES if s not in (*select.SAMPLED_STRATEGIES, *TRIED))


def features(recipe: str, views: int = 1) -> dict[str, Any]:
    """The pool's, the selection holdout's and the test holdout's cached backbone features ``(views, N, F)``: the
    plain image, and with ``views`` 2 its mirror image too; their labels and the schema."""
    import torch

    from fashattr.cli import resolve_config
    from fashattr.config import load_config
    from fashattr.data.prepare import load_train_eval
    from fashattr.engine.features import cached_features
    from fashattr.models import create_model

    cfg = load_config(resolve_config(recipe))
    d = cfg.data
    schema, train, selection, test = load_train_eval(d, progress=False)
    assert test is not None and train.labels is not None and test.labels is not None
    assert selection.labels is not None
    model = create_model(cfg.model, schema, d.image_size)
    device = torch.device("cpu")
    # Both views, as linear_probe caches them (a cache hit after one linear_probe run); --views picks how many are used.
    both = ("none", "flip")
    feats = cached_features(model.backbone, train.images, d.mean, d.std, both, device, d.cache_dir)[:views].numpy()
    return {
        "schema": schema,
        "pool": feats[:, train.rows],
        "pool_labels": train.labels,
        "test": feats[:, test.rows],
        "test_labels": test.labels,
        "selection": feats[:, selection.rows],
        "selection_labels": selection.labels,
        "second": "selection",  # what the second holdout is: the selection holdout, or (cv_split) a held-out fold
        "recipe": recipe,
    }


def metric_keys(second: str) -> tuple[str, ...]:
    """The curve's metrics: the test holdout's unprefixed, the second holdout's (``selection`` or ``cv``) prefixed."""
    return (*METRICS, *(f"{second}_{m}" for m in METRICS))


def folds(n: int, k: int) -> list[np.ndarray]:
    """``k`` near-equal folds of ``n`` photos by one fixed shuffle (seed 0), the same for every run and strategy."""
    return np.array_split(np.random.default_rng(0).permutation(n), k)


def cv_split(data: dict[str, Any], fold: np.ndarray) -> dict[str, Any]:
    """``data`` for cross-validation: every labelled photo the test holdout leaves (the pool and the selection
    holdout, in that order) but ``fold`` is the simulation's pool, and ``fold`` is the second holdout (``cv``)."""
    every = np.concatenate([data["pool"], data["selection"]], axis=1)
    labels = {g: np.concatenate([v, data["selection_labels"][g]]) for g, v in data["pool_labels"].items()}
    rest = np.setdiff1d(np.arange(every.shape[1]), fold)
    return data | {
        "pool": every[:, rest],
        "pool_labels": {g: v[rest] for g, v in labels.items()},
        "selection": every[:, fold],
        "selection_labels": {g: v[fold] for g, v in labels.items()},
        "second": "cv",
    }


def fit_heads(x: np.ndarray, labels: dict[str, np.ndarray], schema: Any, setting: dict[str, Any]) -> Any:
    """Heads fitted on ``x`` ``(views, N, F)`` for ``setting``: ``{"c": ...}`` (one logistic regression per group,
    every view a training row) or ``{"hidden": ..., "epochs": ..., "seed": ...}`` (:class:`MLPHeads`)."""
    if "hidden" in setting:
        return MLPHeads(x, labels, schema, setting["hidden"], setting["epochs"], setting.get("seed", 0))
    from sklearn.linear_model import LogisticRegression

    heads = {}
    rows = x.reshape(-1, x.shape[-1])
    for g in schema.groups:
        y = np.tile(labels[g.name], len(x))
        known = y >= 0
        head = LogisticRegression(C=setting["c"], max_iter=500)
        head.fit(rows[known], y[known])
        heads[g.name] = head
    return heads


class MLPHeads:
    """One hidden layer (input dropout 0.2, GELU, dropout 0.5) shared by a linear head per group, trained on the
    groups' summed cross-entropy (a missing label, -1, is ignored): AdamW (weight decay 0.05), one-cycle to 1e-3,
    batches of 128. Shared, so every group's labels shape the features the others see. With two views each row's
    view is drawn anew every epoch (the mirror image half the time), as ``linear_probe`` trains on cached features."""

    def __init__(
        self, x: np.ndarray, labels: dict[str, np.ndarray], schema: Any, hidden: int, epochs: int, seed: int
    ) -> None:
        import torch

        torch.manual_seed(seed)
        nn = torch.nn
        feats = torch.as_tensor(x, dtype=torch.float32)
        views, n, dims = feats.shape
        self.body = nn.Sequential(nn.Dropout(0.2), nn.Linear(dims, hidden), nn.GELU(), nn.Dropout(0.5))
        self.heads = nn.ModuleDict({g.name: nn.Linear(hidden, g.num_classes) for g in schema.groups})
        params = [*self.body.parameters(), *self.heads.parameters()]
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
        ys = {g.name: torch.as_tensor(labels[g.name], dtype=torch.long) for g in schema.groups}
        batch = 128
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=epochs * -(-n // batch))
        order = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            perm = torch.randperm(n, generator=order)
            view = torch.randint(views, (n,), generator=order) if views > 1 else torch.zeros(n, dtype=torch.long)
            for i in range(0, n, batch):
                b = perm[i : i + batch]
                h = self.body(feats[view[b], b])
                loss = sum(
                    nn.functional.cross_entropy(head(h), ys[name][b], ignore_index=-1)
                    for name, head in self.heads.items()
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        self.body.eval()

    def probabilities(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Per group ``(N, C)``: the mean of the views' softmax (test-time flip with two views)."""
        import torch

        with torch.no_grad():
            h = self.body(torch.as_tensor(x, dtype=torch.float32))
            return {
                name: torch.softmax(head(h), -1).mean(0).numpy().astype(np.float64) for name, head in self.heads.items()
            }

    def samples(self, x: np.ndarray, draws: int, seed: int) -> dict[str, np.ndarray]:
        """Per group ``(draws, N, C)``: :meth:`probabilities` with the dropout left on, one mask per pass (Monte Carlo
        dropout, Gal & Ghahramani 2016), for BALD. The same ``seed`` gives the same masks."""
        import torch

        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        self.body.train()
        try:
            passes = [self.probabilities(x) for _ in range(draws)]
        finally:
            self.body.eval()
            torch.random.set_rng_state(state)  # the masks must not shift the next round's training
        return {name: np.stack([p[name] for p in passes]) for name in self.heads}


def pool_density(emb: np.ndarray, k: int = DENSITY_NEIGHBOURS) -> np.ndarray:
    """Per photo, the mean cosine similarity to its ``k`` nearest other photos of ``emb`` (unit vectors ``(N, F)``):
    high in a crowd of alike photos, low for an outlier."""
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)  # a photo is not its own neighbour
    return -np.sort(-sims, axis=1)[:, :k].mean(1)


def density_margin(probs: dict[str, np.ndarray], density: np.ndarray, n: int) -> np.ndarray:
    """``density``'s ``n`` picks, best first: margin uncertainty times the photos' :func:`pool_density`."""
    score = select.margin_uncertainty(probs) * density
    return np.argsort(-score, kind="stable")[: min(n, len(score))]


def margin_per_group(probs: dict[str, np.ndarray], n: int) -> np.ndarray:
    """``margin-per-group``'s ``n`` picks, in order: the groups of ``probs`` (per group ``(N, C)``) take turns, each
    picking its smallest-margin photo not picked yet."""
    orders = [np.argsort(-select.margin_uncertainty({g: p}), kind="stable") for g, p in probs.items()]
    n = min(n, len(orders[0]))
    picked: list[int] = []
    taken: set[int] = set()
    at = [0] * len(orders)
    while len(picked) < n:
        for g, order in enumerate(orders):
            while order[at[g]] in taken:
                at[g] += 1
            picked.append(int(order[at[g]]))
            taken.add(picked[-1])
            if len(picked) == n:
                break
    return np.asarray(picked, dtype=np.int64)


def dropquery(heads: MLPHeads, x: np.ndarray, emb: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``dropquery``'s ``n`` picks of the photos ``x`` ``(views, N, F)`` (embeddings ``emb``): candidates whose
    predictions change under input-feature dropout in most passes, then the photo nearest each of ``n`` k-means
    centres of the candidates. Fewer candidates than ``n``: the photos that changed most often, all of them first."""
    import torch
    from sklearn.cluster import KMeans

    def predicted(probs: dict[str, np.ndarray]) -> np.ndarray:
        return np.stack([p.argmax(1) for p in probs.values()], 1)

    clean = predicted(heads.probabilities(x))
    masks = torch.Generator().manual_seed(seed)
    changed = np.zeros(x.shape[1])
    feats = torch.as_tensor(x, dtype=torch.float32)
    for _ in range(DROPQUERY_PASSES):
        keep = (torch.rand(feats.shape[1:], generator=masks) > DROPQUERY_RATE).float() / (1 - DROPQUERY_RATE)
        changed += (predicted(heads.probabilities((feats * keep).numpy())) != clean).any(1)
    candidates = np.flatnonzero(changed > DROPQUERY_PASSES / 2)
    if len(candidates) <= n:
        return np.argsort(-changed, kind="stable")[: min(n, len(changed))]
    km = KMeans(n_clusters=n, n_init=1, random_state=seed).fit(emb[candidates])
    picks = []
    for c in range(n):
        members = candidates[km.labels_ == c]
        picks.append(members[np.argmin(((emb[members] - km.cluster_centers_[c]) ** 2).sum(1))])
    return np.asarray(picks, dtype=np.int64)


def ensemble_margin(members: list[dict[str, np.ndarray]], n: int) -> np.ndarray:
    """``ensemble-margin``'s ``n`` picks, best first: margin uncertainty of the members' mean probabilities (each a
    dict of per-group ``(N, C)``)."""
    mean = {g: np.mean([m[g] for m in members], axis=0) for g in members[0]}
    score = select.margin_uncertainty(mean)
    return np.argsort(-score, kind="stable")[: min(n, len(score))]


def probabilities(heads: Any, x: np.ndarray, schema: Any) -> dict[str, np.ndarray]:
    """Per group ``(N, C)`` over every class of the schema, the mean over the views of ``x`` ``(views, N, F)`` (a
    class no labelled photo has yet gets 0)."""
    if isinstance(heads, MLPHeads):
        return heads.probabilities(x)
    out = {}
    for g in schema.groups:
        head = heads[g.name]
        p = np.zeros((x.shape[1], g.num_classes))
        p[:, head.classes_] = np.mean([head.predict_proba(view) for view in x], axis=0)
        out[g.name] = p
    return out


def score(heads: Any, x: np.ndarray, labels: dict[str, np.ndarray], schema: Any) -> dict[str, float]:
    return score_of(probabilities(heads, x, schema), labels, schema)


def score_of(probs: dict[str, np.ndarray], labels: dict[str, np.ndarray], schema: Any) -> dict[str, float]:
    """Overall and average per-class accuracy of ``probs`` (argmax), by ``fashattr.metrics``."""
    from fashattr.metrics import compute_metrics

    m = compute_metrics(schema, labels, probs)
    return {"overall_acc": float(m.overall_acc), "avg_class_acc": float(m.avg_class_acc)}


def resampled_metrics(weights: np.ndarray, predicted: np.ndarray, truth: np.ndarray, classes: list[int]) -> dict:
    """Overall and average per-class accuracy ``(draws,)`` of predicted classes ``(N, groups)`` against ``truth``
    (-1: unknown) when photo ``i`` counts ``weights[:, i]`` times (a bootstrap draw of the holdout; all ones: the
    holdout itself). A class a draw holds no photo of is left out of its average, as ``fashattr.metrics`` leaves
    out a class absent from the holdout; a draw that holds no photo at all scores nan (:func:`photo_bootstrap`
    leaves it out)."""
    known = truth >= 0
    right = (predicted == truth) & known
    recalls = []
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a draw with no photo at all: nan, as it should be
        overall = np.mean([(weights @ right[:, g]) / (weights @ known[:, g]) for g in range(truth.shape[1])], axis=0)
        for g, count in enumerate(classes):
            for c in range(count):
                of_c = truth[:, g] == c
                seen = weights @ of_c
                recalls.append(np.where(seen > 0, (weights @ (of_c & right[:, g])) / seen, np.nan))
        return {"overall_acc": overall, "avg_class_acc": np.nanmean(recalls, axis=0)}


def photo_bootstrap(
    predicted: list[dict[int, np.ndarray]],
    baseline: list[dict[int, np.ndarray]],
    at: int,
    target: int,
    truth: dict[str, np.ndarray],
    schema: Any,
    draws: int = 2000,
    rows: list[np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
    """The gap of :func:`paired_gap` (a strategy at ``at`` labels minus random at ``target``, mean over the seeds)
    under a two-level bootstrap: each of ``draws`` draws takes the holdout's photos again (the same photos for
    every seed and both arms) and the seeds again, and the interval is the 2.5th to 97.5th percentile of the mean
    gap over the draws. Where the t-interval of :func:`paired_gap` sees only the seeds' noise, this one also sees
    which photos the holdout happened to hold (a class of 2 photos moves the average per-class accuracy by half
    its recall). ``predicted`` and ``baseline``: per seed, the :func:`simulate` predictions of one holdout
    ``{labels: (N, groups)}``. ``rows``: per seed, which of ``truth``'s photos that seed's holdout is, in the order
    of its predictions (cross-validation, where each seed is scored on its own fold; a draw's photos are drawn from
    every fold at once); None: every photo, for every seed."""
    y = np.stack([truth[g.name] for g in schema.groups], 1)
    classes = [g.num_classes for g in schema.groups]
    n = len(y)
    rng = np.random.default_rng(0)
    weights = np.stack([np.bincount(rng.integers(n, size=n), minlength=n) for _ in range(draws)]).astype(np.float64)

    gaps: dict[str, list[np.ndarray]] = {"overall_acc": [], "avg_class_acc": []}
    for i, (ours, theirs) in enumerate(zip(predicted, baseline, strict=True)):
        w, truth_i = (weights, y) if rows is None else (weights[:, rows[i]], y[rows[i]])
        a = resampled_metrics(w, ours[reached(ours, at)], truth_i, classes)
        b = resampled_metrics(w, theirs[reached(theirs, target)], truth_i, classes)
        for m in gaps:
            gaps[m].append(a[m] - b[m])
    seeds = rng.integers(len(predicted), size=(draws, len(predicted)))  # each draw's seeds, drawn again
    out = {}
    for m, per_seed in gaps.items():
        table = np.stack(per_seed)  # (seeds, draws)
        mean_gap = table[seeds, np.arange(draws)[:, None]].mean(1)  # (draws,): the drawn seeds' mean gap
        low, high = np.nanpercentile(mean_gap, [2.5, 97.5])
        out[m] = {"low": float(low), "high": float(high)}
    return out


def reduce(data: dict[str, Any], dims: int) -> dict[str, np.ndarray]:
    """The pool's, the selection holdout's and the test holdout's features ``(views, N, dims)`` after a PCA fitted
    on the pool's plain-image features (unsupervised: no label is used)."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=dims, random_state=0).fit(data["pool"][0])
    return {k: np.stack([pca.transform(view) for view in data[k]]) for k in ("pool", "selection", "test")}


def standardise(data: dict[str, Any]) -> dict[str, np.ndarray]:
    """The three splits' features centred and scaled by the pool's plain-image mean and spread (no label is used)."""
    mean, spread = data["pool"][0].mean(0), data["pool"][0].std(0) + 1e-6
    return {k: (data[k] - mean) / spread for k in ("pool", "selection", "test")}


def inputs(data: dict[str, Any], setting: dict[str, Any]) -> dict[str, np.ndarray]:
    """What the heads of ``setting`` see: the first ``setting["views"]`` views (1: the plain image; 2: its mirror
    image too), standardised (MLP) or reduced by the PCA of ``setting["pca"]``."""
    views = setting.get("views", 1)
    data = data | {k: data[k][:views] for k in ("pool", "selection", "test")}
    return standardise(data) if "hidden" in setting else reduce(data, setting["pca"])


def parse_mlp(text: str) -> dict[str, int]:
    """``--mlp 512x60``: the MLP heads' hidden width and epochs."""
    try:
        hidden, epochs = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--mlp {text!r}: expected WIDTHxEPOCHS, as 512x60") from None
    if hidden < 1 or epochs < 1:
        raise SystemExit(f"--mlp {text!r}: the width and the epochs must be positive")
    return {"hidden": hidden, "epochs": epochs}


def describe(setting: dict[str, Any]) -> str:
    if "hidden" in setting:
        return (
            f"standardised features, one shared hidden layer of {setting['hidden']} and a linear head per group "
            f"(MLP, {setting['epochs']} epochs)"
        )
    return f"PCA to {setting['pca']}, one logistic regression per group (C {setting['c']})"


def choose_heads(
    data: dict[str, Any], seeds: list[int], target: int, candidates: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The setting of ``candidates`` whose heads, fitted on ``target`` random labels, score best on the selection
    holdout (mean of overall and average per-class accuracy over the seeds): chosen before any curve is drawn and
    without the test holdout, as a user without test labels would choose it."""
    rows = []
    x_of: dict[tuple[Any, int], dict[str, np.ndarray]] = {}
    for setting in candidates:
        key = (setting.get("pca", "standardised"), setting.get("views", 1))
        if key not in x_of:  # one PCA (or scaling) per size and views, shared by every C
            x_of[key] = inputs(data, setting)
        x = x_of[key]
        scores = []
        for seed in seeds:
            picked = np.random.default_rng(seed).permutation(x["pool"].shape[1])[:target]
            labels = {g: v[picked] for g, v in data["pool_labels"].items()}
            heads = fit_heads(x["pool"][:, picked], labels, data["schema"], setting | {"seed": seed})
            scores.append(score(heads, x["selection"], data["selection_labels"], data["schema"]))
        overall = float(np.mean([s["overall_acc"] for s in scores]))
        balanced = float(np.mean([s["avg_class_acc"] for s in scores]))
        rows.append(setting | {"overall_acc": overall, "avg_class_acc": balanced, "mean": (overall + balanced) / 2})
    best = max(rows, key=lambda r: r["mean"])
    return {k: best[k] for k in candidates[0]}, rows


def simulate(
    data: dict[str, Any], x: dict[str, np.ndarray], strategy: str, seed: int, args: argparse.Namespace
) -> tuple[list[dict[str, float]], dict[int, dict[str, np.ndarray]]]:
    """One seed's curve for ``strategy``, and every round's predicted classes ``(N, groups)`` on each holdout
    (``{labels: {"test": ..., second: ...}}``, for :func:`photo_bootstrap`; ``second``: ``data["second"]``);
    ``x``: what the heads see (:func:`inputs`, computed once per pool)."""
    schema, second = data["schema"], data["second"]
    pool, test, selection = x["pool"], x["test"], x["selection"]
    plain = data["pool"][0]  # the embeddings fashattr tag stores: the plain image's
    emb = plain / np.linalg.norm(plain, axis=1, keepdims=True)
    n = pool.shape[1]
    labelled = np.random.default_rng(seed).permutation(n)[: args.start]
    density: np.ndarray | None = None
    curve = []
    predicted: dict[int, dict[str, np.ndarray]] = {}
    while True:
        sub = {g: v[labelled] for g, v in data["pool_labels"].items()}
        heads = fit_heads(pool[:, labelled], sub, schema, args.heads | {"seed": seed})
        on_test = probabilities(heads, test, schema)
        on_selection = probabilities(heads, selection, schema)
        curve.append(
            {
                "labels": len(labelled),
                **score_of(on_test, data["test_labels"], schema),
                **{f"{second}_{m}": v for m, v in score_of(on_selection, data["selection_labels"], schema).items()},
            }
        )
        predicted[len(labelled)] = {
            "test": np.stack([on_test[g.name].argmax(1) for g in schema.groups], 1).astype(np.int8),
            second: np.stack([on_selection[g.name].argmax(1) for g in schema.groups], 1).astype(np.int8),
        }
        if len(labelled) >= args.stop:
            return curve, predicted
        rest = np.setdiff1d(np.arange(n), labelled)
        if strategy in select.SAMPLED_STRATEGIES:
            draws = heads.samples(pool[:, rest], MC_DRAWS, seed=seed + len(labelled))
            picks = select.choose_sampled(strategy, args.batch, draws, seed=seed + len(labelled))
        elif strategy == "dropquery":
            picks = dropquery(heads, pool[:, rest], emb[rest], args.batch, seed=seed + len(labelled))
        elif strategy == "ensemble-margin":
            # The scored heads are the first member; the others differ only in their random start (seed + 1000 j)
            others = [
                fit_heads(pool[:, labelled], sub, schema, args.heads | {"seed": seed + 1000 * j})
                for j in range(1, ENSEMBLE_MEMBERS)
            ]
            picks = ensemble_margin([probabilities(h, pool[:, rest], schema) for h in [heads, *others]], args.batch)
        elif strategy == "margin-per-group":
            picks = margin_per_group(probabilities(heads, pool[:, rest], schema), args.batch)
        elif strategy == "density":
            density = pool_density(emb) if density is None else density  # of the whole pool, once per curve
            picks = density_margin(probabilities(heads, pool[:, rest], schema), density[rest], args.batch)
        else:
            probs = probabilities(heads, pool[:, rest], schema)
            picks = select.choose(strategy, args.batch, probs, emb[rest], emb[labelled], seed=seed + len(labelled))
        labelled = np.concatenate([labelled, rest[picks]])


def reached(rounds: Iterable[int], labels: int) -> int:
    """The first round (its number of labels) at or past ``labels``: a batch may step over a budget."""
    return min(k for k in rounds if k >= labels)


def labels_to_reach(curve: list[dict[str, float]], metric: str, value: float) -> int | None:
    """The fewest labels at which the (mean) curve reaches ``value``; None if it never does."""
    for point in curve:
        if point[metric] >= value - 1e-12:
            return int(point["labels"])
    return None


def paired_gap(
    curves: list[list[dict[str, float]]], baseline: list[list[dict[str, float]]], at: int, target: int, metric: str
) -> dict[str, float]:
    """Seed by seed, a strategy's ``metric`` at ``at`` labels minus random's at ``target`` labels (the same seed's
    start and heads, so the pairs share their noise): the mean and its 95% t-interval over the seeds. The interval
    lying above 0 is what "reaches random's score with ``at`` labels" means beyond the seeds' spread; it says
    nothing of the holdout's own sampling error, which every strategy shares."""
    from scipy import stats

    def value(curve: list[dict[str, float]], labels: int) -> float:
        points = {int(p["labels"]): p[metric] for p in curve}
        return points[reached(points, labels)]

    gaps = np.array([value(c, at) - value(b, target) for c, b in zip(curves, baseline, strict=True)])
    mean = float(gaps.mean())
    if len(gaps) < 2:
        return {"mean": mean, "low": float("nan"), "high": float("nan"), "seeds": len(gaps)}
    half = float(stats.t.ppf(0.975, len(gaps) - 1) * gaps.std(ddof=1) / np.sqrt(len(gaps)))
    return {"mean": mean, "low": mean - half, "high": mean + half, "seeds": len(gaps)}


def mean_curve(curves: list[list[dict[str, float]]], second: str = "selection") -> list[dict[str, float]]:
    """Mean and standard deviation over the seeds, round by round, of every metric (:func:`metric_keys`)."""
    out = []
    for points in zip(*curves, strict=True):
        row: dict[str, float] = {"labels": points[0]["labels"]}
        for metric in metric_keys(second):
            values = [p[metric] for p in points]
            row[metric], row[metric + "_std"] = float(np.mean(values)), float(np.std(values))
        out.append(row)
    return out


def plot(means: dict[str, list[dict[str, float]]], path: Path, second: str = "selection") -> None:
    """The mean curves ± one standard deviation over the seeds: a row per holdout, a column per metric."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 8))
    axes = fig.subplots(2, 2)
    for row, (prefix, holdout) in enumerate((("", "test holdout"), (f"{second}_", HOLDOUT_NAMES[second]))):
        for ax, metric, title in zip(
            axes[row], METRICS, ("overall accuracy", "average per-class accuracy"), strict=True
        ):
            for strategy, curve in means.items():
                x = [p["labels"] for p in curve]
                y = np.array([p[prefix + metric] for p in curve])
                s = np.array([p[prefix + metric + "_std"] for p in curve])
                ax.plot(x, y, label=strategy, marker=".")
                ax.fill_between(x, y - s, y + s, alpha=0.15)
            ax.set_xlabel("labelled photos")
            ax.set_ylabel(f"{title}, {holdout}")
            ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument(
        "--strategies",
        default=",".join(select_strategies()),
        help=f"comma-separated, of {','.join(STRATEGIES)} ({', '.join(NEEDS_MLP)}: "
        "--head mlp only); the default: fashattr select's",
    )
    ap.add_argument("--recipe", default="linear_probe", help="the recipe whose frozen backbone gives the features")
    ap.add_argument("--start", type=int, default=300, help="random labelled photos every seed starts from")
    ap.add_argument("--batch", type=int, default=200, help="photos picked per round")
    ap.add_argument("--stop", type=int, default=2100, help="stop once this many photos are labelled")
    ap.add_argument(
        "--pca", default="256", help="feature dimensions the heads see; auto: chosen with C (--c auto) on the selection"
    )
    ap.add_argument(
        "--c",
        default="auto",
        help="inverse L2 strength of the logistic regressions; auto: the best of C_GRID on the selection holdout",
    )
    ap.add_argument(
        "--head",
        choices=("logistic", "mlp"),
        default="logistic",
        help="the heads retrained every round; mlp: its width and epochs chosen of MLP_GRID on the selection holdout",
    )
    ap.add_argument(
        "--views",
        choices=("plain", "flip", "auto"),
        default="plain",
        help="flip: the heads also train on each photo's mirror image (drawn per epoch for the MLP) and average both "
        "images' probabilities, the flip augmentation and test-time flip linear_probe uses; auto: plain or flip, "
        "chosen with the heads' setting on the selection holdout",
    )
    ap.add_argument(
        "--mlp",
        metavar="WIDTHxEPOCHS",
        help="fix the MLP's hidden width and epochs (512x60), not chosen of MLP_GRID on the selection holdout",
    )
    ap.add_argument(
        "--evaluate",
        choices=("holdouts", "cv"),
        default="holdouts",
        help="holdouts: every seed scored on the test and the selection holdout; cv: also on the test holdout, and "
        "seed i on fold i (of --folds) of every labelled photo the test holdout leaves, its simulation pool the other "
        "folds (the heads' setting must be fixed: the folds hold the photos it would be chosen on)",
    )
    ap.add_argument("--folds", type=int, help="--evaluate cv: folds (default 10); the seeds must cover each equally")
    ap.add_argument("--target", type=int, default=2000, help="random selection's labels the others are held to")
    ap.add_argument(
        "--budget", type=int, default=1400, help="labels at which each strategy is compared with random at --target"
    )
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/active_learning"))
    args = ap.parse_args(argv)
    started = time.perf_counter()
    if args.budget > args.target:
        raise SystemExit(f"--budget {args.budget} is above --target {args.target}: the budget is what a strategy saves")
    if args.stop < args.target:
        raise SystemExit(f"--stop {args.stop} is below --target {args.target}: random's curve must reach the target")
    if args.pca == "auto" and args.c != "auto":
        raise SystemExit("--pca auto chooses C with it: pass --c auto")
    if args.head == "mlp" and (args.pca != "256" or args.c != "auto"):
        raise SystemExit("--pca and --c set the logistic heads; --head mlp chooses its own setting (MLP_GRID)")
    if args.mlp is not None and args.head != "mlp":
        raise SystemExit(f"--mlp {args.mlp} sets the MLP heads: pass --head mlp")
    fixed_mlp = parse_mlp(args.mlp) if args.mlp is not None else None
    strategies = args.strategies.split(",")
    if "random" not in strategies:
        raise SystemExit(f"--strategies {args.strategies}: random is the baseline every target is measured against")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise SystemExit(f"--strategies: unknown {unknown}; choose from {list(STRATEGIES)}")
    sampled = [s for s in strategies if s in NEEDS_MLP]
    if sampled and args.head != "mlp":
        raise SystemExit(
            f"--strategies {','.join(sampled)} needs the MLP heads (their dropout, or their random starts): "
            "pass --head mlp"
        )
    if args.views == "auto" and args.head == "logistic" and args.c != "auto":
        raise SystemExit("--views auto chooses the views with the heads' setting: pass --c auto")
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.folds is not None and args.evaluate != "cv":
        raise SystemExit(f"--folds {args.folds} splits the photos for --evaluate cv only: pass --evaluate cv")
    args.folds = 10 if args.folds is None else args.folds
    if args.evaluate == "cv":
        chosen = "--views auto" if args.views == "auto" else None
        if args.head == "mlp" and fixed_mlp is None:
            chosen = "the MLP's width and epochs (pass --mlp WIDTHxEPOCHS)"
        if args.head == "logistic" and "auto" in (args.c, args.pca):
            chosen = "--c auto / --pca auto"
        if chosen:
            raise SystemExit(
                f"--evaluate cv scores on the selection holdout's photos too, so nothing may be chosen on them: fix "
                f"{chosen}"
            )
        if args.folds < 2 or len(seeds) % args.folds:
            raise SystemExit(
                f"--evaluate cv: {len(seeds)} seeds over {args.folds} folds; seed i is scored on fold i mod "
                "--folds, so the seeds must be a multiple of the folds (at least 2) for every fold to count alike"
            )
    views_grid = {"plain": (1,), "flip": (2,), "auto": (1, 2)}[args.views]
    data = features(args.recipe, max(views_grid))
    c_rows: list[dict[str, Any]] = []
    if fixed_mlp is not None:
        args.heads = {"views": views_grid[0], **fixed_mlp}
    elif args.head == "mlp":
        candidates = [{"views": v, "hidden": h, "epochs": e} for v in views_grid for h, e in MLP_GRID]
        args.heads, c_rows = choose_heads(data, seeds, args.target, candidates)
    elif args.c == "auto":
        dims_grid = PCA_GRID if args.pca == "auto" else (int(args.pca),)
        candidates = [{"views": v, "pca": dims, "c": c} for v in views_grid for dims in dims_grid for c in C_GRID]
        args.heads, c_rows = choose_heads(data, seeds, args.target, candidates)
    else:
        args.heads = {"views": views_grid[0], "pca": int(args.pca), "c": float(args.c)}
    second = "cv" if args.evaluate == "cv" else "selection"
    split = folds(data["pool"].shape[1] + data["selection"].shape[1], args.folds) if second == "cv" else []
    # Seed i's data: the same for every seed, or (cv) its fold held out. One PCA (or scaling) per pool, for every
    # strategy: it sees no labels, so it never depends on the strategy.
    of_seed = [cv_split(data, split[i % args.folds]) if split else data for i in range(len(seeds))]
    x_of = [inputs(d, args.heads) for d in (of_seed[: args.folds] if split else of_seed[:1])]
    runs = {
        s: [simulate(of_seed[i], x_of[i % len(x_of)], s, seed, args) for i, seed in enumerate(seeds)]
        for s in strategies
    }
    curves = {s: [curve for curve, _ in r] for s, r in runs.items()}
    means = {s: mean_curve(c, second) for s, c in curves.items()}
    target = next(p for p in means["random"] if p["labels"] >= args.target)
    every = metric_keys(second)
    reach = {s: {m: labels_to_reach(means[s], m, target[m]) for m in every} for s in strategies}
    gaps = {
        s: {m: paired_gap(curves[s], curves["random"], args.budget, args.target, m) for m in every} for s in strategies
    }
    # Each holdout's truth and, per seed, which of its photos the seed was scored on (cv: the seed's fold of all).
    truth = {"test": data["test_labels"], second: data["selection_labels"]}
    rows: dict[str, list[np.ndarray] | None] = {"test": None, second: None}
    if split:
        truth[second] = {g: np.concatenate([v, data["selection_labels"][g]]) for g, v in data["pool_labels"].items()}
        rows[second] = [split[i % args.folds] for i in range(len(seeds))]
    photos = {
        s: {
            holdout: photo_bootstrap(
                [{k: v[holdout] for k, v in p.items()} for _, p in runs[s]],
                [{k: v[holdout] for k, v in p.items()} for _, p in runs["random"]],
                args.budget,
                args.target,
                truth[holdout],
                data["schema"],
                rows=rows[holdout],
            )
            for holdout in ("test", second)
        }
        for s in strategies
    }
    for s in strategies:  # the photo-bootstrap interval beside the seeds' one
        for m in every:
            holdout, metric = (second, m.removeprefix(f"{second}_")) if m.startswith(f"{second}_") else ("test", m)
            gaps[s][m]["photos_low"] = photos[s][holdout][metric]["low"]
            gaps[s][m]["photos_high"] = photos[s][holdout][metric]["high"]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    cmd = "python benchmarks/active_learning.py " + " ".join(argv if argv is not None else sys.argv[1:])
    wall = time.perf_counter() - started
    record = {
        "command": cmd.strip(),
        "cpu": machine_line(),
        "wall_s": round(wall, 1),
        "pool": of_seed[0]["pool"].shape[1],
        "test_images": data["test"].shape[1],
        "second_holdout": second,
        "folds": [len(f) for f in split],
        "c_choice": c_rows,
        "random_at_target": target,
        "labels_to_reach_random_at_target": reach,
        "gap_at_budget": gaps,
        "curves": curves,
        "means": means,
        "settings": {k: v for k, v in vars(args).items() if k != "results"} | {"results": str(args.results)},
    }
    # The results name may hold a dot (active_learning_c0.5): append the suffixes, never replace one.
    out = {ext: args.results.with_name(args.results.name + ext) for ext in (".json", ".png", ".md")}
    out[".json"].write_text(json.dumps(record, indent=1) + "\n")
    plot(means, out[".png"], second)
    mirrored = " of each photo and of its mirror image (trained on and averaged)" if args.heads["views"] == 2 else ""
    name = HOLDOUT_NAMES[second]
    header = (
        "| strategy | test: overall acc | test: avg per-class acc | "
        f"{name}: overall acc | {name}: avg per-class acc |\n"
        "|---|---:|---:|---:|---:|"
    )
    lines = [
        "# Choosing what to label: simulated on the FashionDataset (benchmarks/active_learning.py)",
        "",
        f"`{record['command']}` on {record['cpu']}; {wall / 60:.1f} min. Pool: {record['pool']} training photos "
        f"(labels hidden until picked); scored on the {record['test_images']}-photo test holdout. Model: the "
        f"frozen `{args.recipe}` backbone's cached features{mirrored}, {describe(args.heads)}; start {args.start} "
        f"random labels, {args.batch} per round; seeds {args.seeds}.",
        "",
    ]
    if split:
        lines += [
            f"Cross-validated: the {sum(len(f) for f in split)} labelled photos the test holdout leaves (the pool and "
            f"the selection holdout) split once into {args.folds} folds of {min(len(f) for f in split)}-"
            f"{max(len(f) for f in split)}; seed i's simulation draws its start and its picks from the other folds "
            f'and is scored on fold i mod {args.folds} ("held-out folds": the mean over the seeds is the mean over '
            "the folds) and on the test holdout. The heads' setting was fixed beforehand, not chosen on these photos.",
            "",
        ]
    if c_rows:
        keys = list(args.heads)
        lines += [
            f"The heads' setting chosen before any curve, on the {data['selection'].shape[1]}-photo selection holdout "
            f"(never on the test holdout): heads fitted on {args.target} random labels per seed, mean of the two "
            "metrics:",
            "",
            "| " + " | ".join(keys) + " | overall acc | avg per-class acc | mean |",
            "|" + "---:|" * (len(keys) + 3),
            *(
                "| " + " | ".join(str(r[k]) for k in keys) + f" | {r['overall_acc']:.4f} | {r['avg_class_acc']:.4f} | "
                f"{r['mean']:.4f}{' (chosen)' if all(r[k] == args.heads[k] for k in keys) else ''} |"
                for r in c_rows
            ),
            "",
        ]
    lines += [
        f"Random selection at {target['labels']} labels: overall accuracy {target['overall_acc']:.4f}, average "
        f"per-class accuracy {target['avg_class_acc']:.4f} on the test holdout "
        f"({target[f'{second}_overall_acc']:.4f} / {target[f'{second}_avg_class_acc']:.4f} on the {name}). Labels "
        "each strategy needs to reach that (mean curve), on each holdout:",
        "",
        header,
    ]
    for s in strategies:
        cells = [str(reach[s][m] or "not reached") for m in every]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Seed by seed, each strategy at {args.budget} labels minus random at {target['labels']} (the same seed): "
        "mean and 95% interval over the seeds. An interval above 0 reaches random's score with "
        f"{args.budget} labels beyond the seeds' spread; one that holds 0 cannot be told from it.",
        "",
        header,
    ]
    for s in strategies:
        cells = [f"{g['mean']:+.4f} [{g['low']:+.4f}, {g['high']:+.4f}]" for g in (gaps[s][m] for m in every)]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The same gap with each holdout's photos drawn again too: 2,000 bootstrap draws, each of the photos (the "
        "same for every seed and both strategies) and of the seeds, and the 2.5th to 97.5th percentile of the mean "
        "gap. The interval above sees only the seeds; this one also sees which photos a holdout happened to hold, "
        "the noise that makes the two holdouts disagree:",
        "",
        header,
    ]
    for s in strategies:
        cells = [
            f"{g['mean']:+.4f} [{g['photos_low']:+.4f}, {g['photos_high']:+.4f}]" for g in (gaps[s][m] for m in every)
        ]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    for prefix, holdout in (("", "test holdout"), (f"{second}_", name)):
        lines += ["", f"Mean ± std over the seeds, {holdout} (overall accuracy / average per-class accuracy):", ""]
        lines.append("| labels | " + " | ".join(strategies) + " |")
        lines.append("|---:|" + "---|" * len(strategies))
        for i, point in enumerate(means[strategies[0]]):
            cells = []
            for m in (means[s][i] for s in strategies):
                acc, spread, balanced = (m[prefix + k] for k in ("overall_acc", "overall_acc_std", "avg_class_acc"))
                cells.append(f"{acc:.4f} ± {spread:.4f} / {balanced:.4f}")
            lines.append(f"| {int(point['labels'])} | " + " | ".join(cells) + " |")
    lines += ["", f"Figure: `{out['.png']}`.", ""]
    out[".md"].write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
