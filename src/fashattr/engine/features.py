"""A frozen backbone's pooled features, computed once per image and view, cached by content.

With the backbone frozen (``train.trainable_stages=0``) its output for an image never changes, so
``train.feature_cache`` computes it once (and once more for the horizontally flipped image, the
one augmentation that a cache of pooled features can still offer) and trains the heads on the
cached vectors: linear probes and head-only recipes in seconds instead of minutes.

The cache key covers everything the features depend on: the pixels (the decode cache's own
content key, or the bytes of an in-memory array), the backbone's tensors, the normalisation and
the views. Files are written atomically, like the decode cache, beside it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fashattr.data.cache import default_cache_dir
from fashattr.data.loader import BatchLoader

log = logging.getLogger(__name__)
VIEWS = ("none", "flip")  # view 0 is the image as given; evaluation and selection use it


def content_key(images: np.ndarray, backbone: nn.Module, mean: tuple, std: tuple, views: tuple[str, ...]) -> str:
    """A hash of what the features depend on (see the module docstring)."""
    h = hashlib.sha256()
    source = getattr(images, "filename", None)  # a decode-cache memmap: its name is its content key
    if source is not None:
        h.update(f"memmap:{Path(source).name}:{images.shape}".encode())
    else:
        h.update(f"array:{images.shape}".encode())
        h.update(np.ascontiguousarray(images).data)
    for name, t in backbone.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().data)
    h.update(f"|{type(backbone).__name__}|mean={list(mean)}|std={list(std)}|views={list(views)}".encode())
    return h.hexdigest()[:24]


@torch.inference_mode()
def compute_features(
    backbone: nn.Module,
    images: np.ndarray,
    mean: tuple,
    std: tuple,
    views: tuple[str, ...],
    device: torch.device,
    batch_size: int = 64,
    channels_last: bool = True,
) -> torch.Tensor:
    """Pooled features ``(views, N, F)`` of every image of ``images`` (``(N, H, W, 3)`` uint8)."""
    was_training = backbone.training
    backbone.eval()
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out: list[torch.Tensor] = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.array(images[start : start + batch_size])).to(device)  # a copy: memmaps are read-only
        x = ((x.permute(0, 3, 1, 2).float() - m) / s).contiguous(memory_format=fmt)
        per_view = [backbone(x.flip(3) if v == "flip" else x).float().cpu() for v in views]
        out.append(torch.stack(per_view))
    backbone.train(was_training)
    return torch.cat(out, dim=1)


def cached_features(
    backbone: nn.Module,
    images: np.ndarray,
    mean: tuple,
    std: tuple,
    views: tuple[str, ...],
    device: torch.device,
    cache_dir: str | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """``compute_features``, read from the cache when the same pixels, weights and views were seen before."""
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    folder = folder / "features"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{content_key(images, backbone, mean, std, views)}.npy"
    if path.is_file():
        log.info("features: %s (cached)", path)
        return torch.from_numpy(np.load(path))
    log.info("features: computing %d images x %d views with the frozen backbone -> %s", len(images), len(views), path)
    feats = compute_features(backbone, images, mean, std, views, device, batch_size)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, feats.numpy())
    os.replace(tmp, path)  # atomic: a reader sees a whole file or none
    return feats


def feature_batches(
    loader: BatchLoader,
    features: torch.Tensor,
    hflip: float,
    gen: torch.Generator,
    device: torch.device,
    epoch: int,
    start: int = 0,
) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]]:
    """Training batches of cached features: the loader's order (so resume is exact), each row's view
    drawn per step (the flipped image with probability ``hflip``), and the generator state after it."""
    order = loader.order(epoch)
    n = loader.batch_size
    for step in range(start, len(loader)):
        idx = order[step * n : (step + 1) * n]
        rows = loader.rows[idx]
        flip = torch.rand(len(rows), generator=gen, device=gen.device) < hflip
        view = flip.long().cpu() if features.shape[0] > 1 else torch.zeros(len(rows), dtype=torch.long)
        x = features[view, rows].to(device)
        yield x, {g: v[idx].to(device) for g, v in loader.targets.items()}, gen.get_state()
