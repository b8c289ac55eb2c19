"""Every learning-rate schedule, step by step, against its formula written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from fashattr.config import SchedConfig
from fashattr.engine.optim import create_scheduler


def expected_lr(cfg: SchedConfig, base: float, t: int, steps_per_epoch: int, epochs: int) -> float:
    """The learning rate after ``t`` optimizer steps (the one step ``t`` trains with), from the formulas.

    ``T`` = total steps, ``w`` = warm-up steps, ``f`` = ``min_lr_ratio``:
    warm-up ``base * (t + 1) / (w + 1)`` (linear, reaching ``base`` at ``w``); then, with ``u = t - w``,
    cosine ``base * (f + (1 - f) * (1 + cos(pi * min(u, T - w) / (T - w))) / 2)``; step
    ``base * gamma ** (u // k)``; cosine restarts the cosine over periods ``t0, t0 * m, t0 * m^2, ...``;
    one-cycle (no separate warm-up) a cosine rise from ``base / 25`` to ``base`` over the first
    ``pct * T - 1`` steps and a cosine fall to ``base / 25 / 1e4`` at step ``T - 1``.
    """
    total = steps_per_epoch * epochs
    f = cfg.min_lr_ratio

    def half_cosine(start: float, end: float, frac: float) -> float:
        return end + (start - end) * (1 + math.cos(math.pi * frac)) / 2

    if cfg.name == "onecycle":
        low, peak_at = base / 25, cfg.onecycle_pct_start * total - 1
        if t <= peak_at:
            return half_cosine(low, base, t / peak_at)
        return half_cosine(base, low / 1e4, (t - peak_at) / (total - 1 - peak_at))
    w = min(round(cfg.warmup_epochs * steps_per_epoch), total - 1)
    if t < w:
        return base * (t + 1) / (w + 1)
    u = t - w
    if cfg.name == "constant":
        return base
    if cfg.name == "cosine":
        return base * half_cosine(1.0, f, min(u, total - w) / (total - w))
    if cfg.name == "step":
        return base * cfg.gamma ** (u // round(cfg.step_epochs * steps_per_epoch))
    if cfg.name == "cosine_restarts":
        period = round(cfg.restart_epochs * steps_per_epoch)
        while u >= period:
            u, period = u - period, period * cfg.restart_mult
        return base * half_cosine(1.0, f, u / period)
    raise AssertionError(cfg.name)


def scheduled_lrs(cfg: SchedConfig, bases: list[float], steps_per_epoch: int, epochs: int) -> list[list[float]]:
    """Each param group's lr after 0, 1, ..., T scheduler steps, stepped as the trainer steps it."""
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in bases]
    opt = torch.optim.SGD([{"params": [p], "lr": b} for p, b in zip(params, bases, strict=True)], momentum=0.9)
    sched = create_scheduler(cfg, opt, steps_per_epoch, epochs)
    lrs = [[g["lr"] for g in opt.param_groups]]
    for _ in range(steps_per_epoch * epochs):
        opt.step()
        sched.step()
        lrs.append([g["lr"] for g in opt.param_groups])
    return lrs


SPE, EPOCHS = 5, 7  # 35 steps; warm-up 1 epoch = 5 steps
CASES = {
    "cosine": SchedConfig("cosine", warmup_epochs=1, min_lr_ratio=0.1),
    "cosine_no_warmup": SchedConfig("cosine", warmup_epochs=0, min_lr_ratio=0.0),
    "step": SchedConfig("step", warmup_epochs=1, step_epochs=1.4, gamma=0.5),  # every 7 steps
    "cosine_restarts": SchedConfig("cosine_restarts", warmup_epochs=1, restart_epochs=1, restart_mult=2),
    "cosine_restarts_mult1": SchedConfig("cosine_restarts", warmup_epochs=0.4, restart_epochs=2, min_lr_ratio=0.2),
    "onecycle": SchedConfig("onecycle", onecycle_pct_start=0.3),
    "constant": SchedConfig("constant", warmup_epochs=1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_schedule_follows_its_formula(name: str):
    cfg = CASES[name]
    bases = [0.1, 0.03]  # discriminative lrs: every group follows its own base
    got = scheduled_lrs(cfg, bases, SPE, EPOCHS)
    for t, row in enumerate(got):
        for base, lr in zip(bases, row, strict=True):
            want = expected_lr(cfg, base, t, SPE, EPOCHS)
            assert lr == pytest.approx(want, rel=0, abs=1e-9), f"{name} step {t}: lr {lr} != {want}"


def test_formula_shapes():
    """Spot values of the formulas themselves, worked out by hand (guards the oracle above)."""
    c = CASES
    # warm-up: 1/6, ..., 5/6, then the full lr at step 5
    assert [expected_lr(c["cosine"], 6.0, t, SPE, EPOCHS) for t in range(6)] == [1, 2, 3, 4, 5, 6]
    # cosine over 30 steps: halfway (step 20) is (1 + 0.1) / 2 of the base; the end is the floor
    assert expected_lr(c["cosine"], 1.0, 20, SPE, EPOCHS) == pytest.approx(0.55, abs=1e-12)
    assert expected_lr(c["cosine"], 1.0, 35, SPE, EPOCHS) == pytest.approx(0.1, abs=1e-12)
    # step: halved at steps 12 and 19 (5 warm-up + 7, + 14)
    assert [expected_lr(c["step"], 1.0, t, SPE, EPOCHS) for t in (11, 12, 18, 19)] == [1.0, 0.5, 0.5, 0.25]
    # restarts: periods 5, 10, 20 after the 5 warm-up steps: back to the full lr at steps 10 and 20
    r = c["cosine_restarts"]
    assert [expected_lr(r, 1.0, t, SPE, EPOCHS) for t in (5, 10, 20)] == [1.0, 1.0, 1.0]
    assert expected_lr(r, 1.0, 15, SPE, EPOCHS) == pytest.approx(0.01 + 0.99 * 0.5, abs=1e-12)
    # one-cycle: base/25 at step 0, the peak at 0.3 * 35 - 1 = 9.5 (between steps), base/25e4 at step 34
    o = c["onecycle"]
    assert expected_lr(o, 1.0, 0, SPE, EPOCHS) == pytest.approx(0.04, abs=1e-12)
    assert expected_lr(o, 1.0, 34, SPE, EPOCHS) == pytest.approx(0.04e-4, abs=1e-12)
    assert max(expected_lr(o, 1.0, t, SPE, EPOCHS) for t in range(35)) < 1.0
