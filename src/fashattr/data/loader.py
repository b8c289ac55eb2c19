"""Batches straight from the presized cache: seeded, resumable at any step."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

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
    ) -> None:
        self.images = images
        self.rows = torch.arange(len(images)) if rows is None else torch.as_tensor(rows, dtype=torch.int64)
        self.targets = {g: torch.from_numpy(np.asarray(v)) for g, v in (targets or {}).items()}
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last and len(self.rows) > batch_size

    def __len__(self) -> int:
        n = len(self.rows)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(len(self.rows))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.rows), generator=g)

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
