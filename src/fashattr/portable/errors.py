"""The errors a bundle's runtime raises; :mod:`fashattr.errors` re-exports these very classes, so
``except fashattr.errors.ImageError`` catches what any module raises."""

from __future__ import annotations

from pathlib import Path


class FashattrError(Exception):
    """Base class of every error fashattr raises on purpose."""


class ImageError(FashattrError):
    """An image file that cannot be decoded (missing, truncated, corrupt, too large)."""

    def __init__(self, file: str | Path, message: str) -> None:
        self.file, self.message = str(file), message
        super().__init__(f"{self.file}: {message}")


class BundleError(FashattrError):
    """A model bundle that cannot be used: a missing, changed or unlisted file, or a newer format."""

    def __init__(self, file: str | Path, message: str) -> None:
        self.file, self.message = str(file), message
        super().__init__(f"{self.file}: {message}")
