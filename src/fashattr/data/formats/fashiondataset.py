"""The FashionDataset (ai6126) layout.

```
ROOT/img/*.jpg
ROOT/split/{split}.txt           one image path per line, relative to ROOT
ROOT/split/{split}_attr.txt      optional: one class index per group per line
ROOT/split/{split}_bbox.txt      optional: x1 y1 x2 y2 per line
ROOT/split/list_attr_cloth.txt   optional: class names (else the built-in schema)
```
A split without ``_attr.txt`` is unlabeled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fashattr.data.table import Table
from fashattr.errors import DatasetError
from fashattr.schema import Schema, ai6126_schema, read_attr_cloth


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(path, f"not UTF-8 text: {e}") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # trailing blank lines only; inner ones are errors
        lines.pop()
    return lines


class FashionDatasetReader:
    """Reads the FashionDataset layout under ``root`` (any split name)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.split_dir = self.root / "split"
        if not self.split_dir.is_dir():
            raise DatasetError(self.root, "no split/ folder: not a FashionDataset layout")

    def schema(self) -> Schema:
        names = self.split_dir / "list_attr_cloth.txt"
        return read_attr_cloth(names) if names.exists() else ai6126_schema()

    def splits(self) -> list[str]:
        return sorted(
            p.stem
            for p in self.split_dir.glob("*.txt")
            if not p.stem.endswith(("_attr", "_bbox", "_cate")) and not p.name.startswith("list_")
        )

    def read(self, split: str, allow_missing: bool = False) -> Table:
        """Read one split; raises DatasetError naming every bad line.

        With ``allow_missing``, listed images that are not on disk are left out (with their
        label and box lines) and recorded in ``Table.missing`` instead of raising.
        """
        list_file = self.split_dir / f"{split}.txt"
        if not list_file.exists():
            raise DatasetError(list_file, f"no split {split!r}; splits here: {self.splits()}")
        paths, missing = self._read_paths(list_file, allow_missing)
        labels = self._labels(split, len(paths), self.schema())
        bbox_file = self.split_dir / f"{split}_bbox.txt"
        bboxes = self._read_bbox(bbox_file, len(paths)) if bbox_file.exists() else None
        table = Table(self.root, paths, labels, bboxes, split=split)
        if missing:
            gone = {line - 1 for _, line, _ in missing}
            table = table.subset([i for i in range(len(paths)) if i not in gone])
            table.missing = missing
        return table

    def _labels(self, split: str, n: int, schema: Schema) -> dict[str, np.ndarray] | None:
        """Labels of a split's ``n`` rows, or None when it is unlabeled (overridden by variants)."""
        attr_file = self.split_dir / f"{split}_attr.txt"
        return self._read_attr(attr_file, schema, n) if attr_file.exists() else None

    def _read_paths(self, path: Path, allow_missing: bool = False) -> tuple[list[str], list[tuple[str, int, str]]]:
        problems: list[tuple[int | None, str]] = []
        missing: list[tuple[str, int, str]] = []
        paths: list[str] = []
        first_line: dict[str, int] = {}
        for i, line in enumerate(_read_lines(path), start=1):
            parts = line.split()
            if len(parts) != 1:
                problems.append((i, f"expected one image path, got {line!r}"))
                continue
            rel = parts[0]
            if rel in first_line:
                problems.append((i, f"duplicate entry {rel!r} (first on line {first_line[rel]})"))
                continue
            first_line[rel] = i
            if not (self.root / rel).is_file():
                if allow_missing:
                    missing.append((str(path), i, rel))
                else:
                    problems.append((i, f"listed image {rel!r} not found under {self.root}"))
            paths.append(rel)
        if not paths and not problems:
            problems.append((None, "split file lists no images"))
        if problems:
            raise DatasetError.many(path, problems)
        return paths, missing

    @staticmethod
    def _check_count(path: Path, lines: list[str], expected: int) -> None:
        if len(lines) != expected:
            raise DatasetError(path, f"has {len(lines)} lines but its split file lists {expected} images")

    def _read_attr(self, path: Path, schema: Schema, expected: int) -> dict[str, np.ndarray]:
        lines = _read_lines(path)
        self._check_count(path, lines, expected)
        sizes = [g.num_classes for g in schema.groups]
        values = np.zeros((len(lines), len(sizes)), dtype=np.int64)
        problems: list[tuple[int | None, str]] = []
        for i, line in enumerate(lines, start=1):
            parts = line.split()
            if len(parts) != len(sizes):
                problems.append((i, f"expected {len(sizes)} class indices, got {len(parts)}: {line!r}"))
                continue
            for j, (tok, g) in enumerate(zip(parts, schema.groups, strict=True)):
                try:
                    v = int(tok)
                except ValueError:
                    problems.append((i, f"column {j + 1} ({g.name}): {tok!r} is not an integer"))
                    continue
                if not 0 <= v < g.num_classes:
                    problems.append((i, f"column {j + 1} ({g.name}): class {v} out of range 0..{g.num_classes - 1}"))
                values[i - 1, j] = v
        if problems:
            raise DatasetError.many(path, problems)
        return {g.name: values[:, j].copy() for j, g in enumerate(schema.groups)}

    def _read_bbox(self, path: Path, expected: int) -> np.ndarray:
        lines = _read_lines(path)
        self._check_count(path, lines, expected)
        boxes = np.zeros((len(lines), 4), dtype=np.float32)
        problems: list[tuple[int | None, str]] = []
        for i, line in enumerate(lines, start=1):
            parts = line.split()
            try:
                if len(parts) != 4:
                    raise ValueError(f"expected 4 numbers 'x1 y1 x2 y2', got {line!r}")
                x1, y1, x2, y2 = (int(p) for p in parts)
                if x2 <= x1 or y2 <= y1 or min(x1, y1) < 0:
                    raise ValueError(f"box {line!r} needs 0 <= x1 < x2 and 0 <= y1 < y2")
            except ValueError as e:
                msg = str(e) if "box" in str(e) or "expected" in str(e) else f"non-integer value in {line!r}"
                problems.append((i, msg))
                continue
            boxes[i - 1] = (x1, y1, x2, y2)
        if problems:
            raise DatasetError.many(path, problems)
        return boxes
