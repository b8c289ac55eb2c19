"""Generic layouts: a CSV or Parquet table of image paths and labels, and folder-per-class.

CSV / Parquet (``format: csv``; ``data.root`` is the table file):

```
path,pattern,sleeve,tags,x1,y1,x2,y2,split
img/a.jpg,floral,long_sleeve,casual|summer,10,20,200,300,train
img/b.jpg,2,short_sleeve,,,,,,val
```
One column per group; values are class names (or indices when ``classes`` gives the names);
``a|b|c`` in a multi-label group; an empty cell is an unknown label. Image paths are relative
to the table's folder unless ``image_root`` is given. Options (``data.reader_options``):
``path_column`` (``path``), ``split_column`` (``split``), ``bbox_columns`` (``[x1, y1, x2, y2]``),
``groups`` (default: every other column), ``multi_label`` (groups that are multi-label; a cell
with ``|`` also makes its group multi-label), ``classes`` (``{group: [names...]}``: fixed order),
``image_root``.

Folder-per-class (``format: folder``): ``root/CLASS/*.jpg`` for one group (option ``group``,
default ``class``), or ``root/SPLIT/CLASS/*.jpg`` when every top folder holds class folders
and is named like a split (train, val, valid, test).
"""

from __future__ import annotations

import csv
import difflib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fashattr.data.profile import close_names, edit_distance
from fashattr.data.table import UNKNOWN, Table, drop_missing, parse_box
from fashattr.errors import DatasetError
from fashattr.schema import Group, Schema

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
SPLIT_NAMES = {"train", "val", "valid", "validation", "test"}


