"""Per-group losses: CE, one-vs-rest BCE, label smoothing, focal, class weights, logit adjustment,
group weights.

``loss(outputs, targets) -> {"loss": weighted total, "<group>": unweighted group loss}``.
Single-label targets are class indices (``-1`` = unknown) or soft ``(B, C)`` distributions;
multi-label targets are ``(B, C)`` of 0/1 (``-1`` = unknown).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fashattr.config import LossConfig
from fashattr.schema import Group, Schema

log = logging.getLogger(__name__)


def class_weights(counts: np.ndarray, kind: str, beta: float = 0.999) -> np.ndarray | None:
    """Per-class loss weights from training counts, scaled so the weights average 1 over classes.

    ``inverse``: 1 / n_c.  ``effective``: (1 - beta) / (1 - beta ** n_c) (Cui et al., 2019).
    A class with no samples gets weight 0: it is never a target, so nothing is lost.
    """
    if kind == "none":
        return None
    n = counts.astype(np.float64)
    present = n > 0
    w = np.zeros_like(n)
    if kind == "inverse":
        w[present] = 1.0 / n[present]
    elif kind == "effective":
        w[present] = (1.0 - beta) / (1.0 - np.power(beta, n[present]))
    else:
        raise ValueError(f"unknown class_weights {kind!r}; choose from ['none', 'inverse', 'effective']")
    return w * present.sum() / w.sum()


def resolve_group_weights(value: list[float] | dict[str, float] | None, schema: Schema) -> dict[str, float]:
    """Per-group loss weights from a list (schema order) or a mapping (missing groups weigh 1)."""
    if value is None:
        return dict.fromkeys(schema.names, 1.0)
    if isinstance(value, list):
        if len(value) != len(schema.groups):
            raise ValueError(
                f"loss.group_weights has {len(value)} values for {len(schema.groups)} groups {schema.names}"
            )
        return dict(zip(schema.names, (float(v) for v in value), strict=True))
    unknown = sorted(set(value) - set(schema.names))
    if unknown:
        raise ValueError(f"loss.group_weights names unknown groups {unknown}; groups are {schema.names}")
    return {g: float(value.get(g, 1.0)) for g in schema.names}


class GroupLoss(nn.Module):
    """The loss of one group; see the module docstring for target formats."""

    weight: torch.Tensor | None
    log_prior: torch.Tensor | None
    pos_weight: torch.Tensor | None

    def __init__(self, group: Group, cfg: LossConfig, labels: np.ndarray | None) -> None:
        super().__init__()
        self.group = group
        self.cfg = cfg
        needs_labels = cfg.class_weights != "none" or cfg.logit_adjust_tau or cfg.pos_weight == "auto"
        if needs_labels and labels is None:
            raise ValueError("class weights, logit adjustment and pos_weight need the training labels")
        weight = prior = pos_weight = None
        if labels is not None:
            if group.kind == "single":
                counts = np.bincount(labels[labels >= 0], minlength=group.num_classes)
            else:
                counts = (labels == 1).sum(axis=0)
            w = class_weights(counts, cfg.class_weights, cfg.effective_beta)
            weight = None if w is None else torch.tensor(w, dtype=torch.float32)
            if cfg.logit_adjust_tau and group.kind == "single":
                prior = torch.log(torch.tensor(np.maximum(counts, 1) / max(counts.sum(), 1), dtype=torch.float32))
            if cfg.pos_weight == "auto" and group.kind == "multi":
                negatives = (labels == 0).sum(axis=0)
                pos_weight = torch.tensor(negatives / np.maximum(counts, 1), dtype=torch.float32)
        self.register_buffer("weight", weight)
        self.register_buffer("log_prior", prior)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.group.kind == "multi":
            return self._multi(logits, target)
        return self._single(logits, target)

    def _single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        c = logits.shape[1]
        if target.dtype.is_floating_point:  # soft targets (mixup / cutmix)
            known = target.sum(1) > 0
            t = target[known]
        else:
            known = target >= 0
            t = F.one_hot(target[known], c).float()
        if not bool(known.any()):
            return logits.sum() * 0.0  # keeps the graph alive for every parameter
        z = logits[known]
        if self.log_prior is not None:
            z = z + self.cfg.logit_adjust_tau * self.log_prior
        eps = self.cfg.label_smoothing
        smoothed = t * (1.0 - eps) + eps / c
        if self.cfg.name == "bce":  # one-vs-rest: each class its own sigmoid against the one-hot target
            per = F.binary_cross_entropy_with_logits(z, smoothed, reduction="none")
            if self.weight is not None:
                per = per * self.weight
            return per.mean()
        logp = F.log_softmax(z, dim=1)
        if self.cfg.name == "focal":  # (1 - p)^gamma down-weights classes already predicted well
            logp = logp * (1.0 - logp.exp()).pow(self.cfg.focal_gamma)
        per_sample = -(smoothed * logp).sum(1)
        if self.weight is None:
            return per_sample.mean()
        w = (t * self.weight).sum(1)
        return (per_sample * w).sum() / w.sum().clamp_min(1e-12)

    def _multi(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        known = target >= 0
        if not bool(known.any()):
            return logits.sum() * 0.0
        t = target.clamp_min(0).float()
        per = F.binary_cross_entropy_with_logits(logits, t, pos_weight=self.pos_weight, reduction="none")
        if self.cfg.name == "focal":
            p = torch.sigmoid(logits)
            p_t = p * t + (1 - p) * (1 - t)
            per = per * (1 - p_t).pow(self.cfg.focal_gamma)
        if self.weight is not None:
            per = per * self.weight
        return per[known].mean()


DISTILL = "distill:"  # the target key prefix of a group's teacher probabilities (fashattr.engine.distill.PREFIX)


def distill_term(logits: torch.Tensor, teacher: torch.Tensor, kind: str, temperature: float) -> torch.Tensor:
    """``T^2 * KL(teacher || student at T)``, averaged over rows (Hinton et al., 2015; T^2 keeps the gradient
    scale independent of T). Single-label: teacher ``(B, C)`` distributions against softmax(z / T);
    multi-label: per-class Bernoulli KL against sigmoid(z / T), averaged over classes."""
    z = logits.float() / temperature
    p = teacher.float()
    if kind == "single":
        kl = (torch.xlogy(p, p) - p * F.log_softmax(z, dim=1)).sum(1)
    else:
        entropy = torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p)
        kl = (entropy + F.binary_cross_entropy_with_logits(z, p, reduction="none")).mean(1)
    return kl.mean() * temperature**2


class MultiGroupLoss(nn.Module):
    """Sum of per-group losses with per-group weights; with teacher targets in the batch (``distill:<group>``,
    see fashattr.engine.distill) ``(1 - w) * that + w * sum_g group_weight * distill_term``
    (w = loss.distill_weight)."""

    def __init__(self, schema: Schema, cfg: LossConfig, labels: dict[str, np.ndarray] | None = None) -> None:
        super().__init__()
        self.group_weights = resolve_group_weights(cfg.group_weights, schema)
        self.kinds = {g.name: g.kind for g in schema.groups}
        self.distill_weight, self.temperature = cfg.distill_weight, cfg.distill_temperature
        self.losses = nn.ModuleDict(
            {g.name: GroupLoss(g, cfg, None if labels is None else labels[g.name]) for g in schema.groups}
        )

    def forward(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        parts = {name: fn(outputs[name], targets[name]) for name, fn in self.losses.items()}
        total = torch.stack([self.group_weights[name] * value for name, value in parts.items()]).sum()
        soft = {name: targets[DISTILL + name] for name in self.losses if DISTILL + name in targets}
        if not soft:  # evaluation batches carry labels only: the hard loss, as without distillation
            return {"loss": total, **parts}
        terms = {
            DISTILL + name: distill_term(outputs[name], t, self.kinds[name], self.temperature)
            for name, t in soft.items()
        }
        distilled = torch.stack([self.group_weights[k[len(DISTILL) :]] * v for k, v in terms.items()]).sum()
        w = self.distill_weight
        return {"loss": (1.0 - w) * total + w * distilled, **parts, **terms}


def create_loss(cfg: LossConfig, schema: Schema, labels: dict[str, np.ndarray] | None = None) -> MultiGroupLoss:
    """The training loss for ``schema``.

    ``labels`` (the training split's labels per group) give the class frequencies that class
    weights, logit adjustment and multi-label ``pos_weight: auto`` are computed from.
    """
    return MultiGroupLoss(schema, cfg, labels)
