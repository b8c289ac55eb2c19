"""Optimizers and per-step learning-rate schedules (torch's own schedulers)."""

from __future__ import annotations

import difflib

import torch
from torch import nn
from torch.optim import lr_scheduler

from fashattr.config import OptimConfig, SchedConfig

OPTIMIZERS = ("adamw", "sgd")
SCHEDULERS = ("cosine", "step", "cosine_restarts", "onecycle", "constant")


def _unknown(kind: str, name: str, names: tuple[str, ...]) -> ValueError:
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}{hint} Choose from {list(names)}")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and normalization weights (1-D tensors), as timm does."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def create_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
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

    base_lr = optimizer.param_groups[0]["lr"]
    if cfg.name == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=base_lr * cfg.min_lr_ratio)
        return with_warmup(main)
    if cfg.name == "step":
        step = max(1, round(cfg.step_epochs * steps_per_epoch))
        return with_warmup(lr_scheduler.StepLR(optimizer, step_size=step, gamma=cfg.gamma))
    if cfg.name == "cosine_restarts":
        t0 = max(1, round(cfg.restart_epochs * steps_per_epoch))
        restarts = lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=t0, T_mult=cfg.restart_mult, eta_min=base_lr * cfg.min_lr_ratio
        )
        return with_warmup(restarts)
    if cfg.name == "onecycle":  # has its own warm-up phase (pct_start)
        return lr_scheduler.OneCycleLR(optimizer, max_lr=base_lr, total_steps=total, pct_start=cfg.onecycle_pct_start)
    if cfg.name == "constant":
        return with_warmup(lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0))
    raise _unknown("scheduler", cfg.name, SCHEDULERS)
