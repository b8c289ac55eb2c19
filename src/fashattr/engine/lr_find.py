"""The learning-rate range test (Smith, 2015; fastai's ``lr_find``).

The model trains for up to ``steps`` batches while the learning rate grows exponentially from
``start_lr`` to ``end_lr``; the loss is smoothed with an exponential moving average (bias
corrected, ``beta``), and the test stops early once the smoothed loss exceeds ``diverge``
times its minimum. Nothing is written to any run: the model is built fresh and thrown away.

Two documented rules pick a value from the curve:

- ``steepest``: the learning rate where the smoothed loss falls fastest (the most negative
  slope against log10 of the learning rate), ignoring the first 10 and last 5 points, which
  are noise and divergence;
- ``valley`` (fastai's default since 2.5): the longest decreasing subsequence of the smoothed
  loss; the point ``start + floor(len/3) + floor(len/6)`` along it (about halfway), as fastai
  computes it.

Discriminative learning rates keep their ratios: every parameter group gets the test's
learning rate times its ``lr_scale``, so the suggestion is for ``optim.lr`` (the heads).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fashattr.config import Config
from fashattr.data.pipeline import augmented_batches
from fashattr.device import autocast
from fashattr.fileio import atomic_write_text

RULES = ("valley", "steepest")


@dataclass
class LrFindResult:
    lrs: list[float]
    losses: list[float]  # smoothed, bias-corrected
    raw_losses: list[float]
    steepest: float | None
    valley: float | None
    rule: str
    suggestion: float | None
    stopped_early: bool


def steepest(lrs: np.ndarray, losses: np.ndarray, skip_start: int = 10, skip_end: int = 5) -> float | None:
    """The learning rate of the most negative slope of loss against log10(lr)."""
    if len(lrs) < skip_start + skip_end + 3:
        skip_start, skip_end = 0, 0
    x, y = np.log10(lrs), losses
    if len(x) < 3:
        return None
    slope = np.gradient(y, x)
    window = slice(skip_start, len(x) - skip_end if skip_end else None)
    return float(lrs[window][int(np.argmin(slope[window]))])


def valley(lrs: np.ndarray, losses: np.ndarray) -> float | None:
    """fastai's valley rule: the longest decreasing subsequence of the loss, about halfway along."""
    n = len(losses)
    if n < 3:
        return None
    run = [1] * n  # longest decreasing subsequence ending at i
    start, end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[end] < run[i]:
            end = i
            start = end - run[end]
    third = (end - start) / 3
    return float(lrs[max(0, start + int(third) + int(third / 2))])


def lr_find(
    cfg: Config,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    beta: float = 0.98,
    diverge: float = 4.0,
    rule: str = "valley",
) -> LrFindResult:
    """Run the range test on ``cfg``'s model, data, loss, optimizer and augmentations."""
    from fashattr.engine.trainer import Trainer  # the trainer builds everything the test needs

    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose from {RULES}")
    if not 0 < start_lr < end_lr or steps < 2:
        raise ValueError(f"need 0 < start_lr < end_lr and steps >= 2, got {start_lr}, {end_lr}, {steps}")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp), resume=False)
    model, opt, loss_fn = trainer.model, trainer.optimizer, trainer.loss_fn
    model.train()
    trainer._apply_freeze()  # as epoch 1 of the real run: a frozen backbone stays frozen
    lrs: list[float] = []
    smooth: list[float] = []
    raw: list[float] = []
    avg, best, stopped = 0.0, math.inf, False
    epoch = 0
    while len(lrs) < steps and not stopped:
        batches = augmented_batches(
            trainer.loader, trainer.augment, trainer.aug_gen, trainer.device, epoch, 0, trainer.channels_last
        )
        for x, y, _ in batches:
            lr = start_lr * (end_lr / start_lr) ** (len(lrs) / (steps - 1))
            for g in opt.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            with autocast(trainer.device, trainer.amp):
                outputs = model(x)
            loss = loss_fn(outputs, y)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = float(loss.detach())
            avg = beta * avg + (1 - beta) * value
            smoothed = avg / (1 - beta ** (len(lrs) + 1))
            lrs.append(lr)
            raw.append(value)
            smooth.append(smoothed)
            best = min(best, smoothed)
            if not math.isfinite(smoothed) or (len(lrs) > 5 and smoothed > diverge * best):
                stopped = True
                break
            if len(lrs) == steps:
                break
        epoch += 1
    ok = [i for i, v in enumerate(smooth) if math.isfinite(v)]
    a, s = np.array(lrs)[ok], np.array(smooth)[ok]
    result = LrFindResult(lrs, smooth, raw, steepest(a, s), valley(a, s), rule, None, stopped)
    result.suggestion = result.valley if rule == "valley" else result.steepest
    return result


def save_lr_find(result: LrFindResult, out: str | Path) -> tuple[Path, Path]:
    """Write ``lr_find.json`` and ``lr_find.png`` (loss against learning rate, suggestions marked)."""
    # A Figure of its own, not pyplot: no global backend switch, nothing left open in a notebook.
    from matplotlib.figure import Figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / "lr_find.json", out / "lr_find.png"
    atomic_write_text(json_path, json.dumps(asdict(result), indent=2))
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    ax.plot(result.lrs, result.raw_losses, color="0.8", lw=0.8, label="loss")
    ax.plot(result.lrs, result.losses, color="C0", label="smoothed loss")
    for name, value, color in (("valley", result.valley, "C2"), ("steepest", result.steepest, "C3")):
        if value is not None:
            mark = " (suggested)" if name == result.rule else ""
            ax.axvline(value, color=color, ls="--", lw=1, label=f"{name} {value:.2e}{mark}")
    ax.set_xscale("log")
    finite = [v for v in result.losses if math.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) * 0.95, min(max(finite), 4 * min(finite)) * 1.05)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("learning-rate range test")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    return json_path, png_path
