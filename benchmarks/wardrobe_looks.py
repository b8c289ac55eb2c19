"""The wardrobe's compatibility scorers against a known truth: looks drawn under ``data.synthetic.combines``.

150 synthetic garments (``sample_labels``, seed 0) as a wardrobe whose attributes are their true classes and whose
embeddings are random unit vectors (so only the attributes carry the rule), categorised dress / top by length;
60 and 200 looks drawn under the rule (``draw_looks``, seed 1). Each scorer is fitted on 80% of the looks and
measured on the rest against the rule (``wardrobe.looks.evaluate`` with ``rule``: negative looks and wrong
fill-in-the-blank candidates break it), plus its pairwise AUC against the rule over every pair of garments. The
regression at several L2 strengths is how ``REGRESSION_C`` was chosen; ``tests/test_wardrobe.py`` holds the
200-look rows of both scorers to AUC >= 0.85, FITB >= 0.7, pairwise AUC >= 0.95.

    python benchmarks/wardrobe_looks.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_line

from fashattr.data.synthetic import combines, draw_looks, sample_labels
from fashattr.schema import AI6126_GROUPS
from fashattr.wardrobe.items import Wardrobe
from fashattr.wardrobe.looks import REGRESSION_C, Looks, evaluate


def synthetic_wardrobe(labels: np.ndarray, dim: int = 16, seed: int = 0) -> Wardrobe:
    """A wardrobe whose answers are ``labels`` (ai6126 class indices), sure, with random unit embeddings."""
    n = len(labels)
    groups = list(AI6126_GROUPS)
    v = np.random.default_rng(seed).normal(size=(n, dim))
    kinds = {0: "dress", 1: "dress", 2: "top"}
    return Wardrobe(
        name="synthetic",
        model_id="truth",
        schema={"groups": [{"name": g, "classes": list(c)} for g, c in AI6126_GROUPS.items()]},
        items=[f"{i:05d}" for i in range(n)],
        sha256=[f"{i:064x}" for i in range(n)],
        paths=[""] * n,
        categories=[kinds[int(x[2])] for x in labels],
        classes={g: [AI6126_GROUPS[g][int(labels[i][k])] for i in range(n)] for k, g in enumerate(groups)},
        probs={g: np.ones(n) for g in groups},
        unsure={g: np.zeros(n, dtype=bool) for g in groups},
        vectors=(v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32),
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/wardrobe_looks"))
    args = ap.parse_args()
    started = time.perf_counter()
    labels = sample_labels(150, np.random.default_rng(0))
    w = synthetic_wardrobe(labels)

    def rule(i: int, j: int) -> bool:
        return combines(labels[i], labels[j])

    rows = []
    for n_looks in (60, 200):
        drawn = draw_looks(labels, n_looks, np.random.default_rng(1))
        looks = Looks([str(k) for k in range(n_looks)], drawn)
        settings = [("co-occurrence", REGRESSION_C)] + [("learned", c) for c in (0.01, 0.05, 0.3, 2.0)]
        for method, c in settings:
            r = evaluate(w, looks, method=method, rule=rule, c=c)
            rows.append({"looks": n_looks, "scorer": method, "c": c if method == "learned" else None, **r})
            print(rows[-1], flush=True)
    wall = time.perf_counter() - started
    record = {"command": "python benchmarks/wardrobe_looks.py", "cpu": machine_line(), "wall_s": round(wall, 1)}
    args.results.with_name(args.results.name + ".json").write_text(json.dumps(record | {"rows": rows}, indent=1))
    lines = [
        "# Compatibility scorers against a known rule (benchmarks/wardrobe_looks.py)",
        "",
        f"`{record['command']}` on {record['cpu']}; {wall:.0f} s. 150 synthetic garments, their true attributes, "
        "random embeddings; looks drawn under `data.synthetic.combines`; 80% of the looks fit, 20% measured, "
        "negatives and wrong candidates breaking the rule. Chance: AUC 0.5, FITB 0.25.",
        "",
        "| looks | scorer | C | compatibility AUC | FITB accuracy | pairwise AUC against the rule |",
        "|---:|---|---:|---:|---:|---:|",
        *(
            f"| {r['looks']} | {r['scorer']} | {r['c'] if r['c'] is not None else ''} | {r['auc']:.3f} "
            f"| {r['fitb_accuracy']:.3f} | {r['rule_pair_auc']:.3f} |"
            for r in rows
        ),
        "",
    ]
    args.results.with_name(args.results.name + ".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
