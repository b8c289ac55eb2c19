"""A wardrobe as a graph (networkx), written as GraphML (Gephi, yEd, networkx) or node-link JSON (networkx, D3).

Nodes, each with a ``kind``:

- ``item:NAME`` (``item``): ``label`` (the name), ``path``, ``sha256``, ``category`` ("" when none);
- ``value:GROUP=CLASS`` (``attribute``): ``group``, ``value``;
- ``category:NAME`` (``category``).

Edges (a multigraph: two items can be near-duplicates and combine too), each with a ``kind`` and a ``weight``:

- ``has-attribute`` item → value: the answer's probability; ``unsure`` true when it was below the bundle's bar;
- ``in-category`` item → category: 1;
- ``near-duplicate-of`` item — item: the least cosine of their redundant group (1 for one content twice);
- ``combines-with`` item — item (with looks): the compatibility score, for each item's ``k`` best partners
  scoring at least 0.5. Every pair is scored, so a wardrobe of more than :data:`MAX_SCORED_ITEMS` items is
  exported without these edges unless asked (a person's wardrobe has hundreds, not thousands).
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from fashattr.wardrobe.items import Wardrobe, WardrobeError
from fashattr.wardrobe.looks import Compatibility
from fashattr.wardrobe.redundant import Redundancy

FORMATS = {".graphml": "graphml", ".json": "node-link"}
MAX_SCORED_ITEMS = 2000


def item_node(w: Wardrobe, i: int) -> str:
    return f"item:{w.items[i]}"


def build_graph(
    w: Wardrobe, redundancy: Redundancy | None = None, scorer: Compatibility | None = None, k: int = 5
) -> nx.MultiGraph:
    """The graph of the module docstring."""
    g = nx.MultiGraph(wardrobe=w.name, model_id=w.model_id)
    for i in range(len(w)):
        node = item_node(w, i)
        g.add_node(node, kind="item", label=w.items[i], path=w.paths[i], sha256=w.sha256[i])
        g.nodes[node]["category"] = w.categories[i] or ""
        for group in w.schema["groups"]:
            name = group["name"]
            multi = group.get("kind", "single") != "single"
            for value in [c for c in w.classes[name][i].split("|") if c] if multi else [w.classes[name][i]]:
                v = f"value:{name}={value}"
                g.add_node(v, kind="attribute", label=f"{name}={value}", group=name, value=value)
                prob = float(w.probs[name][i])
                g.add_edge(node, v, kind="has-attribute", weight=prob, unsure=bool(w.unsure[name][i]))
        if w.categories[i] is not None:
            c = f"category:{w.categories[i]}"
            g.add_node(c, kind="category", label=w.categories[i])
            g.add_edge(node, c, kind="in-category", weight=1.0)
    for group in redundancy.groups if redundancy else []:
        for a, b in combinations(group.rows, 2):
            g.add_edge(item_node(w, a), item_node(w, b), kind="near-duplicate-of", weight=group.similarity)
    if scorer is not None:
        n = len(w)
        if n > MAX_SCORED_ITEMS:
            raise WardrobeError(
                f"{n} items: scoring every pair for combines-with edges is too slow past {MAX_SCORED_ITEMS}; "
                "export without --looks, or a smaller wardrobe"
            )
        # The scorer is symmetric: each pair once (upper triangle, in chunks), mirrored into an n x n matrix.
        rows, cols = np.triu_indices(n, 1)
        scores = np.full((n, n), -np.inf)
        for lo in range(0, len(rows), 20_000):
            top, side = rows[lo : lo + 20_000], cols[lo : lo + 20_000]
            scores[top, side] = scores[side, top] = scorer.score(w, top, side)
        added: set[tuple[int, int]] = set()
        for i in range(n):
            for j in np.argsort(-scores[i], kind="stable")[:k]:
                pair = (min(i, int(j)), max(i, int(j)))
                if scores[i, j] >= 0.5 and pair not in added:
                    added.add(pair)
                    a_node, b_node = item_node(w, pair[0]), item_node(w, pair[1])
                    g.add_edge(a_node, b_node, kind="combines-with", weight=float(scores[i, j]))
    return g


def write_graph(g: nx.MultiGraph, out: str | Path) -> Path:
    """GraphML for ``.graphml``, node-link JSON for ``.json``."""
    out = Path(out)
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise WardrobeError(f"{out}: unknown graph format; name the file .graphml or .json")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "graphml":
        nx.write_graphml(g, out)
    else:
        data: dict[str, Any] = nx.node_link_data(g, edges="edges")
        out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return out


def read_graph(path: str | Path) -> nx.MultiGraph:
    """A graph :func:`write_graph` wrote, read back with networkx."""
    path = Path(path)
    if path.suffix.lower() == ".graphml":
        return nx.read_graphml(path, force_multigraph=True)
    return nx.node_link_graph(json.loads(path.read_text(encoding="utf-8")), edges="edges")
