"""Metrics for multi-attribute predictions.

- average per-class accuracy: per class, the share of its images predicted as it (its
  recall); the mean over all classes present in the labels (the challenge's later metric);
- overall accuracy: the mean of the group accuracies (the earlier metric);
- exact match: the share of images with every known group right;
- per class precision / recall / support, top-k accuracy and a confusion matrix per group;
- for multi-label groups, as the DeepFashion attribute benchmark reports them: top-k recall
  (per image, the k highest-scoring classes of the group count as predicted; per class, the
  share of its positive images that have it in their top k) under two names:
  ``top{k}_recall``, the mean over every class with positives, and ``top{k}_recall_top50``,
  the benchmark's convention (mmfashion's ``AttrCalculator.compute_one_recall``): the mean of
  the 50 best per-class recalls, i.e. divided by min(50, classes with positives); and mean
  average precision (per class, images with a known label ranked by score; the mean over
  classes with positives).

One decision rule for multi-label groups everywhere (metrics, predictions, output files): a
class is predicted present when its logit is > 0 (probability > 0.5); see
``multi_label_positive``.

Ties never depend on row or class order. Average precision treats tied scores as one
threshold (as scikit-learn's ``average_precision_score``). Top-k: a class with ``g`` classes
scoring strictly higher and ``e`` classes (itself included) at its exact score counts
``clip((k - g) / e, 0, 1)`` of a hit: the tied classes share the places left in the top k,
which is the expected hit under a random tie-break; every image hands out exactly k.

A class with no labelled images is reported as absent (``None``), never as 0 or NaN, and
is left out of the averages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fashattr.schema import Group, Schema

TOP_K = (3, 5)  # reported where k < the group's number of classes (top-1 is the accuracy)
# DeepFashion's published top-k recalls keep only the best 50 per-class recalls of a column
# (mmfashion AttrCalculator.topn); the suffix of those numbers' names says so
BENCHMARK_BEST = 50


@dataclass
class GroupMetrics:
    name: str
    classes: tuple[str, ...]
    kind: str
    n: int  # images with a known label
    accuracy: float | None
    recall: list[float | None]  # per class; None = absent from the labels
    precision: list[float | None]  # per class; None = never predicted
    support: list[int]
    predicted: list[int]
    # single: top-k accuracy; multi: top-k recall, mean over classes with positives
    topk: dict[int, float] = field(default_factory=dict)
    # multi: top-k recall as the benchmark reports it (mean of the 50 best per-class recalls)
    topk_top50: dict[int, float] = field(default_factory=dict)
    confusion: np.ndarray | None = None  # (C, C): rows = true class, columns = predicted
    ap: list[float | None] | None = None  # multi: average precision per class (None = no positives)

    @property
    def present_recalls(self) -> list[float]:
        return [r for r in self.recall if r is not None]

    @property
    def avg_class_acc(self) -> float | None:
        r = self.present_recalls
        return float(np.mean(r)) if r else None

    @property
    def absent(self) -> list[str]:
        return [c for c, r in zip(self.classes, self.recall, strict=True) if r is None]

    @property
    def mean_ap(self) -> float | None:
        present = [a for a in self.ap or [] if a is not None]
        return float(np.mean(present)) if present else None

    @property
    def topk_name(self) -> str:
        """Summary-key suffix of this group's top-k numbers: ``top3`` or ``top3_recall``."""
        return "top{k}" if self.kind == "single" else "top{k}_recall"


