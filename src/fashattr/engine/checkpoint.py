"""Atomic checkpoints: temp file in the same folder, fsync, ``os.replace``.

A reader (or a resumed run) sees either the previous complete file or the new complete
one, never a torn write, whenever the process is killed.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from fashattr.errors import CheckpointError
from fashattr.fileio import atomic_write
from fashattr.models.weights import load_weights as load_weights  # re-exported: the one safetensors loader


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Save a training state (tensors, numbers, strings, lists, dicts only: loadable with weights_only)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training state written by :func:`save_checkpoint`; never unpickles arbitrary objects.

    Raises:
        CheckpointError: the file is damaged (truncated, corrupt) or holds no training state.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        # torch names only its zip reader ("PytorchStreamReader failed ..."), not the file.
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(path, f"damaged, cannot be read ({reason})") from None
    if not isinstance(state, dict) or "progress" not in state:
        raise CheckpointError(path, "damaged: it loads, but holds no training state (no 'progress')")
    return state


def recovery_hint(run_dir: str | Path) -> str:
    """What a run folder whose checkpoint is lost still offers, for the error message that says so."""
    run_dir = Path(run_dir)
    kept = [run_dir / f"{w}.safetensors" for w in ("last", "best")]
    kept = [p for p in kept if p.is_file()]
    if not kept:
        return "no weights were saved yet (no epoch finished): start the run again"
    last = run_dir / "last.safetensors"
    weights = "last" if last in kept else "best"
    epochs = _epochs_done(run_dir / "metrics.csv")
    done = f" ({epochs} epoch(s) done, per metrics.csv)" if epochs else ""
    return (
        f"still readable: {' and '.join(str(p) for p in kept)}{done}, the weights at the end of the "
        f"previous epoch; evaluate them with `fashattr eval {run_dir} --weights {weights}`, or start a new "
        f"run from that backbone with model.pretrained_file={run_dir / f'{weights}.safetensors'} "
        "(heads, optimizer and schedule start afresh)"
    )


def _epochs_done(metrics_csv: Path) -> int:
    if not metrics_csv.is_file():
        return 0
    return max(0, len(metrics_csv.read_text().strip().splitlines()) - 1)  # less the header


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Model weights as safetensors, atomically."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp)))
