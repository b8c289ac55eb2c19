"""``fashattr tag``, ``search``, ``export-labels``, ``similar``, ``duplicates``: the catalog."""

from __future__ import annotations

import argparse
import sys

from fashattr.cli.common import (
    BACKEND_CHOICES,
    BACKEND_HELP,
    DECODE_HELP,
    Subcommands,
)

# catalog.select.STRATEGIES, without importing the catalog (SQLAlchemy) to build the parser; a test keeps them equal.
SELECT_STRATEGIES = ["margin", "entropy", "kcenter", "margin+kcenter", "badge", "balanced", "random"]


def _tag(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from fashattr.catalog.tag import tag

    try:
        summary = tag(
            args.model,
            args.sources,
            args.db,
            backend=args.backend,
            batch_size=args.batch_size,
            workers=args.workers,
            threads=args.threads or None,
            engine=args.engine,
            ray_address=args.ray_address,
            progress=not args.no_progress,
            decode=args.decode,
        )
    except sa.exc.OperationalError as e:  # unreachable server, bad credentials, unwritable file: fatal, said plainly
        raise SystemExit(f"error: database {args.db}: {e.orig or e}") from None
    print("\n".join(summary.lines()))
    return 0


def _search(args: argparse.Namespace) -> int:
    from fashattr.catalog.search import contact_sheet, open_catalog, search, write_matches

    result = search(open_catalog(args.db), args.conditions, args.min_prob, args.model, args.limit, args.sure)
    write_matches(result, args.format, sys.stdout)
    if args.sheet:
        print(f"contact sheet: {contact_sheet(result, args.sheet)}", file=sys.stderr)
    return 0


def _export_labels(args: argparse.Namespace) -> None:
    from fashattr.catalog.export import export_labels
    from fashattr.catalog.search import open_catalog

    info = export_labels(open_catalog(args.db), args.format, args.out, args.model, args.image_root)
    extra = f"; Label Studio labeling config: {info['config']}" if "config" in info else ""
    print(f"{info['images']} image(s) of model {info['model_id'][:12]} -> {info['out']}{extra}", file=sys.stderr)


def _select(args: argparse.Namespace) -> None:
    from fashattr.catalog.search import open_catalog
    from fashattr.catalog.select import select

    info = select(
        open_catalog(args.db),
        args.strategy,
        args.n,
        args.out,
        model=args.model,
        labelled=args.labelled,
        tasks=args.tasks,
        image_root=args.image_root,
        seed=args.seed,
    )
    print(
        f"{info['selected']} of {info['pool']} unlabelled photo(s) of model {info['model_id'][:12]} by {args.strategy}"
        f" -> {info['out']}"
        + (f"; Label Studio tasks {info['tasks']} (config {info['config']})" if "tasks" in info else ""),
        file=sys.stderr,
    )


def _similar(args: argparse.Namespace) -> None:
    from fashattr.catalog.search import open_catalog
    from fashattr.catalog.similar import bundle_model_id, format_rows, similar
    from fashattr.deploy.runtime import Runtime

    model_id, runtime = None, None  # without --bundle: the catalog's most recent model and its stored embeddings
    if args.bundle:
        model_id = bundle_model_id(args.bundle)
        runtime = Runtime.from_bundle(args.bundle, backend=args.backend)
    same = [g.strip() for g in args.same.split(",") if g.strip()] if args.same else []
    res = similar(open_catalog(args.db), args.photo, runtime, model_id, args.k, same, args.index, args.index_cache)
    rows: list[dict[str, object]] = [{"path": n.path, "score": f"{n.score:.4f}", **n.classes} for n in res.neighbours]
    if args.format == "jsonl":
        rows = [{"path": n.path, "sha256": n.sha256, "score": n.score, "classes": n.classes} for n in res.neighbours]
    print(f"query: {' '.join(f'{g}={c}' for g, c in res.query.items())} ({res.index} index)", file=sys.stderr)
    sys.stdout.write(format_rows(rows, args.format))


def _duplicates(args: argparse.Namespace) -> None:
    import dataclasses

    from fashattr.catalog.search import open_catalog
    from fashattr.catalog.similar import duplicates, format_rows

    pairs = duplicates(
        open_catalog(args.db),
        args.threshold,
        args.model,
        include_missing=args.include_missing,
        index_cache=args.index_cache,
    )
    rows = [dataclasses.asdict(p) for p in pairs]
    if args.format == "table":
        rows = [{"kind": p.kind, "similarity": f"{p.similarity:.4f}", "a": p.a, "b": p.b} for p in pairs]
    sys.stdout.write(format_rows(rows, args.format))
    identical = sum(p.kind == "identical" for p in pairs)
    print(f"{identical} byte-identical pair(s), {len(pairs) - identical} near-duplicate pair(s)", file=sys.stderr)


def add_commands(sub: Subcommands, common: argparse.ArgumentParser, options: argparse.ArgumentParser) -> None:
    """Register this module's subcommands on ``sub``; ``common``: the run-folder argument and options every command
    on a trained model shares, ``options``: the same options without the positional argument."""
    p = sub.add_parser(
        "tag",
        help="tag a catalog of images into a database, once per image and model (resumable)",
        description="Every image of the SOURCES is tagged once per model (the bundle hash) into the catalog "
        "database: a re-run skips what is done, the same photo under two names is inferred once, each batch "
        "commits in one transaction (kill it at any moment and run it again). Bad images go to the errors "
        "table and the run goes on; the exit code is non-zero only on a fatal error.",
    )
    p.add_argument("model", help="a bundle folder (fashattr export) or a run folder (exported on the fly)")
    p.add_argument("sources", nargs="+", help="folders (recursive), image files, .csv/.parquet lists (column path)")
    p.add_argument("--db", default="sqlite:///catalog.db", help="SQLAlchemy URL (default sqlite:///catalog.db)")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help=BACKEND_HELP)
    p.add_argument("--batch-size", type=int, default=32, help="images per model call and per transaction")
    p.add_argument("--workers", type=int, default=2, help="decode threads (local) or model actors (ray)")
    p.add_argument("--threads", type=int, default=0, help="model threads (0 = the backend's default)")
    p.add_argument("--engine", default="local", choices=["local", "ray"])
    p.add_argument("--decode", help=DECODE_HELP + "; each row records it")
    p.add_argument("--ray-address", help="Ray cluster address (ray start --head prints it); default: a local Ray")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=_tag)

    p = sub.add_parser(
        "search",
        help="catalog images whose predictions match GROUP=CLASS conditions (all of them), best first",
        description="Searches a database written by `fashattr tag`: one SQL query on the predictions index. "
        "Default model: the one registered most recently.",
    )
    p.add_argument("conditions", nargs="+", metavar="GROUP=CLASS", help="e.g. sleeve=long_sleeve pattern=floral")
    p.add_argument("--db", default="sqlite:///catalog.db", help="SQLAlchemy URL of the catalog")
    p.add_argument("--min-prob", type=float, default=0.0, help="each condition's probability at least this")
    p.add_argument("--sure", action="store_true", help='leave out answers tagged as unsure (the JSON\'s "unsure")')
    p.add_argument("--model", help="model id (or a unique prefix); default the most recent")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--format", default="table", choices=["table", "csv", "jsonl"])
    p.add_argument("--sheet", metavar="PNG", help="also draw a contact sheet of the matches")
    p.set_defaults(func=_search)

    p = sub.add_parser(
        "export-labels",
        help="a model's catalog predictions as Label Studio pre-annotations (+ labeling config) or CSV/Parquet",
    )
    p.add_argument("--db", default="sqlite:///catalog.db", help="SQLAlchemy URL of the catalog")
    p.add_argument("--format", required=True, choices=["label-studio", "csv", "parquet"])
    p.add_argument("--out", help="output file (default labels.json / labels.csv / labels.parquet)")
    p.add_argument("--model", help="model id (or a unique prefix); default the most recent")
    p.add_argument(
        "--image-root",
        help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT: image paths become /data/local-files/?d=<relative path>",
    )
    p.set_defaults(func=_export_labels)

    p = sub.add_parser(
        "select",
        help="rank unlabelled catalog photos for labeling: uncertainty (margin, entropy), diversity (kcenter), both "
        "(margin+kcenter, badge), class-balanced (balanced)",
    )
    p.add_argument("--db", default="sqlite:///catalog.db", help="SQLAlchemy URL of the catalog")
    p.add_argument("--strategy", default="margin+kcenter", choices=SELECT_STRATEGIES)
    p.add_argument("-n", type=int, default=200, help="photos to pick")
    p.add_argument("--out", default="to_label.csv", help="CSV of the picks: rank, sha256, path, margin uncertainty")
    p.add_argument("--tasks", help="also write the picks as Label Studio tasks (JSON) with the predictions pre-filled")
    p.add_argument("--labelled", help="paths or sha256 already labelled (one per line, or a CSV with a path column)")
    p.add_argument("--model", help="model id (or a unique prefix); default the most recent")
    p.add_argument("--image-root", help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT (as export-labels)")
    p.add_argument("--seed", type=int, default=0, help="random and k-center's first pick")
    p.set_defaults(func=_select)

    p = sub.add_parser(
        "similar",
        help="the catalog items nearest to a photo (cosine of the model's embeddings), optionally sharing classes",
        description="The photo is embedded with --bundle, which must be the bundle the catalog was tagged with "
        "(its hash is the catalog's model id; the database does not record where bundles live).",
    )
    p.add_argument("photo", help="an image file")
    p.add_argument(
        "--bundle",
        help="the bundle the catalog was tagged with, to embed a new photo (default: the catalog's most recent "
        "model, for a photo it holds)",
    )
    p.add_argument("--db", default="sqlite:///catalog.db", help="SQLAlchemy URL of the catalog")
    p.add_argument("-k", type=int, default=10, help="how many neighbours")
    p.add_argument("--same", help="comma-separated groups whose predicted class must equal the photo's")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help=BACKEND_HELP)
    p.add_argument("--index", default="auto", choices=["auto", "flat", "hnsw", "ivf"], help="vector index kind")
    p.add_argument("--index-cache", metavar="DIR", help="keep the vector index here between calls (large catalogs)")
    p.add_argument("--format", default="table", choices=["table", "csv", "jsonl"])
    p.set_defaults(func=_similar)

    p = sub.add_parser(
        "duplicates", help="byte-identical photos under several paths, then near-duplicates by embedding"
    )
    p.add_argument("--db", default="sqlite:///catalog.db", help="SQLAlchemy URL of the catalog")
    p.add_argument("--threshold", type=float, default=0.995, help="cosine similarity of near-duplicates")
    p.add_argument("--model", help="model whose embeddings to compare (default the most recent)")
    p.add_argument("--include-missing", action="store_true", help="also paths whose file no longer exists")
    p.add_argument("--index-cache", metavar="DIR", help="keep the vector index here between calls (large catalogs)")
    p.add_argument("--format", default="table", choices=["table", "csv", "jsonl"])
    p.set_defaults(func=_duplicates)
