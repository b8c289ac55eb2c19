"""Multi-process training under ``torchrun`` (gloo on CPU, NCCL on CUDA).

Each process trains on its own shard of every global batch (``train.batch_size`` is the global
batch; each of the ``world`` processes takes ``batch_size / world`` rows, every ``world``-th row
of the epoch's order, so the union of the shards is exactly the single-process batch). DDP
averages the gradients; the holdout is evaluated in shards and the scores gathered, so every
process computes the same metrics and takes the same decisions (best epoch, early stop). Only
rank 0 writes files.

Randomness: every process starts from the same weights, but each draws its own augmentations
and dropout masks from streams seeded by :func:`rank_seed` (a run's seed and the rank), so the
shards of a batch are augmented independently, as one process would augment the whole batch.
A checkpoint holds every process's random states (:func:`all_gather`), and each restores its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """This process's place: ``rank`` of ``world`` processes; ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    """The place torchrun gives through RANK, WORLD_SIZE and LOCAL_RANK (single process without them)."""
    return Dist(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )


def init(device_type: str) -> Dist:
    """Join the process group (once) when launched by torchrun with more than one process."""
    d = from_env()
    if d.enabled and not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(d.local_rank)
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return d


def close(d: Dist, wait: bool = True) -> None:
    """Leave the process group; ``wait`` for the others first unless this process failed."""
    if d.enabled and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


@contextmanager
def rank0_first(d: Dist) -> Iterator[None]:
    """Rank 0 runs the block first (building the image cache, say); the others then reuse it."""
    if d.enabled and not d.main:
        dist.barrier()
    yield
    if d.enabled and d.main:
        dist.barrier()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of process ``rank``'s own random stream in a run seeded with ``seed``.

    Rank 0 keeps ``seed`` itself, so a single-process run draws what it always drew. Other ranks
    get a 63-bit seed mixed from ``(seed, rank)`` by NumPy's ``SeedSequence``, which (unlike
    ``seed + rank``) never hands rank 1 of seed 0 the stream of rank 0 of seed 1.
    """
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def all_gather(value: T, d: Dist) -> list[T]:
    """Every process's ``value`` in rank order, on every process (``[value]`` without torchrun).

    A collective: every process must call it at the same point.
    """
    if not d.enabled:
        return [value]
    parts: list[Any] = [None] * d.world
    dist.all_gather_object(parts, value)
    return parts


def broadcast(value: T, d: Dist) -> T:
    """Rank 0's ``value`` on every process."""
    if not d.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean(value: float, d: Dist) -> float:
    """The mean of a float over the processes."""
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item()) / d.world


def gather_rows(part: dict[str, np.ndarray], n: int, d: Dist) -> dict[str, np.ndarray]:
    """Reassemble per-group arrays of ``n`` rows from shards ``rows[rank::world]``."""
    if not d.enabled:
        return part
    parts: list[Any] = [None] * d.world
    dist.all_gather_object(parts, part)
    out = {}
    for name, first in part.items():
        full = np.empty((n, *first.shape[1:]), dtype=first.dtype)
        for r, p in enumerate(parts):
            full[r :: d.world] = p[name]
        out[name] = full
    return out