@dataclass
class Metrics:
    groups: dict[str, GroupMetrics]
    exact_match: float | None
    # over every multi-label class of every group at once (the benchmark's "all" column);
    # only when there are at least two multi-label groups
    attributes_topk: dict[int, float] = field(default_factory=dict)
    attributes_map: float | None = None
    attributes_topk_top50: dict[int, float] = field(default_factory=dict)

    @property
    def avg_class_acc(self) -> float | None:
        r = [x for g in self.groups.values() for x in g.present_recalls]
        return float(np.mean(r)) if r else None

    @property
    def overall_acc(self) -> float | None:
        a = [g.accuracy for g in self.groups.values() if g.accuracy is not None]
        return float(np.mean(a)) if a else None

    def summary(self) -> dict[str, float]:
        """Flat ``name -> value`` of the headline numbers (absent values left out)."""
        out: dict[str, float | None] = {
            "avg_class_acc": self.avg_class_acc,
            "overall_acc": self.overall_acc,
            "exact_match": self.exact_match,
        }
        for name, g in self.groups.items():
            out[f"{name}/acc"] = g.accuracy
            out[f"{name}/avg_class_acc"] = g.avg_class_acc
            for k, v in g.topk.items():
                out[f"{name}/{g.topk_name.format(k=k)}"] = v
            for k, v in g.topk_top50.items():
                out[f"{name}/top{k}_recall_top{BENCHMARK_BEST}"] = v
            if g.kind == "multi":
                out[f"{name}/mAP"] = g.mean_ap
        for k, v in self.attributes_topk.items():
            out[f"attributes/top{k}_recall"] = v
        for k, v in self.attributes_topk_top50.items():
            out[f"attributes/top{k}_recall_top{BENCHMARK_BEST}"] = v
        out["attributes/mAP"] = self.attributes_map
        return {k: float(v) for k, v in out.items() if v is not None}

    def to_dict(self) -> dict:
        return {
            "summary": self.summary(),
            "groups": {
                name: {
                    "n": g.n,
                    "accuracy": g.accuracy,
                    "avg_class_acc": g.avg_class_acc,
                    "absent_classes": g.absent,
                    "topk": {str(k): v for k, v in g.topk.items()},
                    f"topk_top{BENCHMARK_BEST}": {str(k): v for k, v in g.topk_top50.items()},
                    "mAP": g.mean_ap,
                    "classes": {
                        c: {"recall": r, "precision": p, "support": s, "predicted": q, "ap": a}
                        for c, r, p, s, q, a in zip(
                            g.classes,
                            g.recall,
                            g.precision,
                            g.support,
                            g.predicted,
                            g.ap or [None] * len(g.classes),
                            strict=True,
                        )
                    },
                    "confusion": None if g.confusion is None else g.confusion.tolist(),
                }
                for name, g in self.groups.items()
            },
        }

    def table(self) -> str:
        """A plain-text table: headline numbers, then per group and per class."""
        fmt = _fmt
        lines = [
            f"average per-class accuracy {fmt(self.avg_class_acc)}   overall accuracy {fmt(self.overall_acc)}"
            f"   exact match {fmt(self.exact_match)}",
            "",
            f"{'group':<12} {'class':<18} {'recall':>8} {'precision':>9} {'support':>8} {'predicted':>9}",
        ]
        best = f"_top{BENCHMARK_BEST}"
        if self.attributes_topk:
            every = "  ".join(f"top{k}_recall {fmt(v)}" for k, v in self.attributes_topk.items())
            every += "".join(f"  top{k}_recall{best} {fmt(v)}" for k, v in self.attributes_topk_top50.items())
            lines.insert(1, f"all attributes: {every}  mAP {fmt(self.attributes_map)}")
        for name, g in self.groups.items():
            topk = "  ".join(f"{g.topk_name.format(k=k)} {fmt(v)}" for k, v in g.topk.items())
            topk += "".join(f"  top{k}_recall{best} {fmt(v)}" for k, v in g.topk_top50.items())
            if g.kind == "multi":
                topk += f"  mAP {fmt(g.mean_ap)}"
            lines.append(f"{name:<12} {'(group)':<18} acc {fmt(g.accuracy)}  avg/class {fmt(g.avg_class_acc)}  {topk}")
            for c, r, p, s, q in zip(g.classes, g.recall, g.precision, g.support, g.predicted, strict=True):
                recall = "absent" if r is None else fmt(r)
                lines.append(f"{'':<12} {c:<18} {recall:>8} {fmt(p):>9} {s:>8} {q:>9}")
        return "\n".join(lines)


def metric_names(schema: Schema) -> list[str]:
    """Every key ``Metrics.summary()`` can hold for ``schema`` (what ``train.select_metric`` may name)."""
    names = ["avg_class_acc", "overall_acc", "exact_match"]
    for g in schema.groups:
        names += [f"{g.name}/acc", f"{g.name}/avg_class_acc"]
        if g.kind == "single":
            names += [f"{g.name}/top{k}" for k in TOP_K if k < g.num_classes]
        else:
            ks = [k for k in TOP_K if k < g.num_classes]
            names += [f"{g.name}/top{k}_recall" for k in ks] + [
                f"{g.name}/top{k}_recall_top{BENCHMARK_BEST}" for k in ks
            ]
            names += [f"{g.name}/mAP"]
    if sum(g.kind == "multi" for g in schema.groups) >= 2:
        names += [f"attributes/top{k}_recall" for k in TOP_K]
        names += [f"attributes/top{k}_recall_top{BENCHMARK_BEST}" for k in TOP_K] + ["attributes/mAP"]
    return names


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _ratio(num: Any, den: Any) -> float | None:
    return float(num / den) if den > 0 else None


