"""The usual training-script input pipeline, kept for comparison: a torch Dataset that opens
each JPEG with PIL per sample and applies torchvision transforms, in DataLoader workers."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from fashattr.data.table import Table


class PilDataset(Dataset):
    def __init__(self, table: Table, rows: list[int], transform: transforms.Compose) -> None:
        assert table.labels is not None
        self.paths = [table.file(i) for i in rows]
        self.labels = {g: torch.as_tensor(v[rows]) for g, v in table.labels.items()}
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with Image.open(Path(self.paths[i])) as img:
            x = self.transform(img.convert("RGB"))
        return x, {g: v[i] for g, v in self.labels.items()}


def baseline_transform(size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> transforms.Compose:
    """The same augmentations as the benchmark's fashattr recipe, per sample on PIL images."""
    return transforms.Compose(
        [
            transforms.Resize((size, size)),
            transforms.RandomHorizontalFlip(),
            transforms.RandomAffine(10, translate=(0.05, 0.05), scale=(0.9, 1.1)),
            transforms.ColorJitter(0.2, 0.2, 0.2),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
            transforms.RandomErasing(p=0.25),
        ]
    )


def baseline_loader(
    table: Table, rows: list[int], size: int, batch: int, workers: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> DataLoader:
    ds = PilDataset(table, rows, baseline_transform(size, mean, std))
    return DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
