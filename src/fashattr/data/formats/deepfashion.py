"""DeepFashion Category and Attribute Prediction Benchmark (Liu et al., CVPR 2016).

```
ROOT/Img/img/...                   images, as Img/img.zip unpacks; the lists name img/...
                                   (some mirrors unpack to ROOT/img/...: found there too)
ROOT/Anno/list_category_cloth.txt  50 category names and types (1 upper, 2 lower, 3 full body)
ROOT/Anno/list_category_img.txt    image, category id (1-based)
ROOT/Anno/list_attr_cloth.txt      1000 attribute names (may contain spaces) and types
                                   (1 texture, 2 fabric, 3 shape, 4 part, 5 style)
ROOT/Anno/list_attr_img.txt        image, 1000 values: 1 present, -1 absent, 0 unknown
ROOT/Anno/list_bbox.txt            optional: image, x_1 y_1 x_2 y_2
ROOT/Eval/list_eval_partition.txt  image, train | val | test
```
Every file starts with a count line and a header line; columns are separated by runs of
spaces. The annotation files are shared by every split: a line naming an image that is in no
split is reported with the partition's first split only, so reading every split (as ``data
check`` does) reports it once. The category is a single-label group ``category`` (all 50 names, so ids map
directly; the benchmark uses 46 and the metrics leave unused ones out as absent); the
attributes become one multi-label group per type. Option ``groups`` picks a subset of
``category texture fabric shape part style``; without an attribute group the 1000-column
file is not read at all.

The attribute file is large (289,222 rows x 1000 values, about 600 MB of text). It is read
as a stream, in chunks, and only the rows of the requested split are kept, as int8: the
train split's labels take 209 MB.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fashattr.data.formats.generic import check_options
from fashattr.data.formats.lists import ENCODING, Problems, find_image_root, not_found
from fashattr.data.table import UNKNOWN, Table, drop_missing, parse_box
from fashattr.errors import DatasetError
from fashattr.schema import Group, Schema

ATTRIBUTE_TYPES = ("texture", "fabric", "shape", "part", "style")  # type ids 1..5
CATEGORY_TYPES = ("upper", "lower", "full")  # type ids 1..3
GROUPS = ("category", *ATTRIBUTE_TYPES)
OPTIONS: dict[str, Any] = {"groups": list(GROUPS)}
CHUNK = 2048  # attribute rows parsed per NumPy call
MAX_PROBLEMS = 1000  # a wholly broken file stops here instead of listing 289k lines
_ATTR_VALUE = np.array([0, UNKNOWN, 1], dtype=np.int8)  # file value + 1 -> label (-1 absent, 0 unknown)


def _listing(path: Path, header: tuple[str, ...]) -> Iterator[tuple[int, str]]:
    """The data lines of a DeepFashion list file as (line number, line), after checking its
    count line and header; raises at the end when the count line disagrees with the rows."""
    if not path.is_file():
        raise DatasetError(path, "file not found (DeepFashion benchmark layout)")
    rows = 0
    with path.open(encoding=ENCODING, newline=None) as f:  # a leading BOM is dropped
        try:
            first, second = f.readline(), f.readline()
            count = first.split()
            if len(count) != 1 or not count[0].isdigit():
                raise DatasetError(path, f"line 1 should be the number of rows, got {first.strip()!r}", 1)
            if tuple(second.split()) != header:
                raise DatasetError(path, f"line 2 should be the header {' '.join(header)!r}, got {second.strip()!r}", 2)
            for number, line in enumerate(f, start=3):
                if not line.strip():
                    continue  # trailing blank lines; a blank inner line changes no row
                rows += 1
                yield number, line
        except UnicodeDecodeError as e:
            raise DatasetError(path, f"not UTF-8 text after line {rows + 2}: {e}") from None
    if rows != int(count[0]):
        raise DatasetError(path, f"count line says {count[0]} rows but {rows} follow", 1)


@dataclass(frozen=True)
class _Lines:
    """Which lines of a shared annotation file one split's read takes, and which it reports."""

    row_of: dict[str, int]  # image -> its row in the split
    split_of: dict[str, str]  # image -> its split, for every image of the partition
    charged: bool  # this read reports the lines that name an image in no split


def _names_and_types(path: Path, header: tuple[str, ...], n_types: int) -> tuple[list[str], np.ndarray]:
    """Names (everything before the last token, spaces kept single) and 1-based types."""
    names: list[str] = []
    types: list[int] = []
    problems: list[tuple[int | None, str]] = []
    for number, line in _listing(path, header):
        parts = line.split()
        if len(parts) < 2 or not parts[-1].isdigit() or not 1 <= int(parts[-1]) <= n_types:
            problems.append((number, f"expected a name and a type in 1..{n_types}, got {line.strip()!r}"))
            continue
        names.append(" ".join(parts[:-1]))
        types.append(int(parts[-1]))
    if problems:
        raise DatasetError.many(path, problems)
    return names, np.array(types, dtype=np.int64)