def multi_label_positive(logits: np.ndarray) -> np.ndarray:
    """The one decision rule for multi-label groups: a class is predicted present when its
    logit is > 0 (sigmoid probability > 0.5); a logit of exactly 0 is absent.

    Decided on logits, not on probabilities: a float64 sigmoid rounds logits within about
    1e-16 of 0 to exactly 0.5, so a threshold on probabilities would disagree with this one.
    Metrics, ``Predictor.predict_files`` and its output files all call this function.
    """
    return np.asarray(logits) > 0


def topk_credit(scores: np.ndarray, k: int) -> np.ndarray:
    """Per image and class, how much of a top-``k`` hit the class is: 1 when fewer than ``k``
    classes score at least as high (itself included), 0 when ``k`` or more score strictly
    higher, and for a class tied at the k-th highest score ``(k - g) / e`` (``g`` classes
    strictly higher, ``e`` tied with it, itself included). Independent of row and class
    order; every row's credits sum to exactly ``k``. ``scores``: (N, C); returns (N, C) floats.
    """
    n, c = scores.shape
    if k >= c:
        return np.ones((n, c))
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]  # each row's k-th highest score
    above = (scores > kth).sum(1, keepdims=True)
    tied = (scores == kth).sum(1, keepdims=True)
    return np.where(scores > kth, 1.0, np.where(scores == kth, (k - above) / tied, 0.0))


def single_label_metrics(
    group: Group, target: np.ndarray, scores: np.ndarray, ks: tuple[int, ...] = TOP_K
) -> GroupMetrics:
    """Metrics of one single-label group. ``target``: (N,) class indices, -1 unknown;
    ``scores``: (N, C) logits or probabilities."""
    c = group.num_classes
    known = target >= 0
    t, s = target[known], scores[known]
    pred = s.argmax(1) if len(s) else np.zeros(0, dtype=np.int64)
    confusion = np.bincount(t * c + pred, minlength=c * c).reshape(c, c)
    support, predicted, hits = confusion.sum(1), confusion.sum(0), np.diag(confusion)
    topk = {}
    for k in ks:
        if 1 < k < c and len(t):
            topk[k] = float(topk_credit(s, k)[np.arange(len(t)), t].mean())
    return GroupMetrics(
        name=group.name,
        classes=group.classes,
        kind="single",
        n=int(known.sum()),
        accuracy=_ratio(hits.sum(), len(t)),
        recall=[_ratio(h, n) for h, n in zip(hits, support, strict=True)],
        precision=[_ratio(h, p) for h, p in zip(hits, predicted, strict=True)],
        support=support.tolist(),
        predicted=predicted.tolist(),
        topk=topk,
        confusion=confusion,
    )


def top_k_recalls(target: np.ndarray, scores: np.ndarray, k: int) -> list[float | None]:
    """Per class, the share of its positive images that rank it among their ``k`` highest
    scores (ties as in ``topk_credit``); None for a class without positives.
    ``target``: (N, C) of 1 / 0 / -1 unknown; ``scores``: (N, C)."""
    pos = target == 1
    hits = (topk_credit(scores, k) * pos).sum(0)
    return [_ratio(h, n) for h, n in zip(hits, pos.sum(0), strict=True)]


def top_k_recall(target: np.ndarray, scores: np.ndarray, k: int, best: int | None = None) -> float | None:
    """Multi-label top-k recall: the mean of the per-class ``top_k_recalls`` over the classes
    with positives (``top{k}_recall``), or with ``best=50`` the mean of the 50 highest of them,
    i.e. their sum over min(50, classes with positives) (``top{k}_recall_top50``, mmfashion's
    ``compute_one_recall``, the convention of the published DeepFashion tables).
    None when no class has a positive."""
    present = sorted((r for r in top_k_recalls(target, scores, k) if r is not None), reverse=True)
    if not present:
        return None
    return float(np.mean(present[:best] if best is not None else present))


def average_precision(target: np.ndarray, scores: np.ndarray) -> list[float | None]:
    """Per class, non-interpolated average precision over the images whose label is known:
    ``sum_t (R_t - R_{t-1}) * P_t`` over the distinct scores ``t`` from high to low, where
    ``P_t`` and ``R_t`` count every image scoring >= t. Tied scores are one threshold, so
    the value does not depend on row order (scikit-learn's ``average_precision_score``).
    None for a class without positives."""
    out: list[float | None] = []
    for c in range(target.shape[1]):
        known = target[:, c] >= 0
        y = target[known, c] == 1
        if not y.any():
            out.append(None)
            continue
        s = scores[known, c]
        order = np.argsort(-s, kind="stable")
        s, y = s[order], y[order]
        last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # last image of each distinct score
        tp = np.cumsum(y)[last]
        gained = np.diff(tp, prepend=0)  # positives first reached at each threshold
        out.append(float(np.sum(gained * tp / (last + 1)) / tp[-1]))
    return out


