"""Atomic checkpoints: temp file in the same folder, fsync, ``os.replace``.

A reader (or a resumed run) sees either the previous complete file or the new complete
one, never a torn write, whenever the process is killed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fashattr.fileio import atomic_write


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Save a training state (tensors, numbers, strings, lists, dicts only: loadable with weights_only)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training state written by :func:`save_checkpoint`; never unpickles arbitrary objects."""
    return torch.load(path, map_location="cpu", weights_only=True)


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Model weights as safetensors, atomically."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp)))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))
