"""The FashionDataset (ai6126) layout.

```
ROOT/img/*.jpg
ROOT/split/{split}.txt           one image path per line, relative to ROOT
ROOT/split/{split}_attr.txt      optional: one class index per group per line
ROOT/split/{split}_bbox.txt      optional: x1 y1 x2 y2 per line
ROOT/split/list_attr_cloth.txt   optional: class names (else the built-in schema)
```
Later public copies put a header line on these files (``picture_filename``; ``category1 ... category6``): a
first line that is plainly a header (a list line naming no image file; label or box tokens that are not numbers)
is skipped in every file. A label header must not contradict the schema (a group's name in another place, or
another number of columns); other names, such as ``category1``, are accepted with a note in the log.

A split without ``_attr.txt`` is unlabeled. A split is a ``{split}.txt`` file; the other files
of the folder (landmarks, ``list_*`` name lists, anything not ``.txt``) are not splits and are
ignored (listed once at debug level).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fashattr.data.formats.lists import Problems, find_image_root, not_found, read_lines
from fashattr.data.table import Table, drop_missing, parse_box
from fashattr.errors import DatasetError
from fashattr.schema import Schema, ai6126_schema, read_attr_cloth

log = logging.getLogger(__name__)

# Per-split files that are not splits: the ones read here, and the landmark files that the
# AI6126 copy and the fine-grained release ship ("landmards" is the release's own spelling).
READ_SUFFIXES = ("_attr", "_bbox", "_cate")
SPLIT_SUFFIXES = (*READ_SUFFIXES, "_landmarks", "_landmards")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def _is_int(token: str) -> bool:
    return token.removeprefix("-").isdigit()


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def header_offset(lines: list[str], is_header: bool) -> tuple[list[str], int]:
    """``lines`` without a header line, and the 1-based file line number of the first line kept."""
    return (lines[1:], 2) if lines and is_header else (lines, 1)


class FashionDatasetReader:
    """Reads the FashionDataset layout under ``root`` (any split name)."""

    FORMAT = "FashionDataset (ai6126)"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        # The folder of the lists, and the folders their image paths may be relative to (in order).
        self.split_dir, self.image_roots = self._locate()
        self._splits: list[str] | None = None

    def _locate(self) -> tuple[Path, list[Path]]:
        if not (self.root / "split").is_dir():
            raise DatasetError(self.root, f"no split/ folder: not a {self.FORMAT} layout{self._hint()}")
        return self.root / "split", [self.root]

    def _hint(self) -> str:
        """Which format the folder at ``root`` looks like instead, for the error."""
        if self.root.is_file():
            return (
                f"; {self.root.name} is a file: a CSV or Parquet table of paths and labels is format csv (--format csv)"
            )
        if (self.root / "Anno_fine").is_dir():
            return "; Anno_fine/ here is the DeepFashion fine-grained release: use data.format deepfashion-fine"
        if (self.root / "Anno").is_dir():
            return "; Anno/ here is the DeepFashion benchmark: use data.format deepfashion"
        return ""

    def schema(self) -> Schema:
        names = self.split_dir / "list_attr_cloth.txt"
        return read_attr_cloth(names) if names.exists() else ai6126_schema()

    def splits(self) -> list[str]:
        if self._splits is None:
            files = sorted(p for p in self.split_dir.iterdir() if p.is_file())
            lists = [p for p in files if self._is_split(p)]
            ignored = [p.name for p in files if p not in lists and not self._is_known(p)]
            if ignored:
                log.debug("%s: not split lists, ignored: %s", self.split_dir, ignored)
            self._splits = [p.stem for p in lists]
        return self._splits

    def _is_split(self, path: Path) -> bool:
        return path.suffix == ".txt" and not path.stem.startswith("list_") and not path.stem.endswith(SPLIT_SUFFIXES)

    def _is_known(self, path: Path) -> bool:
        """A file of the layout that is read per split or for the schema (not worth a log line)."""
        return path.suffix == ".txt" and (path.stem.startswith("list_") or path.stem.endswith(READ_SUFFIXES))

    def read(self, split: str, allow_missing: bool = False) -> Table:
        """Read one split; raises DatasetError naming every bad line of every file it reads.

        With ``allow_missing``, listed images that are not on disk are left out (with their
        label and box lines) and recorded in ``Table.missing`` instead of raising.
        """
        list_file = self.split_dir / f"{split}.txt"
        if not list_file.exists() or split not in self.splits():
            raise DatasetError(list_file, f"no split {split!r}; splits here: {self.splits()}")
        problems = Problems()
        lines = self._list_lines(list_file)
        header = int(bool(lines) and lines[0] is None)  # the file line of paths[i] is i + 1 + header
        paths = self._read_paths(list_file, lines, problems)
        first = next((p for p in paths if p), None)
        root = find_image_root(self.image_roots, first) if first else None
        gone = [i for i, p in enumerate(paths) if p and not (root is not None and (root / p).is_file())]
        missing = [(str(list_file), i + 1 + header, paths[i]) for i in gone]
        if not allow_missing:
            problems.add(list_file, [(ln, not_found(p, root, self.image_roots)) for _, ln, p in missing])
        n = len(paths)
        schema = self.schema()
        labels = problems.run(lambda: self._labels(split, n, schema))
        bbox_file = self.split_dir / f"{split}_bbox.txt"
        bboxes = problems.run(lambda: self._read_bbox(bbox_file, n)) if bbox_file.exists() else None
        problems.raise_if_any()
        table = Table(root or self.image_roots[0], paths, labels, bboxes, split=split)
        return drop_missing(table, missing, gone)

    def read_images(self, split: str, allow_missing: bool = False) -> Table:
        """The split's listed images without labels or boxes, each name once.

        ``data check`` audits these when ``read`` fails on a label or box file, so one bad label
        line does not hide the split's missing, unreadable or duplicate images. Malformed list
        lines are left out here; ``read`` names them.
        """
        list_file = self.split_dir / f"{split}.txt"
        if not list_file.exists() or split not in self.splits():
            raise DatasetError(list_file, f"no split {split!r}; splits here: {self.splits()}")
        lines = self._list_lines(list_file)
        header = int(bool(lines) and lines[0] is None)
        listed = self._read_paths(list_file, lines, Problems())
        first_line: dict[str, int] = {}
        for i, rel in enumerate(listed, start=1 + header):
            if rel:
                first_line.setdefault(rel, i)
        paths = list(first_line)
        first = next(iter(paths), None)
        root = find_image_root(self.image_roots, first) if first else None
        gone = [i for i, rel in enumerate(paths) if not (root is not None and (root / rel).is_file())]
        missing = [(str(list_file), first_line[paths[i]], paths[i]) for i in gone]
        if missing and not allow_missing:
            raise DatasetError.many(list_file, [(ln, not_found(rel, root, self.image_roots)) for _, ln, rel in missing])
        table = Table(root or self.image_roots[0], paths, None, None, split=split)
        return drop_missing(table, missing, gone)

    def _list_lines(self, list_file: Path) -> list[str | None]:
        """The split file's lines; a header line (one token that is no image: no image suffix, no such file under
        any image folder) becomes None, so every later line keeps its own number."""
        lines: list[str | None] = list(read_lines(list_file))
        first = (lines[0] or "").split() if lines else []
        named = len(first) == 1 and not first[0].lower().endswith(IMAGE_SUFFIXES)
        if named and not any((root / first[0]).is_file() for root in self.image_roots):
            log.info("%s: line 1 %r names no image: read as a header line", list_file, first[0])
            lines[0] = None
        return lines

    def _labels(self, split: str, n: int, schema: Schema) -> dict[str, np.ndarray] | None:
        """Labels of a split's ``n`` rows, or None when it is unlabeled (overridden by variants)."""
        attr_file = self.split_dir / f"{split}_attr.txt"
        return self._read_attr(attr_file, schema, n) if attr_file.exists() else None

    @staticmethod
    def _read_paths(path: Path, lines: list[str | None], problems: Problems) -> list[str]:
        """One entry per line (so the label files' line counts are checked against every line);
        a malformed line's entry is empty and its problem recorded. A None line is a header: no entry."""
        found: list[tuple[int | None, str]] = []
        paths: list[str] = []
        first_line: dict[str, int] = {}
        for i, line in enumerate(lines, start=1):
            if line is None:
                continue
            parts = line.split()
            if len(parts) != 1:
                found.append((i, f"expected one image path, got {line!r}"))
                paths.append("")
                continue
            rel = parts[0]
            if rel in first_line:
                found.append((i, f"duplicate entry {rel!r} (first on line {first_line[rel]})"))
            first_line.setdefault(rel, i)
            paths.append(rel)
        if not paths:
            found.append((None, "split file lists no images"))
        problems.add(path, found)
        return paths

    @staticmethod
    def _check_count(path: Path, lines: list[str], expected: int) -> None:
        if len(lines) != expected:
            raise DatasetError(path, f"has {len(lines)} lines but its split file lists {expected} images")

    def _read_attr(self, path: Path, schema: Schema, expected: int) -> dict[str, np.ndarray]:
        lines = read_lines(path)
        header = bool(lines) and bool(lines[0].split()) and not any(_is_int(t) for t in lines[0].split())
        if header:
            self._check_header(path, lines[0], schema)
        lines, start = header_offset(lines, header)
        self._check_count(path, lines, expected)
        sizes = [g.num_classes for g in schema.groups]
        values = np.zeros((len(lines), len(sizes)), dtype=np.int64)
        problems: list[tuple[int | None, str]] = []
        for i, line in enumerate(lines, start=start):
            parts = line.split()
            if len(parts) != len(sizes):
                problems.append((i, f"expected {len(sizes)} class indices, got {len(parts)}: {line!r}"))
                continue
            for j, (tok, g) in enumerate(zip(parts, schema.groups, strict=True)):
                if not _is_int(tok):
                    problems.append((i, f"column {j + 1} ({g.name}): {tok!r} is not an integer"))
                    continue
                v = int(tok)
                if not 0 <= v < g.num_classes:
                    problems.append((i, f"column {j + 1} ({g.name}): class {v} out of range 0..{g.num_classes - 1}"))
                values[i - start, j] = v
        if problems:
            raise DatasetError.many(path, problems)
        return {g.name: values[:, j].copy() for j, g in enumerate(schema.groups)}

    @staticmethod
    def _check_header(path: Path, line: str, schema: Schema) -> None:
        """A header line must not contradict the schema: one name per group, and no group's name in another
        group's place (letter case aside). Other names (``category1``) are the columns' own: said in the log."""
        names = line.split()
        groups = [g.lower() for g in schema.names]
        if len(names) != len(groups):
            raise DatasetError(
                path,
                f"header line names {len(names)} columns {names}, but the schema has {len(groups)} groups "
                f"{schema.names}",
                1,
            )
        for k, name in enumerate(names):
            if name.lower() in groups and name.lower() != groups[k]:
                raise DatasetError(
                    path,
                    f"header column {k + 1} is {name!r}, but the schema's group {k + 1} is "
                    f"{schema.names[k]!r} ({name!r} is group {groups.index(name.lower()) + 1})",
                    1,
                )
        if [n.lower() for n in names] != groups:
            log.info("%s: header line %s read as the schema's groups %s, in that order", path, names, schema.names)

    def _read_bbox(self, path: Path, expected: int) -> np.ndarray:
        lines = read_lines(path)
        tokens = lines[0].split() if lines else []
        lines, start = header_offset(lines, bool(tokens) and not any(_is_number(t) for t in tokens))
        self._check_count(path, lines, expected)
        boxes = np.zeros((len(lines), 4), dtype=np.float32)
        problems: list[tuple[int | None, str]] = []
        for i, line in enumerate(lines, start=start):
            try:
                boxes[i - start] = parse_box(line.split(), line)
            except ValueError as e:
                problems.append((i, str(e)))
        if problems:
            raise DatasetError.many(path, problems)
        return boxes
