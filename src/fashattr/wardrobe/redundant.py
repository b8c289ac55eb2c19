"""Redundant items: the "three pink blouses" question.

Two kinds of group, identical first:

- **identical**: items whose photos are one content (the same sha256: one photo added twice under two names).
- **near**: items that agree on every attribute of ``by`` and look alike: every pair of the group has an
  embedding cosine of at least ``threshold`` (complete linkage, so a chain of look-alikes never merges two items
  that do not look alike). Most alike first.

``by`` defaults to the person's ``category`` (when any item has one) and the schema's groups among
:data:`DEFAULT_KEYS` (category, type, pattern, colour); any schema group can be named. An item whose answer on a
``by`` group was unsure (below the bundle's ``unsure_below``), or unsure on every group, is not grouped by
attributes the model cannot vouch for: it is flagged, with the groups, for a person to look at.

The default threshold (:data:`REDUNDANT_THRESHOLD`, 0.92) had the best F1 in ``benchmarks/wardrobe.py``: the
FashionDataset's photos plus 200 re-encoded copies, with the ``cpu_pretrained`` bundle's embeddings (140 of the
copies grouped with their original by the default key, 188 by the embedding alone; 41 / 44 other pairs grouped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fashattr.wardrobe.items import Wardrobe, WardrobeError

CATEGORY = "category"  # the person's own category column, not a schema group
DEFAULT_KEYS = ("category", "type", "pattern", "colour", "color")
REDUNDANT_THRESHOLD = 0.92


@dataclass
class RedundantGroup:
    """Rows of a wardrobe that repeat each other; ``similarity``: the least cosine between two of them."""

    kind: str  # identical | near
    rows: list[int]
    similarity: float
    key: dict[str, str] = field(default_factory=dict)


@dataclass
class Redundancy:
    by: list[str]
    threshold: float
    groups: list[RedundantGroup]
    flagged: list[tuple[int, list[str]]]  # (row, the groups it was unsure on): not grouped by attributes


def key_groups(w: Wardrobe, by: Sequence[str] | None) -> list[str]:
    """The attributes redundant items must share: ``by`` checked against the schema, or the default."""
    if by is None:
        has_category = any(c is not None for c in w.categories)
        return [k for k in DEFAULT_KEYS if (k == CATEGORY and has_category) or k in w.groups]
    unknown = [k for k in by if k != CATEGORY and k not in w.groups]
    if unknown:
        raise WardrobeError(f"--by: unknown attribute(s) {unknown}; choose from {[CATEGORY, *w.groups]}")
    return list(dict.fromkeys(by))


def redundant(w: Wardrobe, by: Sequence[str] | None = None, threshold: float = REDUNDANT_THRESHOLD) -> Redundancy:
    """Groups of items that repeat each other (see the module docstring)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    if not 0.0 < threshold <= 1.0:
        raise WardrobeError(f"--threshold {threshold} must be in (0, 1]")
    keys = key_groups(w, by)
    groups: list[RedundantGroup] = []
    by_content: dict[str, list[int]] = {}
    for i, sha in enumerate(w.sha256):
        by_content.setdefault(sha, []).append(i)
    groups += [RedundantGroup("identical", rows, 1.0) for rows in by_content.values() if len(rows) > 1]

    flagged: list[tuple[int, list[str]]] = []
    buckets: dict[tuple[str | None, ...], list[int]] = {}
    for i in range(len(w)):
        everywhere = all(w.unsure[g][i] for g in w.groups)
        unsure = w.groups if everywhere else [g for g in keys if g != CATEGORY and w.unsure[g][i]]
        if unsure:
            flagged.append((i, list(unsure)))
            continue
        key = tuple(w.categories[i] if k == CATEGORY else w.classes[k][i] for k in keys)
        buckets.setdefault(key, []).append(i)

    near = []
    for key, rows in buckets.items():
        first = list({w.sha256[i]: i for i in reversed(rows)}.values())  # one row per content: identical apart
        if len(first) < 2:
            continue
        v = w.vectors[first]
        # Complete linkage on cosine distance: a cluster's farthest pair is at most 1 - threshold apart.
        labels = fcluster(linkage(v, method="complete", metric="cosine"), t=1.0 - threshold, criterion="distance")
        for label in np.unique(labels):
            members = [first[j] for j in np.flatnonzero(labels == label)]
            if len(members) < 2:
                continue
            sims = w.vectors[members] @ w.vectors[members].T
            least = float(sims[np.triu_indices(len(members), 1)].min())
            if least < threshold - 1e-6:  # rounding at the cut: keep the promise that every pair is this close
                continue
            shared = dict(zip(keys, map(str, key), strict=True))
            near.append(RedundantGroup("near", sorted(members), min(least, 1.0), shared))
    near.sort(key=lambda g: (-g.similarity, w.items[g.rows[0]]))
    return Redundancy(keys, threshold, groups + near, flagged)


def group_sheets(w: Wardrobe, result: Redundancy, out_dir: str | Path, limit: int = 50, thumb: int = 160) -> list[Path]:
    """A contact sheet per group (``group-001.png``, ... in the order listed), each photo captioned with its item
    name and category; the first ``limit`` groups."""
    from fashattr.catalog.search import tile_sheet

    out = []
    for n, g in enumerate(result.groups[:limit], start=1):
        tiles = [
            (w.paths[i], w.sha256[i], [w.items[i], f"{g.kind} {g.similarity:.3f}", w.categories[i] or ""])
            for i in g.rows
        ]
        out.append(tile_sheet(tiles, Path(out_dir) / f"group-{n:03d}.png", columns=6, thumb=thumb, lines=3))
    return out


def rows(w: Wardrobe, result: Redundancy) -> list[dict[str, object]]:
    """One flat row per item of every group, then the flagged items (for ``format_rows``)."""
    out: list[dict[str, object]] = []
    for n, g in enumerate(result.groups, start=1):
        key = ", ".join(f"{k}={v}" for k, v in g.key.items())
        for i in g.rows:
            row: dict[str, object] = {"group": n, "kind": g.kind, "similarity": round(g.similarity, 4)}
            out.append(row | {"item": w.items[i], "key": key, "path": w.paths[i]})
    for i, unsure in result.flagged:
        flagged: dict[str, object] = {"group": "", "kind": "unsure", "similarity": "", "item": w.items[i]}
        out.append(flagged | {"key": "unsure on " + ",".join(unsure), "path": w.paths[i]})
    return out
