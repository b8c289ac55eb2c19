"""One reader per on-disk layout, each returning a Table; ``create_reader`` picks one by name."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from fashattr.data.table import Table
from fashattr.errors import DatasetError
from fashattr.schema import Schema


class Reader(Protocol):
    """A dataset layout on disk: its schema, its split names, and a Table per split.

    A reader may also offer ``read_images(split, allow_missing=False) -> Table``: the split's
    images without labels, which ``data check`` audits when ``read`` fails on a label.
    """

    root: Path

    def schema(self) -> Schema: ...

    def splits(self) -> list[str]: ...

    def read(self, split: str, allow_missing: bool = False) -> Table: ...


# Readers are imported when asked for, so an unused layout costs nothing.
def _fashiondataset(root: str | Path, options: dict[str, Any]) -> Reader:
    from fashattr.data.formats.fashiondataset import FashionDatasetReader
    from fashattr.data.formats.generic import check_options

    check_options(options, {}, "ai6126")
    return FashionDatasetReader(root)


def _csv(root: str | Path, options: dict[str, Any]) -> Reader:
    from fashattr.data.formats.generic import CsvReader

    return CsvReader(root, options)


def _folder(root: str | Path, options: dict[str, Any]) -> Reader:
    from fashattr.data.formats.generic import FolderReader

    return FolderReader(root, options)


def _deepfashion(root: str | Path, options: dict[str, Any]) -> Reader:
    from fashattr.data.formats.deepfashion import DeepFashionReader

    return DeepFashionReader(root, options)


def _deepfashion_fine(root: str | Path, options: dict[str, Any]) -> Reader:
    from fashattr.data.formats.deepfashion_fine import DeepFashionFineReader
    from fashattr.data.formats.generic import check_options

    check_options(options, {}, "deepfashion-fine")
    return DeepFashionFineReader(root)


def _fashionhow(root: str | Path, options: dict[str, Any]) -> Reader:
    from fashattr.data.formats.fashionhow import FashionHowReader

    return FashionHowReader(root, options)


_READERS: dict[str, Callable[[str | Path, dict[str, Any]], Reader]] = {
    "ai6126": _fashiondataset,
    "csv": _csv,
    "deepfashion": _deepfashion,
    "deepfashion-fine": _deepfashion_fine,
    "fashionhow": _fashionhow,
    "folder": _folder,
}


def reader_names() -> list[str]:
    return sorted(_READERS)


def create_reader(name: str, root: str | Path, options: dict[str, Any] | None = None) -> Reader:
    """The reader for layout ``name`` over the dataset at ``root``, with layout-specific ``options``.

    Raises:
        ValueError: unknown layout name or option (close matches are suggested).
        DatasetError: ``root`` does not exist ("data root PATH does not exist"), or is not that layout.
    """
    if name not in _READERS:
        close = difflib.get_close_matches(name, _READERS, n=3)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown dataset format {name!r}{hint} Choose from {reader_names()}")
    _check_root(Path(root))
    return _READERS[name](root, options or {})


def _check_root(root: Path) -> None:
    """Said once for every layout, before any of them takes a missing root for a wrong layout."""
    if not root.exists():
        where = "" if root.is_absolute() else f" (relative to {Path.cwd()})"
        err = DatasetError(root, "does not exist")
        err.args = (f"data root {root} does not exist{where}",)  # the path once, not "PATH: ... PATH ..."
        raise err
