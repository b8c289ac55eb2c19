"""``fashattr wardrobe add|redundant|gaps|looks|pair|complete|graph``: a person's clothes on the catalog."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fashattr.cli.common import BACKEND_CHOICES, BACKEND_HELP, Subcommands

# wardrobe.redundant.REDUNDANT_THRESHOLD, without importing the wardrobe (SQLAlchemy, SciPy) to build the parser;
# a test keeps them equal.
REDUNDANT_THRESHOLD = 0.92


def _open(args: argparse.Namespace) -> Any:
    from fashattr.catalog.search import open_catalog
    from fashattr.wardrobe.items import load_wardrobe

    return load_wardrobe(open_catalog(args.db), args.wardrobe, args.model)


def _add(args: argparse.Namespace) -> int:
    from fashattr.wardrobe.items import add_items, items_from_csv, items_from_paths

    if not args.items and not args.photos:
        raise SystemExit("error: give photos (files or folders) or --items CSV")
    new = items_from_csv(args.items) if args.items else []
    new += items_from_paths(args.photos) if args.photos else []
    names = [n.item for n in new]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SystemExit(f"error: item name(s) {twice} given by both --items and the photos")
    summary = add_items(args.bundle, new, args.db, args.wardrobe, backend=args.backend, progress=not args.no_progress)
    print("\n".join(summary.tag_lines + summary.lines()))
    return 1 if summary.failed else 0


def _redundant(args: argparse.Namespace) -> int:
    from fashattr.catalog.similar import format_rows
    from fashattr.wardrobe.redundant import group_sheets, redundant, rows

    w = _open(args)
    by = [b for b in args.by.split(",") if b] if args.by is not None else None
    result = redundant(w, by, args.threshold)
    sys.stdout.write(format_rows(rows(w, result), args.format))
    identical = sum(g.kind == "identical" for g in result.groups)
    print(
        f"{len(w)} items; by {','.join(result.by) or '(embedding only)'} at cosine >= {result.threshold}: "
        f"{identical} identical group(s), {len(result.groups) - identical} near group(s), "
        f"{len(result.flagged)} item(s) unsure on those attributes (flagged, not grouped)",
        file=sys.stderr,
    )
    if args.sheets and result.groups:
        sheets = group_sheets(w, result, args.sheets, limit=args.sheet_limit)
        print(f"contact sheets: {len(sheets)} in {args.sheets}", file=sys.stderr)
    return 0


def _gaps(args: argparse.Namespace) -> int:
    from fashattr.catalog.similar import format_rows
    from fashattr.wardrobe.gaps import gaps, gaps_figure, rows

    w = _open(args)
    result = gaps(w)
    sys.stdout.write(format_rows(rows(result), args.format))
    for g in result:
        never = ", ".join(g.never) or "none"
        print(
            f"{g.group}: evenness {g.evenness:.2f} ({g.effective:.1f} effective values), never owned: {never}",
            file=sys.stderr,
        )
    if args.figure:
        print(f"figure: {gaps_figure(w, result, args.figure)}", file=sys.stderr)
    return 0


def _scorer(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from fashattr.wardrobe.looks import Compatibility, read_looks

    w = _open(args)
    looks = read_looks(args.looks, w)
    return w, looks, Compatibility.fit(w, looks, seed=args.seed, method=args.scorer)


def _looks(args: argparse.Namespace) -> int:
    from fashattr.wardrobe.looks import evaluate, read_looks

    w = _open(args)
    looks = read_looks(args.looks, w)
    result = evaluate(w, looks, args.test_fraction, args.seed, args.scorer)
    result |= {"items": len(w), "looks": len(looks), "always": [w.items[r] for r in looks.always]}
    print(
        f"{len(looks)} looks of {len(w)} items; scorer {result['method']} on {result['looks_train']} looks; "
        f"held out {result['looks_test']}: compatibility AUC {result['auc']:.3f}, fill-in-the-blank accuracy "
        f"{result['fitb_accuracy']:.3f} (chance {result['fitb_chance']:.2f})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def _pair(args: argparse.Namespace) -> int:
    w, _, scorer = _scorer(args)
    a, b = w.index(args.a), w.index(args.b)
    print(f"{args.a} + {args.b}: {float(scorer.score(w, [a], [b])[0]):.3f} ({scorer.method})")
    return 0


def _complete(args: argparse.Namespace) -> int:
    from fashattr.catalog.similar import format_rows
    from fashattr.wardrobe.looks import complete

    w, _, scorer = _scorer(args)
    partial = [w.index(x) for x in args.items]
    best = complete(w, scorer, partial, args.k)
    rows = [
        {"rank": k + 1, "item": w.items[i], "score": round(s, 4), "path": w.paths[i]} for k, (i, s) in enumerate(best)
    ]
    sys.stdout.write(format_rows(rows, args.format))
    return 0


def _graph(args: argparse.Namespace) -> int:
    from fashattr.wardrobe.graph import build_graph, write_graph
    from fashattr.wardrobe.looks import Compatibility, read_looks
    from fashattr.wardrobe.redundant import redundant

    w = _open(args)
    by = [b for b in args.by.split(",") if b] if args.by is not None else None
    scorer = None
    if args.looks:
        scorer = Compatibility.fit(w, read_looks(args.looks, w), seed=args.seed, method=args.scorer)
    g = build_graph(w, redundant(w, by, args.threshold), scorer, k=args.k)
    out = write_graph(g, args.out)
    kinds: dict[str, int] = {}
    for _, _, kind in g.edges(data="kind"):
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"{out}: {g.number_of_nodes()} nodes, {g.number_of_edges()} edges ({kinds})")
    return 0


def add_commands(sub: Subcommands, common: argparse.ArgumentParser, options: argparse.ArgumentParser) -> None:
    """Register ``fashattr wardrobe`` and its verbs on ``sub``."""
    top = sub.add_parser(
        "wardrobe",
        help="a person's clothes on the catalog: redundant items, gaps, which items combine, the graph",
        description="Items are photos tagged into the catalog (the same bundle, database and runtime as "
        "`fashattr tag`), named by the person. See docs/wardrobe.md.",
    )
    verbs = top.add_subparsers(dest="wardrobe_verb", required=True)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--db", default="sqlite:///catalog.db", help="SQLAlchemy URL of the catalog")
    where.add_argument("--wardrobe", default="default", help="the wardrobe's name (one catalog holds several)")
    where.add_argument("--model", help="model id (or a unique prefix); default the catalog's most recent")
    looks = argparse.ArgumentParser(add_help=False)
    looks.add_argument("--scorer", default="auto", choices=["auto", "learned", "co-occurrence"])
    looks.add_argument("--seed", type=int, default=0, help="negatives' and the held-out split's random seed")
    fmt = argparse.ArgumentParser(add_help=False)
    fmt.add_argument("--format", default="table", choices=["table", "csv", "jsonl"])
    grouping = argparse.ArgumentParser(add_help=False)
    grouping.add_argument(
        "--by",
        help="attributes redundant items share, comma-separated (default: category, pattern, colour, "
        "type where there); '' for the embedding alone",
    )
    grouping.add_argument(
        "--threshold", type=float, default=REDUNDANT_THRESHOLD, help="least embedding cosine of two redundant items"
    )

    p = verbs.add_parser("add", parents=[where], help="tag photos and add them as items")
    p.add_argument("bundle", help="a bundle folder (fashattr export) or a run folder")
    p.add_argument("photos", nargs="*", help="image files or folders (items named by their path in the folder)")
    p.add_argument("--items", help="a CSV: photo,name,category (category: your own word for the kind of item)")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help=BACKEND_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=_add)

    p = verbs.add_parser("redundant", parents=[where, grouping, fmt], help="items that repeat each other")
    p.add_argument("--sheets", metavar="DIR", help="a contact sheet per group (group-001.png, ...)")
    p.add_argument("--sheet-limit", type=int, default=50, help="contact sheets of the first this many groups")
    p.set_defaults(func=_redundant)

    p = verbs.add_parser("gaps", parents=[where, fmt], help="counts per attribute value, values never owned, diversity")
    p.add_argument("--figure", metavar="PNG", help="bar charts of the counts")
    p.set_defaults(func=_gaps)

    p = verbs.add_parser(
        "looks", parents=[where, looks], help="learn which items combine from worn looks; held-out AUC and FITB"
    )
    p.add_argument("--looks", required=True, help="a CSV: look,item (a row per item worn in a look)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="looks held out to measure the scorer")
    p.add_argument("--json", help="also write the measures as JSON")
    p.set_defaults(func=_looks)

    p = verbs.add_parser("pair", parents=[where, looks], help="how well two items combine (0-1)")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--looks", required=True, help="a CSV: look,item")
    p.set_defaults(func=_pair)

    p = verbs.add_parser("complete", parents=[where, looks, fmt], help="fill in the blank: items that finish a look")
    p.add_argument("items", nargs="+", help="the items of the look so far")
    p.add_argument("--looks", required=True, help="a CSV: look,item")
    p.add_argument("-k", type=int, default=5)
    p.set_defaults(func=_complete)

    p = verbs.add_parser("graph", parents=[where, grouping, looks], help="export the wardrobe as GraphML or JSON")
    p.add_argument("--out", required=True, help="FILE.graphml (Gephi, networkx) or FILE.json (node-link)")
    p.add_argument("--looks", help="a CSV: look,item; adds combines-with edges")
    p.add_argument("-k", type=int, default=5, help="combines-with edges per item (its best partners)")
    p.set_defaults(func=_graph)
