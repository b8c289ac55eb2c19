"""DeepFashion fine-grained attribute variant (the layout the ai6126 challenge set was cut from).

The release ("Fine-grained Attribute Prediction") as downloaded:

```
ROOT/Anno_fine/{split}.txt          image path per line, relative to ROOT/Img (img/WOMEN/...)
ROOT/Anno_fine/{split}_attr.txt     optional: 26 multi-hot values (0/1) per line
ROOT/Anno_fine/{split}_cate.txt     optional: one category id per line (1-based)
ROOT/Anno_fine/{split}_bbox.txt     optional: x1 y1 x2 y2 per line
ROOT/Anno_fine/{split}_landmards.txt  (sic) landmarks: not read
ROOT/Anno_fine/list_attr_cloth.txt  optional: attribute names and their group (1..6)
ROOT/Anno_fine/list_category_cloth.txt  optional: category names (count line, header, name + type)
ROOT/Img/img/...                    the images (or ROOT/img/... where an archive was unpacked there)
```
or the same files in ``ROOT/split/`` with paths relative to ROOT (the FashionDataset's shape).
The attributes become one multi-label group per attribute type (the ai6126 names when there
are six), the categories one single-label group ``category``. A split with neither labels
file is unlabeled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fashattr.data.formats.fashiondataset import FashionDatasetReader
from fashattr.data.formats.lists import Problems, read_lines
from fashattr.data.table import UNKNOWN
from fashattr.errors import DatasetError
from fashattr.schema import AI6126_GROUPS, Group, Schema, read_attr_cloth

N_ATTRIBUTES = 26


class DeepFashionFineReader(FashionDatasetReader):
    """Same list and box files as the FashionDataset layout; multi-hot attributes plus categories."""

    FORMAT = "DeepFashion fine-grained (deepfashion-fine)"

    def _locate(self) -> tuple[Path, list[Path]]:
        release = self.root / "Anno_fine"
        if release.is_dir():
            # The release's lists name img/..., relative to Img/; some copies unpack img/ at the root.
            return release, [self.root / "Img", self.root]
        if (self.root / "split").is_dir():
            return self.root / "split", [self.root]
        raise DatasetError(
            self.root, f"neither Anno_fine/ (the release as downloaded) nor split/ here: not a {self.FORMAT} layout"
        )

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
        lines = read_lines(path)
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
        width = sum(g.num_classes for g in attr_groups)
        # Both files are read before either one's problems are raised, so one error lists both.
        problems = Problems()
        hot = problems.run(lambda: self._multi_hot(attr_file, n, width)) if attr_file.exists() else None
        category_group = schema["category"]
        category = problems.run(lambda: self._category(cate_file, n, category_group)) if cate_file.exists() else None
        problems.raise_if_any()
        labels: dict[str, np.ndarray] = {}
        start = 0
        for g in attr_groups:
            unknown = np.full((n, g.num_classes), UNKNOWN, np.int8)
            labels[g.name] = unknown if hot is None else hot[:, start : start + g.num_classes].copy()
            start += g.num_classes
        labels["category"] = np.full(n, UNKNOWN, np.int64) if category is None else category
        return labels

    def _multi_hot(self, path: Path, n: int, width: int) -> np.ndarray:
        lines = read_lines(path)
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
        lines = read_lines(path)
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
