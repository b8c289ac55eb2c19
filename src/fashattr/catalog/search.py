"""Attribute search over a tagged catalog: ``fashattr search --db URL sleeve=long_sleeve pattern=floral``.

One SQL query per search: the first condition drives it through the ``ix_predictions_attr`` index
(``model_id, group_name, class_name, probability``), read in descending probability so ``LIMIT`` stops
early, and every further condition is one primary-key lookup per candidate (``sha256, model_id,
group_name``). Matches come best first by the first condition's probability (ties by content hash).
A search is fastest with its rarest condition first: the lookups it makes are about ``limit`` divided by
the share of first-condition candidates that meet the others (benchmarks/search.py: p50 7 ms on SQLite and
14 ms on PostgreSQL over a million prediction rows, the slowest queries those with a rare second condition).
A content seen under several paths is one match, shown under the path seen most recently.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from fashattr.catalog.db import image_paths, models, predictions

log = logging.getLogger("fashattr")

FORMATS = ("table", "csv", "jsonl")
SQLITE_MMAP_BYTES = 1 << 30
MULTI_SEPARATOR = "|"  # how db.py joins the predicted classes of a multi-label group


class SearchError(ValueError):
    """A search that cannot run: no model in the database, an unknown model, group or class."""


@dataclass(frozen=True)
class Condition:
    """``group=class``: the image's predicted class of ``group`` is ``class_name``."""

    group: str
    class_name: str

    @classmethod
    def parse(cls, text: str) -> Condition:
        """``"sleeve=long_sleeve"`` -> Condition("sleeve", "long_sleeve").

        Raises:
            SearchError: no ``=``, or an empty side.
        """
        group, sep, value = text.partition("=")
        if not sep or not group.strip() or not value.strip():
            raise SearchError(f"condition {text!r}: expected GROUP=CLASS, e.g. sleeve=long_sleeve")
        return cls(group.strip(), value.strip())


@dataclass
class Match:
    """One image that meets every condition: its content hash, a path, and each condition's probability."""

    sha256: str
    path: str | None
    probs: dict[str, float] = field(default_factory=dict)


@dataclass
class SearchResult:
    model_id: str
    conditions: list[Condition]
    matches: list[Match]


def open_catalog(url: str) -> Engine:
    """Open an existing catalog database for reading (``catalog.db.open_db``).

    Raises:
        SearchError: a SQLite URL whose file does not exist (a typo would otherwise create an empty catalog).
    """
    from fashattr.catalog.db import open_db

    parsed = sa.engine.make_url(url)
    file = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if file not in (None, "", ":memory:") and not Path(str(file)).is_file():
        raise SearchError(f"no catalog database at {file}; tag images into it with `fashattr tag`")
    engine = open_db(url)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _read_tuning(dbapi_conn: Any, _record: Any) -> None:
            # Searches read scattered index pages: map the file (no read() call per page) and keep more of
            # it cached than SQLite's 2 MB default.
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA mmap_size = {SQLITE_MMAP_BYTES}")
            cur.execute("PRAGMA cache_size = -65536")
            cur.close()

        engine.dispose()  # the connection open_db used was opened before the hook
    return engine


def resolve_model(conn: Connection, model: str | None = None) -> tuple[str, dict[str, Any]]:
    """The model a search reads: ``model`` (a model id or a unique prefix of one), else the most recently
    registered model. Returns ``(model_id, schema dict)``.

    Raises:
        SearchError: no model in the database; no model or several with that id (prefix).
    """
    cols = (models.c.model_id, models.c.schema, models.c.name)
    if model is None:
        row = conn.execute(sa.select(*cols).order_by(models.c.created.desc(), models.c.model_id).limit(1)).first()
        if row is None:
            raise SearchError("the catalog database has no model yet; tag images first with `fashattr tag`")
        return row.model_id, row.schema
    found = conn.execute(sa.select(*cols).where(models.c.model_id.startswith(model, autoescape=True))).all()
    if len(found) != 1:
        known = [f"{r.model_id[:12]} ({r.name})" for r in conn.execute(sa.select(*cols).order_by(models.c.created))]
        why = "no model" if not found else f"{len(found)} models"
        raise SearchError(f"{why} with id {model!r} in the catalog; models: {known}")
    return found[0].model_id, found[0].schema