def multi_label_metrics(
    group: Group, target: np.ndarray, scores: np.ndarray, ks: tuple[int, ...] = TOP_K
) -> GroupMetrics:
    """Metrics of one multi-label group: decisions by ``multi_label_positive`` (logit > 0),
    plus the threshold-free top-k recall (both conventions) and average precision.
    ``target``: (N, C) of 0/1, -1 unknown; ``scores``: (N, C) logits."""
    known = target >= 0
    pred = multi_label_positive(scores)
    pos, hit = (target == 1), (target == 1) & pred
    support, predicted = pos.sum(0), (pred & known).sum(0)
    correct = ((pred == (target == 1)) & known).sum()
    ks = tuple(k for k in ks if k < group.num_classes)
    topk = {k: r for k in ks if (r := top_k_recall(target, scores, k)) is not None}
    top50 = {k: r for k in ks if (r := top_k_recall(target, scores, k, BENCHMARK_BEST)) is not None}
    return GroupMetrics(
        name=group.name,
        classes=group.classes,
        kind="multi",
        n=int(known.any(1).sum()),
        accuracy=_ratio(correct, known.sum()),
        recall=[_ratio(h, n) for h, n in zip(hit.sum(0), support, strict=True)],
        precision=[_ratio(h, p) for h, p in zip(hit.sum(0), predicted, strict=True)],
        support=support.tolist(),
        predicted=predicted.tolist(),
        topk=topk,
        topk_top50=top50,
        ap=average_precision(target, scores),
    )


def _check_inputs(group: Group, target: np.ndarray, scores: np.ndarray) -> None:
    """Shapes that match the group, and finite scores (a NaN or inf has no rank)."""
    n, c = len(target), group.num_classes
    want = (n,) if group.kind == "single" else (n, c)
    if target.shape != want or scores.shape != (n, c):
        raise ValueError(
            f"group {group.name!r}: targets {target.shape} and scores {scores.shape} do not match "
            f"{n} images of {c} classes (targets {want}, scores {(n, c)})"
        )
    bad = np.argwhere(~np.isfinite(scores))
    if len(bad):
        row, col = (int(v) for v in bad[0])
        raise FloatingPointError(
            f"group {group.name!r}: score {scores[row, col]} at row {row}, class {group.classes[col]!r} "
            f"({len(bad)} non-finite scores in all); a model that outputs them cannot be ranked"
        )


def compute_metrics(schema: Schema, targets: dict[str, np.ndarray], scores: dict[str, np.ndarray]) -> Metrics:
    """All metrics for predictions ``scores`` against ``targets`` (both keyed by group).

    Raises:
        ValueError: a group's targets and scores do not match its shape.
        FloatingPointError: a score is NaN or infinite (named by group, row and class).
    """
    groups: dict[str, GroupMetrics] = {}
    right: list[np.ndarray] = []
    known: list[np.ndarray] = []
    for g in schema.groups:
        t, s = np.asarray(targets[g.name]), np.asarray(scores[g.name])
        _check_inputs(g, t, s)
        if g.kind == "single":
            groups[g.name] = single_label_metrics(g, t, s)
            known.append(t >= 0)
            right.append((s.argmax(1) == t) | (t < 0))
        else:
            groups[g.name] = multi_label_metrics(g, t, s)
            known.append(np.asarray((t >= 0).any(1)))
            right.append(((multi_label_positive(s) == (t == 1)) | (t < 0)).all(1))
    any_known = np.logical_or.reduce(known)
    exact = _ratio(np.logical_and.reduce(right)[any_known].sum(), any_known.sum())
    multi = [g.name for g in schema.groups if g.kind == "multi"]
    every: dict[int, float] = {}
    every50: dict[int, float] = {}
    every_map = None
    if len(multi) >= 2:
        t = np.concatenate([np.asarray(targets[n]) for n in multi], axis=1)
        s = np.concatenate([np.asarray(scores[n]) for n in multi], axis=1)
        every = {k: r for k in TOP_K if (r := top_k_recall(t, s, k)) is not None}
        every50 = {k: r for k in TOP_K if (r := top_k_recall(t, s, k, BENCHMARK_BEST)) is not None}
        aps = [a for n in multi for a in groups[n].ap or [] if a is not None]
        every_map = float(np.mean(aps)) if aps else None
    return Metrics(groups, exact, every, every_map, every50)
