"""Exact duplicate images within a split whose labels disagree, and the ``data.duplicates`` policy.

``fashattr data check`` finds duplicates by the sha256 of the file bytes; this module uses the same key, so
the rows it drops are the pairs the audit lists as "(labels differ)". On the FashionDataset train split these
are two pairs (img/00848.jpg = img/04493.jpg: pattern and fit differ; img/03588.jpg = img/04375.jpg: fit differs).
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from fashattr.data.table import Table

log = logging.getLogger(__name__)
POLICIES = ("keep", "drop_conflicting")


def file_digests(paths: list[Path]) -> list[str | None]:
    """The sha256 of each file's bytes (``fashattr data check``'s duplicate key); None for an unreadable file."""
    out: list[str | None] = []
    for path in paths:
        try:
            out.append(hashlib.sha256(path.read_bytes()).hexdigest())
        except OSError:
            out.append(None)
    return out


def conflicting_duplicates(table: Table) -> list[list[int]]:
    """Groups of row indices of ``table`` whose files have the same bytes but whose labels differ (any group).

    Unlabeled tables have none. A file that cannot be read is left to the image cache to report.
    """
    if table.labels is None:
        return []
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, digest in enumerate(file_digests(table.files())):
        if digest is not None:
            by_hash[digest].append(i)
    out = []
    for rows in by_hash.values():
        if len(rows) < 2:
            continue
        labels = table.labels
        first = rows[0]
        if any(not np.array_equal(labels[g][r], labels[g][first]) for r in rows[1:] for g in labels):
            out.append(sorted(rows))
    return sorted(out)


def apply_policy(table: Table, train_rows: np.ndarray, policy: str) -> np.ndarray:
    """The training rows under ``data.duplicates``: ``keep`` returns them as given; ``drop_conflicting``
    removes every copy of an exact duplicate whose labels disagree (only from the training rows: the
    holdouts stay as they are, the same images for every recipe).

    Raises:
        ValueError: an unknown policy, naming the choices.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown data.duplicates {policy!r}; choose from {list(POLICIES)}")
    if policy == "keep":
        return train_rows
    groups = conflicting_duplicates(table)
    drop = sorted({r for g in groups for r in g})
    kept = train_rows[~np.isin(train_rows, drop)]
    log.info(
        "data.duplicates=drop_conflicting: %d training image(s) left out (%d duplicate group(s) with differing "
        "labels): %s",
        len(train_rows) - len(kept),
        len(groups),
        "; ".join(" = ".join(table.paths[r] for r in g) for g in groups),
    )
    return kept
