"""What a labelled table holds before anyone trains on it: classes and their counts, empty cells, rare classes and
likely typos (a rare class a small edit away from a common one: ``florall`` beside ``floral``).

``data check`` prints these for any layout; ``data init`` (cli) uses them to write a config whose classes are
declared, so that a typo left in the labels stops training with its file, line and closest class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fashattr.data.table import UNKNOWN, Table
from fashattr.schema import Schema

MIN_COUNT = 5  # below this many images a class is flagged: too few to learn, and to measure
TYPO_RATIO = 10  # a typo's class is at least this many times rarer than the class it resembles


def _normal(name: str) -> str:
    """A class name with letter case, spaces, hyphens and underscores made alike ("Long-sleeve" = "long_sleeve")."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and swaps of neighbours, each 1
    (``kint`` is one swap from ``knit``, where difflib's ratio sees little alike)."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def close_names(a: str, b: str) -> bool:
    """Two class names one typo apart: alike up to case and separators, or within one edit per four letters."""
    x, y = _normal(a), _normal(b)
    return x == y or edit_distance(x, y) <= max(1, min(len(x), len(y)) // 4)


def likely_typos(counts: dict[str, int]) -> list[dict[str, Any]]:
    """Rare classes whose names are a small edit away from a much more common class of the same group.

    A pair is flagged when the names are alike (:func:`close_names`) and the rarer class has at most
    1 / ``TYPO_RATIO`` of the other's images (or, in a small table, 1 or 2 images beside at least 4 or 6); names
    written alike (``Floral``, ``floral``) are flagged whatever their counts. Two common classes that look alike
    (``tight``, ``light``) are not typos of each other.
    """
    found = []
    by_count = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    for k, (rare, n_rare) in enumerate(by_count):
        for common, n_common in by_count[:k]:  # only classes at least as common, the most common first
            written_twice = _normal(rare) == _normal(common)  # "Floral" and "floral": whatever the counts
            much_rarer = n_rare * TYPO_RATIO <= n_common or (n_rare <= 2 and n_common >= 2 * n_rare + 2)
            if not written_twice and not (much_rarer and close_names(rare, common)):
                continue
            found.append({"class": rare, "count": n_rare, "like": common, "like_count": n_common})
            break  # the most common look-alike is the one to name
    return found


@dataclass
class GroupProfile:
    """One group's labels over the rows profiled."""

    name: str
    kind: str
    counts: dict[str, int]
    empty: int  # rows whose cell for this group is empty (an unknown label)
    rows: int
    rare: list[str] = field(default_factory=list)  # classes with 0 < count < min_count
    unused: list[str] = field(default_factory=list)  # declared classes no row carries
    typos: list[dict[str, Any]] = field(default_factory=list)


def flag(p: GroupProfile, min_count: int = MIN_COUNT) -> GroupProfile:
    """``p`` with its rare, unused and likely-typo classes found from its counts."""
    p.rare = [c for c, n in p.counts.items() if 0 < n < min_count]
    p.unused = [c for c, n in p.counts.items() if n == 0]
    p.typos = likely_typos({c: n for c, n in p.counts.items() if n})
    return p


def profile_table(table: Table, schema: Schema, min_count: int = MIN_COUNT) -> list[GroupProfile]:
    """Per group: images per class, empty cells, classes below ``min_count``, unused classes and likely typos."""
    if table.labels is None:
        return []
    counts = table.class_counts(schema)
    out = []
    for g in schema.groups:
        labels = table.labels[g.name]
        empty = int(np.sum(labels == UNKNOWN)) if g.kind == "single" else int(np.sum(np.all(labels == UNKNOWN, 1)))
        per_class = {c: int(n) for c, n in zip(g.classes, counts[g.name], strict=True)}
        out.append(flag(GroupProfile(g.name, g.kind, per_class, empty, len(table)), min_count))
    return out


def _images(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"


def profile_lines(profiles: list[GroupProfile], min_count: int = MIN_COUNT) -> list[str]:
    """The terminal lines of a profile: classes with counts, then what deserves a look, group by group."""
    lines = []
    for p in profiles:
        shown = ", ".join(f"{c} {n}" for c, n in sorted(p.counts.items(), key=lambda kv: -kv[1]))
        lines.append(f"{p.name} ({p.kind}, {len(p.counts)} classes): {shown}")
        if p.empty:
            lines.append(f"  empty cells: {p.empty} of {p.rows} rows ({p.empty / max(p.rows, 1):.0%}), unknown labels")
        for t in p.typos:
            lines.append(
                f"  likely typo: {t['class']!r} ({_images(t['count'])}) looks like {t['like']!r} ({t['like_count']})"
            )
        typo_names = {t["class"] for t in p.typos}
        rare = [c for c in p.rare if c not in typo_names]
        if rare:
            lines.append(f"  fewer than {min_count} images: " + ", ".join(f"{c} ({p.counts[c]})" for c in rare))
        if p.unused:
            lines.append(f"  declared but never labelled: {', '.join(p.unused)}")
    return lines


def profile_json(profiles: list[GroupProfile]) -> dict[str, Any]:
    """The profile as report.json keeps it."""
    return {
        p.name: {
            "kind": p.kind,
            "rows": p.rows,
            "empty": p.empty,
            "counts": p.counts,
            "rare": p.rare,
            "unused": p.unused,
            "likely_typos": p.typos,
        }
        for p in profiles
    }