def check_conditions(schema: dict[str, Any], conditions: Sequence[Condition]) -> dict[str, str]:
    """Check conditions against a model's schema; returns ``{group: kind}`` of the groups used.

    Raises:
        SearchError: an unknown group or class (listing the choices), a group given twice, no condition.
    """
    if not conditions:
        raise SearchError("give at least one GROUP=CLASS condition, e.g. sleeve=long_sleeve")
    groups = {g["name"]: g for g in schema["groups"]}
    kinds: dict[str, str] = {}
    for c in conditions:
        if c.group not in groups:
            raise SearchError(f"unknown group {c.group!r} in {c.group}={c.class_name}; groups: {list(groups)}")
        if c.class_name not in groups[c.group]["classes"]:
            raise SearchError(
                f"unknown class {c.class_name!r} of group {c.group!r}; classes: {list(groups[c.group]['classes'])}"
            )
        if c.group in kinds:
            raise SearchError(f"group {c.group!r} is given twice; one class per group")
        kinds[c.group] = groups[c.group].get("kind", "single")
    return kinds


def _class_clause(col: Any, class_name: str, kind: str) -> Any:
    if kind == "single":
        return col == class_name
    # Multi-label rows hold the predicted classes joined by "|": match one whole element of that list.
    sep = MULTI_SEPARATOR
    return sa.or_(
        col == class_name,
        col.startswith(class_name + sep, autoescape=True),
        col.endswith(sep + class_name, autoescape=True),
        col.contains(sep + class_name + sep, autoescape=True),
    )


def search_query(
    model_id: str,
    conditions: Sequence[Condition],
    kinds: dict[str, str],
    min_prob: float,
    limit: int,
    dialect: str = "sqlite",
    sure: bool = False,
) -> Any:
    """The one SELECT of a search (see the module docstring for how it uses the index).

    On PostgreSQL each further condition is a ``LATERAL`` subquery: the planner must then run it once per
    candidate, in index order, and stop at ``limit``. As a plain join it misjudges how many rows a
    ``group_name`` + ``class_name`` pair matches (it takes the two as independent) and hashes both whole
    index ranges instead: 170 ms rather than a few on a million rows. SQLite always runs nested loops.
    """
    p0 = predictions.alias("p0")

    def where(pi: Any, c: Condition) -> Any:
        return sa.and_(
            pi.c.model_id == model_id,
            pi.c.group_name == c.group,
            _class_clause(pi.c.class_name, c.class_name, kinds[c.group]),
            pi.c.probability >= min_prob,
            *([sa.or_(pi.c.unsure.is_(None), pi.c.unsure.is_(False))] if sure else []),
        )

    path = (
        sa.select(image_paths.c.path)
        .where(image_paths.c.sha256 == p0.c.sha256)
        .order_by(image_paths.c.last_seen.desc(), image_paths.c.path)
        .limit(1)
        .scalar_subquery()
    )
    probs: list[Any] = [p0.c.probability.label("prob0")]
    q = sa.select(p0.c.sha256, path.label("path")).select_from(p0).where(where(p0, conditions[0]))
    for i, c in enumerate(conditions[1:], start=1):
        pi = predictions.alias(f"p{i}")
        if dialect == "postgresql":
            lat = sa.select(pi.c.probability).where(pi.c.sha256 == p0.c.sha256, where(pi, c)).limit(1).lateral(f"l{i}")
            q = q.join(lat, sa.true())
            probs.append(lat.c.probability.label(f"prob{i}"))
        else:
            q = q.join(pi, sa.and_(pi.c.sha256 == p0.c.sha256, where(pi, c)))
            probs.append(pi.c.probability.label(f"prob{i}"))
    return q.add_columns(*probs).order_by(p0.c.probability.desc(), p0.c.sha256).limit(limit)


def search(
    engine: Engine,
    conditions: Sequence[Condition | str],
    min_prob: float = 0.0,
    model: str | None = None,
    limit: int = 50,
    sure: bool = False,
) -> SearchResult:
    """Images whose predictions meet every condition, best first.

    Args:
        engine: an open catalog database (``catalog.db.open_db``).
        conditions: ``Condition`` objects or ``"group=class"`` strings.
        min_prob: each condition's probability must be at least this.
        model: a model id (or a unique prefix); default the most recently registered model.
        limit: at most this many matches.
        sure: leave out answers tagged as unsure (below the bundle's ``unsure_below``).

    Raises:
        SearchError: see :func:`resolve_model` and :func:`check_conditions`; a bad ``min_prob`` or ``limit``.
    """
    conds = [c if isinstance(c, Condition) else Condition.parse(c) for c in conditions]
    if not 0.0 <= min_prob <= 1.0:
        raise SearchError(f"--min-prob {min_prob} is not a probability in [0, 1]")
    if limit < 1:
        raise SearchError(f"--limit {limit} must be at least 1")
    with engine.connect() as conn:
        model_id, schema = resolve_model(conn, model)
        kinds = check_conditions(schema, conds)
        rows = conn.execute(search_query(model_id, conds, kinds, min_prob, limit, conn.dialect.name, sure)).all()
    matches = [Match(r.sha256, r.path, {c.group: float(r[2 + i]) for i, c in enumerate(conds)}) for r in rows]
    return SearchResult(model_id, conds, matches)


