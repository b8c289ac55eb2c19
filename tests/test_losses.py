"""Losses against torch's own functions and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fashattr.config import LossConfig
from fashattr.losses import class_weights, create_loss
from fashattr.schema import Group, Schema

SCHEMA = Schema((Group("a", ("x", "y", "z")), Group("b", ("p", "q"))))


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = {
        "a": torch.randn(5, 3, generator=g, requires_grad=True),
        "b": torch.randn(5, 2, generator=g, requires_grad=True),
    }
    tgt = {"a": torch.tensor([0, 1, 2, 2, 2]), "b": torch.tensor([0, 1, 1, 1, 0])}
    return out, tgt


def test_plain_ce_and_label_smoothing_match_torch():
    out, tgt = batch()
    for eps in (0.0, 0.1):
        loss = create_loss(LossConfig(label_smoothing=eps), SCHEMA)(out, tgt)
        for g in ("a", "b"):
            assert loss[g].item() == pytest.approx(
                F.cross_entropy(out[g], tgt[g], label_smoothing=eps).item(), rel=1e-6
            )
        assert loss["loss"].item() == pytest.approx(loss["a"].item() + loss["b"].item(), rel=1e-6)


def test_focal_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    p = torch.softmax(logits, 1)[0, 0].item()
    want = -((1 - p) ** 2) * np.log(p)
    loss = create_loss(LossConfig(name="focal", focal_gamma=2.0), Schema((SCHEMA.groups[0],)))
    assert loss({"a": logits}, {"a": torch.tensor([0])})["a"].item() == pytest.approx(want, rel=1e-5)


def test_class_weights_values():
    counts = np.array([1, 3, 0, 6])
    inv = class_weights(counts, "inverse")
    # 1/n for present classes, scaled to mean 1 over the 3 present classes
    raw = np.array([1, 1 / 3, 0, 1 / 6])
    assert inv == pytest.approx(raw * 3 / raw.sum())
    eff = class_weights(counts, "effective", beta=0.9)
    raw = np.array([(1 - 0.9) / (1 - 0.9**1), (1 - 0.9) / (1 - 0.9**3), 0, (1 - 0.9) / (1 - 0.9**6)])
    assert eff == pytest.approx(raw * 3 / raw.sum())
    assert class_weights(counts, "none") is None


def test_weighted_ce_matches_torch():
    out, tgt = batch()
    labels = {"a": np.array([0, 1, 1, 2, 2, 2]), "b": np.array([0, 1, 1, 1])}
    loss = create_loss(LossConfig(class_weights="inverse"), SCHEMA, labels)(out, tgt)
    w = torch.tensor(class_weights(np.array([1, 2, 3]), "inverse"), dtype=torch.float32)
    assert loss["a"].item() == pytest.approx(F.cross_entropy(out["a"], tgt["a"], weight=w).item(), rel=1e-6)


def test_logit_adjustment_adds_tau_log_prior():
    out, tgt = batch()
    labels = {"a": np.array([0, 0, 0, 1, 2, 2]), "b": np.array([0, 1])}
    loss = create_loss(LossConfig(logit_adjust_tau=1.0), SCHEMA, labels)(out, tgt)
    prior = torch.log(torch.tensor([3 / 6, 1 / 6, 2 / 6]))
    assert loss["a"].item() == pytest.approx(F.cross_entropy(out["a"] + prior, tgt["a"]).item(), rel=1e-6)


def test_group_weights_list_and_dict():
    out, tgt = batch()
    parts = create_loss(LossConfig(), SCHEMA)(out, tgt)
    w = create_loss(LossConfig(group_weights=[0.5, 2.0]), SCHEMA)(out, tgt)
    assert w["loss"].item() == pytest.approx(0.5 * parts["a"].item() + 2.0 * parts["b"].item(), rel=1e-6)
    d = create_loss(LossConfig(group_weights={"b": 2.0}), SCHEMA)(out, tgt)
    assert d["loss"].item() == pytest.approx(parts["a"].item() + 2.0 * parts["b"].item(), rel=1e-6)
    with pytest.raises(ValueError, match="2 groups"):
        create_loss(LossConfig(group_weights=[1.0]), SCHEMA)
    with pytest.raises(ValueError, match="unknown groups"):
        create_loss(LossConfig(group_weights={"c": 1.0}), SCHEMA)


def test_group_without_labels_contributes_zero_and_keeps_graph():
    out, tgt = batch()
    tgt["b"] = torch.full((5,), -1)
    loss = create_loss(LossConfig(), SCHEMA)(out, tgt)
    assert loss["b"].item() == 0.0
    loss["loss"].backward()
    assert out["b"].grad is not None and torch.all(out["b"].grad == 0)


def test_soft_targets_equal_hard_for_one_hot():
    out, tgt = batch()
    soft = {g: F.one_hot(t, out[g].shape[1]).float() for g, t in tgt.items()}
    fn = create_loss(LossConfig(label_smoothing=0.1), SCHEMA)
    assert fn(out, soft)["loss"].item() == pytest.approx(fn(out, tgt)["loss"].item(), rel=1e-6)


def test_multi_label_bce_with_pos_weight():
    schema = Schema((Group("m", ("u", "v"), kind="multi"),))
    labels = {"m": np.array([[1, 0], [0, 0], [0, 1], [0, 0]])}  # pos_weight = neg/pos = 3, 3
    fn = create_loss(LossConfig(pos_weight="auto"), schema, labels)
    logits = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    target = torch.tensor([[1, -1], [0, 1]])
    per = F.binary_cross_entropy_with_logits(
        logits, target.clamp_min(0).float(), pos_weight=torch.tensor([3.0, 3.0]), reduction="none"
    )
    want = per[target >= 0].mean().item()
    assert fn({"m": logits}, {"m": target})["m"].item() == pytest.approx(want, rel=1e-6)


def test_one_vs_rest_bce_on_single_label_groups_with_class_weights():
    out, tgt = batch()
    labels = {"a": np.array([0, 0, 0, 1, 2]), "b": np.array([0, 1, 1, 1, 1])}
    loss = create_loss(LossConfig(name="bce", class_weights="inverse"), SCHEMA, labels)(out, tgt)
    for g, c in (("a", 3), ("b", 2)):
        w = torch.tensor(class_weights(np.bincount(labels[g], minlength=c), "inverse"), dtype=torch.float32)
        per = F.binary_cross_entropy_with_logits(out[g], F.one_hot(tgt[g], c).float(), reduction="none")
        assert loss[g].item() == pytest.approx((per * w).mean().item(), rel=1e-6)
