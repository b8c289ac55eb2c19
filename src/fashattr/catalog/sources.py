"""What to tag: image paths streamed from folders (recursive), files, and CSV/Parquet lists of paths.

Streaming keeps memory flat for any catalog size: a folder is walked one directory at a time
(sorted, so a run visits files in the same order every time) and a list file is read row by row.
Only local paths: a URL in a list is an error naming the file, line and value, never fetched.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from fashattr.portable.images import IMAGE_SUFFIXES

LIST_SUFFIXES = (".csv", ".parquet")
URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class SourceError(ValueError):
    """A source that cannot be used: missing, a URL, a list without a ``path`` column, a bad row."""


def walk_images(folder: Path) -> Iterator[Path]:
    """Image files under ``folder``, recursively, in sorted order, one directory at a time."""
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
    for e in entries:
        if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES:
            yield Path(e.path)
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            yield from walk_images(Path(e.path))


def _check_local(value: str, where: str) -> Path:
    if URL.match(value):
        raise SourceError(f"{where}: {value!r} is a URL; fashattr tag reads local files only (download them first)")
    if not value.strip():
        raise SourceError(f"{where}: empty path")
    return Path(value)


def _rows_csv(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise SourceError(f"{path}:1: no 'path' column (columns: {reader.fieldnames})")
        for row in reader:
            yield reader.line_num, row["path"] or ""


def _rows_parquet(path: Path) -> Iterator[tuple[int, str]]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    if "path" not in pf.schema_arrow.names:
        raise SourceError(f"{path}: no 'path' column (columns: {pf.schema_arrow.names})")
    row = 0
    for batch in pf.iter_batches(batch_size=4096, columns=["path"]):
        for value in batch.column(0).to_pylist():
            row += 1
            yield row, "" if value is None else str(value)


def list_paths(path: Path) -> Iterator[Path]:
    """The paths a CSV or Parquet list names (column ``path``; relative ones from the list's folder).

    Raises:
        SourceError: no ``path`` column, an empty value or a URL (naming the file and line/row).
    """
    rows = _rows_parquet(path) if path.suffix.lower() == ".parquet" else _rows_csv(path)
    kind = "row" if path.suffix.lower() == ".parquet" else "line"
    for n, value in rows:
        p = _check_local(value, f"{path}:{n}" if kind == "line" else f"{path} row {n}")
        yield p if p.is_absolute() else path.parent / p


def check_sources(items: Iterable[str | Path]) -> list[Path]:
    """Validate SOURCE arguments up front (exists, not a URL), so a typo fails before any work.

    Raises:
        SourceError: a URL or a path that does not exist.
    """
    out = []
    for item in items:
        p = _check_local(str(item), "source")
        if not p.exists():
            raise SourceError(f"{p}: no such file or folder")
        out.append(p)
    if not out:
        raise SourceError("no sources given: pass folders, image files, or a .csv/.parquet list of paths")
    return out


def iter_sources(items: Iterable[str | Path]) -> Iterator[Path]:
    """Every image path of the sources, streamed, absolute and normalised (``..`` folded, symlinks
    kept): folders recursively, files as given, ``.csv`` / ``.parquet`` lists expanded (a listed path
    that does not exist is yielded anyway: tagging records it as an error)."""
    for p in check_sources(items):
        if p.is_dir():
            yield from (Path(os.path.abspath(q)) for q in walk_images(p))
        elif p.suffix.lower() in LIST_SUFFIXES:
            yield from (Path(os.path.abspath(q)) for q in list_paths(p))
        else:
            yield Path(os.path.abspath(p))


def count_sources(items: Iterable[str | Path]) -> int:
    """How many paths :func:`iter_sources` will give (a first pass, for the progress bar's ETA)."""
    return sum(1 for _ in iter_sources(items))
