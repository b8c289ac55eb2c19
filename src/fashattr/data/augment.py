"""Augmentations on whole batches of tensors, on the training device, random per sample."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fashattr.config import AugmentConfig


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 NCHW (any device) -> float normalized with ``mean``/``std`` (0-1 scale)."""
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1) * 255.0
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1) * 255.0
    return (x.float() - m) / s


class BatchAugment:
    """Flip and affine transforms applied per sample to a normalized float batch.

    Padding is zero after normalization, i.e. the dataset mean colour, the same colour
    the letterbox uses.
    """

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg

    @property
    def uses_affine(self) -> bool:
        c = self.cfg
        return c.degrees > 0 or c.translate > 0 or c.scale != (1.0, 1.0)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        c = self.cfg
        b = x.shape[0]

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=gen, device=gen.device).to(x.device)

        if c.hflip > 0:
            x = torch.where((rand(b) < c.hflip).view(-1, 1, 1, 1), x.flip(3), x)
        if c.vflip > 0:
            x = torch.where((rand(b) < c.vflip).view(-1, 1, 1, 1), x.flip(2), x)
        if self.uses_affine:
            angle = (rand(b) * 2 - 1) * math.radians(c.degrees)
            lo, hi = c.scale
            scale = lo + rand(b) * (hi - lo)
            shift = (rand(b, 2) * 2 - 1) * c.translate * 2  # grid units span 2 per image side
            cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
            theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
            grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return x