def write_matches(result: SearchResult, fmt: str = "table", out: TextIO | None = None) -> str:
    """Write the matches as ``table`` (aligned columns), ``csv`` or ``jsonl``; returns the text written."""
    if fmt not in FORMATS:
        raise SearchError(f"unknown format {fmt!r}; choose from {list(FORMATS)}")
    groups = [c.group for c in result.conditions]
    buf = io.StringIO()
    if fmt == "jsonl":
        for m in result.matches:
            buf.write(json.dumps({"path": m.path, "sha256": m.sha256, "probs": m.probs, "model_id": result.model_id}))
            buf.write("\n")
    elif fmt == "csv":
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "sha256", *(f"{g}_prob" for g in groups)])
        for m in result.matches:
            w.writerow([m.path, m.sha256, *(f"{m.probs[g]:.6f}" for g in groups)])
    else:
        head = ["path", *(f"{c.group}={c.class_name}" for c in result.conditions)]
        rows = [
            [m.path or f"(no path) {m.sha256[:12]}", *(f"{m.probs[g]:.3f}" for g in groups)] for m in result.matches
        ]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        for r in [head, *rows]:
            buf.write("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n")
        buf.write(f"{len(result.matches)} match(es), model {result.model_id[:12]}\n")
    text = buf.getvalue()
    if out is not None:
        out.write(text)
    return text


def contact_sheet(
    result: SearchResult, out: str | Path, columns: int = 6, thumb: int = 160, caption_lines: int | None = None
) -> Path:
    """A PNG grid of the matches, each with its file name and the conditions' probabilities beneath.

    A file that cannot be read any more is drawn as a grey tile that says why (and logged), so the sheet
    still shows every match in order.
    """
    if not result.matches:
        raise SearchError("no matches to draw on a contact sheet")
    tiles = [
        (
            m.path,
            m.sha256,
            [
                Path(m.path).name if m.path else m.sha256[:12],
                *(f"{g.group}={g.class_name} {m.probs[g.group]:.2f}" for g in result.conditions),
            ],
        )
        for m in result.matches
    ]
    return tile_sheet(tiles, out, columns, thumb, caption_lines or 1 + len(result.conditions))


def tile_sheet(
    tiles: Sequence[tuple[str | None, str, Sequence[str]]], out: str | Path, columns: int, thumb: int, lines: int
) -> Path:
    """A PNG grid of photos: each tile ``(path, sha256, caption lines)`` letterboxed to ``thumb`` px with its
    caption beneath. A photo that cannot be read is a grey tile that says why (and logged)."""
    from PIL import Image, ImageDraw

    from fashattr.portable.errors import ImageError
    from fashattr.portable.images import letterbox, open_image

    line_h = 12
    cell_h = thumb + lines * line_h + 6
    cols = min(columns, len(tiles))
    rows = -(-len(tiles) // cols)
    sheet = Image.new("RGB", (cols * (thumb + 8) + 8, rows * cell_h + 8), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (path, sha256, caption) in enumerate(tiles):
        r, c = divmod(i, cols)
        x, y = 8 + c * (thumb + 8), 8 + r * cell_h
        try:
            if path is None:
                raise ImageError(sha256[:12], "no path recorded")
            tile = Image.fromarray(letterbox(open_image(path), thumb, fill=(255, 255, 255)))
        except ImageError as e:
            log.warning("contact sheet: %s", e)
            tile = Image.new("RGB", (thumb, thumb), (200, 200, 200))
            ImageDraw.Draw(tile).text((4, thumb // 2), e.message[: thumb // 6], fill=(120, 0, 0))
        sheet.paste(tile, (x, y))
        for k, text in enumerate(list(caption)[:lines]):
            draw.text((x, y + thumb + 2 + k * line_h), text[: thumb // 6], fill=(0, 0, 0))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
