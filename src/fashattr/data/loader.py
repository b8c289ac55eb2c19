"""Batches straight from the presized cache: seeded, resumable at any step."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from fashattr.schema import Schema

Batch = tuple[torch.Tensor, dict[str, torch.Tensor]]


class BatchLoader:
    """Yields ``(images uint8 NCHW, targets per group)`` batches from an in-memory array.

    The order of epoch ``e`` is a permutation drawn from a generator seeded with
    ``(seed, e)`` alone, so a run resumed at ``(epoch, step)`` sees exactly the batches an
    uninterrupted run would.

    Args:
        images: ``(N, H, W, 3)`` uint8 (a memmap is fine).
        targets: per group, labels indexed by row; None for unlabeled data.
        batch_size: rows per batch.
        shuffle: draw a new order each epoch; else rows in order.
        drop_last: drop the last incomplete batch (training, so batch statistics stay sane).
        rows: which rows of ``images`` to serve (e.g. the training side of a holdout split);
            ``targets`` are then indexed like ``rows``. All rows when None.
        weights: per-row sampling weights: each epoch draws ``len(rows)`` rows with
            replacement in proportion to them (class-balanced sampling; see ``sample_weights``).
        rank, world: this process's shard under ``torchrun``: every process draws the same
            epoch order and takes every ``world``-th row from ``rank`` on (the order is padded
            by wrapping so all shards have one length, as torch's DistributedSampler does).
    """

    def __init__(
        self,
        images: np.ndarray,
        targets: dict[str, np.ndarray] | None,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rows: np.ndarray | None = None,
        weights: np.ndarray | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world of size {world}")
        self.images = images
        self.rows = torch.arange(len(images)) if rows is None else torch.as_tensor(rows, dtype=torch.int64)
        self.targets = {g: torch.from_numpy(np.asarray(v)) for g, v in (targets or {}).items()}
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if self.weights is not None and len(self.weights) != len(self.rows):
            raise ValueError(f"{len(self.weights)} sampling weights for {len(self.rows)} rows")
        self.rank, self.world = rank, world
        self.drop_last = drop_last and self.shard_size > batch_size

    @property
    def shard_size(self) -> int:
        return math.ceil(len(self.rows) / self.world)

    def __len__(self) -> int:
        n = self.shard_size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        """Positions into ``rows`` for this epoch and this shard; a function of (seed, epoch) only."""
        n = len(self.rows)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self.weights is not None:
            idx = torch.multinomial(self.weights, n, replacement=True, generator=g)
        elif self.shuffle:
            idx = torch.randperm(n, generator=g)
        else:
            idx = torch.arange(n)
        if self.world > 1:
            total = self.shard_size * self.world
            idx = torch.cat([idx, idx[: total - n]])[self.rank :: self.world]
        return idx

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """Batches of ``epoch`` from step ``start`` on."""
        order = self.order(epoch)
        for step in range(start, len(self)):
            idx = order[step * self.batch_size : (step + 1) * self.batch_size]
            rows = self.rows[idx]
            # Sorted reads are kinder to the memmap; the batch keeps the drawn order.
            pixels = torch.from_numpy(np.ascontiguousarray(self.images[np.sort(rows.numpy())]))
            pixels = pixels[torch.argsort(torch.argsort(rows))]
            yield pixels.permute(0, 3, 1, 2), {g: v[idx] for g, v in self.targets.items()}


def sample_weights(
    schema: Schema, labels: dict[str, np.ndarray], group: str | None = None, power: float = 1.0
) -> np.ndarray:
    """Class-balanced sampling weights for multi-group labels.

    Each row weighs ``1 / n ** power``, where ``n`` is the training count of the rarest class
    the row carries across all groups (or of its class in ``group`` alone, when given).
    ``power`` 1 balances fully, 0.5 is square-root balancing, 0 is plain shuffling.
    Rows with no known label in the chosen group(s) get the mean weight.
    """
    groups = [schema[group]] if group else list(schema.groups)
    n_rows = len(next(iter(labels.values())))
    rarest = np.full(n_rows, np.inf)
    for g in groups:
        y = labels[g.name]
        if g.kind == "single":
            counts = np.bincount(y[y >= 0], minlength=g.num_classes).astype(np.float64)
            n = np.where(y >= 0, counts[np.clip(y, 0, None)], np.inf)
        else:
            counts = (y == 1).sum(0).astype(np.float64)
            n = np.where(y == 1, counts[None, :], np.inf).min(1)
        rarest = np.minimum(rarest, n)
    w = np.where(np.isfinite(rarest), 1.0 / np.power(np.maximum(rarest, 1.0), power), np.nan)
    return np.where(np.isnan(w), np.nanmean(w) if np.isfinite(w).any() else 1.0, w)
