"""Calibration primitives: temperature scaling and reliability (ECE), per group, in NumPy.

A group's probabilities are *calibrated* when, among the images given probability p, a share p is
right. Temperature scaling (Guo et al., 2017) divides a group's logits by one scalar T fitted to
minimise the negative log-likelihood on held-out images: it changes no argmax, only confidence.

Targets follow the metrics' convention: single-label ``(N,)`` class indices, multi-label ``(N, C)``
0/1, and ``-1`` for an unknown label (ignored everywhere here).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

Kind = Literal["single", "multi"]
T_RANGE = (0.05, 20.0)  # temperatures searched; outside this a model is broken, not miscalibrated


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Element-wise logistic function in float64 (no overflow warnings for large |z|)."""
    z = np.asarray(z, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _known(logits: np.ndarray, target: np.ndarray, kind: Kind) -> tuple[np.ndarray, np.ndarray]:
    logits, target = np.asarray(logits, dtype=np.float64), np.asarray(target)
    if kind not in ("single", "multi"):
        raise ValueError(f"unknown group kind {kind!r}; choose from ('single', 'multi')")
    if len(logits) != len(target):
        raise ValueError(f"{len(logits)} rows of logits but {len(target)} targets")
    if kind == "single":
        keep = target >= 0
        return logits[keep], target[keep].astype(np.int64)
    if target.shape != logits.shape:
        raise ValueError(f"multi-label targets must have the logits' shape {logits.shape}, got {target.shape}")
    return logits, target


def nll(logits: np.ndarray, target: np.ndarray, kind: Kind, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the known targets at ``temperature`` (per image for single-label,
    per known (image, class) cell for multi-label)."""
    z, t = _known(logits, target, kind)
    z = z / temperature
    if kind == "single":
        if len(t) == 0:
            return float("nan")
        m = z.max(axis=1)
        lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
        return float(np.mean(lse - z[np.arange(len(t)), t]))
    known = t >= 0
    if not known.any():
        return float("nan")
    # BCE with logits, stable: max(z, 0) - z * y + log(1 + exp(-|z|))
    loss = np.maximum(z, 0) - z * (t == 1) + np.log1p(np.exp(-np.abs(z)))
    return float(loss[known].mean())


def fit_temperature(logits: np.ndarray, target: np.ndarray, kind: Kind = "single") -> float:
    """The temperature T minimising the NLL of ``logits / T`` on these rows.

    The NLL is convex in 1/T, so a golden-section search over log T in ``T_RANGE`` finds the
    optimum (to 1e-4 relative). Rows whose target is unknown are ignored; with no known target
    the answer is 1.0 (no change).
    """
    z, t = _known(logits, target, kind)
    if (kind == "single" and len(t) == 0) or (kind == "multi" and not (t >= 0).any()):
        return 1.0
    return best_temperature(lambda temp: nll(z, t, kind, temp))


def best_temperature(loss: Callable[[float], float], tol: float = 1e-4) -> float:
    """The temperature in ``T_RANGE`` minimising ``loss(T)``, for a loss that is unimodal in T (an NLL
    is convex in 1/T): golden-section search over log T, to ``tol`` in log T."""
    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = loss(math.exp(a)), loss(math.exp(b))
    while hi - lo > tol:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = loss(math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = loss(math.exp(b))
    return float(math.exp((lo + hi) / 2))


def reliability(probs: np.ndarray, target: np.ndarray, kind: Kind = "single", bins: int = 15) -> dict[str, Any]:
    """Reliability-diagram data and the expected calibration error (ECE).

    Single-label: each image's top-1 confidence against whether its top-1 class is right.
    Multi-label: every known (image, class) probability against whether that class is present.
    Equal-width bins over [0, 1]; ``ece = sum_b (n_b / n) * |accuracy_b - confidence_b|``.

    Returns:
        ``{"edges": [bins+1], "confidence": [bins], "accuracy": [bins], "count": [bins], "ece": float,
        "n": int}``; an empty bin has confidence and accuracy ``None``.
    """
    p, t = _known(probs, target, kind)
    if kind == "single":
        conf = p.max(axis=1) if len(p) else np.zeros(0)
        hit = (p.argmax(axis=1) == t).astype(np.float64) if len(p) else np.zeros(0)
    else:
        known = t >= 0
        conf, hit = p[known], (t[known] == 1).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin b holds (edges[b], edges[b+1]]; a confidence of exactly 0 goes to the first bin.
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=bins)
    hit_sum = np.bincount(idx, weights=hit, minlength=bins)
    n = int(count.sum())
    ece = float(np.abs(hit_sum - conf_sum).sum() / n) if n else float("nan")
    return {
        "edges": [float(e) for e in edges],
        "confidence": [float(c / k) if k else None for c, k in zip(conf_sum, count, strict=True)],
        "accuracy": [float(h / k) if k else None for h, k in zip(hit_sum, count, strict=True)],
        "count": [int(k) for k in count],
        "ece": ece,
        "n": n,
    }
