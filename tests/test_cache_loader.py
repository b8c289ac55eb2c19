"""Decode-once cache, seeded resumable batches, batched augmentation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fashattr.config import AugmentConfig
from fashattr.data.augment import BatchAugment, normalize
from fashattr.data.cache import build_cache
from fashattr.data.formats import create_reader
from fashattr.data.images import load_presized
from fashattr.data.loader import BatchLoader
from fashattr.errors import ImageError


def test_cache_matches_direct_decode_and_is_reused(tiny_data: Path, tmp_path: Path):
    table = create_reader("ai6126", tiny_data).read("val")
    a = build_cache(table, 24, cache_dir=tmp_path, workers=1, progress=False)
    assert a.shape == (24, 24, 24, 3) and a.dtype == np.uint8
    assert np.array_equal(a[5], load_presized(table.file(5), 24))
    files = sorted(tmp_path.glob("*.u8"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    b = build_cache(table, 24, cache_dir=tmp_path, workers=1, progress=False)
    assert np.array_equal(a, b) and files[0].stat().st_mtime_ns == mtime  # hit: not rewritten
    build_cache(table, 16, cache_dir=tmp_path, workers=1, progress=False)
    assert len(list(tmp_path.glob("*.u8"))) == 2  # another size is another cache


def test_parallel_build_equals_serial(tiny_data: Path, tmp_path: Path):
    table = create_reader("ai6126", tiny_data).read("train")
    serial = build_cache(table, 20, cache_dir=tmp_path / "s", workers=1, progress=False)
    parallel = build_cache(table, 20, cache_dir=tmp_path / "p", workers=2, progress=False)
    assert np.array_equal(serial, parallel)


def test_stale_cache_is_rebuilt(tmp_path: Path):
    from conftest import make_dataset

    root = make_dataset(tmp_path / "d", {"val": 3})
    table = create_reader("ai6126", root).read("val")
    first = np.array(build_cache(table, 16, cache_dir=tmp_path / "c", workers=1, progress=False))
    from PIL import Image

    Image.new("RGB", (40, 48), (0, 0, 0)).save(table.file(1))
    os.utime(table.file(1), ns=(1, 1))  # a different mtime, even on coarse clocks
    second = build_cache(table, 16, cache_dir=tmp_path / "c", workers=1, progress=False)
    assert np.array_equal(second[0], first[0]) and not np.array_equal(second[1], first[1])
    assert second[1].max() < 130  # letterbox pad (<=124) and black


def test_bad_image_in_cache_names_the_file(tmp_path: Path):
    from conftest import make_dataset

    root = make_dataset(tmp_path / "d", {"val": 3})
    (root / "img" / "00002.jpg").write_bytes(b"not a jpeg")
    table = create_reader("ai6126", root).read("val")
    with pytest.raises(ImageError, match=r"00002.jpg: not an image"):
        build_cache(table, 16, cache_dir=tmp_path / "c", workers=1, progress=False)
    assert not list((tmp_path / "c").glob("*.u8*"))  # no half-written cache left


def test_loader_is_seeded_resumable_and_covers_rows():
    images = np.arange(10 * 2 * 2 * 3, dtype=np.uint8).reshape(10, 2, 2, 3)
    labels = {"g": np.arange(100, 110)}
    rows = np.array([0, 2, 3, 5, 7, 8, 9])
    loader = BatchLoader(
        images, {"g": labels["g"][rows]}, batch_size=3, shuffle=True, seed=1, drop_last=True, rows=rows
    )
    assert len(loader) == 2
    batches = list(loader.batches(epoch=4))
    seen = torch.cat([t["g"] for _, t in batches]) - 100
    assert len(set(seen.tolist())) == 6 and set(seen.tolist()) <= set(rows.tolist())
    for pixels, t in batches:  # pixels belong to the labelled rows, in the same order
        assert pixels.shape == (3, 3, 2, 2)
        assert torch.equal(
            pixels.permute(0, 2, 3, 1)[:, 0, 0, 0], torch.from_numpy(images[(t["g"] - 100).numpy(), 0, 0, 0])
        )
    resumed = list(loader.batches(epoch=4, start=1))
    assert torch.equal(resumed[0][1]["g"], batches[1][1]["g"])
    other = torch.cat([t["g"] for _, t in loader.batches(epoch=5)])
    assert not torch.equal(other, seen + 100)


def test_augment_per_sample_and_seeded():
    x = normalize(
        torch.arange(4 * 3 * 8 * 8, dtype=torch.float32).reshape(4, 3, 8, 8).remainder(256).to(torch.uint8),
        (0.5, 0.5, 0.5),
        (0.25, 0.25, 0.25),
    )
    aug = BatchAugment(AugmentConfig(hflip=0.5))
    flips = set()
    for seed in range(6):
        y = aug(x, torch.Generator().manual_seed(seed))
        for i in range(4):
            if torch.equal(y[i], x[i].flip(2)):
                flips.add((seed, i))
            else:
                assert torch.equal(y[i], x[i])
    per_batch = {s for s, _ in flips}
    assert flips and any(
        len({i for s2, i in flips if s2 == s}) not in (0, 4) for s in per_batch
    )  # mixed within a batch
    affine = BatchAugment(AugmentConfig(hflip=0, degrees=20, translate=0.1, scale=(0.9, 1.1)))
    a1 = affine(x, torch.Generator().manual_seed(0))
    a2 = affine(x, torch.Generator().manual_seed(0))
    assert torch.equal(a1, a2) and not torch.equal(a1, x) and torch.isfinite(a1).all()
