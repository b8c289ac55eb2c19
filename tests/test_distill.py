"""Distillation: the KL term and the mixed loss by hand; soft targets = the mean of the teachers' softened
probabilities, computed once and cached; teachers that would leak the holdouts are refused."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

from fashattr.config import ConfigError, LossConfig, load_config
from fashattr.data.prepare import load_train_eval
from fashattr.engine.distill import CACHE, soften
from fashattr.engine.trainer import fit
from fashattr.losses import create_loss, distill_term
from fashattr.predictor import Predictor
from fashattr.schema import Group, Schema

SCHEMA = Schema((Group("a", ("x", "y")), Group("m", ("p", "q"), kind="multi")))


def _softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def test_kl_at_temperature_by_hand():
    t = 2.0
    q = _softmax([1.0 / t, 0.0])
    p = [0.7, 0.3]
    want = t * t * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    got = distill_term(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.7, 0.3]]), "single", t)
    assert got.item() == pytest.approx(want, rel=1e-5)
    # multi-label: the Bernoulli KL per class, averaged over classes
    s = 1 / (1 + math.exp(-3.0 / t))
    kl_p = 0.9 * math.log(0.9 / s) + 0.1 * math.log(0.1 / (1 - s))
    kl_q = 0.0  # teacher 0.5 against sigmoid(0) = 0.5
    got = distill_term(torch.tensor([[3.0, 0.0]]), torch.tensor([[0.9, 0.5]]), "multi", t)
    assert got.item() == pytest.approx(t * t * (kl_p + kl_q) / 2, rel=1e-5)
    assert distill_term(torch.tensor([[0.4, -1.0]]), torch.tensor([_softmax([0.2, -0.5])]), "single", t).item() == (
        pytest.approx(0.0, abs=1e-6)
    )


def test_the_loss_mixes_hard_and_soft_by_hand():
    logits = {"a": torch.tensor([[1.0, 0.0]], requires_grad=True), "m": torch.tensor([[3.0, 0.0]], requires_grad=True)}
    targets = {
        "a": torch.tensor([1]),
        "m": torch.tensor([[1, 0]], dtype=torch.int8),
        "distill:a": torch.tensor([[0.7, 0.3]]),
        "distill:m": torch.tensor([[0.9, 0.5]]),
    }
    cfg = LossConfig(distill_weight=0.25, distill_temperature=2.0, group_weights=[1.0, 2.0])
    out = create_loss(cfg, SCHEMA)(logits, targets)
    hard = out["a"] + 2.0 * out["m"]
    soft = distill_term(logits["a"], targets["distill:a"], "single", 2.0) + 2.0 * distill_term(
        logits["m"], targets["distill:m"], "multi", 2.0
    )
    assert out["loss"].item() == pytest.approx(0.75 * hard.item() + 0.25 * soft.item(), rel=1e-6)
    out["loss"].backward()
    assert logits["a"].grad is not None and logits["m"].grad is not None
    # without teacher targets (evaluation batches) the loss is the hard one
    plain = create_loss(cfg, SCHEMA)(logits, {"a": targets["a"], "m": targets["m"]})
    assert plain["loss"].item() == pytest.approx(hard.item(), rel=1e-6)


def test_soften_by_hand():
    got = soften(SCHEMA, {"a": np.array([[2.0, 0.0]]), "m": np.array([[2.0, -4.0]])}, 2.0)
    assert got["a"][0].tolist() == pytest.approx(_softmax([1.0, 0.0]), rel=1e-6)
    assert got["m"][0].tolist() == pytest.approx([1 / (1 + math.exp(-1)), 1 / (1 + math.exp(2))], rel=1e-6)


def test_distill_from_two_teachers(tiny_data: Path, cache_dir: Path, tmp_path: Path):
    over = tiny_overrides(tiny_data, cache_dir, tmp_path, **{"train.epochs": 1, "data.test_holdout": 0.2})
    teachers = [fit(load_config(None, [*over, f"name=t{s}", f"train.seed={s}"])) for s in (0, 1)]
    cfg = load_config(
        None, [*over, "name=student", f"loss.distill_from=[{teachers[0]},{teachers[1]}]", "loss.distill_temperature=3"]
    )
    student = fit(cfg)
    # the cached soft targets are the mean of the teachers' softmax(logits / 3) on the training images
    schema, train, _, _ = load_train_eval(cfg.data, progress=False)
    pixels = train.pixels()
    probs = [soften(schema, Predictor.from_run(t).scores(pixels), 3.0) for t in teachers]
    with np.load(student / CACHE) as z:
        for g in schema.names:
            assert np.allclose(z[g], (probs[0][g] + probs[1][g]) / 2, atol=1e-6)
            assert np.allclose(z[g].sum(1), 1.0, atol=1e-5)
    assert (student / "best.safetensors").is_file()
    # a teacher with another test holdout would leak this run's evaluation images
    other = fit(load_config(None, [*over, "name=t9", "data.test_holdout_seed=9"]))
    with pytest.raises(ConfigError, match=r"has data.test_holdout_seed=9, this run 1234: it would leak"):
        fit(load_config(None, [*over, "name=s2", f"loss.distill_from=[{other}]"]))


def test_mixup_mixes_the_soft_targets_like_the_images():
    from fashattr.config import AugmentConfig
    from fashattr.data.augment import BatchAugment

    aug = BatchAugment(AugmentConfig(mixup=0.4), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), {"a": 2})
    soft = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.2, 0.8]])
    x = torch.randn(4, 3, 8, 8)
    _, t = aug.mix(x, {"a": torch.tensor([0, 1, 1, 0]), "distill:a": soft}, torch.Generator().manual_seed(3))
    # the draws mix() makes, in its order: a seed for the Beta(0.4, 0.4) lam, then the partner permutation
    g = torch.Generator().manual_seed(3)
    lam = float(np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=g))).beta(0.4, 0.4))
    perm = torch.randperm(4, generator=g)
    assert torch.allclose(t["distill:a"], lam * soft + (1 - lam) * soft[perm], atol=1e-6)
    assert torch.allclose(t["distill:a"].sum(1), torch.ones(4))
