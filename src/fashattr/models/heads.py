"""Per-group heads and the optional shared fully-connected stack in front of them."""

from __future__ import annotations

import difflib

from torch import nn

from fashattr.schema import Schema

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


def create_activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        close = difflib.get_close_matches(name, _ACTIVATIONS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown activation {name!r}{hint} Choose from {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def shared_mlp(in_features: int, layers: int, width: int, activation: str, dropout: float) -> nn.Sequential:
    """``layers`` x (Linear -> activation -> Dropout); empty (identity) when ``layers`` is 0."""
    blocks: list[nn.Module] = []
    for i in range(layers):
        blocks += [nn.Linear(in_features if i == 0 else width, width), create_activation(activation)]
        if dropout > 0:
            blocks.append(nn.Dropout(dropout))
    return nn.Sequential(*blocks)


def group_heads(in_features: int, schema: Schema) -> nn.ModuleDict:
    """One Linear per group, keyed by group name, with as many outputs as the group has classes."""
    return nn.ModuleDict({g.name: nn.Linear(in_features, g.num_classes) for g in schema.groups})
