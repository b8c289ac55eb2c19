"""Augmentations on whole batches on the training device, random per sample, seeded.

Order (uint8 in, normalized float out): geometry (flip, random resized crop, affine: one
resampling) -> colour jitter -> grayscale -> blur -> normalize -> erasing -> mixup / cutmix.
All randomness comes from one ``torch.Generator``, so a run is reproducible and a resumed
run continues the same random stream.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from fashattr.config import AugmentConfig

Targets = dict[str, torch.Tensor]
# RGB -> luma (ITU-R 601), as torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (or 0-255 float) NCHW -> float normalized with ``mean``/``std`` given on the 0-1 scale."""
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1) * 255.0
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1) * 255.0
    return (x.float() - m) / s


class BatchAugment:
    """Applies ``AugmentConfig`` to a batch: ``(uint8 NCHW, targets) -> (normalized float, targets)``.

    Targets come back as given, except under mixup / cutmix, where each single-label group
    becomes a soft ``(B, C)`` distribution (and each multi-label group a mixed 0-1 vector).
    """

    def __init__(
        self,
        cfg: AugmentConfig,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        num_classes: dict[str, int] | None = None,
    ) -> None:
        self.cfg, self.mean, self.std = cfg, mean, std
        self.num_classes = num_classes or {}

    # ---- random numbers, all from one generator --------------------------------------------
    @staticmethod
    def _rand(gen: torch.Generator, *shape: int, device: torch.device) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, device=gen.device).to(device)

    def __call__(self, pixels: torch.Tensor, targets: Targets, gen: torch.Generator) -> tuple[torch.Tensor, Targets]:
        c = self.cfg
        x = pixels.float() / 255.0
        x = self.geometry(x, gen)
        if c.brightness or c.contrast or c.saturation or c.hue:
            x = self.color_jitter(x, gen)
        if c.grayscale > 0:
            gray = self._gray(x).expand_as(x)
            x = torch.where(self._coin(gen, x, c.grayscale), gray, x)
        if c.blur > 0:
            x = self.gaussian_blur(x, gen)
        x = normalize(x * 255.0, self.mean, self.std)
        if c.erasing > 0:
            x = self.erase(x, gen)
        if (c.mixup > 0 or c.cutmix > 0) and float(self._rand(gen, 1, device=x.device)) < c.mix_prob:
            x, targets = self.mix(x, targets, gen)
        return x, targets

    def _coin(self, gen: torch.Generator, x: torch.Tensor, p: float) -> torch.Tensor:
        return (self._rand(gen, x.shape[0], device=x.device) < p).view(-1, 1, 1, 1)

    @staticmethod
    def _gray(x: torch.Tensor) -> torch.Tensor:
        w = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)

    # ---- geometry: flips, random resized crop and affine in a single resampling ----------------
    def geometry(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        c, b, dev = self.cfg, x.shape[0], x.device
        if c.hflip > 0:
            x = torch.where(self._coin(gen, x, c.hflip), x.flip(3), x)
        if c.vflip > 0:
            x = torch.where(self._coin(gen, x, c.vflip), x.flip(2), x)
        uses_affine = c.degrees > 0 or c.translate > 0 or c.scale != (1.0, 1.0) or c.shear > 0
        if not (uses_affine or c.rrc > 0):
            return x
        # theta maps output grid coordinates (-1..1) to input coordinates, per sample.
        theta = torch.eye(3, device=dev).repeat(b, 1, 1)
        if c.rrc > 0:
            theta = theta @ self._crop_matrix(gen, b, dev)
        if uses_affine:
            theta = theta @ self._affine_matrix(gen, b, dev)
        grid = F.affine_grid(theta[:, :2], list(x.shape), align_corners=False)
        mean = torch.tensor(self.mean, device=dev).view(1, 3, 1, 1)
        # Pad with the mean colour (zero after normalization), as the letterbox does.
        return F.grid_sample(x - mean, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + mean

    def _crop_matrix(self, gen: torch.Generator, b: int, dev: torch.device) -> torch.Tensor:
        c = self.cfg
        r = self._rand(gen, b, 4, device=dev)
        area = c.rrc_scale[0] + r[:, 0] * (c.rrc_scale[1] - c.rrc_scale[0])
        log_lo, log_hi = math.log(c.rrc_ratio[0]), math.log(c.rrc_ratio[1])
        ratio = torch.exp(log_lo + r[:, 1] * (log_hi - log_lo))
        w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop size as a fraction of the side
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (r[:, 2] * 2 - 1) * (1 - w)  # crop centre, keeping the crop inside the image
        cy = (r[:, 3] * 2 - 1) * (1 - h)
        apply = self._rand(gen, b, device=dev) < c.rrc
        m = torch.eye(3, device=dev).repeat(b, 1, 1)
        m[:, 0, 0], m[:, 1, 1] = torch.where(apply, w, 1.0), torch.where(apply, h, 1.0)
        m[:, 0, 2], m[:, 1, 2] = torch.where(apply, cx, 0.0), torch.where(apply, cy, 0.0)
        return m

    def _affine_matrix(self, gen: torch.Generator, b: int, dev: torch.device) -> torch.Tensor:
        c = self.cfg
        r = self._rand(gen, b, 5, device=dev)
        angle = (r[:, 0] * 2 - 1) * math.radians(c.degrees)
        zoom = c.scale[0] + r[:, 1] * (c.scale[1] - c.scale[0])
        shear = torch.tan((r[:, 2] * 2 - 1) * math.radians(c.shear))
        tx, ty = (r[:, 3] * 2 - 1) * c.translate * 2, (r[:, 4] * 2 - 1) * c.translate * 2  # grid spans 2
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        m = torch.eye(3, device=dev).repeat(b, 1, 1)
        m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = cos, -sin + shear * cos, tx
        m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = sin, cos + shear * sin, ty
        return m

    # ---- colour -------------------------------------------------------------------------------
    def color_jitter(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        c, b = self.cfg, x.shape[0]
        r = self._rand(gen, b, 4, device=x.device).view(b, 4, 1, 1)
        out = x
        if c.brightness:
            out = out * (1 + (r[:, 0:1] * 2 - 1) * c.brightness)
        if c.contrast:
            mean = self._gray(out).mean((2, 3), keepdim=True)
            out = (out - mean) * (1 + (r[:, 1:2] * 2 - 1) * c.contrast) + mean
        if c.saturation:
            gray = self._gray(out)
            out = (out - gray) * (1 + (r[:, 2:3] * 2 - 1) * c.saturation) + gray
        if c.hue:
            out = self._rotate_hue(out, ((r[:, 3] * 2 - 1) * c.hue * 2 * math.pi).flatten())
        out = out.clamp(0.0, 1.0)
        return torch.where(self._coin(gen, x, c.jitter_p), out, x) if c.jitter_p < 1 else out

    @staticmethod
    def _rotate_hue(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
        """Rotate chroma around the grey axis in YIQ space (a linear stand-in for an HSV hue shift)."""
        to_yiq = torch.tensor(
            [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=x.device, dtype=x.dtype
        )
        from_yiq = torch.linalg.inv(to_yiq)
        cos, sin = torch.cos(angle), torch.sin(angle)
        rot = torch.zeros(x.shape[0], 3, 3, device=x.device, dtype=x.dtype)
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
        m = from_yiq @ rot @ to_yiq  # (B, 3, 3)
        return torch.einsum("bij,bjhw->bihw", m, x)

    def gaussian_blur(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        c, (b, ch, h, w) = self.cfg, x.shape
        lo, hi = c.blur_sigma
        sigma = lo + self._rand(gen, b, device=x.device) * (hi - lo)
        sigma = torch.where(self._rand(gen, b, device=x.device) < c.blur, sigma, torch.zeros_like(sigma))
        radius = max(1, math.ceil(2 * hi))
        k = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-(k**2) / (2 * sigma.clamp_min(1e-6).view(-1, 1) ** 2))  # sigma 0 -> a delta
        kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(ch, 0)  # (B*C, K)
        y = x.reshape(1, b * ch, h, w)
        y = F.pad(y, (radius, radius, radius, radius), mode="reflect")
        y = F.conv2d(y, kernel.view(b * ch, 1, 1, -1), groups=b * ch)
        y = F.conv2d(y, kernel.view(b * ch, 1, -1, 1), groups=b * ch)
        return y.view(b, ch, h, w)

    def erase(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """RandomErasing: one rectangle per chosen sample, filled with 0 (the mean colour)."""
        c, (b, _, h, w) = self.cfg, x.shape
        r = self._rand(gen, b, 5, device=x.device)
        area = (c.erasing_scale[0] + r[:, 0] * (c.erasing_scale[1] - c.erasing_scale[0])) * h * w
        log_lo, log_hi = math.log(c.erasing_ratio[0]), math.log(c.erasing_ratio[1])
        ratio = torch.exp(log_lo + r[:, 1] * (log_hi - log_lo))
        eh = torch.sqrt(area * ratio).clamp(1, h)
        ew = torch.sqrt(area / ratio).clamp(1, w)
        y0, x0 = r[:, 2] * (h - eh), r[:, 3] * (w - ew)
        ys = torch.arange(h, device=x.device).view(1, h, 1)
        xs = torch.arange(w, device=x.device).view(1, 1, w)
        box = (ys >= y0.view(-1, 1, 1)) & (ys < (y0 + eh).view(-1, 1, 1))
        box = box & (xs >= x0.view(-1, 1, 1)) & (xs < (x0 + ew).view(-1, 1, 1))
        box = box & (r[:, 4] < c.erasing).view(-1, 1, 1)
        return x.masked_fill(box.unsqueeze(1), 0.0)

    # ---- mixing -------------------------------------------------------------------------------
    def mix(self, x: torch.Tensor, targets: Targets, gen: torch.Generator) -> tuple[torch.Tensor, Targets]:
        """Mixup or cutmix of the batch with a permutation of itself; targets become soft."""
        c, (b, _, h, w) = self.cfg, x.shape
        use_cutmix = c.cutmix > 0 and (c.mixup <= 0 or float(self._rand(gen, 1, device=x.device)) < c.mix_switch_prob)
        alpha = c.cutmix if use_cutmix else c.mixup
        # torch has no seeded Beta sampler; draw it from NumPy seeded by our generator.
        seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))
        lam = float(np.random.default_rng(seed).beta(alpha, alpha))
        perm = torch.randperm(b, generator=gen, device=gen.device).to(x.device)
        if use_cutmix:
            cut = math.sqrt(1.0 - lam)
            ch, cw = round(h * cut), round(w * cut)
            r = self._rand(gen, 2, device=x.device)
            cy, cx = int(r[0] * h), int(r[1] * w)
            y0, y1 = max(cy - ch // 2, 0), min(cy + ch - ch // 2, h)
            x0, x1 = max(cx - cw // 2, 0), min(cx + cw - cw // 2, w)
            x = x.clone()
            x[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)  # the share actually kept
        else:
            x = lam * x + (1.0 - lam) * x[perm]
        return x, {g: self._mix_target(g, t, perm, lam) for g, t in targets.items()}

    def _mix_target(self, group: str, t: torch.Tensor, perm: torch.Tensor, lam: float) -> torch.Tensor:
        if t.ndim == 1:  # single-label indices (-1 unknown) -> soft distribution (unknown rows: zeros)
            n = self.num_classes[group]
            one_hot = F.one_hot(t.clamp_min(0), n).float() * (t >= 0).unsqueeze(1)
            return lam * one_hot + (1.0 - lam) * one_hot[perm]
        unknown = (t < 0) | (t[perm] < 0)  # multi-label 0/1: unknown if either side is unknown
        mixed = lam * t.clamp_min(0).float() + (1.0 - lam) * t[perm].clamp_min(0).float()
        return torch.where(unknown, torch.full_like(mixed, -1.0), mixed)
