"""Augmentations on whole batches on the training device, random per sample, seeded.

Order (uint8 in, normalized float out): geometry (flip, random resized crop, affine: one
resampling) -> colour jitter -> grayscale -> blur -> normalize -> erasing -> mixup / cutmix.
Between geometry and normalization the batch is kept *centred* (0-255 scale minus the fill
colour, ``fill_color(mean)``, the letterbox bars' colour): padding is then plain zero, so
augmentation borders get exactly the letterbox colour, and normalizing is one multiply-add,
saving whole passes.
All randomness comes from one ``torch.Generator`` (one per process under torchrun, each seeded
by ``distributed.rank_seed``), so a run is reproducible and a resumed run continues the same
random stream.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from fashattr.config import AugmentConfig
from fashattr.portable.images import fill_color

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
        self.fill = fill_color(mean)  # borders and erased boxes: the letterbox bars' colour
        self.num_classes = num_classes or {}
        self._grids: dict[tuple, torch.Tensor] = {}

    def _centre(self, x: torch.Tensor) -> torch.Tensor:
        """The fill colour on the 0-255 scale, shaped (1, 3, 1, 1)."""
        return torch.tensor(self.fill, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)

    def _normalize_centred(self, x: torch.Tensor) -> torch.Tensor:
        """Centred pixels -> normalized: ``(x + fill - 255 mean) / (255 std)`` as one multiply-add."""
        scale = 1.0 / (torch.tensor(self.std, device=x.device).view(1, -1, 1, 1) * 255.0)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1) * 255.0
        return torch.addcmul((self._centre(x) - mean) * scale, x, scale)

    # ---- random numbers, all from one generator --------------------------------------------
    @staticmethod
    def _rand(gen: torch.Generator, *shape: int, device: torch.device) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, device=gen.device).to(device)

    def __call__(self, pixels: torch.Tensor, targets: Targets, gen: torch.Generator) -> tuple[torch.Tensor, Targets]:
        c = self.cfg
        x = self.geometry(pixels, gen)  # centred float from here on: 0-255 scale minus the fill colour
        if c.brightness or c.contrast or c.saturation or c.hue:
            x = self.color_jitter(x, gen)
        if c.grayscale > 0:
            m = self._centre(x)
            gray = self._gray(x) + (self._gray(m) - m)  # grey of the uncentred image, re-centred
            x = torch.where(self._coin(gen, x, c.grayscale), gray, x)
        if c.blur > 0:
            x = self.gaussian_blur(x, gen)  # linear with weights summing to 1: centring commutes
        x = self._normalize_centred(x)
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
    def geometry(self, pixels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 -> float (0-255) with flips, crop and affine applied."""
        c, b, dev = self.cfg, pixels.shape[0], pixels.device
        hflip = self._coin(gen, pixels, c.hflip).view(-1) if c.hflip > 0 else None
        vflip = self._coin(gen, pixels, c.vflip).view(-1) if c.vflip > 0 else None
        uses_affine = c.degrees > 0 or c.translate > 0 or c.scale != (1.0, 1.0) or c.shear > 0
        if not (uses_affine or c.rrc > 0):
            # No resampling: flip the uint8 pixels (a quarter of the memory traffic of floats).
            if hflip is not None:
                pixels = torch.where(hflip.view(-1, 1, 1, 1), pixels.flip(3), pixels)
            if vflip is not None:
                pixels = torch.where(vflip.view(-1, 1, 1, 1), pixels.flip(2), pixels)
            return pixels - self._centre(pixels)
        # theta maps output grid coordinates (-1..1) to input coordinates, per sample; flips
        # are sign changes of its columns, so they cost nothing on top of the resampling.
        theta = torch.eye(3, device=dev).repeat(b, 1, 1)
        if hflip is not None:
            theta[:, 0, 0] = torch.where(hflip, -1.0, 1.0)
        if vflip is not None:
            theta[:, 1, 1] = torch.where(vflip, -1.0, 1.0)
        # output -> flip -> affine -> crop window of the input: theta = C @ A @ F
        if uses_affine:
            theta = self._affine_matrix(gen, b, dev) @ theta
        if c.rrc > 0:
            theta = self._crop_matrix(gen, b, dev) @ theta
        x = pixels - self._centre(pixels)  # zero padding is then the fill colour, as in the letterbox
        return F.grid_sample(x, self._grid(theta, x), mode="bilinear", padding_mode="zeros", align_corners=False)

    def _grid(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``F.affine_grid`` as one batched matmul on a cached base grid (it rebuilds that grid per call)."""
        b, _, h, w = x.shape
        key = (h, w, x.device)
        if key not in self._grids:
            eye = torch.eye(3, device=x.device)[:2].unsqueeze(0)
            base = F.affine_grid(eye, [1, 1, h, w], align_corners=False).view(1, h * w, 2)
            self._grids[key] = torch.cat([base, torch.ones(1, h * w, 1, device=x.device)], 2)
        return torch.bmm(self._grids[key].expand(b, -1, -1), theta[:, :2].transpose(1, 2)).view(b, h, w, 2)

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
        """Brightness, contrast, saturation and hue (in that order), composed into one per-sample
        3x3 colour matrix plus an offset and applied in a single pass (all four are linear in
        the pixels; only the final clamp is not), instead of four passes over the batch."""
        c, b, dev = self.cfg, x.shape[0], x.device
        r = self._rand(gen, b, 5, device=dev)
        eye = torch.eye(3, device=dev, dtype=x.dtype).expand(b, 3, 3)
        luma = torch.tensor(_LUMA, device=dev, dtype=x.dtype)
        m = eye * (1 + (r[:, 0] * 2 - 1) * c.brightness).view(-1, 1, 1)
        contrast = (1 + (r[:, 1] * 2 - 1) * c.contrast).view(-1, 1)
        # contrast: x -> k x + (1 - k) * mean grey of the (brightened) image, per sample
        centre = self._centre(x)
        brightened = (1 + (r[:, 0] * 2 - 1) * c.brightness).view(-1, 1)
        grey_mean = (self._gray(x).mean((2, 3)) + self._gray(centre).view(1, 1)) * brightened
        offset = ((1 - contrast) * grey_mean).expand(b, 3)
        m = m * contrast.view(-1, 1, 1)
        sat = (1 + (r[:, 2] * 2 - 1) * c.saturation).view(-1, 1, 1)
        s_mat = eye * sat + (1 - sat) * luma.view(1, 1, 3)  # x -> s x + (1 - s) grey(x)
        h_mat = self._hue_matrix((r[:, 3] * 2 - 1) * c.hue * 2 * math.pi) if c.hue else eye
        after = h_mat @ s_mat  # applied after brightness and contrast
        m = after @ m
        offset = (after @ offset.unsqueeze(2)).squeeze(2)
        # On centred pixels: M (x + c) + o - c = M x + (M c + o - c); the bounds shift by -c too.
        offset = offset + (m @ centre.view(1, 3, 1)).squeeze(2) - centre.view(1, 3)
        out = torch.einsum("bij,bjhw->bihw", m, x) + offset.view(b, 3, 1, 1)
        out = torch.clamp(out, -centre, 255.0 - centre)
        if c.jitter_p < 1:
            out = torch.where((r[:, 4] < c.jitter_p).view(-1, 1, 1, 1), out, x)
        return out

    @staticmethod
    def _hue_matrix(angle: torch.Tensor) -> torch.Tensor:
        """Rotate chroma around the grey axis in YIQ space (a linear stand-in for an HSV hue shift)."""
        to_yiq = torch.tensor(
            [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=angle.device
        )
        cos, sin = torch.cos(angle), torch.sin(angle)
        rot = torch.zeros(angle.shape[0], 3, 3, device=angle.device)
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
        return torch.linalg.inv(to_yiq) @ rot @ to_yiq

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
        """RandomErasing: one rectangle per chosen sample, filled with the (normalized) fill colour."""
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
        return torch.where(box.unsqueeze(1), self._normalize_centred(torch.zeros(1, 3, 1, 1, device=x.device)), x)

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
