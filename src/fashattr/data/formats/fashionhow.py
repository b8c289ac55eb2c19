"""FASHION-HOW (ETRI fashion AI challenge) sub-tasks 1 and 2: one CSV per split, one image folder per split.

The challenge package:

```
ROOT/info_etri20_emotion_train.csv         (any name holding train / val / test, or train.csv ...)
ROOT/info_etri20_emotion_validation.csv
ROOT/info_etri20_emotion_test_sample.csv
ROOT/Train/<image_name>                     image_name is relative to its split's folder
ROOT/Validation/<image_name>
ROOT/Test_sample/<image_name>
```
CSV columns: ``image_name,BBox_xmin,BBox_ymin,BBox_xmax,BBox_ymax`` and the labels, 0-based
indices: sub-task 1 ``Daily,Gender,Embellishment``, sub-task 2 ``Color``. Each column's class
count is the task's (``CLASS_COUNTS``), never the largest index a file happens to hold, so a
sample whose labels stop at 4 builds the same heads as the full set. Sub-task 2's metric, the
mean over classes of per-class recall, is the ``Color`` group's average per-class accuracy.

Options (``data.reader_options``):
- ``splits``: ``{name: csv path relative to root}``; default ``{split}.csv``, else the one CSV
  whose name holds ``train`` / ``val`` / ``test``.
- ``image_dirs``: ``{name: folder relative to root}``; default the package's folder
  (``Train``, ``Validation``, ``Test_sample``, or lower case) when the split's first image is
  there, else root.
- ``encoding``: of the CSVs, ``utf-8`` (default) or e.g. ``euc-kr``; a file that starts with a
  UTF-8 BOM is read as UTF-8 (BOM dropped) whatever the option, so a package may mix both.
- ``classes``: ``{column: [names...]}`` or ``{column: count}``; overrides the task's counts and
  is required for a label column the tasks do not define.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
from pathlib import Path
from typing import Any, ClassVar

from fashattr.data.formats.generic import CsvReader, check_options
from fashattr.data.table import Table
from fashattr.errors import DatasetError
from fashattr.schema import Group, Schema

PATH = "image_name"
BBOX = ["BBox_xmin", "BBox_ymin", "BBox_xmax", "BBox_ymax"]
# Class counts fixed by the tasks (the label values of the 2022-2024 releases: Daily 0-5,
# Gender 0-4, Embellishment 0-2, Color 0-17); README "Layouts" says where they come from.
CLASS_COUNTS = {"Daily": 6, "Gender": 5, "Embellishment": 3, "Color": 18}
# Where each split's images lie in the challenge package, in the order they are tried.
IMAGE_DIRS = {
    "train": ("Train", "train"),
    "val": ("Validation", "validation", "val"),
    "test": ("Test_sample", "test_sample", "Test", "test"),
}
SPLIT_WORDS = {"train": "train", "val": "val", "test": "test"}  # "val" also matches "validation"


def read_csv(path: Path, encoding: str) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV in ``encoding``, or in UTF-8 when it starts with a BOM; every cell stripped.

    The challenge's UTF-8 files start with a BOM (left in, it would rename the first column).

    Raises:
        DatasetError: bytes that are not ``encoding`` text (naming the line), an empty file,
            or a row with more cells than the header has columns.
    """
    raw = path.read_bytes()
    bom = raw.startswith(codecs.BOM_UTF8)
    if bom:  # a BOM says UTF-8 whatever the option, so one package may mix both
        raw, encoding = raw[len(codecs.BOM_UTF8) :], "utf-8"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        hint = (
            "the file starts with a UTF-8 BOM"
            if bom
            else "set data.reader_options.encoding (the challenge ships some CSVs in euc-kr)"
        )
        raise DatasetError(path, f"byte 0x{raw[e.start]:02x} is not {encoding} text; {hint}", line) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None:
        raise DatasetError(path, "empty file: expected a header line")
    columns = [c.strip() for c in reader.fieldnames]
    rows = []
    for row in reader:
        if None in row:
            raise DatasetError(
                path, f"{len(columns) + len(row[None])} cells for {len(columns)} columns", reader.line_num
            )
        rows.append({c: (v or "").strip() for c, v in zip(columns, row.values(), strict=True)})
    return columns, rows


class _SplitCsv(CsvReader):
    """One split's CSV with rows already decoded (CsvReader itself reads UTF-8 files only)."""

    def __init__(self, file: Path, columns: list[str], rows: list[dict[str, str]], options: dict[str, Any]) -> None:
        self.file = file
        self.opt = check_options(options, self.OPTIONS, "fashionhow")
        self.root = Path(self.opt["image_root"])
        self.columns, self.rows = columns, rows
        self._schema = self._infer_schema()


