"""Fit a run's decoding on held-out logits.

What is fitted, per group, on images the model was selected on but never trained on:

- a temperature (:func:`fashattr.calibration.temperature.fit_temperature`): probabilities a user can threshold;
- multi-label groups: a logit threshold per class that maximises that class's F1 (instead of 0 for all);
- single-label groups: metric-aware decoding by post-hoc logit adjustment (Menon et al., 2021): the
  decoded logits are ``logits - tau * log(prior)``, ``prior`` the training split's class shares, with
  ``tau`` chosen on a grid (-2 .. 2) for overall accuracy (mode ``accuracy``) or for average per-class
  accuracy (mode ``balanced``): by default the tau whose adjusted logits have the smallest negative
  log-likelihood (class-balanced for ``balanced``), which held up better on unseen images than maximising
  the metric itself (see :func:`fit_tau`). A model trained with balanced softmax
  (``loss.logit_adjust_tau: 1``) has learnt ``logits + log(prior)`` and needs ``tau`` near -1 to decode
  for overall accuracy; a plain cross-entropy model needs ``tau`` near +1 to decode for average
  per-class accuracy.

The numbers that say whether it works are measured on other images than the ones fitted on: the
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fashattr.calibration.temperature import best_temperature, fit_temperature
from fashattr.metrics import compute_metrics

MODES = ("accuracy", "balanced")
OBJECTIVES = ("nll", "metric")  # what fit_tau optimises on the grid
# tau values tried: -2 .. 2 in steps of 0.05 (-1 undoes balanced softmax, +1 balances plain cross-entropy)
TAU_GRID: tuple[float, ...] = tuple(round(float(t), 2) for t in np.linspace(-2.0, 2.0, 81))


# ---------------------------------------------------------------------------------------------- primitives
def log_prior(counts: np.ndarray) -> np.ndarray:
    """``log`` of the class shares, as the balanced-softmax loss computes them (``losses.GroupLoss``):
    a class never seen counts as seen once, so its log-prior stays finite."""
    counts = np.asarray(counts, dtype=np.float64)
    return np.log(np.maximum(counts, 1.0) / max(float(counts.sum()), 1.0))


def adjustment(prior_log: np.ndarray, tau: float) -> np.ndarray:
    """The per-class offsets added to the logits: ``-tau * log(prior)``."""
    return -float(tau) * np.asarray(prior_log, dtype=np.float64)


def single_label_scores(pred: np.ndarray, target: np.ndarray, num_classes: int) -> tuple[float, float]:
    """``(accuracy, average per-class accuracy)`` of predicted classes on the rows with a known target
    (average over the classes present in ``target``, as ``metrics`` computes it); ``(nan, nan)`` for none."""
    known = target >= 0
    t, p = target[known], pred[known]
    if len(t) == 0:
        return float("nan"), float("nan")
    support = np.bincount(t, minlength=num_classes)
    hits = np.bincount(t[p == t], minlength=num_classes)
    present = support > 0
    return float((p == t).mean()), float((hits[present] / support[present]).mean())


def weighted_nll(logits: np.ndarray, target: np.ndarray, weight: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(``logits`` / ``temperature``), row ``i`` weighted by
    ``weight[target[i]]`` (all rows known)."""
    z = logits / temperature
    m = z.max(axis=1)
    lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
    w = weight[target]
    return float((w * (lse - z[np.arange(len(target)), target])).sum() / w.sum())


def best_weighted_nll(logits: np.ndarray, target: np.ndarray, weight: np.ndarray) -> tuple[float, float]:
    """``(temperature, NLL)`` at the temperature minimising :func:`weighted_nll` (golden-section search over
    log T in ``temperature.T_RANGE``; the NLL is convex in 1/T)."""

    t = best_temperature(lambda temp: weighted_nll(logits, target, weight, temp), tol=1e-3)
    return t, weighted_nll(logits, target, weight, t)


