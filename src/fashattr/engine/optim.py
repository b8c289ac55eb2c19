"""Optimizers and per-step learning-rate schedules (torch's own schedulers)."""

from __future__ import annotations

import difflib
import math

import torch
from torch import nn
from torch.optim import lr_scheduler

from fashattr.config import OptimConfig, SchedConfig
from fashattr.engine.finetune import param_groups

OPTIMIZERS = ("adamw", "sgd")
SCHEDULERS = ("cosine", "step", "cosine_restarts", "onecycle", "constant")


def _unknown(kind: str, name: str, names: tuple[str, ...]) -> ValueError:
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}{hint} Choose from {list(names)}")


def create_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW or SGD over ``finetune.param_groups``: per stage, with and without weight decay."""
    groups = param_groups(model, cfg)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    raise _unknown("optimizer", cfg.name, OPTIMIZERS)


def create_scheduler(
    cfg: SchedConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int
) -> lr_scheduler.LRScheduler:
    """A scheduler stepped once per optimizer step; epoch-valued settings are converted to steps."""
    total = max(1, steps_per_epoch * epochs)
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total - 1)

    def with_warmup(main: lr_scheduler.LRScheduler) -> lr_scheduler.LRScheduler:
        if warmup <= 0:
            return main
        ramp = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
        return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])

    # Cosine schedules as factors of each group's own lr (LambdaLR), so discriminative learning
    # rates keep their ratios down to the floor; torch's cosine classes take one absolute floor.
    floor = cfg.min_lr_ratio

    def cosine(t: int, period: int) -> float:
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t / period))

    if cfg.name == "cosine":
        span = max(1, total - warmup)
        return with_warmup(lr_scheduler.LambdaLR(optimizer, lambda t: cosine(min(t, span), span)))
    if cfg.name == "step":
        step = max(1, round(cfg.step_epochs * steps_per_epoch))
        return with_warmup(lr_scheduler.StepLR(optimizer, step_size=step, gamma=cfg.gamma))
    if cfg.name == "cosine_restarts":  # SGDR: periods t0, t0 * mult, t0 * mult^2, ...
        t0 = max(1, round(cfg.restart_epochs * steps_per_epoch))

        def restarts(t: int) -> float:
            period = t0
            while t >= period:
                t -= period
                period = max(1, period * cfg.restart_mult)
            return cosine(t, period)

        return with_warmup(lr_scheduler.LambdaLR(optimizer, restarts))
    if cfg.name == "onecycle":  # has its own warm-up phase (pct_start)
        peaks = [g["lr"] for g in optimizer.param_groups]
        return lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total, pct_start=cfg.onecycle_pct_start)
    if cfg.name == "constant":
        return with_warmup(lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0))
    raise _unknown("scheduler", cfg.name, SCHEDULERS)
