"""Model weights as safetensors: the one loader that training, evaluation and the runtime share.

Torch + safetensors only (no trainer, no pickle), so the inference runtime can import it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` state dict (nothing is unpickled).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable safetensors file (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from None
