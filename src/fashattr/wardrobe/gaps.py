"""Gaps in a wardrobe: how many items have each attribute value, which values are owned by none, and how diverse
each group is.

Diversity is the Shannon entropy of a group's value counts, in bits, with two readings beside it: ``evenness``
(entropy over its maximum, log2 of the number of classes: 1 when every value is owned equally often, 0 when every
item has one value) and ``effective`` (2 ** entropy: the number of equally common values that would be as
diverse). Multi-label groups count every value an item has; an item with none counts as ``(none)``. Unsure answers
are counted (the model's best guess) and their number shown, since a gap may be a value the model misses.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from fashattr.wardrobe.items import Wardrobe

NONE = "(none)"


@dataclass
class GroupGaps:
    group: str
    counts: dict[str, int]  # every class of the schema, owned or not, in the schema's order
    never: list[str]
    entropy_bits: float
    evenness: float
    effective: float
    unsure: int


def entropy_bits(counts: list[int]) -> float:
    total = sum(counts)
    return -sum(c / total * math.log2(c / total) for c in counts if c) if total else 0.0


def gaps(w: Wardrobe) -> list[GroupGaps]:
    """Per group of the schema, then per the person's categories when any item has one."""
    out = []
    for g in w.schema["groups"]:
        name, classes = g["name"], list(g["classes"])
        multi = g.get("kind", "single") != "single"
        counts: Counter[str] = Counter()
        for value in w.classes[name]:
            owned = ([c for c in value.split("|") if c] or [NONE]) if multi else [value]
            counts.update(owned)
        ordered = {c: counts.get(c, 0) for c in classes} | ({NONE: counts[NONE]} if counts.get(NONE) else {})
        h = entropy_bits(list(ordered.values()))
        k = len(classes) + (1 if NONE in ordered else 0)
        out.append(
            GroupGaps(
                name,
                ordered,
                [c for c in classes if not counts.get(c)],
                h,
                h / math.log2(k) if k > 1 else 0.0,
                2**h,
                int(w.unsure[name].sum()),
            )
        )
    if any(c is not None for c in w.categories):
        cats = Counter(c or NONE for c in w.categories)
        h = entropy_bits(list(cats.values()))
        k = len(cats)
        out.append(GroupGaps("category", dict(cats.most_common()), [], h, h / math.log2(k) if k > 1 else 0.0, 2**h, 0))
    return out


def gaps_figure(w: Wardrobe, result: list[GroupGaps], out: str | Path) -> Path:
    """Bar charts of the counts, one panel per group; values owned by none drawn as red ticks, evenness in the
    title."""
    from matplotlib.figure import Figure

    cols = 3
    rows = -(-len(result) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, g in zip(axes, result, strict=False):
        names, values = list(g.counts), list(g.counts.values())
        colors = ["#c0392b" if v == 0 else "#2c7fb8" for v in values]
        ax.bar(range(len(names)), [max(v, 0.05) for v in values], color=colors)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{g.group}: evenness {g.evenness:.2f}, {len(g.never)} never owned", fontsize=9)
        ax.set_ylabel("items")
    for ax in axes[len(result) :]:
        ax.set_visible(False)
    fig.suptitle(f"wardrobe {w.name!r}: {len(w)} items", fontsize=11)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    return out


def rows(result: list[GroupGaps]) -> list[dict[str, object]]:
    """One flat row per group and value (for ``format_rows``)."""
    return [
        {"group": g.group, "value": v, "items": n, "never_owned": n == 0}
        | {"entropy_bits": round(g.entropy_bits, 4), "evenness": round(g.evenness, 4), "unsure": g.unsure}
        for g in result
        for v, n in g.counts.items()
    ]
