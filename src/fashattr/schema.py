"""Schema: the ordered attribute groups every stage shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from fashattr.errors import DatasetError

Kind = Literal["single", "multi"]
KINDS: tuple[str, ...] = ("single", "multi")

# The FashionDataset (ai6126) groups in file order; class index = position in its group.
AI6126_GROUPS: dict[str, tuple[str, ...]] = {
    "pattern": ("floral", "graphic", "striped", "embroidered", "pleated", "solid", "lattice"),
    "sleeve": ("long_sleeve", "short_sleeve", "sleeveless"),
    "length": ("maxi_length", "mini_length", "no_dress"),
    "neckline": ("crew_neckline", "v_neckline", "square_neckline", "no_neckline"),
    "fabric": ("denim", "chiffon", "cotton", "leather", "faux", "knit"),
    "fit": ("tight", "loose", "conventional"),
}


@dataclass(frozen=True)
class Group:
    """One attribute group: a name, ordered class names and a kind.

    ``single`` groups carry exactly one class per image (softmax); ``multi`` groups
    carry any subset of their classes (sigmoid per class).
    """

    name: str
    classes: tuple[str, ...]
    kind: Kind = "single"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a group needs a non-empty name")
        if len(self.classes) < 2 and self.kind == "single":
            raise ValueError(f"group {self.name!r} needs at least 2 classes, got {self.classes}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"group {self.name!r} repeats a class name: {self.classes}")
        if self.kind not in KINDS:
            raise ValueError(f"group {self.name!r}: unknown kind {self.kind!r}; choose from {KINDS}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class Schema:
    """An ordered list of groups; the one object readers, models, losses and writers share."""

    groups: tuple[Group, ...]

    def __post_init__(self) -> None:
        names = [g.name for g in self.groups]
        if not names:
            raise ValueError("a schema needs at least one group")
        if len(set(names)) != len(names):
            raise ValueError(f"schema repeats a group name: {names}")

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.groups]

    @property
    def num_classes(self) -> int:
        return sum(g.num_classes for g in self.groups)

    def __getitem__(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"no group {name!r}; groups are {self.names}")

    def to_dict(self) -> dict:
        return {"groups": [{"name": g.name, "kind": g.kind, "classes": list(g.classes)} for g in self.groups]}

    @classmethod
    def from_dict(cls, data: dict) -> Schema:
        try:
            groups = tuple(
                Group(name=str(g["name"]), classes=tuple(str(c) for c in g["classes"]), kind=g.get("kind", "single"))
                for g in data["groups"]
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"a schema is {{groups: [{{name, classes, kind}}, ...]}}; missing {e}") from e
        return cls(groups)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        return cls.from_dict(yaml.safe_load(Path(path).read_text()))


def ai6126_schema() -> Schema:
    """The built-in FashionDataset schema: 6 groups, 26 classes, in file order."""
    return Schema(tuple(Group(name, classes) for name, classes in AI6126_GROUPS.items()))


def read_attr_cloth(path: str | Path, group_names: list[str] | None = None) -> Schema:
    """Read ``list_attr_cloth.txt``: a count line, a header line, then ``name  group`` lines.

    Groups are numbered 1..G in the file; they take the built-in ai6126 names when there
    are six, else ``group1``.. unless ``group_names`` is given.
    """
    path = Path(path)
    try:
        # utf-8-sig: a byte-order mark from a Windows editor would otherwise spoil the count line.
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise DatasetError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    if len(lines) < 2:
        raise DatasetError(path, "expected a count line and a header line")
    try:
        count = int(lines[0].split()[0])
    except (ValueError, IndexError):
        raise DatasetError(path, f"first line should be the class count, got {lines[0]!r}", line=1) from None
    rows = [(i + 3, ln.split()) for i, ln in enumerate(lines[2:]) if ln.strip()]
    if len(rows) != count:
        raise DatasetError(path, f"count line says {count} classes but {len(rows)} follow", line=1)
    by_group: dict[int, list[str]] = {}
    for lineno, parts in rows:
        if len(parts) != 2 or not parts[1].isdigit():
            raise DatasetError(path, f"expected 'name group', got {' '.join(parts)!r}", line=lineno)
        by_group.setdefault(int(parts[1]), []).append(parts[0])
    ids = sorted(by_group)
    if ids != list(range(1, len(ids) + 1)):
        raise DatasetError(path, f"group numbers should be 1..{len(ids)}, got {ids}")
    if group_names is None:
        group_names = list(AI6126_GROUPS) if len(ids) == len(AI6126_GROUPS) else [f"group{i}" for i in ids]
    if len(group_names) != len(ids):
        raise DatasetError(path, f"{len(ids)} groups in file but {len(group_names)} names given")
    return Schema(tuple(Group(n, tuple(by_group[i])) for n, i in zip(group_names, ids, strict=True)))
