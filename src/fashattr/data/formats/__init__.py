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


def _labelstudio(root: str | Path, options: dict[str, Any]) -> Reader:
    from fashattr.data.formats.labelstudio import LabelStudioReader

    return LabelStudioReader(root, options)


_READERS: dict[str, Callable[[str | Path, dict[str, Any]], Reader]] = {
    "ai6126": _fashiondataset,
    "csv": _csv,
    "deepfashion": _deepfashion,
    "deepfashion-fine": _deepfashion_fine,
    "fashionhow": _fashionhow,
    "folder": _folder,
    "labelstudio": _labelstudio,
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


TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def infer_format(root: str | Path) -> str:
    """The layout of the dataset at ``root``, told from what is there: a ``.csv`` / ``.parquet`` file is ``csv``, a
    ``.json`` file ``labelstudio`` (Label Studio's export);
    a folder with ``split/`` is ``ai6126``, with ``Anno_fine/`` ``deepfashion-fine``, with ``Anno/`` ``deepfashion``;
    a folder of class folders is ``folder``.

    Raises:
        DatasetError: ``root`` is missing, or nothing here tells the layout (the message lists the formats).
    """
    root = Path(root)
    _check_root(root)
    if root.is_file():
        if root.suffix.lower() in TABLE_SUFFIXES:
            return "csv"
        if root.suffix.lower() == ".json":
            return "labelstudio"
        raise DatasetError(
            root,
            f"a {root.suffix or 'suffixless'} file is no dataset layout fashattr reads: a label "
            f"table must end in {', '.join(TABLE_SUFFIXES)} (format csv), else pass --format "
            f"(one of {reader_names()})",
        )
    for marker, name in (("split", "ai6126"), ("Anno_fine", "deepfashion-fine"), ("Anno", "deepfashion")):
        if (root / marker).is_dir():
            return name
    tables = sorted(p.name for p in root.iterdir() if p.suffix.lower() in TABLE_SUFFIXES)
    subdirs = [p for p in root.iterdir() if p.is_dir()]
    if subdirs and not tables:
        return "folder"
    hint = f"; a label table here: pass {root / tables[0]} itself (format csv)" if tables else ""
    raise DatasetError(root, f"cannot tell this folder's layout{hint}; pass --format (one of {reader_names()})")


def _check_root(root: Path) -> None:
    """Said once for every layout, before any of them takes a missing root for a wrong layout."""
    if not root.exists():
        where = "" if root.is_absolute() else f" (relative to {Path.cwd()})"
        err = DatasetError(root, "does not exist")
        err.args = (f"data root {root} does not exist{where}",)  # the path once, not "PATH: ... PATH ..."
        raise err
