"""Metrics for multi-attribute predictions.

- average per-class accuracy: per class, the share of its images predicted as it (its
  recall); the mean over all classes present in the labels (the challenge's later metric);
- overall accuracy: the mean of the group accuracies (the earlier metric);
- exact match: the share of images with every known group right;
- per class precision / recall / support, top-k accuracy and a confusion matrix per group.

A class with no labelled images is reported as absent (``None``), never as 0 or NaN, and
is left out of the averages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fashattr.schema import Group, Schema


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
    topk: dict[int, float] = field(default_factory=dict)
    confusion: np.ndarray | None = None  # (C, C): rows = true class, columns = predicted

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


@dataclass
class Metrics:
    groups: dict[str, GroupMetrics]
    exact_match: float | None

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
                out[f"{name}/top{k}"] = v
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
                    "classes": {
                        c: {"recall": r, "precision": p, "support": s, "predicted": q}
                        for c, r, p, s, q in zip(g.classes, g.recall, g.precision, g.support, g.predicted, strict=True)
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
        for name, g in self.groups.items():
            topk = "  ".join(f"top{k} {fmt(v)}" for k, v in g.topk.items())
            lines.append(f"{name:<12} {'(group)':<18} acc {fmt(g.accuracy)}  avg/class {fmt(g.avg_class_acc)}  {topk}")
            for c, r, p, s, q in zip(g.classes, g.recall, g.precision, g.support, g.predicted, strict=True):
                recall = "absent" if r is None else fmt(r)
                lines.append(f"{'':<12} {c:<18} {recall:>8} {fmt(p):>9} {s:>8} {q:>9}")
        return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _ratio(num: Any, den: Any) -> float | None:
    return float(num / den) if den > 0 else None


def single_label_metrics(
    group: Group, target: np.ndarray, scores: np.ndarray, ks: tuple[int, ...] = (1, 3)
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
            top = np.argsort(-s, axis=1, kind="stable")[:, :k]
            topk[k] = float((top == t[:, None]).any(1).mean())
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


def multi_label_metrics(group: Group, target: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> GroupMetrics:
    """Metrics of one multi-label group at ``threshold`` on sigmoid probabilities.
    ``target``: (N, C) of 0/1, -1 unknown; ``scores``: (N, C) logits."""
    known = target >= 0
    pred = 1.0 / (1.0 + np.exp(-scores)) >= threshold
    pos, hit = (target == 1), (target == 1) & pred
    support, predicted = pos.sum(0), (pred & known).sum(0)
    correct = ((pred == (target == 1)) & known).sum()
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
    )


def compute_metrics(schema: Schema, targets: dict[str, np.ndarray], scores: dict[str, np.ndarray]) -> Metrics:
    """All metrics for predictions ``scores`` against ``targets`` (both keyed by group)."""
    groups: dict[str, GroupMetrics] = {}
    right: list[np.ndarray] = []
    known: list[np.ndarray] = []
    for g in schema.groups:
        t, s = np.asarray(targets[g.name]), np.asarray(scores[g.name])
        if g.kind == "single":
            groups[g.name] = single_label_metrics(g, t, s)
            known.append(t >= 0)
            right.append((s.argmax(1) == t) | (t < 0))
        else:
            groups[g.name] = multi_label_metrics(g, t, s)
            pred = s >= 0.0  # logit 0 = probability 0.5
            known.append(np.asarray((t >= 0).any(1)))
            right.append(((pred == (t == 1)) | (t < 0)).all(1))
    any_known = np.logical_or.reduce(known)
    exact = _ratio(np.logical_and.reduce(right)[any_known].sum(), any_known.sum())
    return Metrics(groups, exact)
