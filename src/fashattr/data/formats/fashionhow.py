"""FASHION-HOW sub-task CSVs: one file per split, images under a root folder.

Sub-task 1: ``image_name,BBox_xmin,BBox_ymin,BBox_xmax,BBox_ymax,Daily,Gender,Embellishment``;
sub-task 2: the same with ``Color`` (18 classes). Labels are 0-based indices; class names are
optional (``classes: {Color: [...]}``). Sub-task 2's metric, the mean over classes of per-class
recall, is the ``Color`` group's average per-class accuracy in fashattr's metrics.

Options (``data.reader_options``): ``splits`` (``{name: csv path relative to root}``, default
``train.csv`` / ``val.csv`` / ``test.csv`` where they exist), ``classes``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from fashattr.data.formats.generic import CsvReader, check_options
from fashattr.data.table import Table
from fashattr.errors import DatasetError
from fashattr.schema import Group, Schema

BBOX = ["BBox_xmin", "BBox_ymin", "BBox_xmax", "BBox_ymax"]
KNOWN_SIZES = {"Color": 18}  # the challenge's fixed class counts, where the data may not show them all


class FashionHowReader:
    """FASHION-HOW sub-task 1 or 2; the groups are the CSV's label columns."""

    OPTIONS: ClassVar[dict[str, Any]] = {"splits": None, "classes": {}}

    def __init__(self, root: str | Path, options: dict[str, Any] | None = None) -> None:
        self.root = Path(root)
        opt = check_options(options or {}, self.OPTIONS, "fashionhow")
        splits = opt["splits"] or {s: f"{s}.csv" for s in ("train", "val", "test") if (self.root / f"{s}.csv").exists()}
        if not splits:
            raise DatasetError(
                self.root, "no train.csv / val.csv / test.csv here; name the files in reader_options.splits"
            )
        self.files = {name: self.root / rel for name, rel in splits.items()}
        for f in self.files.values():
            if not f.is_file():
                raise DatasetError(f, "split CSV not found")
        base = {"path_column": "image_name", "split_column": "", "bbox_columns": BBOX, "image_root": str(self.root)}
        self.readers = {name: CsvReader(f, base) for name, f in self.files.items()}  # each file read once
        self._schema = self._common_schema(opt["classes"])
        for reader in self.readers.values():
            reader.set_classes({g.name: list(g.classes) for g in self._schema.groups})

    def _common_schema(self, names: dict[str, list[str]]) -> Schema:
        """One schema for every split: class count = the largest index seen in any split + 1
        (or the challenge's fixed count, or the given names)."""
        largest: dict[str, int] = {}
        for reader in self.readers.values():
            for g in reader.schema().groups:
                largest[g.name] = max(largest.get(g.name, 0), g.num_classes)
        groups = []
        for name, n in largest.items():
            classes = names.get(name) or [str(k) for k in range(max(n, KNOWN_SIZES.get(name, 0)))]
            groups.append(Group(name, tuple(str(c) for c in classes)))
        return Schema(tuple(groups))

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
