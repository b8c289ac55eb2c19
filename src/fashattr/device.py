"""Device, precision and memory-format choices, made at run time from the config."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def prefetch_depth(device: torch.device, setting: int | None) -> int:
    """Batches to prepare ahead: the setting, or 2 where preparation has cores of its own."""
    if setting is not None:
        return setting
    spare_cores = (os.cpu_count() or 1) > torch.get_num_threads()
    return 2 if device.type == "cuda" or spare_cores else 0


def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype: bf16 on CUDA under ``auto``; off on CPU unless asked (often slower there)."""
    if amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield
