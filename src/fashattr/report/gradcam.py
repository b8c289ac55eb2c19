"""Grad-CAM per attribute head: where the network looks for each group's answer.

Grad-CAM (Selvaraju et al., 2017) weights a feature map's channels by the mean gradient of one
class score and keeps the positive part. An AttributeModel has one head per group, so each group
gets its own map for its own target class, from one forward pass and one gradient per group.

The layer hooked, by backbone family (``target_layer``):

- CNNs (ResNet, ConvNeXt, EfficientNet, ...): the last stage timm lists in ``feature_info``
  (``layer4`` for ResNets), a ``(B, C, h, w)`` map; else the last ``Conv2d``.
- Vision transformers (ViT, DeiT, EVA; anything with ``blocks`` and ``patch_embed``): the last
  block's ``norm1``, whose ``(B, T, C)`` tokens are reshaped to ``(B, C, h, w)`` after dropping the
  prefix (class/register) tokens. Not the last block's *output*: with class-token pooling the patch
  tokens there never reach the logits, so their gradient is zero.

A compact implementation rather than pytorch-grad-cam: that library wants one tensor output per
model and pulls in OpenCV; here each head is a target and the maps come back as NumPy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _is_vit(backbone: nn.Module) -> bool:
    return hasattr(backbone, "blocks") and hasattr(backbone, "patch_embed")


def target_layer(model: nn.Module) -> tuple[nn.Module, str]:
    """The module Grad-CAM hooks in ``model.backbone`` and its dotted name (relative to the model)."""
    backbone: nn.Module = model.backbone  # type: ignore[assignment]
    modules = dict(backbone.named_modules())
    if _is_vit(backbone):
        blocks = backbone.blocks
        last = len(blocks) - 1  # type: ignore[arg-type]
        name = f"blocks.{last}.norm1"
        if name not in modules:
            raise ValueError(f"vision transformer {type(backbone).__name__} has no {name}: no Grad-CAM layer")
        return modules[name], f"backbone.{name}"
    info = getattr(backbone, "feature_info", None)
    if info:
        entries = info.get_dicts() if hasattr(info, "get_dicts") else list(info)
        name = entries[-1].get("module", "")
        if name in modules and name:
            return modules[name], f"backbone.{name}"
    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"backbone {type(backbone).__name__} has no conv layer or token blocks: no Grad-CAM layer")
    return modules[convs[-1]], f"backbone.{convs[-1]}"


def as_feature_map(act: torch.Tensor, backbone: nn.Module) -> torch.Tensor:
    """The hooked layer's output ``act`` as a ``(B, C, h, w)`` map: CNN maps as they are, transformer
    tokens ``(B, T, C)`` without their prefix tokens, laid on the patch grid."""
    if act.dim() == 4:
        return act
    if act.dim() != 3:
        raise ValueError(f"Grad-CAM layer output has shape {tuple(act.shape)}; expected (B,C,h,w) or (B,T,C)")
    prefix = int(getattr(backbone, "num_prefix_tokens", 1))
    tokens = act[:, prefix:, :]
    grid = getattr(getattr(backbone, "patch_embed", None), "grid_size", None)
    h, w = (int(grid[0]), int(grid[1])) if grid is not None else (0, 0)
    if h * w != tokens.shape[1]:
        side = math.isqrt(tokens.shape[1])
        if side * side != tokens.shape[1]:
            raise ValueError(f"cannot lay {tokens.shape[1]} patch tokens on a grid (prefix tokens: {prefix})")
        h = w = side
    return tokens.reshape(act.shape[0], h, w, act.shape[2]).permute(0, 3, 1, 2)


def gradcam(
    model: nn.Module, x: torch.Tensor, targets: dict[str, Sequence[int]] | None = None
) -> dict[str, np.ndarray]:
    """Grad-CAM maps per group for a normalised batch ``x`` ``(N, 3, H, W)``.

    Args:
        model: an AttributeModel (``model(x) -> {group: logits}``), in eval mode for per-image maps.
        x: the batch, normalised as the model was trained.
        targets: per group, the class index to explain for each image; groups not named explain
            their top-scoring class (the prediction, for single-label groups).

    Returns:
        ``{group: float32 (N, H, W)}`` in [0, 1], each image's map scaled by its own maximum (all
        zeros where no positive evidence was found).
    """
    layer, _ = target_layer(model)
    backbone: nn.Module = model.backbone  # type: ignore[assignment]
    captured: list[torch.Tensor] = []

    def hook(_m: nn.Module, _inp: object, out: torch.Tensor) -> torch.Tensor:
        # A leaf that needs a gradient, whatever requires_grad upstream says (frozen backbones too).
        leaf = out.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            outputs: dict[str, torch.Tensor] = model(x)
            act = captured[-1]
            maps: dict[str, np.ndarray] = {}
            groups = list(outputs)
            for i, group in enumerate(groups):
                logits = outputs[group]
                idx = (
                    torch.as_tensor(list(targets[group]), device=logits.device)
                    if targets and group in targets
                    else logits.argmax(dim=1)
                )
                if idx.shape != (len(logits),):
                    raise ValueError(f"targets[{group!r}] has {idx.numel()} entries for {len(logits)} images")
                score = logits.gather(1, idx.long().view(-1, 1)).sum()
                (grad,) = torch.autograd.grad(score, act, retain_graph=i < len(groups) - 1)
                a, g = as_feature_map(act, backbone), as_feature_map(grad, backbone)
                cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True))
                cam = F.interpolate(cam.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
                peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
                maps[group] = (cam / peak).detach().cpu().numpy().astype(np.float32)
    finally:
        handle.remove()
    return maps


def gradcam_pixels(
    model: nn.Module,
    mean: Iterable[float],
    std: Iterable[float],
    pixels: np.ndarray,
    targets: dict[str, Sequence[int]] | None = None,
) -> dict[str, np.ndarray]:
    """:func:`gradcam` from the runtime's letterboxed uint8 pixels ``(N, S, S, 3)``, normalised as
    ``deploy.runtime.TorchBackend`` normalises them."""
    param = next(model.parameters())
    m = torch.tensor(tuple(mean), device=param.device).view(1, -1, 1, 1) * 255.0
    s = torch.tensor(tuple(std), device=param.device).view(1, -1, 1, 1) * 255.0
    x = torch.from_numpy(np.ascontiguousarray(pixels)).to(param.device).permute(0, 3, 1, 2).float()
    return gradcam(model, (x - m) / s, targets)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``image`` (H, W, 3) uint8 with ``heat`` (any size, values in [0, 1]) drawn over it in the
    'jet' colormap; returns (H, W, 3) uint8."""
    from matplotlib import colormaps
    from PIL import Image

    h, w = image.shape[:2]
    heat = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    if heat.shape != (h, w):
        heat = np.asarray(Image.fromarray(heat, mode="F").resize((w, h), Image.Resampling.BILINEAR))
    color = colormaps["jet"](heat)[..., :3] * 255.0
    out = (1.0 - alpha) * image.astype(np.float32) + alpha * color
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
