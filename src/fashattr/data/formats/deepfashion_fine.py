"""DeepFashion fine-grained attribute variant (the layout the ai6126 challenge set was cut from).

```
ROOT/split/{split}.txt           image path per line, relative to ROOT
ROOT/split/{split}_attr.txt      optional: 26 multi-hot values (0/1) per line
ROOT/split/{split}_cate.txt      optional: one category id per line (1-based)
ROOT/split/{split}_bbox.txt      optional: x1 y1 x2 y2 per line
ROOT/split/list_attr_cloth.txt   optional: attribute names and their group (1..6)
ROOT/split/list_category_cloth.txt  optional: category names (count line, header, name + type)
```
The attributes become one multi-label group per attribute type (the ai6126 names when there
are six), the categories one single-label group ``category``. A split with neither labels
file is unlabeled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fashattr.data.formats.fashiondataset import FashionDatasetReader, _read_lines
from fashattr.errors import DatasetError
from fashattr.schema import AI6126_GROUPS, Group, Schema, read_attr_cloth

N_ATTRIBUTES = 26


class DeepFashionFineReader(FashionDatasetReader):
    """Same list and box files as the FashionDataset layout; multi-hot attributes plus categories."""

    def schema(self) -> Schema:
        names = self.split_dir / "list_attr_cloth.txt"
        if names.exists():
            attr = read_attr_cloth(names)
        else:
            attr = Schema(tuple(Group(n, c) for n, c in AI6126_GROUPS.items()))
        groups = [Group(g.name, g.classes, "multi") for g in attr.groups]
        return Schema((*groups, Group("category", self._categories())))

    def _categories(self) -> tuple[str, ...]:
        path = self.split_dir / "list_category_cloth.txt"
        if not path.exists():
            return tuple(str(k) for k in range(1, 51))  # DeepFashion's 50 category ids
        lines = _read_lines(path)
        count = lines[0].split()[0] if lines and lines[0].split() else ""
        if len(lines) < 2 or not count.isdigit():
            raise DatasetError(path, f"expected a count line and a header line, got {lines[:2]}", 1)
        names = tuple(ln.split()[0] for ln in lines[2:] if ln.strip())
        if int(count) != len(names):
            raise DatasetError(path, f"count line says {count} categories but {len(names)} follow", 1)
        return names

    def _labels(self, split: str, n: int, schema: Schema) -> dict[str, np.ndarray] | None:
        attr_file = self.split_dir / f"{split}_attr.txt"
        cate_file = self.split_dir / f"{split}_cate.txt"
        if not attr_file.exists() and not cate_file.exists():
            return None
        attr_groups = [g for g in schema.groups if g.kind == "multi"]
        labels: dict[str, np.ndarray] = {}
        if attr_file.exists():
            hot = self._multi_hot(attr_file, n, sum(g.num_classes for g in attr_groups))
            start = 0
            for g in attr_groups:
                labels[g.name] = hot[:, start : start + g.num_classes].copy()
                start += g.num_classes
        else:
            labels.update({g.name: np.full((n, g.num_classes), -1, np.int8) for g in attr_groups})
        category = schema["category"]
        labels["category"] = self._category(cate_file, n, category) if cate_file.exists() else np.full(n, -1)
        return labels

    def _multi_hot(self, path: Path, n: int, width: int) -> np.ndarray:
        lines = _read_lines(path)
        self._check_count(path, lines, n)
        out = np.zeros((n, width), np.int8)
        problems: list[tuple[int | None, str]] = []
        for i, line in enumerate(lines, start=1):
            parts = line.split()
            if len(parts) != width or any(p not in ("0", "1") for p in parts):
                problems.append((i, f"expected {width} values of 0 or 1, got {line[:80]!r}"))
                continue
            out[i - 1] = [int(p) for p in parts]
        if problems:
            raise DatasetError.many(path, problems)
        return out

    def _category(self, path: Path, n: int, group: Group) -> np.ndarray:
        lines = _read_lines(path)
        self._check_count(path, lines, n)
        out = np.zeros(n, np.int64)
        problems: list[tuple[int | None, str]] = []
        for i, line in enumerate(lines, start=1):
            tok = line.strip()
            if not tok.isdigit() or not 1 <= int(tok) <= group.num_classes:
                problems.append((i, f"category {tok!r} is not an id in 1..{group.num_classes}"))
                continue
            out[i - 1] = int(tok) - 1
        if problems:
            raise DatasetError.many(path, problems)
        return out
