"""Table: rows of (path, labels per group, bbox) for one split, and the stratified holdout."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fashattr.schema import Schema

UNKNOWN = -1  # a label that is not known for this row (single: class index; multi: per class)


@dataclass
class Table:
    """One split of a dataset.

    Attributes:
        root: folder the image paths are relative to.
        paths: image paths, in the split file's order.
        labels: per group, ``(N,)`` int64 class indices for single-label groups or ``(N, C)``
            int8 0/1 for multi-label groups, ``UNKNOWN`` where not known; None when unlabeled.
        bboxes: ``(N, 4)`` float32 ``x1 y1 x2 y2``, or None.
        split: the split's name.
    """

    root: Path
    paths: list[str]
    labels: dict[str, np.ndarray] | None = None
    bboxes: np.ndarray | None = None
    split: str = ""
    # (file, line, path) of listed images that were not found; only filled when a reader was
    # asked to allow them (the audit does), otherwise a missing image is an error.
    missing: list[tuple[str, int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def labeled(self) -> bool:
        return self.labels is not None

    def file(self, i: int) -> Path:
        return self.root / self.paths[i]

    def files(self) -> list[Path]:
        return [self.root / p for p in self.paths]

    def subset(self, indices: np.ndarray | list[int], split: str | None = None) -> Table:
        """The rows at ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return Table(
            root=self.root,
            paths=[self.paths[i] for i in idx],
            labels=None if self.labels is None else {g: v[idx] for g, v in self.labels.items()},
            bboxes=None if self.bboxes is None else self.bboxes[idx],
            split=split if split is not None else self.split,
        )

    def class_counts(self, schema: Schema) -> dict[str, np.ndarray]:
        """Per group, how many rows carry each class (unknown labels not counted)."""
        if self.labels is None:
            raise ValueError(f"split {self.split!r} is unlabeled")
        counts = {}
        for g in schema.groups:
            y = self.labels[g.name]
            if g.kind == "single":
                counts[g.name] = np.bincount(y[y >= 0], minlength=g.num_classes)
            else:
                counts[g.name] = (y == 1).sum(axis=0)
        return counts


def parse_box(values: Sequence[str], shown: str | None = None) -> tuple[float, float, float, float]:
    """The box ``x1 y1 x2 y2`` in ``values``, by the one rule every reader applies.

    A box is four finite numbers (integers or decimals) with ``0 <= x1 < x2`` and
    ``0 <= y1 < y2``, in pixels of the image as stored.

    Args:
        values: the four cells or tokens.
        shown: how the value appears in its file, for the message (default: the tokens joined by spaces).

    Raises:
        ValueError: a message naming the value and the rule it breaks.
    """
    text = " ".join(values) if shown is None else shown
    if len(values) != 4:
        raise ValueError(f"expected 4 numbers 'x1 y1 x2 y2', got {text!r}")
    try:
        x1, y1, x2, y2 = (float(v) for v in values)
    except ValueError:
        raise ValueError(f"box {text!r} is not 4 numbers") from None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ValueError(f"box {text!r} is not 4 finite numbers")
    if not (0 <= x1 < x2 and 0 <= y1 < y2):
        raise ValueError(f"box {text!r} needs 0 <= x1 < x2 and 0 <= y1 < y2")
    return x1, y1, x2, y2


def drop_missing(table: Table, missing: list[tuple[str, int, str]], rows: Iterable[int]) -> Table:
    """``table`` without ``rows`` (those of listed images not on disk), recording them as ``missing``.

    Args:
        table: every listed row, in list order.
        missing: (file, line, path) of each image not found, for ``Table.missing``.
        rows: the row indices of those images in ``table``.
    """
    gone = set(rows)
    if not gone:
        return table
    kept = table.subset([i for i in range(len(table)) if i not in gone])
    kept.missing = list(missing)
    return kept


def row_labels(table: Table, schema: Schema, i: int) -> dict[str, str] | None:
    """Row ``i``'s labels as class names (multi-label: joined with |); None when unlabeled."""
    if table.labels is None:
        return None
    out = {}
    for g in schema.groups:
        y = table.labels[g.name][i]
        if g.kind == "single":
            out[g.name] = g.classes[y] if y >= 0 else "?"
        else:
            out[g.name] = "|".join(c for c, v in zip(g.classes, y, strict=True) if v == 1)
    return out


def stratified_holdout(table: Table, schema: Schema, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split a labeled table's row indices into (train, holdout), stratified over all groups.

    Iterative stratification (Sechidis et al., 2011): classes are visited rarest first; each
    still-unassigned row is assigned when its rarest class is visited, so that every class
    gets about ``fraction`` of its rows in the holdout, and every class with at least 2 rows
    has at least one on each side.

    Returns:
        Sorted int64 index arrays (train, holdout).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    if table.labels is None:
        raise ValueError(f"split {table.split!r} is unlabeled; a holdout needs labels")
    rng = np.random.default_rng(seed)
    n = len(table)
    members: list[np.ndarray] = []
    for g in schema.groups:
        y = table.labels[g.name]
        for c in range(g.num_classes):
            rows = np.flatnonzero(y == c) if g.kind == "single" else np.flatnonzero(y[:, c] == 1)
            if len(rows):
                members.append(rows)
    side = np.full(n, -1, dtype=np.int8)  # -1 free, 0 train, 1 holdout
    for rows in sorted(members, key=len):  # stable: equal sizes keep schema order
        want = round(fraction * len(rows))
        if len(rows) >= 2:
            want = min(max(want, 1), len(rows) - 1)
        need = want - int((side[rows] == 1).sum())
        free = rng.permutation(rows[side[rows] == -1])
        take = max(0, min(need, len(free)))
        side[free[:take]] = 1
        side[free[take:]] = 0
    rest = np.flatnonzero(side == -1)  # rows with no known label at all
    if len(rest):
        side[rest] = (rng.random(len(rest)) < fraction).astype(np.int8)
    return np.flatnonzero(side == 0), np.flatnonzero(side == 1)


def nested_holdouts(
    table: Table, schema: Schema, test_fraction: float, test_seed: int, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a labeled table's row indices into (train, selection holdout, test holdout).

    The test holdout is carved first, from every row, with its own seed, so it depends on
    neither the selection holdout's fraction nor its seed; the selection holdout is then
    ``fraction`` of the rows that remain. Both are stratified (:func:`stratified_holdout`).
    ``test_fraction`` 0 gives an empty test holdout and exactly the split of
    ``stratified_holdout(table, schema, fraction, seed)``.

    Returns:
        Sorted int64 index arrays into ``table`` (train, holdout, test), disjoint, covering every row.
    """
    if test_fraction == 0.0:
        train, holdout = stratified_holdout(table, schema, fraction, seed)
        return train, holdout, np.zeros(0, dtype=np.int64)
    rest, test = stratified_holdout(table, schema, test_fraction, test_seed)
    train, holdout = stratified_holdout(table.subset(rest), schema, fraction, seed)
    return rest[train], rest[holdout], test