def check_options(options: dict[str, Any], valid: dict[str, Any], layout: str) -> dict[str, Any]:
    """Options with defaults filled in; an unknown option is an error naming the closest valid one."""
    for key in options:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown data.reader_options key {key!r} for format {layout!r}{hint} Valid: {list(valid)}"
            )
    return {**valid, **options}


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV or Parquet file, every value as a string ('' when empty)."""
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DatasetError(path, "reading Parquet needs pyarrow: pip install 'fashattr[parquet]'") from None
        table = pq.read_table(path)
        rows = [{k: "" if v is None else str(v) for k, v in r.items()} for r in table.to_pylist()]
        return list(table.column_names), rows
    # utf-8-sig: a BOM (Excel writes one) would otherwise become part of the first column's name.
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise DatasetError(path, "empty file: expected a header line")
        rows = []
        for row in reader:
            if None in row:  # more cells than header columns
                raise DatasetError(
                    path,
                    f"{len(reader.fieldnames) + len(row[None])} cells for {len(reader.fieldnames)} columns",
                    reader.line_num,
                )
            rows.append({k: (v or "").strip() for k, v in row.items()})
        return list(reader.fieldnames), rows


def did_you_mean(value: str, classes: tuple[str, ...]) -> str:
    """``" (did you mean 'floral'?)"`` for the closest class a typo away from ``value``, else ``""``."""
    close = [c for c in classes if close_names(value, c)]
    if not close:
        return ""
    return f" (did you mean {min(close, key=lambda c: edit_distance(value.lower(), c.lower()))!r}?)"


class CsvReader:
    """Labels in a CSV or Parquet file; see the module docstring."""

    OPTIONS: ClassVar[dict[str, Any]] = {
        "path_column": "path",
        "split_column": "split",
        "bbox_columns": ["x1", "y1", "x2", "y2"],
        "groups": None,
        "multi_label": [],
        "classes": {},
        "image_root": None,
    }

    def __init__(self, root: str | Path, options: dict[str, Any] | None = None) -> None:
        self.file = Path(root)
        if not self.file.is_file():
            raise DatasetError(self.file, "format csv: data.root must be the CSV or Parquet file")
        self.opt = check_options(options or {}, self.OPTIONS, "csv")
        self.root = Path(self.opt["image_root"]) if self.opt["image_root"] else self.file.parent
        self.columns, self.rows = _read_rows(self.file)
        self._schema = self._infer_schema()

    def _line(self, i: int) -> int | None:
        return i + 2  # 1-based, after the header line

    def _tag(self, i: int) -> str:
        """What names row ``i`` in a message besides its line (a Label Studio task's id)."""
        return ""

    def _group_columns(self) -> list[str]:
        o = self.opt
        missing = [c for c in [o["path_column"], *(o["groups"] or [])] if c not in self.columns]
        if missing:
            raise DatasetError(self.file, f"missing column(s) {missing}; columns are {self.columns}", 1)
        if o["groups"]:
            return list(o["groups"])
        reserved = {o["path_column"], o["split_column"], *o["bbox_columns"]}
        return [c for c in self.columns if c not in reserved]

    def _infer_schema(self) -> Schema:
        groups = []
        for name in self._group_columns():
            cells = [r[name] for r in self.rows]
            multi = name in self.opt["multi_label"] or any("|" in c for c in cells)
            names = self.opt["classes"].get(name)
            if names is None:
                seen = sorted({v for c in cells if c for v in (c.split("|") if multi else [c])})
                if seen and all(v.isdigit() for v in seen):  # indices without names: 0..max
                    seen = [str(k) for k in range(max(int(v) for v in seen) + 1)]
                names = seen
            try:
                groups.append(Group(name, tuple(str(n) for n in names), "multi" if multi else "single"))
            except ValueError as e:
                raise DatasetError(
                    self.file, f"column {name!r}: {e}; list its classes in reader_options.classes"
                ) from None
        return Schema(tuple(groups))

    def schema(self) -> Schema:
        return self._schema

    def set_classes(self, classes: dict[str, list[str]]) -> None:
        """Fix the class names (and order) of groups, e.g. to share one schema across files."""
        self.opt = {**self.opt, "classes": {**self.opt["classes"], **classes}}
        self._schema = self._infer_schema()

    def splits(self) -> list[str]:
        col = self.opt["split_column"]
        if col not in self.columns:
            return ["train"]
        return sorted({r[col] for r in self.rows if r[col]})

    def read(self, split: str, allow_missing: bool = False) -> Table:
        """The rows of ``split`` (all rows when the table has no split column)."""
        o, col = self.opt, self.opt["split_column"]
        if split not in self.splits():
            raise DatasetError(self.file, f"no split {split!r}; splits here: {self.splits()}")
        picked = [i for i, r in enumerate(self.rows) if col not in self.columns or r[col] == split]
        problems: list[tuple[int | None, str]] = []
        labels = {g.name: self._empty(g, len(picked)) for g in self._schema.groups}
        has_box = all(c in self.columns for c in o["bbox_columns"])
        boxes = np.zeros((len(picked), 4), np.float32) if has_box else None
        paths: list[str] = []
        missing: list[tuple[str, int, str]] = []
        first: dict[str, str] = {}  # image -> where it was first listed
        for k, i in enumerate(picked):
            row, line, tag = self.rows[i], self._line(i), self._tag(i)
            rel = row[o["path_column"]]
            found: list[str] = []
            if not rel:
                found.append("empty image path")
            elif rel in first:
                found.append(f"duplicate image {rel!r} (first on {first[rel]})")
            elif not (self.root / rel).is_file():
                if allow_missing:
                    missing.append((str(self.file), line if line is not None else i, rel))
                else:
                    found.append(f"image {rel!r} not found under {self.root}")
            first.setdefault(rel, f"line {line}" if line is not None else tag.rstrip(": "))
            paths.append(rel)
            for g in self._schema.groups:
                found += self._parse(g, row[g.name], labels[g.name], k)
            if boxes is not None:
                found += self._parse_box(row, boxes, k)
            problems += [(line, tag + f) for f in found]
        if problems:
            raise DatasetError.many(self.file, problems)
        table = Table(self.root, paths, labels, boxes, split=split)
        gone = {line for _, line, _ in missing}
        key = [self._line(i) if self._line(i) is not None else i for i in picked]
        return drop_missing(table, missing, [k for k, ln in enumerate(key) if ln in gone])

    @staticmethod
    def _empty(g: Group, n: int) -> np.ndarray:
        return np.full(n, UNKNOWN, np.int64) if g.kind == "single" else np.full((n, g.num_classes), UNKNOWN, np.int8)

    @staticmethod
    def _parse(g: Group, cell: str, out: np.ndarray, k: int) -> list[str]:
        if not cell:
            return []  # unknown label
        index = {c: j for j, c in enumerate(g.classes)}
        # A cell names a class, or gives its index when the names come from `classes`.
        index.update({str(j): j for j in range(g.num_classes) if str(j) not in index})
        values = cell.split("|") if g.kind == "multi" else [cell]
        bad = [v for v in values if v not in index]
        if bad:
            return [
                f"column {g.name!r}: unknown class {bad[0]!r}{did_you_mean(bad[0], g.classes)}; "
                f"classes are {list(g.classes)}"
            ]
        if g.kind == "single":
            out[k] = index[values[0]]
        else:
            out[k] = 0
            out[k, [index[v] for v in values]] = 1
        return []

    def _parse_box(self, row: dict[str, str], boxes: np.ndarray, k: int) -> list[str]:
        cells = [row[c] for c in self.opt["bbox_columns"]]
        if not any(cells):
            boxes[k] = np.nan  # no box for this row: the whole image is used
            return []
        try:
            boxes[k] = parse_box(cells, ",".join(cells))
        except ValueError as e:
            return [f"bbox columns {self.opt['bbox_columns']}: {e}"]
        return []


class FolderReader:
    """One group whose classes are folder names; see the module docstring."""

    OPTIONS: ClassVar[dict[str, Any]] = {"group": "class"}

    def __init__(self, root: str | Path, options: dict[str, Any] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(self.root, "format folder: data.root must be a folder of class folders")
        self.opt = check_options(options or {}, self.OPTIONS, "folder")
        top = sorted(p for p in self.root.iterdir() if p.is_dir())
        by_split = top and all(p.name.lower() in SPLIT_NAMES for p in top)
        self.split_dirs = {p.name: p for p in top} if by_split else {"train": self.root}
        classes = sorted({c.name for d in self.split_dirs.values() for c in d.iterdir() if c.is_dir()})
        if len(classes) < 2:
            raise DatasetError(self.root, f"need at least 2 class folders, found {classes}")
        self._schema = Schema((Group(self.opt["group"], tuple(classes)),))

    def schema(self) -> Schema:
        return self._schema

    def splits(self) -> list[str]:
        return sorted(self.split_dirs)

    def read(self, split: str, allow_missing: bool = False) -> Table:
        if split not in self.split_dirs:
            raise DatasetError(self.root, f"no split {split!r}; splits here: {self.splits()}")
        base = self.split_dirs[split]
        group = self._schema.groups[0]
        paths, labels = [], []
        for k, name in enumerate(group.classes):
            folder = base / name
            files = (
                sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
                if folder.is_dir()
                else []
            )
            paths += [str(f.relative_to(self.root)) for f in files]
            labels += [k] * len(files)
        if not paths:
            raise DatasetError(base, "no image files in its class folders")
        return Table(self.root, paths, {group.name: np.array(labels, np.int64)}, split=split)
