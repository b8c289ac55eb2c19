"""The numbers a report shows, in NumPy: bootstrap intervals, per-image losses, confusion for
single- and multi-label groups, most-confused pairs, class distributions.

Everything here takes arrays in and gives arrays or plain dicts out (no files, no plots), so the
HTML, the figures and report.json all show the same values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fashattr.metrics import TOP_K, GroupMetrics, average_precision, multi_label_positive, topk_credit
from fashattr.schema import Group, Schema

RESAMPLES = 1000
# Bootstrapping mAP re-ranks every class per resample; above this many (resample, class) pairs the
# mAP interval uses fewer resamples (said in report.json) so a 200-class group stays fast.
MAP_BUDGET = 50_000


def bootstrap_counts(n: int, resamples: int = RESAMPLES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``resamples`` bootstrap draws of ``n`` images with replacement.

    Returns:
        ``(idx, counts)``: ``idx`` (B, n) the drawn rows, ``counts`` (B, n) how often each row was drawn
        (so a sum over a resample is ``counts @ per_image_value``).
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n)) if n else np.zeros((resamples, 0), np.int64)
    flat = (np.arange(resamples)[:, None] * n + idx).ravel()
    counts = np.bincount(flat, minlength=resamples * n).reshape(resamples, n).astype(np.float64)
    return idx, counts


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _nanmean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean over ``axis`` ignoring NaN (absent classes); NaN where every entry is NaN, without a warning."""
    ok = ~np.isnan(x)
    return _div(np.where(ok, x, 0).sum(axis), ok.sum(axis).astype(np.float64))


