"""Atomic checkpoints: temp file in the same folder, fsync, ``os.replace``.

A reader (or a resumed run) sees either the previous complete file or the new complete
one, never a torn write, whenever the process is killed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temp file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""

    def write(tmp: Path) -> None:
        tmp.write_text(text)

    atomic_write(path, write)


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
