"""One reader per on-disk layout, each returning a Table; ``create_reader`` picks one by name."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from fashattr.data.table import Table
from fashattr.schema import Schema


class Reader(Protocol):
    """A dataset layout on disk: its schema, its split names, and a Table per split."""

    root: Path

    def schema(self) -> Schema: ...

    def splits(self) -> list[str]: ...

    def read(self, split: str, allow_missing: bool = False) -> Table: ...


def _fashiondataset(root: str | Path) -> Reader:
    from fashattr.data.formats.fashiondataset import FashionDatasetReader

    return FashionDatasetReader(root)


_READERS: dict[str, Callable[[str | Path], Reader]] = {
    "ai6126": _fashiondataset,
}


def reader_names() -> list[str]:
    return sorted(_READERS)


def create_reader(name: str, root: str | Path) -> Reader:
    """The reader for layout ``name`` over the dataset at ``root``.

    Raises:
        ValueError: unknown layout name (close matches are suggested).
    """
    if name not in _READERS:
        close = difflib.get_close_matches(name, _READERS, n=3)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown dataset format {name!r}{hint} Choose from {reader_names()}")
    return _READERS[name](root)
