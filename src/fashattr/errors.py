"""Typed errors that name the file, line and value at fault."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# The base class, ImageError and BundleError are defined in the self-contained runtime (copied into
# every bundle as predict_onnx.py) and re-exported here: one class each, so `except ImageError` works
# whichever module raised it.
from fashattr.portable.errors import BundleError, FashattrError, ImageError

__all__ = [
    "USER_ERRORS",
    "BundleError",
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "FashattrError",
    "ImageError",
    "TrainingDivergedError",
]


class ConfigError(FashattrError, ValueError):
    """An invalid configuration key or value."""


class DatasetError(FashattrError):
    """A dataset file that cannot be read as its layout says.

    Args:
        file: the file at fault.
        message: what is wrong, including the offending value.
        line: 1-based line number, when the fault is on one line.
    """

    def __init__(self, file: str | Path, message: str, line: int | None = None) -> None:
        self.file = str(file)
        self.line = line
        self.problems: list[tuple[int | None, str]] = [(line, message)]
        where = f"{self.file}:{line}" if line is not None else self.file
        super().__init__(f"{where}: {message}")

    @classmethod
    def many(cls, file: str | Path, problems: Sequence[tuple[int | None, str]], shown: int = 20) -> DatasetError:
        """One error listing every bad line of ``file`` (the first ``shown`` in the message)."""
        lines = [f"{file}:{ln}: {msg}" if ln is not None else f"{file}: {msg}" for ln, msg in problems[:shown]]
        if len(problems) > shown:
            lines.append(f"... and {len(problems) - shown} more problems in {file}")
        err = cls(file, f"{len(problems)} problem(s)", problems[0][0])
        err.problems = list(problems)
        err.args = ("\n".join(lines),)
        return err


class CheckpointError(FashattrError):
    """A training checkpoint that cannot be read (truncated, corrupt, not a checkpoint)."""

    def __init__(self, file: str | Path, message: str) -> None:
        self.file, self.message = str(file), message
        super().__init__(f"{self.file}: {message}")


class TrainingDivergedError(FashattrError, FloatingPointError):
    """The training loss became NaN or infinite; the checkpoint written before it is kept."""


# What the CLI reports as one line ``error: ...`` (no traceback), and a run's train.log likewise:
# the user's input or files are at fault, and the message names them.
USER_ERRORS: tuple[type[Exception], ...] = (FashattrError, FileNotFoundError, FileExistsError, ValueError)
