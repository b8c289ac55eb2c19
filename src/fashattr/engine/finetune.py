"""Fine-tuning: the backbone's stages (timm's own parameter grouping), freezing, discriminative
learning rates, and starting from an earlier run's weights (``model.init_from``).

A *stage* is one of timm's coarse parameter groups of the backbone (``group_matcher(coarse=True)``):
for a ResNet the stem and ``layer1..layer4``; for a ViT the patch embedding and each block.
A trailing group of only 1-D tensors (a final norm, as EVA's ``fc_norm``) goes with the heads:
it is the input of the heads and trains whenever they do. The heads (and shared layers) are
the last stage and always train.
"""

from __future__ import annotations

from pathlib import Path

from timm.models import group_parameters
from torch import nn

from fashattr.config import Config, ConfigError, OptimConfig
from fashattr.models.weights import load_weights
from fashattr.schema import Schema
from fashattr.weight_sources import sha256_of


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


def init_from_run(model: nn.Module, source: str | Path, schema: Schema) -> dict[str, str]:
    """Start the whole ``model`` (backbone, shared layers and heads) from an earlier run's weights
    (``model.init_from``): fine-tuning from a converged linear probe (LP-FT, Kumar et al. 2022: the
    backbone's features are not torn up by random heads in the first steps), or the team's next round
    starting where the last model stopped.

    ``source``: a run folder (its ``best.safetensors``, checked against its ``schema.yaml``) or a
    ``.safetensors`` file. A bare file carries no schema, so only its tensors' names and shapes are
    checked: give the run folder where you have it. Returns what the summary records: the file and its
    sha256.

    Raises:
        ConfigError: not a run folder or weights file; the run's schema differs from this one (the
            first group or class that differs is named); tensors that are missing, unexpected or of
            another shape (named, up to five of each).
    """
    path = Path(source)
    if path.is_dir():
        weights, schema_file = path / "best.safetensors", path / "schema.yaml"
        if not weights.is_file() or not schema_file.is_file():
            raise ConfigError(f"model.init_from: {path} is not a finished run folder (best.safetensors, schema.yaml)")
        theirs = Schema.load(schema_file)
        if theirs != schema:
            raise ConfigError(
                f"model.init_from: {path} was trained on another schema: {schema_difference(theirs, schema)}"
            )
    elif path.is_file():
        weights = path
    else:
        raise ConfigError(f"model.init_from: {path} does not exist")
    try:
        state = load_weights(weights)
    except ValueError as e:
        raise ConfigError(f"model.init_from: {e}") from None
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misfit = [
        f"{k} {tuple(state[k].shape)} (needs {tuple(v.shape)})"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{what}: {', '.join(names[:5])}{f' and {len(names) - 5} more' if len(names) > 5 else ''}"
        for what, names in (("missing", missing), ("unexpected", unexpected), ("other shape", misfit))
        if names
    ]
    if problems:
        raise ConfigError(f"model.init_from: {weights} does not fit this model ({'; '.join(problems)})")
    model.load_state_dict(state, strict=True)
    return {"file": str(weights), "sha256": sha256_of(weights)}


def schema_difference(theirs: Schema, ours: Schema) -> str:
    """The first difference between two schemas, in words."""
    if theirs.names != ours.names:
        return f"groups {theirs.names}, not {ours.names}"
    for a, b in zip(theirs.groups, ours.groups, strict=True):
        if a != b:
            return f"group {a.name!r}: {a.kind} {list(a.classes)}, not {b.kind} {list(b.classes)}"
    return "the schemas differ"
