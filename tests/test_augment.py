"""Batched augmentations: per-sample independence, seeded determinism, value ranges, mixed labels."""

from __future__ import annotations

import pytest
import torch

from fashattr.config import AugmentConfig
from fashattr.data.augment import BatchAugment

ID = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # mean 0, std 1: output stays on the 0-1 scale


def images(b: int = 8, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (b, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def run(cfg: AugmentConfig, x: torch.Tensor, seed: int = 0, targets=None, sizes=None):
    aug = BatchAugment(cfg, *ID, sizes)
    return aug(x, targets or {}, torch.Generator().manual_seed(seed))


def test_no_augmentation_is_just_scaling():
    x = images()
    out, _ = run(AugmentConfig(hflip=0), x)
    assert torch.allclose(out, x.float() / 255)


def test_flips_are_per_sample_and_seeded():
    x = images(16)
    out, _ = run(AugmentConfig(hflip=0.5), x, seed=3)
    base = x.float() / 255
    flipped = [torch.allclose(out[i], base[i].flip(2)) for i in range(16)]
    kept = [torch.allclose(out[i], base[i]) for i in range(16)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 0 < sum(flipped) < 16
    again, _ = run(AugmentConfig(hflip=0.5), x, seed=3)
    other, _ = run(AugmentConfig(hflip=0.5), x, seed=4)
    assert torch.equal(out, again) and not torch.equal(out, other)


def test_affine_and_crop_differ_per_sample_and_identity_when_trivial():
    same = images(1).repeat(6, 1, 1, 1)
    cfg = AugmentConfig(hflip=0, degrees=30, translate=0.1, scale=(0.8, 1.2), shear=10, rrc=1.0)
    out, _ = run(cfg, same)
    assert all(not torch.allclose(out[0], out[i]) for i in range(1, 6))
    assert torch.isfinite(out).all() and out.min() >= -1e-5 and out.max() <= 1 + 1e-5
    trivial = AugmentConfig(hflip=0, rrc=1.0, rrc_scale=(1.0, 1.0), rrc_ratio=(1.0, 1.0))
    out, _ = run(trivial, same)
    assert torch.allclose(out, same.float() / 255, atol=1e-5)


def test_rotation_pads_with_the_mean_colour():
    x = torch.full((2, 3, 16, 16), 255, dtype=torch.uint8)
    aug = BatchAugment(AugmentConfig(hflip=0, degrees=45, scale=(0.5, 0.5)), (0.2, 0.4, 0.6), (1.0, 1.0, 1.0))
    out, _ = aug(x, {}, torch.Generator().manual_seed(0))
    corner = out[0, :, 0, 0]  # outside the shrunken image: normalized mean colour = 0
    assert torch.allclose(corner, torch.zeros(3), atol=1e-5)


def test_borders_and_erased_boxes_are_the_letterbox_fill():
    """The fill is round(255 mean) (124, 116, 104 for ImageNet's 123.675, 116.28, 103.53): the
    colour of the letterbox bars, so the model never sees two border colours."""
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    m, s = torch.tensor(mean).view(1, 3, 1, 1) * 255, torch.tensor(std).view(1, 3, 1, 1) * 255
    x = torch.full((2, 3, 16, 16), 255, dtype=torch.uint8)
    out, _ = BatchAugment(AugmentConfig(hflip=0, degrees=45, scale=(0.5, 0.5)), mean, std)(
        x, {}, torch.Generator().manual_seed(0)
    )
    pixels = out * s + m
    assert torch.allclose(pixels[:, :, 0, 0], torch.tensor([124.0, 116.0, 104.0]), atol=1e-3)
    assert torch.allclose(pixels[:, :, 8, 8], torch.full((3,), 255.0), atol=1e-3)  # the image itself
    erase = AugmentConfig(hflip=0, erasing=1.0, erasing_scale=(0.3, 0.3), erasing_ratio=(1.0, 1.0))
    out, _ = BatchAugment(erase, mean, std)(x, {}, torch.Generator().manual_seed(0))
    pixels = (out * s + m).permute(0, 2, 3, 1).reshape(-1, 3)
    erased = (pixels - 255).abs().max(1).values > 1
    assert 0 < erased.sum() < len(pixels)
    assert torch.allclose(pixels[erased], torch.tensor([124.0, 116.0, 104.0]), atol=1e-3)


def test_colour_ops_stay_in_range_and_grayscale_is_gray():
    x = images(8)
    cfg = AugmentConfig(hflip=0, brightness=0.8, contrast=0.8, saturation=0.8, hue=0.3, blur=1.0, grayscale=0.5)
    out, _ = run(cfg, x)
    assert out.min() >= 0 and out.max() <= 1
    gray = [bool(torch.allclose(o[0], o[1], atol=1e-5) and torch.allclose(o[1], o[2], atol=1e-5)) for o in out]
    assert 0 < sum(gray) < 8
    constant = torch.full((2, 3, 8, 8), 100, dtype=torch.uint8)
    blurred, _ = run(AugmentConfig(hflip=0, blur=1.0), constant)  # blur leaves a flat image flat
    assert torch.allclose(blurred, constant.float() / 255, atol=1e-5)
    noisy, _ = run(AugmentConfig(hflip=0, blur=1.0, blur_sigma=(1.5, 2.0)), x)
    assert noisy.std() < (x.float() / 255).std()


def test_erasing_area_within_bounds():
    x = torch.full((32, 3, 20, 20), 255, dtype=torch.uint8)
    out, _ = run(AugmentConfig(hflip=0, erasing=1.0, erasing_scale=(0.1, 0.2), erasing_ratio=(1.0, 1.0)), x)
    erased = (out[:, 0] == 0).float().mean((1, 2))
    assert (erased > 0.05).all() and (erased < 0.3).all()


def constant_batch(b: int) -> torch.Tensor:
    return torch.arange(b, dtype=torch.uint8).mul(20).view(b, 1, 1, 1).expand(b, 3, 8, 8).contiguous()


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mix_targets_match_the_mixed_pixels(kind: str):
    b = 6
    x = constant_batch(b)  # sample i is flat with value 20 * i, its label is i
    targets = {"g": torch.arange(b), "h": torch.tensor([0, 1, -1, 0, 1, 0])}
    cfg = AugmentConfig(hflip=0, mixup=0.8 if kind == "mixup" else 0.0, cutmix=1.0 if kind == "cutmix" else 0.0)
    out, soft = run(cfg, x, seed=1, targets=targets, sizes={"g": b, "h": 2})
    g = soft["g"]
    assert g.shape == (b, b) and torch.allclose(g.sum(1), torch.ones(b))
    for i in range(b):
        lam = float(g[i, i]) if g[i, i] > 0 else 0.0
        j = int(torch.argsort(g[i], descending=True)[1] if lam > 0.5 else g[i].argmax())
        if lam == 1.0:
            continue  # paired with itself
        values = out[i, 0] * 255
        if kind == "mixup":
            assert torch.allclose(values, torch.full_like(values, lam * 20 * i + (1 - lam) * 20 * j), atol=1e-3)
        else:
            pasted = torch.isclose(values, torch.tensor(20.0 * j)).float().mean()
            assert float(pasted) == pytest.approx(1 - lam, abs=1e-6)
    # an unknown label stays unknown: its row of the soft target carries only the partner's share
    assert soft["h"][2].sum() < 1.0


def test_multi_label_mix_keeps_unknown():
    x = constant_batch(4)
    t = {"m": torch.tensor([[1, 0], [0, 1], [-1, 1], [1, 1]])}
    _, soft = run(AugmentConfig(hflip=0, mixup=1.0), x, seed=2, targets=t, sizes={"m": 2})
    m = soft["m"]
    assert m.dtype.is_floating_point and ((m == -1) | ((m >= 0) & (m <= 1))).all()
    assert (m[2, 0] == -1).item()


def test_centred_pipeline_equals_plain_pixels_for_any_mean():
    """Jitter, grayscale and blur run on mean-centred pixels; undoing the normalization must give
    the same image whatever the mean (same seed, same draws). Resampling is left out: its border
    blends in the padding, which is the mean colour by design (see the rotation test)."""
    x = images(6, 24)
    cfg = AugmentConfig(hflip=0.5, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2, grayscale=0.5, blur=0.5)
    mean = (0.2, 0.4, 0.6)
    plain, _ = BatchAugment(cfg, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))(x, {}, torch.Generator().manual_seed(7))
    centred, _ = BatchAugment(cfg, mean, (1.0, 1.0, 1.0))(x, {}, torch.Generator().manual_seed(7))
    uncentred = centred + torch.tensor(mean).view(1, 3, 1, 1)
    assert torch.allclose(uncentred, plain, atol=1e-5)
