"""Looks: which items combine, learned from the looks a person wore.

A looks CSV has a ``look`` column (any id) and an ``item`` column (the wardrobe's item names), a row per item
worn in a look. Two items worn in one look are a positive pair.

The scorer (:class:`Compatibility`) answers "do these two combine?" as a probability:

- **learned**: a logistic regression (scikit-learn; L2, C :data:`REGRESSION_C`, chosen on the synthetic looks of
  ``data.synthetic.draw_looks`` at 60 and 200 looks against 0.05, 0.3 and 2: ``benchmarks/wardrobe_looks.py``) on a
  pair's symmetric
  features: the element-wise product and absolute difference of the two items' embeddings, and the pairs of
  their attribute values (every value of one item with every value of the other, as one-hots, both orders
  summed), so it can learn rules such as "at most one patterned piece" from the attributes and finer taste from
  the embeddings. Negatives: for every positive pair, two items the first was never worn with, drawn from the
  second's category where the person gave categories (type-aware, as the outfit literature samples them).
- **co-occurrence**: how often the two were worn together, plus how much more often than chance their
  attribute values were worn together (the mean log-lift of the value pairs, add-one smoothed).
- **auto** (the default): co-occurrence below :data:`MIN_LOOKS` looks (a regression on so few pairs learns
  noise); from there, whichever of the two scores the higher compatibility AUC on a fifth of the looks held out
  from the rest, refitted on all of them. On looks drawn under a rule of attributes alone, co-occurrence is as
  good; the regression's embeddings pay where taste is in what the attributes do not name.

Measured as the outfit-compatibility literature measures it, on looks held out by look
(:func:`evaluate`): **compatibility AUC** (each held-out look against a random look of the same size, drawn from
the same categories; a look's score is the mean of its pairs') and **fill-in-the-blank accuracy** (one item of a
held-out look hidden among three random items of its category; right when the scorer ranks it first; chance 25%).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from fashattr.wardrobe.items import Wardrobe, WardrobeError, closest_hint

log = logging.getLogger("fashattr")

REGRESSION_C = 0.01  # inverse L2 strength of the learned scorer (benchmarks/wardrobe_looks.py)
MIN_LOOKS = 30  # fewer looks: the co-occurrence scorer without trying the regression
FITB_CANDIDATES = 4


@dataclass
class Looks:
    """Looks as wardrobe rows: ``ids[k]``'s items are ``members[k]``; ``always``: rows worn in every look."""

    ids: list[str]
    members: list[list[int]]
    always: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, keep: Sequence[int]) -> Looks:
        return Looks([self.ids[k] for k in keep], [self.members[k] for k in keep])


def read_looks(path: str | Path, w: Wardrobe) -> Looks:
    """The looks of a CSV (see the module docstring) as rows of ``w``.

    Raises:
        WardrobeError: no ``look``/``item`` column, an empty cell, an item the wardrobe does not have, an item
            twice in one look, a look of one item, no looks (each naming the file and line).
    """
    path = Path(path)
    row_of = {name: i for i, name in enumerate(w.items)}
    looks: dict[str, list[int]] = {}
    first_line: dict[tuple[str, int], int] = {}
    look_line: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"look", "item"} <= set(reader.fieldnames):
            raise WardrobeError(f"{path}:1: expected columns look,item (columns: {reader.fieldnames})")
        for row in reader:
            line = reader.line_num
            look, item = (row.get("look") or "").strip(), (row.get("item") or "").strip()
            if not look or not item:
                raise WardrobeError(f"{path}:{line}: empty {'look' if not look else 'item'}")
            if item not in row_of:
                raise WardrobeError(
                    f"{path}:{line}: item {item!r} is not in wardrobe {w.name!r}{closest_hint(item, w.items)}"
                )
            r = row_of[item]
            if (look, r) in first_line:
                raise WardrobeError(
                    f"{path}:{line}: item {item!r} is in look {look!r} twice (line {first_line[(look, r)]})"
                )
            first_line[(look, r)] = line
            look_line.setdefault(look, line)
            looks.setdefault(look, []).append(r)
    if not looks:
        raise WardrobeError(f"{path}: no looks")
    for look, rows in looks.items():
        if len(rows) < 2:
            raise WardrobeError(
                f"{path}:{look_line[look]}: look {look!r} has one item ({w.items[rows[0]]!r}); a look combines "
                "two or more"
            )
    ids = list(looks)
    members = [looks[k] for k in ids]
    always = sorted(set.intersection(*(set(m) for m in members))) if len(members) > 1 else []
    for r in always:
        log.warning(
            "%s: item %r is in every look: nothing says what it does not combine with, so its scores only "
            "repeat that it is worn with everything",
            path,
            w.items[r],
        )
    return Looks(ids, members, always)


