"""Fine-tuning: the backbone's stages (timm's own parameter grouping), freezing, and
discriminative learning rates.

A *stage* is one of timm's coarse parameter groups of the backbone (``group_matcher(coarse=True)``):
for a ResNet the stem and ``layer1..layer4``; for a ViT the patch embedding and each block.
A trailing group of only 1-D tensors (a final norm, as EVA's ``fc_norm``) goes with the heads:
it is the input of the heads and trains whenever they do. The heads (and shared layers) are
the last stage and always train.
"""

from __future__ import annotations

from timm.models import group_parameters
from torch import nn

from fashattr.config import Config, OptimConfig


def backbone_stages(backbone: nn.Module) -> list[list[str]]:
    """Parameter names of the backbone per stage, input to output (timm's coarse groups)."""
    names = [n for n, _ in backbone.named_parameters()]
    matcher = getattr(backbone, "group_matcher", None)
    if matcher is None:  # not a timm model with grouping: the whole backbone is one stage
        return [names]
    groups = group_parameters(backbone, matcher(coarse=True))
    stages = [list(v) for _, v in sorted(groups.items())]
    params = dict(backbone.named_parameters())
    if len(stages) > 1 and all(params[n].ndim <= 1 for n in stages[-1]):
        stages.pop()  # a final norm: trains with the heads
    return stages


def stage_of(model: nn.Module) -> tuple[dict[str, int], int]:
    """Every parameter's stage (its full name -> index) and the number of backbone stages;
    the heads, shared layers and a final norm get index ``n`` (the head stage)."""
    stages = backbone_stages(model.backbone)  # type: ignore[arg-type]
    index = {f"backbone.{n}": i for i, names in enumerate(stages) for n in names}
    n = len(stages)
    return {name: index.get(name, n) for name, _ in model.named_parameters()}, n


def lr_scales(cfg: OptimConfig, n_stages: int) -> list[float]:
    """Learning-rate multiplier per stage (``n_stages`` backbone stages, then the heads at 1)."""
    if cfg.stage_lr is not None:
        if len(cfg.stage_lr) != n_stages:
            raise ValueError(
                f"optim.stage_lr has {len(cfg.stage_lr)} multipliers but this backbone has {n_stages} stages "
                "(timm's coarse parameter groups, input to output)"
            )
        return [*cfg.stage_lr, 1.0]
    return [cfg.layer_decay ** (n_stages - i) for i in range(n_stages + 1)]


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Optimizer groups: per stage, one with weight decay and one without (biases and
    normalization weights, 1-D tensors, as timm does); each with its own ``lr``.

    Every parameter is in a group, frozen or not: a frozen one has no gradient and is skipped
    by the optimizer, so unfreezing needs no new optimizer (and resuming stays exact)."""
    stage, n = stage_of(model)
    scales = lr_scales(cfg, n)
    groups: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        groups.setdefault((stage[name], p.ndim <= 1), []).append(p)
    return [
        {
            "params": params,
            "weight_decay": 0.0 if no_decay else cfg.weight_decay,
            "lr": cfg.lr * scales[s],
            "lr_scale": scales[s],
            "stage": s,
        }
        for (s, no_decay), params in sorted(groups.items())
    ]


def frozen_stages(cfg: Config, n_stages: int, epoch: int) -> int:
    """How many backbone stages (from the input) are frozen during ``epoch`` (0-based)."""
    t = cfg.train
    if epoch < t.freeze_epochs:
        return n_stages
    if t.trainable_stages is None:
        return 0
    return max(0, n_stages - t.trainable_stages)


def apply_freeze(model: nn.Module, frozen: int) -> None:
    """Freeze the first ``frozen`` backbone stages and unfreeze the rest; call after
    ``model.train()``: frozen normalization layers are put in eval mode so their running
    statistics stay as they are."""
    stage, _ = stage_of(model)
    for name, p in model.named_parameters():
        p.requires_grad_(stage[name] >= frozen)
    for module in model.modules():  # only batch norms keep running statistics
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()


def trainable_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