class DeepFashionReader:
    """Reads the Category and Attribute Prediction Benchmark under ``root``."""

    def __init__(self, root: str | Path, options: dict[str, Any] | None = None) -> None:
        self.root = Path(root)
        opts = check_options(options or {}, OPTIONS, "deepfashion")
        self.groups = list(opts["groups"])
        unknown = [g for g in self.groups if g not in GROUPS]
        if unknown or not self.groups:
            raise ValueError(f"data.reader_options.groups {self.groups}: choose one or more of {list(GROUPS)}")
        self.anno = self.root / "Anno"
        self.partition_file = self.root / "Eval" / "list_eval_partition.txt"
        if not self.anno.is_dir():
            hint = ""
            if (self.root / "Anno_fine").is_dir():
                hint = "; Anno_fine/ here is the fine-grained release: use data.format deepfashion-fine"
            elif (self.root / "split").is_dir():
                hint = "; split/ here is the FashionDataset layout: use data.format ai6126"
            raise DatasetError(self.root, f"no Anno/ folder: not the DeepFashion benchmark layout{hint}")
        # Where the lists' img/... paths are relative to: Img/ as the archive unpacks, or ROOT.
        self.image_roots = [self.root / "Img", self.root]
        self._schema: Schema | None = None
        self._attr_types: np.ndarray | None = None
        self._partition: list[tuple[int, str, str]] | None = None

    # --- schema -------------------------------------------------------------------------

    def schema(self) -> Schema:
        if self._schema is None:
            groups: list[Group] = []
            if "category" in self.groups:
                path = self.anno / "list_category_cloth.txt"
                names, _ = _names_and_types(path, ("category_name", "category_type"), len(CATEGORY_TYPES))
                groups.append(Group("category", self._unique(path, names)))
            if any(t in self.groups for t in ATTRIBUTE_TYPES):
                path = self.anno / "list_attr_cloth.txt"
                names, types = _names_and_types(path, ("attribute_name", "attribute_type"), len(ATTRIBUTE_TYPES))
                self._attr_types = types
                for t, name in enumerate(ATTRIBUTE_TYPES, start=1):
                    if name in self.groups:
                        cls = self._unique(path, [n for n, k in zip(names, types, strict=True) if k == t])
                        if not cls:
                            raise DatasetError(path, f"no attribute has type {t} ({name})")
                        groups.append(Group(name, cls, "multi"))
            self._schema = Schema(tuple(groups))
        return self._schema

    @staticmethod
    def _unique(path: Path, names: list[str]) -> tuple[str, ...]:
        repeated = sorted(n for n, k in Counter(names).items() if k > 1)
        if repeated:
            raise DatasetError(path, f"names listed twice in one group: {repeated}")
        return tuple(names)

    # --- splits ---------------------------------------------------------------------------

    def partition(self) -> list[tuple[int, str, str]]:
        """(line, image path, split) of every image in ``Eval/list_eval_partition.txt``."""
        if self._partition is None:
            rows: list[tuple[int, str, str]] = []
            problems: list[tuple[int | None, str]] = []
            first: dict[str, int] = {}
            path = self.partition_file
            for number, line in _listing(path, ("image_name", "evaluation_status")):
                parts = line.split()
                if len(parts) != 2:
                    problems.append((number, f"expected an image path and a split, got {line.strip()!r}"))
                elif parts[0] in first:
                    problems.append((number, f"duplicate entry {parts[0]!r} (first on line {first[parts[0]]})"))
                else:
                    first[parts[0]] = number
                    rows.append((number, parts[0], parts[1]))
            if problems:
                raise DatasetError.many(path, problems)
            self._partition = rows
        return self._partition

    def splits(self) -> list[str]:
        return sorted({s for _, _, s in self.partition()})

    def read(self, split: str, allow_missing: bool = False) -> Table:
        """Read one split; raises DatasetError naming every bad line of every file.

        With ``allow_missing``, listed images not on disk are left out and recorded in
        ``Table.missing`` instead of raising.
        """
        schema = self.schema()
        partition = self.partition()
        mine = [(n, p) for n, p, s in partition if s == split]
        if not mine:
            raise DatasetError(self.partition_file, f"no split {split!r}; splits here: {self.splits()}")
        paths = [p for _, p in mine]
        split_of = {p: s for _, p, s in partition}
        # Lines of images in no split are charged to one split, so each is reported once.
        lines = _Lines({p: i for i, p in enumerate(paths)}, split_of, charged=split == partition[0][2])
        problems = Problems()
        root = find_image_root(self.image_roots, paths[0])
        gone = [i for i, p in enumerate(paths) if root is None or not (root / p).is_file()]
        missing = [(str(self.partition_file), mine[i][0], paths[i]) for i in gone]
        if missing and not allow_missing:
            zipped = self.root / "Img" / "img.zip"
            hint = f"; {zipped} is not unpacked" if root is None and zipped.is_file() else ""
            found = [(n, not_found(p, root, self.image_roots, hint)) for _, n, p in missing]
            problems.add(self.partition_file, found)
        labels: dict[str, np.ndarray] = {}
        if "category" in self.groups:
            n_classes = schema["category"].num_classes
            category = problems.run(lambda: self._read_categories(lines, n_classes))
            if category is not None:
                labels["category"] = category
        if self._attr_types is not None:
            labels.update(problems.run(lambda: self._read_attributes(lines, schema)) or {})
        bbox_file = self.anno / "list_bbox.txt"
        bboxes = problems.run(lambda: self._read_bboxes(bbox_file, lines)) if bbox_file.exists() else None
        problems.raise_if_any()
        table = Table(root or self.image_roots[0], paths, labels, bboxes, split=split)
        return drop_missing(table, missing, gone)

    # --- per-image files ------------------------------------------------------------------

    def _rows(
        self,
        path: Path,
        header: tuple[str, ...],
        lines: _Lines,
        problems: list[tuple[int | None, str]],
    ) -> Iterator[tuple[int, int, str]]:
        """(line, row in this split, rest of the line) for the lines of ``path`` that belong to
        the split. Second lines for an image, split images without a line and (when the read
        is ``charged`` with them) lines naming an image outside the partition are added to
        ``problems``."""
        row_of = lines.row_of
        seen = np.zeros(len(row_of), dtype=bool)
        for number, line in _listing(path, header):
            image, *rest = line.split(None, 1)
            row = row_of.get(image)
            if row is None:
                if lines.charged and image not in lines.split_of:
                    problems.append((number, f"image {image!r} is not in {self.partition_file.name}"))
            elif seen[row]:
                problems.append((number, f"second line for image {image!r}"))
            else:
                seen[row] = True
                yield number, row, rest[0] if rest else ""
            if len(problems) >= MAX_PROBLEMS:
                return
        if not seen.all():
            lost = [p for p, r in row_of.items() if not seen[r]]
            problems.append((None, f"no line for {len(lost)} image(s) of the split, e.g. {lost[:3]}"))

    def _read_categories(self, lines: _Lines, n_classes: int) -> np.ndarray:
        path = self.anno / "list_category_img.txt"
        out = np.full(len(lines.row_of), UNKNOWN, dtype=np.int64)
        bad: list[tuple[int | None, str]] = []
        for number, row, rest in self._rows(path, ("image_name", "category_label"), lines, bad):
            tok = rest.strip()
            if not tok.isdigit() or not 1 <= int(tok) <= n_classes:
                bad.append((number, f"category {tok!r} is not an id in 1..{n_classes}"))
                continue
            out[row] = int(tok) - 1
        if bad:
            raise DatasetError.many(path, sorted(bad, key=lambda b: b[0] or 0))
        return out

    def _read_attributes(self, lines: _Lines, schema: Schema) -> dict[str, np.ndarray]:
        assert self._attr_types is not None
        path = self.anno / "list_attr_img.txt"
        width = len(self._attr_types)
        columns = {
            name: np.flatnonzero(self._attr_types == t)
            for t, name in enumerate(ATTRIBUTE_TYPES, start=1)
            if name in schema.names
        }
        out = {name: np.empty((len(lines.row_of), len(cols)), dtype=np.int8) for name, cols in columns.items()}
        bad: list[tuple[int | None, str]] = []
        chunk: list[tuple[int, int, str]] = []

        def flush() -> None:
            # One NumPy parse per chunk; a chunk that does not parse to exactly width values
            # per line in -1..1 is parsed again line by line to name the bad lines.
            try:
                values = np.fromstring(" ".join(r for _, _, r in chunk), dtype=np.int64, sep=" ")
                ok = values.size == len(chunk) * width and ((values >= -1) & (values <= 1)).all()
            except ValueError:
                ok = False
            if not ok:
                for number, _, rest in chunk:
                    parts = rest.split()
                    if len(parts) != width or any(p not in ("1", "-1", "0") for p in parts):
                        bad.append((number, f"expected {width} values of 1, -1 or 0, got {rest.strip()[:60]!r}..."))
                return
            labels = _ATTR_VALUE[values.reshape(len(chunk), width) + 1]
            rows = np.array([r for _, r, _ in chunk])
            for name, cols in columns.items():
                out[name][rows] = labels[:, cols]

        header = ("image_name", "attribute_labels")
        for item in self._rows(path, header, lines, bad):
            chunk.append(item)
            if len(chunk) == CHUNK:
                flush()
                chunk.clear()
        if chunk:
            flush()
        if bad:
            raise DatasetError.many(path, sorted(bad, key=lambda b: b[0] or 0))
        return out

    def _read_bboxes(self, path: Path, lines: _Lines) -> np.ndarray:
        out = np.zeros((len(lines.row_of), 4), dtype=np.float32)
        bad: list[tuple[int | None, str]] = []
        header = ("image_name", "x_1", "y_1", "x_2", "y_2")
        for number, row, rest in self._rows(path, header, lines, bad):
            try:
                out[row] = parse_box(rest.split(), rest.strip())
            except ValueError as e:
                bad.append((number, str(e)))
        if bad:
            raise DatasetError.many(path, sorted(bad, key=lambda b: b[0] or 0))
        return out