def fit_tau(
    logits: np.ndarray,
    target: np.ndarray,
    prior_log: np.ndarray,
    mode: str,
    grid: Sequence[float] = TAU_GRID,
    objective: str = "nll",
) -> float:
    """The ``tau`` of ``grid`` whose adjusted logits ``logits - tau * log(prior)`` decode best for ``mode``
    on these rows: ``accuracy`` (share of images right) or ``balanced`` (average per-class accuracy).

    ``objective``:

    - ``nll`` (default): the smallest negative log-likelihood of the adjusted logits at their best
      temperature, each image weighted equally (``accuracy``) or by 1 / its class's count in these rows
      (``balanced``: every class weighs the same, the smooth counterpart of average per-class accuracy).
      A proper scoring rule uses every image's probabilities, not only which class wins: on the
      FashionDataset's 450 selection images it chose taus that held up on the test holdout, where the
      metric itself overfitted its rare classes (benchmarks/decoding.py).
    - ``metric``: the largest value of the metric itself; ties (frequent on a few hundred images) go to
      the median of the best taus (the middle of the plateau).

    Rows with an unknown target (-1) are ignored; with none, 0.0.

    Raises:
        ValueError: an unknown mode or objective.
    """
    if mode not in MODES:
        raise ValueError(f"unknown decoding mode {mode!r}; choose from {list(MODES)}")
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose from {list(OBJECTIVES)}")
    known = target >= 0
    z, t = np.asarray(logits, dtype=np.float64)[known], target[known].astype(np.int64)
    if len(t) == 0:
        return 0.0
    taus = np.asarray(grid, dtype=np.float64)
    if objective == "nll":
        counts = np.bincount(t, minlength=z.shape[1])
        weight = np.ones(z.shape[1]) if mode == "accuracy" else 1.0 / np.maximum(counts, 1)
        losses = np.array([best_weighted_nll(z + adjustment(prior_log, tau), t, weight)[1] for tau in taus])
        return float(taus[int(np.argmin(losses))])
    which = 0 if mode == "accuracy" else 1
    values = np.array(
        [single_label_scores((z + adjustment(prior_log, tau)).argmax(1), t, z.shape[1])[which] for tau in taus]
    )
    best = np.flatnonzero(values >= values.max() - 1e-12)
    return float(taus[best[len(best) // 2]])


def f1_threshold(scores: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """The logit threshold ``t`` (a class is present when its logit is > ``t``) that maximises F1 on the
    rows with a known 0/1 ``target``, and that F1.

    Candidates are the midpoints between consecutive distinct scores, one below the lowest (every row
    positive) and one above the highest (none). Ties go to the threshold closest to 0 (the default rule).
    Without a positive or a known row, F1 is undefined: ``(0.0, nan)``.
    """
    known = target >= 0
    s, y = np.asarray(scores, dtype=np.float64)[known], target[known] == 1
    positives = int(y.sum())
    if positives == 0:
        return 0.0, float("nan")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # cut after the last row of each distinct score
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    f1 = 2 * tp / (2 * tp + fp + (positives - tp))
    below = np.r_[s[last[:-1] + 1], s[-1] - 1.0]  # the next lower score (or one below the lowest)
    thresholds = np.r_[(s[last] + below) / 2, s[0] + 1.0]
    f1 = np.r_[f1, 0.0]
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    k = best[np.argmin(np.abs(thresholds[best]))]
    return float(thresholds[k]), float(f1[k])


def macro_f1(scores: np.ndarray, target: np.ndarray, thresholds: np.ndarray | float = 0.0) -> float | None:
    """Mean F1 over the classes with a positive, deciding ``score > threshold`` per class."""
    known, pos = target >= 0, target == 1
    pred = (np.asarray(scores) > thresholds) & known
    tp, fp, fn = (pred & pos).sum(0), (pred & ~pos & known).sum(0), (~pred & pos).sum(0)
    present = pos.sum(0) > 0
    if not present.any():
        return None
    return float((2 * tp / np.maximum(2 * tp + fp + fn, 1))[present].mean())


# ---------------------------------------------------------------------------------------------- fitting
def _fit_on(
    schema: Any,
    logits: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    priors: dict[str, np.ndarray],
    rows: np.ndarray,
    objective: str = "nll",
) -> dict[str, Any]:
    """tau per mode (single-label groups) and thresholds (multi-label groups) fitted on ``rows``."""
    out: dict[str, Any] = {"tau": {m: {} for m in MODES}, "thresholds": {}}
    for g in schema.groups:
        z, t = logits[g.name][rows], labels[g.name][rows]
        if g.kind == "single":
            for m in MODES:
                out["tau"][m][g.name] = fit_tau(z, t, priors[g.name], m, objective=objective)
        else:
            out["thresholds"][g.name] = [f1_threshold(z[:, c], t[:, c])[0] for c in range(g.num_classes)]
    return out


def _decided(
    schema: Any,
    logits: dict[str, np.ndarray],
    priors: dict[str, np.ndarray],
    fitted: dict[str, Any],
    mode: str,
    rows: np.ndarray,
) -> dict[str, np.ndarray]:
    """Decision scores (``decoding.decision_logits``' convention) of ``rows`` under ``fitted``."""
    out = {}
    for g in schema.groups:
        z = logits[g.name][rows].astype(np.float64)
        if mode == "none":
            out[g.name] = z
        elif g.kind == "single":
            out[g.name] = z + adjustment(priors[g.name], fitted["tau"][mode][g.name])
        else:
            out[g.name] = z - np.asarray(fitted["thresholds"][g.name])
    return out


def _metrics(schema: Any, labels: dict[str, np.ndarray], scores: dict[str, np.ndarray]) -> dict[str, Any]:

    m = compute_metrics(schema, labels, scores)
    groups: dict[str, Any] = {}
    for g in schema.groups:
        gm = m.groups[g.name]
        groups[g.name] = {"acc": gm.accuracy, "avg_class_acc": gm.avg_class_acc}
        if g.kind == "multi":
            groups[g.name]["macro_f1"] = macro_f1(scores[g.name], labels[g.name])
    return {"avg_class_acc": m.avg_class_acc, "overall_acc": m.overall_acc, "groups": groups}


def fit_calibration(
    schema: Any,
    logits: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    train_counts: dict[str, np.ndarray],
    folds: int = 5,
    seed: int = 0,
    default: str = "balanced",
    objective: str = "nll",
) -> dict[str, Any]:
    """Temperatures, multi-label thresholds and both decoding modes, fitted on these images, with their
    out-of-fold metrics (``folds``-fold cross-fitting; ``folds`` < 2 skips it).

    Args:
        schema: the run's Schema.
        logits: per group, the model's ``(N, C)`` logits on the selection split.
        labels: per group, the targets (single: ``(N,)`` with -1 unknown; multi: ``(N, C)`` 0/1/-1).
        train_counts: per group, the training split's images per class (the prior of the logit adjustment).
        folds: cross-fitting folds (images assigned at random with ``seed``).
        default: the mode used when a caller names none.
        objective: what :func:`fit_tau` optimises (``nll`` or ``metric``).

    Returns:
        The content of ``calibration.json`` without ``fitted_on``: ``prior``, ``temperature`` (per mode),
        ``thresholds``, ``modes`` (``{mode: {"tau", "offsets", "temperature"}}``), ``default``, ``cross_fit``.
    """

    if default not in MODES:
        raise ValueError(f"unknown default decoding mode {default!r}; choose from {list(MODES)}")
    n = len(next(iter(labels.values())))
    priors = {g.name: log_prior(train_counts[g.name]) for g in schema.groups if g.kind == "single"}
    everything = np.arange(n)
    final = _fit_on(schema, logits, labels, priors, everything, objective)
    modes: dict[str, Any] = {}
    for m in MODES:
        offsets = {g: adjustment(p, final["tau"][m][g]) for g, p in priors.items()}
        temps = {}
        for g in schema.groups:
            z = logits[g.name].astype(np.float64) + offsets.get(g.name, 0.0)
            temps[g.name] = round(fit_temperature(z, labels[g.name], g.kind), 4)
        modes[m] = {
            "tau": final["tau"][m],
            "offsets": {g: [round(float(v), 6) for v in o] for g, o in offsets.items()},
            "temperature": temps,
        }
    result: dict[str, Any] = {
        "prior": {
            g.name: (np.maximum(train_counts[g.name], 1) / max(train_counts[g.name].sum(), 1)).round(6).tolist()
            for g in schema.groups
            if g.kind == "single"
        },
        "train_counts": {g.name: [int(c) for c in train_counts[g.name]] for g in schema.groups},
        "thresholds": {g: [round(t, 6) for t in v] for g, v in final["thresholds"].items()},
        "modes": modes,
        "default": default,
        "objective": objective,
        "tau_grid": [TAU_GRID[0], TAU_GRID[-1], round(TAU_GRID[1] - TAU_GRID[0], 4)],
    }
    result["cross_fit"] = cross_fit(schema, logits, labels, priors, folds, seed, objective) if folds >= 2 else None
    return result


def cross_fit(
    schema: Any,
    logits: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    priors: dict[str, np.ndarray],
    folds: int = 5,
    seed: int = 0,
    objective: str = "nll",
) -> dict[str, Any]:
    """Out-of-fold metrics: each of ``folds`` random folds decoded with tau and thresholds fitted on the
    others; ``none`` (the raw model) on the same images for comparison, and each fold's fitted tau."""
    n = len(next(iter(labels.values())))
    if n < folds:
        raise ValueError(f"cross-fitting needs at least {folds} images ({folds} folds), got {n}")
    fold_of = np.random.default_rng(seed).permutation(n) % folds
    oof: dict[str, dict[str, np.ndarray]] = {m: {} for m in MODES}
    taus: dict[str, dict[str, list[float]]] = {m: {} for m in MODES}
    for k in range(folds):
        test, train = np.flatnonzero(fold_of == k), np.flatnonzero(fold_of != k)
        fitted = _fit_on(schema, logits, labels, priors, train, objective)
        for m in MODES:
            for g, s in _decided(schema, logits, priors, fitted, m, test).items():
                if g not in oof[m]:
                    oof[m][g] = np.zeros((n, s.shape[1]))
                oof[m][g][test] = s
            for g, tau in fitted["tau"][m].items():
                taus[m].setdefault(g, []).append(tau)
    out: dict[str, Any] = {
        "folds": folds,
        "seed": seed,
        "images": n,
        "none": _metrics(schema, labels, _decided(schema, logits, priors, {}, "none", np.arange(n))),
    }
    for m in MODES:
        out[m] = {**_metrics(schema, labels, oof[m]), "fold_tau": taus[m]}
    out["majority"] = majority_accuracy(schema, labels, priors)
    return out


def majority_accuracy(schema: Any, labels: dict[str, np.ndarray], priors: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per single-label group, the accuracy on these images of always answering the training split's most common
    class (``priors``: log class shares), and that class's index: the floor a group's tags must beat."""
    out: dict[str, Any] = {}
    for g in schema.groups:
        if g.name not in priors:
            continue
        y = np.asarray(labels[g.name])
        known = y >= 0
        k = int(np.argmax(priors[g.name]))
        acc = float(np.mean(y[known] == k)) if known.any() else float("nan")
        out[g.name] = {"class_index": k, "acc": acc}
    return out


def below_majority(schema: Any, cross: dict[str, Any], mode: str) -> list[tuple[str, float, str, float]]:
    """The single-label groups whose out-of-fold accuracy under ``mode`` is not above always answering the most
    common class: ``(group, accuracy, that class, its accuracy)`` for each, in schema order."""
    floor = cross.get("majority") or {}
    out = []
    for g in schema.groups:
        if g.name in floor and mode in cross:
            acc, base = cross[mode]["groups"][g.name]["acc"], floor[g.name]["acc"]
            if acc <= base:
                out.append((g.name, acc, g.classes[floor[g.name]["class_index"]], base))
    return out


def default_mode(select_metric: str | None) -> str:
    """The run's default decoding: ``balanced`` when it was selected on an average per-class accuracy."""
    return "balanced" if select_metric and "avg_class_acc" in select_metric else "accuracy"