def resample_stats(
    schema: Schema,
    targets: dict[str, np.ndarray],
    scores: dict[str, np.ndarray],
    counts: np.ndarray,
    idx: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The headline metrics of ``compute_metrics`` for each weighting of the images.

    A resample's metric is the metric of the images drawn, each as often as ``counts`` (B, N) says;
    with ``counts`` all ones it is exactly ``compute_metrics(...).summary()`` (a test checks every key).
    Classes absent from a resample are left out of its averages, as ``compute_metrics`` leaves them out.

    Args:
        idx: the drawn rows (B, N) behind ``counts``; needed only for multi-label mAP.

    Returns:
        ``{summary key: (B,) values}`` (NaN where a resample has no labelled image for it).
    """
    out: dict[str, np.ndarray] = {}
    recalls, accs, right, known = [], [], [], []
    for g in schema.groups:
        t, s = np.asarray(targets[g.name]), np.asarray(scores[g.name], dtype=np.float64)
        if g.kind == "single":
            k = t >= 0
            onehot = np.zeros(s.shape)
            onehot[np.flatnonzero(k), t[k]] = 1.0
            ok = (s.argmax(1) == t) & k
            recall = _div(counts @ (onehot * ok[:, None]), counts @ onehot)
            acc = _div(counts @ ok, counts @ k)
            for kk in TOP_K:
                if 1 < kk < g.num_classes:
                    credit = np.where(k, topk_credit(s, kk)[np.arange(len(t)), np.maximum(t, 0)], 0.0)
                    out[f"{g.name}/top{kk}"] = _div(counts @ credit, counts @ k)
            right.append(ok | ~k)
            known.append(k)
        else:
            k = t >= 0
            pred, pos = multi_label_positive(s), t == 1
            recall = _div(counts @ (pos & pred), counts @ pos)
            acc = _div(counts @ ((pred == pos) & k).sum(1), counts @ k.sum(1))
            for kk in TOP_K:
                if kk < g.num_classes:
                    top = _div(counts @ (topk_credit(s, kk) * pos), counts @ pos)
                    out[f"{g.name}/top{kk}_recall"] = _nanmean(top)
            if idx is not None:
                out[f"{g.name}/mAP"] = _bootstrap_map(t, s, idx)
            right.append(((pred == pos) | ~k).all(1))
            known.append(np.asarray(k.any(1)))
        out[f"{g.name}/acc"] = acc
        out[f"{g.name}/avg_class_acc"] = _nanmean(recall)
        recalls.append(recall)
        accs.append(acc)
    out["avg_class_acc"] = _nanmean(np.concatenate(recalls, axis=1))
    out["overall_acc"] = _nanmean(np.stack(accs, axis=1))
    any_known = np.logical_or.reduce(known)
    out["exact_match"] = _div(counts @ (np.logical_and.reduce(right) & any_known), counts @ any_known)
    return out


def _bootstrap_map(t: np.ndarray, s: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """mAP per resample (the first ``MAP_BUDGET // classes`` resamples; the rest NaN)."""
    n_used = min(len(idx), max(20, MAP_BUDGET // max(1, t.shape[1])))
    out = np.full(len(idx), np.nan)
    for b in range(n_used):
        aps = [a for a in average_precision(t[idx[b]], s[idx[b]]) if a is not None]
        out[b] = np.mean(aps) if aps else np.nan
    return out


def bootstrap_ci(
    schema: Schema,
    targets: dict[str, np.ndarray],
    scores: dict[str, np.ndarray],
    point: dict[str, float],
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, float | int | None]]:
    """Percentile bootstrap intervals over images for every headline metric in ``point``.

    Returns:
        ``{key: {"value", "lo", "hi", "resamples"}}``; ``lo``/``hi`` None when no resample had the metric.
    """
    n = len(next(iter(targets.values())))
    idx, counts = bootstrap_counts(n, resamples, seed)
    stats = resample_stats(schema, targets, scores, counts, idx)
    tail = (1 - level) / 2 * 100
    out: dict[str, dict[str, float | int | None]] = {}
    for key, value in point.items():
        values = stats.get(key)
        if values is None:
            continue
        finite = values[~np.isnan(values)]
        lo, hi = np.percentile(finite, [tail, 100 - tail]) if len(finite) else (None, None)
        out[key] = {
            "value": value,
            "lo": None if lo is None else float(lo),
            "hi": None if hi is None else float(hi),
            "resamples": len(finite),
        }
    return out


def per_image_loss(group: Group, target: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Each image's loss under the shown probabilities: cross-entropy of the softmax (single-label) or
    the summed binary cross-entropy over its known classes (multi-label); NaN where nothing is known."""
    z = np.asarray(logits, dtype=np.float64)
    if group.kind == "single":
        m = z.max(1)
        lse = m + np.log(np.exp(z - m[:, None]).sum(1))
        loss = lse - z[np.arange(len(z)), np.maximum(target, 0)]
        return np.where(target >= 0, loss, np.nan)
    known = target >= 0
    bce = np.maximum(z, 0) - z * (target == 1) + np.log1p(np.exp(-np.abs(z)))
    return np.where(known.any(1), (bce * known).sum(1), np.nan)


def confusion(group: Group, target: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class.

    Single-label: the ordinary confusion matrix. Multi-label: the diagonal counts hits (class present
    and predicted); ``[a, b]`` counts images that have ``a`` and were wrongly given ``b`` (``b``
    predicted, labelled absent), so each row reads "images of ``a``: what was predicted".
    """
    c = group.num_classes
    if group.kind == "single":
        k = target >= 0
        return np.bincount(target[k] * c + logits[k].argmax(1), minlength=c * c).reshape(c, c)
    pred, pos = multi_label_positive(logits), target == 1
    false_pos = (pred & (target == 0)).astype(np.int64)
    matrix = pos.astype(np.int64).T @ false_pos
    matrix[np.diag_indices(c)] = (pos & pred).sum(0)
    return matrix


def most_confused(
    classes: tuple[str, ...], matrix: np.ndarray, support: np.ndarray, top: int = 10
) -> list[dict[str, Any]]:
    """The largest off-diagonal cells, like fastai's ``most_confused``: ``true -> predicted``, the
    count and its share of the true class's labelled images (``support``); ties by class order."""
    c = len(classes)
    off = np.array(matrix, dtype=np.int64)
    off[np.diag_indices(c)] = 0
    out: list[dict[str, Any]] = []
    for flat in np.argsort(-off.ravel(), kind="stable")[:top]:
        a, b = divmod(int(flat), c)
        if off[a, b] == 0:
            break
        share = float(off[a, b] / support[a]) if support[a] else None
        out.append({"true": classes[a], "predicted": classes[b], "count": int(off[a, b]), "share": share})
    return out


def row_support(group: Group, target: np.ndarray) -> np.ndarray:
    """Labelled images per class (single-label: class count; multi-label: positives)."""
    if group.kind == "single":
        return np.bincount(target[target >= 0], minlength=group.num_classes)
    return (target == 1).sum(0)


def predicted_counts(group: Group, logits: np.ndarray) -> np.ndarray:
    """Images predicted as each class (argmax, or logit > 0 for multi-label)."""
    if group.kind == "single":
        return np.bincount(logits.argmax(1), minlength=group.num_classes)
    return multi_label_positive(logits).sum(0)


def per_class_table(gm: GroupMetrics) -> list[dict[str, Any]]:
    """Per class: precision, recall, F1 (None where undefined) and support, from ``compute_metrics``."""
    rows = []
    for c, p, r, s, q in zip(gm.classes, gm.precision, gm.recall, gm.support, gm.predicted, strict=True):
        # F1 is undefined for a class absent from the labels; 0 when it is present but never hit.
        f1 = None if r is None else 0.0 if p is None or p + r == 0 else 2 * p * r / (p + r)
        rows.append({"class": c, "precision": p, "recall": r, "f1": f1, "support": int(s), "predicted": int(q)})
    return rows


def frequent_classes(support: np.ndarray, cap: int) -> np.ndarray:
    """Indices of the ``cap`` classes with the most images (ties by class order), in class order."""
    if len(support) <= cap:
        return np.arange(len(support))
    return np.sort(np.argsort(-support, kind="stable")[:cap])
