"""AttributeModel: timm backbone -> pooled features -> shared layers -> heads -> {group: logits}."""

from __future__ import annotations

import difflib
import logging
from typing import Any

import timm
import torch
from timm.models import get_pretrained_cfg_value
from torch import nn

from fashattr.config import ModelConfig
from fashattr.models.convert import load_into, read_state_dict
from fashattr.models.heads import group_heads, shared_mlp
from fashattr.schema import Schema
from fashattr.weight_sources import (
    ResolvedWeights,
    check_hub_reachable,
    is_package_source,
    resolve_file,
    resolve_package,
)

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
        # Where the backbone's initial weights came from (weight_sources.ResolvedWeights.record()), or None.
        self.init_weights: dict[str, Any] | None = None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled, shared features before the heads: ``(B, F)``."""
        return self.shared(self.dropout(self.backbone(x)))

    def classify(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        """The part after the backbone: its pooled features ``(B, F)`` -> ``{group: logits}``."""
        f = self.shared(self.dropout(pooled))
        return {name: head(f) for name, head in self.heads.items()}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.classify(self.backbone(x))


def resolve_weights(cfg: ModelConfig) -> ResolvedWeights | None:
    """The backbone's initial weights as a concrete source, or None when it starts from random ones.

    Raises:
        ConfigError: an unknown or uninstalled package, a missing file, or an unreachable hub.
    """
    source = cfg.pretrained_file or cfg.pretrained
    if source is False:
        return None
    if source is True:
        return ResolvedWeights("hub", None)
    if is_package_source(source):
        return resolve_package(str(source))
    return resolve_file(str(source))


def _hub_backbone(name: str, **kwargs: Any) -> nn.Module:
    """timm's hub loading, failing fast with the offline sources when the hub is out of reach and the
    weights are not in the local hub cache (instead of timm's retry loop and a raw network error)."""
    from timm.models import get_pretrained_cfg

    pcfg = get_pretrained_cfg(name)
    if pcfg is not None and pcfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo = pcfg.hf_hub_id.split("@")[0]
        for filename in ("open_clip_pytorch_model.bin", "model.safetensors", "pytorch_model.bin"):
            cached = try_to_load_from_cache(repo, filename)
            if isinstance(cached, str):  # in the cache: read it from there, no network at all
                return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": cached}, **kwargs)
    check_hub_reachable(name)
    return timm.create_model(name, pretrained=True, **kwargs)


class HeadsOnly(nn.Module):
    """The model's heads as a module of their own, fed cached backbone features (``train.feature_cache``)."""

    def __init__(self, model: AttributeModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.classify(pooled)


def fixed_input_size(backbone: str) -> bool:
    """Whether a timm backbone is built for one input size (ViT-style position embeddings), so it cannot be
    used at another size than it trained at."""
    return bool(get_pretrained_cfg_value(backbone, "fixed_input_size"))


def create_model(cfg: ModelConfig, schema: Schema, image_size: int | None = None) -> AttributeModel:
    """Build the model for ``schema``: any timm backbone by name with its classifier removed, its initial
    weights from ``cfg.pretrained`` (weight_sources.py) and recorded in ``model.init_weights``.

    ``image_size`` is passed on to backbones whose input size is fixed at construction (ViT,
    EVA: their position embeddings; pretrained ones are resampled by timm).

    Raises:
        ValueError: unknown backbone name (timm's close matches are suggested), or weights that do
            not fit the backbone (the tensors are named).
        ConfigError: a weight source that cannot be resolved (unknown or missing package, missing
            file, unreachable hub).
    """
    if not timm.is_model(cfg.backbone):
        close = difflib.get_close_matches(cfg.backbone, timm.list_models(), n=5, cutoff=0.6)
        raise ValueError(f"unknown timm backbone {cfg.backbone!r}; close names: {close}")
    extra: dict[str, Any] = {}
    if image_size is not None and fixed_input_size(cfg.backbone):
        extra["img_size"] = image_size
    extra |= {"num_classes": 0, "drop_path_rate": cfg.drop_path_rate or None}
    weights = resolve_weights(cfg)
    if weights is not None and weights.path is None:
        backbone = _hub_backbone(cfg.backbone, **extra)
    else:
        backbone = timm.create_model(cfg.backbone, pretrained=False, **extra)
    if weights is not None and weights.path is not None:
        where = weights.source if weights.package is None else f"{weights.source} ({weights.path})"
        layout = weights.package.layout if weights.package is not None else None
        load_into(backbone, read_state_dict(weights.path), where, layout)
    model = AttributeModel(backbone, schema, cfg)
    model.init_weights = weights.record() if weights is not None else None
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
