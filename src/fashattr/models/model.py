"""AttributeModel: timm backbone -> pooled features -> shared layers -> heads -> {group: logits}."""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import get_pretrained_cfg_value
from torch import nn

from fashattr.config import ModelConfig
from fashattr.models.heads import group_heads, shared_mlp
from fashattr.schema import Schema

log = logging.getLogger(__name__)


class AttributeModel(nn.Module):
    """A backbone with one classification head per attribute group.

    ``forward(x)`` returns ``{group name: logits (B, num_classes)}`` in schema order.
    """

    def __init__(self, backbone: nn.Module, schema: Schema, cfg: ModelConfig) -> None:
        super().__init__()
        self.schema = schema
        self.backbone = backbone
        # Models with a head conv after pooling (MobileNetV3/V4, GhostNet) return head_hidden_size
        # features with num_classes=0, not num_features (the channels before that conv).
        features: int = getattr(backbone, "head_hidden_size", None) or backbone.num_features  # type: ignore[assignment]
        self.dropout = nn.Dropout(cfg.drop_rate) if cfg.drop_rate > 0 else nn.Identity()
        self.shared = shared_mlp(features, cfg.head_layers, cfg.head_width, cfg.head_activation, cfg.head_dropout)
        self.heads = group_heads(cfg.head_width if cfg.head_layers else features, schema)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled, shared features before the heads: ``(B, F)``."""
        return self.shared(self.dropout(self.backbone(x)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {name: head(f) for name, head in self.heads.items()}


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors``, or from a ``.pth``/``.pt`` with ``weights_only=True``.

    A ``.pth`` that wraps its weights in ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained_file {path} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def _load_backbone_file(backbone: nn.Module, path: str | Path) -> None:
    state = load_weights_file(path)
    # Accept both bare backbone weights and a whole AttributeModel's (prefix "backbone.").
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    own = backbone.state_dict()
    # A classifier trained for other classes does not fit num_classes=0; drop what has no home.
    dropped = sorted(k for k in state if k not in own)
    state = {k: v for k, v in state.items() if k in own}
    missing = sorted(k for k in own if k not in state)
    if missing:
        raise ValueError(f"{path}: weights lack {len(missing)} backbone tensors, e.g. {missing[:5]}")
    bad = [k for k, v in state.items() if v.shape != own[k].shape]
    if bad:
        raise ValueError(
            f"{path}: shape mismatch for {bad[:5]} (file {state[bad[0]].shape} vs model {own[bad[0]].shape})"
        )
    backbone.load_state_dict(state)
    if dropped:
        log.info(
            "pretrained_file %s: ignored %d tensors the backbone has no place for: %s", path, len(dropped), dropped[:5]
        )


def create_model(cfg: ModelConfig, schema: Schema, image_size: int | None = None) -> AttributeModel:
    """Build the model for ``schema``: any timm backbone by name with its classifier removed.

    ``image_size`` is passed on to backbones whose input size is fixed at construction (ViT,
    EVA: their position embeddings; pretrained ones are resampled by timm).

    Raises:
        ValueError: unknown backbone name (timm's close matches are suggested), or a
            ``pretrained_file`` that does not fit the backbone.
    """
    if not timm.is_model(cfg.backbone):
        close = difflib.get_close_matches(cfg.backbone, timm.list_models(), n=5, cutoff=0.6)
        raise ValueError(f"unknown timm backbone {cfg.backbone!r}; close names: {close}")
    extra: dict[str, Any] = {}
    if image_size is not None and get_pretrained_cfg_value(cfg.backbone, "fixed_input_size"):
        extra["img_size"] = image_size
    backbone = timm.create_model(
        cfg.backbone, pretrained=cfg.pretrained, num_classes=0, drop_path_rate=cfg.drop_path_rate or None, **extra
    )
    if cfg.pretrained_file:
        _load_backbone_file(backbone, cfg.pretrained_file)
    model = AttributeModel(backbone, schema, cfg)
    if cfg.max_mb is not None and weights_mb(model) > cfg.max_mb:
        n = sum(p.numel() for p in model.parameters())
        raise ValueError(
            f"model {cfg.backbone!r} (head_layers={cfg.head_layers}) has {n / 1e6:.2f} M parameters = "
            f"{weights_mb(model):.1f} MB of saved weights, over the budget model.max_mb = {cfg.max_mb:g} MB"
        )
    return model


def weights_mb(model: nn.Module) -> float:
    """Size of the model's saved weights (parameters and buffers, as stored) in MB of 10^6 bytes."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1e6
