"""Decode-once cache, seeded resumable batches, batched augmentation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fashattr.data.cache import cache_images
from fashattr.data.formats import create_reader
from fashattr.data.loader import BatchLoader
from fashattr.errors import ImageError
from fashattr.portable.images import load_presized


def test_cache_matches_direct_decode_and_is_reused(tiny_data: Path, tmp_path: Path):
    table = create_reader("ai6126", tiny_data).read("val")
    a = cache_images(table, 24, cache_dir=tmp_path, workers=1, progress=False).pixels
    assert a.shape == (24, 24, 24, 3) and a.dtype == np.uint8
    assert np.array_equal(a[5], load_presized(table.file(5), 24))
    files = sorted(tmp_path.glob("*.u8"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    b = cache_images(table, 24, cache_dir=tmp_path, workers=1, progress=False).pixels
    assert np.array_equal(a, b) and files[0].stat().st_mtime_ns == mtime  # hit: not rewritten
    cache_images(table, 16, cache_dir=tmp_path, workers=1, progress=False)
    assert len(list(tmp_path.glob("*.u8"))) == 2  # another size is another cache


def test_parallel_build_equals_serial(tiny_data: Path, tmp_path: Path):
    table = create_reader("ai6126", tiny_data).read("train")
    serial = cache_images(table, 20, cache_dir=tmp_path / "s", workers=1, progress=False).pixels
    parallel = cache_images(table, 20, cache_dir=tmp_path / "p", workers=2, progress=False).pixels
    assert np.array_equal(serial, parallel)


def test_stale_cache_is_rebuilt(tmp_path: Path):
    from conftest import make_dataset

    root = make_dataset(tmp_path / "d", {"val": 3})
    table = create_reader("ai6126", root).read("val")
    first = np.array(cache_images(table, 16, cache_dir=tmp_path / "c", workers=1, progress=False).pixels)
    from PIL import Image

    Image.new("RGB", (40, 48), (0, 0, 0)).save(table.file(1))
    os.utime(table.file(1), ns=(1, 1))  # a different mtime, even on coarse clocks
    second = cache_images(table, 16, cache_dir=tmp_path / "c", workers=1, progress=False).pixels
    assert np.array_equal(second[0], first[0]) and not np.array_equal(second[1], first[1])
    assert second[1].max() < 130  # letterbox pad (<=124) and black


def test_bad_image_in_cache_names_the_file(tmp_path: Path):
    from conftest import make_dataset

    root = make_dataset(tmp_path / "d", {"val": 3})
    (root / "img" / "00002.jpg").write_bytes(b"not a jpeg")
    table = create_reader("ai6126", root).read("val")
    with pytest.raises(ImageError, match=r"00002.jpg: not an image"):
        cache_images(table, 16, cache_dir=tmp_path / "c", workers=1, progress=False)
    assert not list((tmp_path / "c").glob("*.u8*"))  # no half-written cache left


def test_every_bad_image_is_named_in_one_error_with_their_count(tmp_path: Path):
    from conftest import make_dataset

    root = make_dataset(tmp_path / "d", {"val": 6})
    (root / "img" / "00001.jpg").write_bytes(b"not a jpeg")
    (root / "img" / "00004.jpg").write_bytes((root / "img" / "00000.jpg").read_bytes()[:300])
    table = create_reader("ai6126", root).read("val")
    (root / "img" / "00003.jpg").unlink()  # deleted after the split was read
    with pytest.raises(ImageError) as e:
        cache_images(table, 16, cache_dir=tmp_path / "c", workers=1, progress=False)
    lines = str(e.value).splitlines()
    assert lines[0] == f"3 unreadable image(s) of 6 in split 'val' of {root} (data.on_bad_image=skip leaves them out):"
    assert lines[1:] == [
        f"{root / 'img' / '00001.jpg'}: not an image Pillow can identify",
        f"{root / 'img' / '00003.jpg'}: file not found",
        f"{root / 'img' / '00004.jpg'}: truncated or corrupt image: Truncated File Read",
    ]
    assert e.value.file == str(root / "img" / "00001.jpg")
    assert not list((tmp_path / "c").glob("*.u8*"))
    # skip records the same three (a missing file too) and keeps the rest.
    cache = cache_images(table, 16, cache_dir=tmp_path / "c", workers=1, progress=False, on_bad="skip")
    assert sorted(cache.bad) == [1, 3, 4] and cache.bad[3] == "file not found"
    assert np.array_equal(cache.pixels[5], load_presized(table.file(5), 16))
    with pytest.raises(ImageError, match=r"^3 unreadable image\(s\) of 6"):  # a cache hit lists them all too
        cache_images(table, 16, cache_dir=tmp_path / "c", workers=1, progress=False)


def test_skipping_logs_every_bad_image(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    from conftest import make_dataset

    from fashattr.config import DataConfig
    from fashattr.data.prepare import load_split

    root = make_dataset(tmp_path / "d", {"val": 14})
    for k in range(12):
        (root / "img" / f"{k:05d}.jpg").write_bytes(b"not a jpeg")
    cfg = DataConfig(root=str(root), image_size=16, cache_dir=str(tmp_path / "c"), workers=1, on_bad_image="skip")
    with caplog.at_level("WARNING"):
        _, split = load_split(cfg, "val", progress=False)
    assert len(split) == 2 and len(split.skipped) == 12
    lines = caplog.text.splitlines()
    assert any("val: skipped 12 unreadable image(s) of 14" in line for line in lines)
    for k in range(12):  # all twelve, not the first ten
        assert f"img/{k:05d}.jpg: not an image Pillow can identify" in lines


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


def test_sample_weights_by_hand():
    from fashattr.data.loader import sample_weights
    from fashattr.schema import Group, Schema

    schema = Schema((Group("g", ("a", "b")), Group("h", ("c", "d"))))
    labels = {"g": np.array([0, 0, 0, 1]), "h": np.array([0, 1, 1, 1])}  # counts g [3, 1], h [1, 3]
    assert sample_weights(schema, labels) == pytest.approx([1, 1 / 3, 1 / 3, 1])  # rarest class per row
    assert sample_weights(schema, labels, group="h") == pytest.approx([1, 1 / 3, 1 / 3, 1 / 3])
    assert sample_weights(schema, labels, power=0.5) == pytest.approx([1, 3**-0.5, 3**-0.5, 1])
    labels["g"][1] = -1  # unknown in g: only h counts for that row
    assert sample_weights(schema, labels)[1] == pytest.approx(1 / 3)


def test_balanced_sampling_evens_out_classes():
    y = np.array([0] * 90 + [1] * 10)
    loader = BatchLoader(
        np.zeros((100, 1, 1, 3), np.uint8), {"g": y}, 10, seed=0, weights=np.where(y == 0, 1 / 90, 1 / 10)
    )
    drawn = torch.cat([t["g"] for e in range(20) for _, t in loader.batches(e)])
    assert 0.4 < drawn.float().mean().item() < 0.6  # about half rare, against 0.1 when shuffling
    assert torch.equal(loader.order(3), loader.order(3))


def test_shards_are_disjoint_cover_all_and_resume():
    images = np.zeros((10, 1, 1, 3), np.uint8)
    y = np.arange(10)
    shards = [BatchLoader(images, {"g": y}, 2, shuffle=True, seed=5, rank=r, world=3) for r in range(3)]
    orders = [s.order(2) for s in shards]
    assert all(len(o) == 4 for o in orders)  # ceil(10 / 3), padded by wrapping
    merged = torch.empty(12, dtype=torch.int64)
    for r, o in enumerate(orders):
        merged[r::3] = o
    assert sorted(merged[:10].tolist()) == list(range(10))  # one epoch order, split without overlap
    assert torch.equal(merged[10:], merged[:2])  # padded by wrapping
    full = list(shards[1].batches(2))
    tail = list(shards[1].batches(2, start=1))
    assert [torch.equal(a[1]["g"], b[1]["g"]) for a, b in zip(full[1:], tail, strict=True)] == [True]
    with pytest.raises(ValueError, match="rank 3 outside world of size 3"):
        BatchLoader(images, None, 2, rank=3, world=3)


def test_prefetcher_keeps_order_raises_and_stops():
    import threading

    from fashattr.data.pipeline import Prefetcher

    assert list(Prefetcher(iter(range(50)), depth=3)) == list(range(50))
    assert list(Prefetcher(iter(range(5)), depth=0)) == list(range(5))

    def failing():
        yield 1
        raise RuntimeError("bad batch 2")

    with pytest.raises(RuntimeError, match="bad batch 2"):
        list(Prefetcher(failing(), depth=2))
    endless = Prefetcher(iter(range(10**9)), depth=2)
    assert next(iter(endless)) == 0
    endless.close()
    assert not any(t.name == "fashattr-prefetch" for t in threading.enumerate())