class FashionHowReader:
    """FASHION-HOW sub-task 1 or 2; the groups are the CSVs' label columns."""

    OPTIONS: ClassVar[dict[str, Any]] = {"splits": None, "image_dirs": None, "encoding": "utf-8", "classes": {}}

    def __init__(self, root: str | Path, options: dict[str, Any] | None = None) -> None:
        self.root = Path(root)
        opt = check_options(options or {}, self.OPTIONS, "fashionhow")
        try:
            codecs.lookup(opt["encoding"])
        except LookupError:
            raise ValueError(f"data.reader_options.encoding: unknown encoding {opt['encoding']!r}") from None
        self.files = {name: self.root / rel for name, rel in (opt["splits"] or self._find_splits()).items()}
        for f in self.files.values():
            if not f.is_file():
                raise DatasetError(f, "split CSV not found")
        tables = {name: read_csv(f, opt["encoding"]) for name, f in self.files.items()}  # each file read once
        self._schema = self._task_schema({n: cols for n, (cols, _) in tables.items()}, opt["classes"])
        classes = {g.name: list(g.classes) for g in self._schema.groups}
        self.image_roots = self._image_roots(tables, opt["image_dirs"])
        self.readers = {
            name: _SplitCsv(
                self.files[name],
                cols,
                rows,
                {
                    "path_column": PATH,
                    "split_column": "",
                    "bbox_columns": BBOX,
                    "classes": classes,
                    "image_root": str(self.image_roots[name]),
                },
            )
            for name, (cols, rows) in tables.items()
        }

    def _find_splits(self) -> dict[str, str]:
        """``{split}.csv`` where present, else the one CSV whose name holds the split's word."""
        csvs = sorted(p.name for p in self.root.glob("*.csv"))
        found: dict[str, str] = {}
        for split, word in SPLIT_WORDS.items():
            if f"{split}.csv" in csvs:
                found[split] = f"{split}.csv"
                continue
            named = [c for c in csvs if word in c.lower()]
            if len(named) > 1:
                raise DatasetError(
                    self.root, f"{named} could each be the {split} split; name the files in reader_options.splits"
                )
            if named:
                found[split] = named[0]
        if not found:
            raise DatasetError(
                self.root, "no CSV named like train / val / test here; name the files in reader_options.splits"
            )
        return found

    def _task_schema(self, columns: dict[str, list[str]], given: dict[str, Any]) -> Schema:
        """Groups = the label columns of every split, in first-seen order; classes from the task or ``given``."""
        labels: dict[str, str] = {}  # column -> the split it was first seen in
        for split, cols in columns.items():
            for c in cols:
                if c not in (PATH, *BBOX):
                    labels.setdefault(c, split)
        for key in given:
            if key not in labels:
                close = difflib.get_close_matches(key, labels, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(
                    f"reader_options.classes: {key!r} is no label column of the CSVs{hint} ({list(labels)})"
                )
        groups = []
        for name, split in labels.items():
            spec = given.get(name, CLASS_COUNTS.get(name))
            if spec is None:
                raise DatasetError(
                    self.files[split],
                    f"column {name!r} is no FASHION-HOW label ({', '.join(CLASS_COUNTS)}); "
                    "give its classes in reader_options.classes",
                    1,
                )
            names = [str(k) for k in range(spec)] if isinstance(spec, int) else [str(c) for c in spec]
            groups.append(Group(name, tuple(names)))
        return Schema(tuple(groups))

    def _image_roots(self, tables: dict[str, tuple[list[str], list[dict[str, str]]]], given: Any) -> dict[str, Path]:
        """Each split's image folder: the given one, else the package's folder holding its first image, else root."""
        given = given or {}
        unknown = sorted(set(given) - set(tables))
        if unknown:
            raise ValueError(f"reader_options.image_dirs: no split {unknown}; splits are {sorted(tables)}")
        roots = {}
        for split, (_, rows) in tables.items():
            if split in given:
                roots[split] = self.root / given[split]
                if not roots[split].is_dir():
                    raise DatasetError(roots[split], f"image folder of split {split!r} not found")
                continue
            # The first listed image decides, so a package whose names already start with Train/ still reads.
            first = next((r[PATH] for r in rows if r.get(PATH)), None)
            folders = [self.root / d for d in IMAGE_DIRS.get(split, ())]
            roots[split] = next((d for d in folders if first and (d / first).is_file()), self.root)
        return roots

    def schema(self) -> Schema:
        return self._schema

    def splits(self) -> list[str]:
        return sorted(self.files)

    def read(self, split: str, allow_missing: bool = False) -> Table:
        if split not in self.readers:
            raise DatasetError(self.root, f"no split {split!r}; splits here: {self.splits()}")
        table = self.readers[split].read("train", allow_missing)  # one CSV = one split
        table.split = split
        return table

    def read_images(self, split: str, allow_missing: bool = False) -> Table:
        """The split's listed images without labels or boxes, each name once.

        ``data check`` audits these when ``read`` fails on a label, so one bad label line does not
        hide the split's missing, unreadable or duplicate images. Rows without an image name are
        left out here; ``read`` names them.
        """
        if split not in self.readers:
            raise DatasetError(self.root, f"no split {split!r}; splits here: {self.splits()}")
        csv_reader = self.readers[split]
        paths: list[str] = []
        missing: list[tuple[str, int, str]] = []
        seen: set[str] = set()
        for i, row in enumerate(csv_reader.rows):
            rel, line = row.get(PATH, ""), i + 2  # after the header line
            if not rel or rel in seen:
                continue
            seen.add(rel)
            if (csv_reader.root / rel).is_file():
                paths.append(rel)
            elif allow_missing:
                missing.append((str(csv_reader.file), line, rel))
            else:
                raise DatasetError(csv_reader.file, f"image {rel!r} not found under {csv_reader.root}", line)
        table = Table(csv_reader.root, paths, split=split)
        table.missing = missing
        return table