def attribute_onehots(w: Wardrobe) -> np.ndarray:
    """``(N, D)``: per item a one (several for a multi-label group) per attribute value, then its category."""
    cols: list[np.ndarray] = []
    for g in w.schema["groups"]:
        classes = list(g["classes"])
        m = np.zeros((len(w), len(classes)), np.float32)
        for i, value in enumerate(w.classes[g["name"]]):
            for c in value.split("|") if g.get("kind", "single") != "single" else [value]:
                if c in classes:
                    m[i, classes.index(c)] = 1.0
        cols.append(m)
    cats = sorted({c for c in w.categories if c is not None})
    if cats:
        cols.append(np.array([[float(c == k) for k in cats] for c in w.categories], np.float32))
    return np.concatenate(cols, axis=1)


def pair_features(w: Wardrobe, onehots: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(P, 2F + D*D)`` symmetric features of the pairs ``(a[k], b[k])`` (see the module docstring)."""
    ea, eb = w.vectors[a], w.vectors[b]
    oa, ob = onehots[a], onehots[b]
    cross = oa[:, :, None] * ob[:, None, :]
    cross = cross + cross.transpose(0, 2, 1)
    return np.concatenate([ea * eb, np.abs(ea - eb), cross.reshape(len(a), -1)], axis=1)


def same_category_pool(w: Wardrobe) -> dict[str | None, np.ndarray]:
    pools: dict[str | None, list[int]] = {}
    for i, c in enumerate(w.categories):
        pools.setdefault(c, []).append(i)
    return {c: np.array(v) for c, v in pools.items()}


@dataclass
class Compatibility:
    """A pairwise compatibility scorer fitted on looks (see the module docstring)."""

    method: str  # learned | co-occurrence
    model: Any = None
    onehots: np.ndarray | None = None
    together: dict[tuple[int, int], int] = field(default_factory=dict)  # co-occurrence only
    lift: np.ndarray | None = None  # (D, D) log-lift of attribute value pairs

    @classmethod
    def fit(
        cls, w: Wardrobe, looks: Looks, seed: int = 0, method: str = "auto", c: float = REGRESSION_C
    ) -> Compatibility:
        """``method``: ``learned``, ``co-occurrence`` or ``auto`` (see the module docstring); ``c``: the
        regression's inverse L2 strength."""
        if method not in ("auto", "learned", "co-occurrence"):
            raise WardrobeError(f"unknown scorer {method!r}; choose from ['auto', 'learned', 'co-occurrence']")
        if method == "auto":
            method = "co-occurrence"
            if len(looks) >= MIN_LOOKS:
                inner = {m: held_out(w, looks, 0.2, seed, m, c=c)["auc"] for m in ("co-occurrence", "learned")}
                method = max(inner, key=lambda m: inner[m])
        onehots = attribute_onehots(w)
        together: dict[tuple[int, int], int] = {}  # (i < j) -> the looks that hold both
        for m in looks.members:
            for i, j in combinations(sorted(m), 2):
                together[(i, j)] = together.get((i, j), 0) + 1
        pos = sorted(together)
        if not pos:
            raise WardrobeError("no pair of items worn together to learn from")
        if method == "co-occurrence":
            return cls(method, onehots=onehots, together=together, lift=_log_lift(onehots, pos))
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        a, b = _with_negatives(w, pos, np.random.default_rng(seed))
        y = np.r_[np.ones(len(pos)), np.zeros(len(a) - len(pos))]
        x = pair_features(w, onehots, a, b)
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
        model.fit(x, y)
        return cls(method, model=model, onehots=onehots)

    def score(self, w: Wardrobe, a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> np.ndarray:
        """How well each pair ``(a[k], b[k])`` combines, in [0, 1]."""
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        if not len(a):
            return np.zeros(0)
        assert self.onehots is not None
        if self.method == "learned":
            return np.asarray(self.model.predict_proba(pair_features(w, self.onehots, a, b))[:, 1])
        assert self.lift is not None
        oa, ob = self.onehots[a], self.onehots[b]
        n = oa.sum(1) * ob.sum(1)
        mean_lift = np.einsum("pi,ij,pj->p", oa, self.lift, ob) / np.maximum(n, 1)
        worn = np.array([self.together.get((min(i, j), max(i, j)), 0) for i, j in zip(a, b, strict=True)])
        return 1.0 / (1.0 + np.exp(-(mean_lift + np.log1p(worn))))

    def look_score(self, w: Wardrobe, rows: Sequence[int]) -> float:
        """A look's score: the mean of its pairs'."""
        pairs = list(combinations(rows, 2))
        return float(self.score(w, [p[0] for p in pairs], [p[1] for p in pairs]).mean())


def _log_lift(onehots: np.ndarray, pos: list[tuple[int, int]]) -> np.ndarray:
    """How much more often than among all pairs of items each pair of attribute values is worn together."""
    a = np.array([p[0] for p in pos])
    b = np.array([p[1] for p in pos])
    worn = onehots[a].T @ onehots[b]
    worn = worn + worn.T
    total = onehots.sum(0)
    every = np.outer(total, total) - np.diag(total)  # ordered pairs of distinct items with these values
    expected = every * (2 * len(pos) / max(every.sum(), 1))
    return np.log((worn + 1.0) / (expected + 1.0))


def _with_negatives(w: Wardrobe, pos: list[tuple[int, int]], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The positive pairs followed by negatives: per positive (i, j), an item i was never worn with from j's
    category, and one j was never worn with from i's: two negatives per positive."""
    worn = set(pos)
    pools = same_category_pool(w)
    a, b = [p[0] for p in pos], [p[1] for p in pos]
    for i, j in pos:
        for anchor, other in ((i, j), (j, i)):
            pool = pools[w.categories[other]]
            for _try in range(20):  # a few draws: an anchor worn with nearly all of a category gets none
                k = int(pool[rng.integers(len(pool))])
                if k != anchor and (min(anchor, k), max(anchor, k)) not in worn and w.sha256[k] != w.sha256[anchor]:
                    a.append(anchor)
                    b.append(k)
                    break
    return np.array(a), np.array(b)


Rule = Callable[[int, int], bool]  # a known truth: do wardrobe rows i and j combine?


def random_look(w: Wardrobe, like: Sequence[int], rng: np.random.Generator, rule: Rule | None = None) -> list[int]:
    """A look of ``like``'s size, each item drawn at random from the category of the one it stands for; with a
    known ``rule``, one that breaks it (some pair does not combine), as a truly negative look."""
    pools = same_category_pool(w)
    for _try in range(200):
        out: list[int] = []
        for r in like:
            pool = [int(x) for x in pools[w.categories[r]] if int(x) not in out]
            out.append(pool[rng.integers(len(pool))] if pool else int(rng.integers(len(w))))
        if rule is None or not all(rule(a, b) for a, b in combinations(out, 2)):
            return out
    raise WardrobeError("no random look breaks the rule: every item combines with every other")


def fitb_candidates(
    w: Wardrobe, look: Sequence[int], blank: int, rng: np.random.Generator, rule: Rule | None = None
) -> list[int]:
    """The hidden item and three others of its category (any category when it has too few), none in the look;
    with a known ``rule``, three that break it with some item of the rest, so exactly one answer is right."""
    rest = [r for r in look if r != blank]

    def wrong(x: int) -> bool:
        return rule is None or not all(rule(x, r) for r in rest)

    pool = [int(x) for x in same_category_pool(w)[w.categories[blank]] if int(x) not in look and wrong(int(x))]
    if len(pool) < FITB_CANDIDATES - 1:
        pool = [x for x in range(len(w)) if x not in look and wrong(x)]
    picks = rng.choice(len(pool), size=min(FITB_CANDIDATES - 1, len(pool)), replace=False)
    return [blank, *(pool[int(k)] for k in picks)]


def evaluate(
    w: Wardrobe,
    looks: Looks,
    test_fraction: float = 0.2,
    seed: int = 0,
    method: str = "auto",
    rule: Rule | None = None,
    c: float = REGRESSION_C,
) -> dict[str, Any]:
    """Held-out compatibility AUC and fill-in-the-blank accuracy (see the module docstring). With a known ``rule``
    (synthetic looks), the negative looks and the wrong candidates are drawn among those that break it, so both
    measures are against the truth rather than against random draws that may combine as well; and the pairwise
    AUC of the scorer against the rule over every pair of items is added (``rule_pair_auc``).

    Raises:
        WardrobeError: fewer than 5 looks (nothing to hold out).
    """
    if len(looks) < 5:
        raise WardrobeError(f"{len(looks)} look(s): at least 5 are needed to hold some out and measure the scorer")
    return held_out(w, looks, test_fraction, seed, method, rule, c)


def held_out(
    w: Wardrobe,
    looks: Looks,
    test_fraction: float,
    seed: int,
    method: str,
    rule: Rule | None = None,
    c: float = REGRESSION_C,
) -> dict[str, Any]:
    """:func:`evaluate` without its check: fit on the looks left after holding ``test_fraction`` out, measure."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(looks))
    n_test = max(1, round(len(looks) * test_fraction))
    test, train = looks.subset([int(k) for k in order[:n_test]]), looks.subset([int(k) for k in order[n_test:]])
    scorer = Compatibility.fit(w, train, seed=seed, method=method, c=c)
    scores, truth = [], []
    right = 0
    for m in test.members:
        scores += [scorer.look_score(w, m), scorer.look_score(w, random_look(w, m, rng, rule))]
        truth += [1, 0]
        blank = m[int(rng.integers(len(m)))]
        rest = [r for r in m if r != blank]
        candidates = fitb_candidates(w, m, blank, rng, rule)
        fit = [float(scorer.score(w, [x] * len(rest), rest).mean()) for x in candidates]
        right += int(int(np.argmax(fit)) == 0)
    out = {
        "method": scorer.method,
        "looks_train": len(train),
        "looks_test": len(test),
        "auc": float(roc_auc_score(truth, scores)),
        "fitb_accuracy": right / len(test),
        "fitb_chance": 1 / FITB_CANDIDATES,
    }
    if rule is not None:
        a, b = np.triu_indices(len(w), 1)
        combine = [rule(int(i), int(j)) for i, j in zip(a, b, strict=True)]
        out["rule_pair_auc"] = float(roc_auc_score(combine, scorer.score(w, a, b)))
    return out


def complete(w: Wardrobe, scorer: Compatibility, partial: Sequence[int], k: int = 5) -> list[tuple[int, float]]:
    """Fill in the blank: the ``k`` items (not in ``partial``, not a copy of one) that combine best with all of
    ``partial`` (mean score), best first."""
    taken = {w.sha256[r] for r in partial}
    candidates = [c for c in range(len(w)) if w.sha256[c] not in taken]
    if not candidates:
        return []
    # Every (candidate, item of the look) pair in one call; a candidate's fit is its mean over the look.
    pairs = scorer.score(w, np.repeat(candidates, len(partial)), np.tile(list(partial), len(candidates)))
    fit = pairs.reshape(len(candidates), len(partial)).mean(axis=1)
    best = np.argsort(-fit, kind="stable")[:k]
    return [(candidates[int(j)], float(fit[j])) for j in best]
