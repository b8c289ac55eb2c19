"""A wardrobe's items: photos added under a name (and the person's own category), tagged by the catalog's model.

``fashattr wardrobe add BUNDLE PHOTOS... --db URL [--items items.csv] [--wardrobe NAME]`` tags the photos as
``fashattr tag`` does (the same bundle, database and runtime; a photo tagged before is not tagged again) and
records each as an item of the wardrobe (table ``wardrobe_items``). Items are named

- by ``--items``: a CSV with a ``photo`` column (a path, relative to the CSV's folder or absolute) and optional
  ``name`` and ``category`` columns (the person's own words: "blouse", "work trousers"); a row without a name is
  named by its photo as written;
- else by the photos: a folder's images by their path inside the folder, a file by its name.

Adding an item under a name the wardrobe already has replaces it (a better photo of the same blouse). A photo the
model could not read is not added: it is reported with the reason, and the rest are added.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from fashattr.catalog import db
from fashattr.catalog.search import resolve_model
from fashattr.catalog.sources import URL, walk_images
from fashattr.portable.images import IMAGE_SUFFIXES

DEFAULT_WARDROBE = "default"


class WardrobeError(ValueError):
    """A wardrobe command that cannot run: bad items or looks files, an empty or untagged wardrobe."""


@dataclass(frozen=True)
class NewItem:
    """A photo to add: its item name, file, the person's category, and where it was named (for messages)."""

    item: str
    path: Path
    category: str | None = None
    where: str = ""


def items_from_csv(path: str | Path) -> list[NewItem]:
    """The rows of an items CSV (see the module docstring).

    Raises:
        WardrobeError: no ``photo`` column, an empty or missing photo, a URL, a name used twice (naming the lines).
    """
    path = Path(path)
    out: list[NewItem] = []
    seen: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "photo" not in reader.fieldnames:
            raise WardrobeError(
                f"{path}:1: no 'photo' column (columns: {reader.fieldnames}); expected photo,name,category"
            )
        for row in reader:
            line = reader.line_num
            photo = (row.get("photo") or "").strip()
            if not photo:
                raise WardrobeError(f"{path}:{line}: empty photo")
            if URL.match(photo):
                raise WardrobeError(f"{path}:{line}: photo {photo!r} is a URL; fashattr reads local files only")
            file = Path(photo) if Path(photo).is_absolute() else path.parent / photo
            if not file.is_file():
                raise WardrobeError(f"{path}:{line}: photo {photo!r} not found ({file})")
            name = (row.get("name") or "").strip() or photo
            if name in seen:
                raise WardrobeError(f"{path}:{line}: item name {name!r} is used on line {seen[name]} already")
            seen[name] = line
            category = (row.get("category") or "").strip() or None
            out.append(NewItem(name, file, category, f"{path}:{line}"))
    if not out:
        raise WardrobeError(f"{path}: no items (an empty wardrobe list)")
    return out


def items_from_paths(sources: Iterable[str | Path]) -> list[NewItem]:
    """Photos named by their path inside the folder given (a folder) or their file name (a file).

    Raises:
        WardrobeError: a missing source, a folder without images, two photos that would get one name.
    """
    out: list[NewItem] = []
    seen: dict[str, Path] = {}
    for source in sources:
        src = Path(source)
        if src.is_dir():
            found = [(p.relative_to(src).as_posix(), p) for p in walk_images(src)]
            if not found:
                raise WardrobeError(f"{src}: no images in this folder (looked for {', '.join(IMAGE_SUFFIXES)})")
        elif src.is_file():
            found = [(src.name, src)]
        else:
            raise WardrobeError(f"{src}: no such file or folder")
        for name, p in found:
            if name in seen:
                raise WardrobeError(f"{p} and {seen[name]} would both be item {name!r}; name them in an --items CSV")
            seen[name] = p
            out.append(NewItem(name, p, None, str(p)))
    if not out:
        raise WardrobeError("no photos to add")
    return out


@dataclass
class AddSummary:
    """What ``add`` did: the model, items added (new) and replaced, and photos not added with the reason."""

    model_id: str
    wardrobe: str
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (item, path, reason)
    tag_lines: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"wardrobe {self.wardrobe!r} (model {self.model_id[:16]}): {len(self.added)} item(s) added, "
            f"{len(self.replaced)} replaced, {len(self.failed)} photo(s) not added"
        ]
        out += [f"  not added: {item} ({path}): {reason}" for item, path, reason in self.failed]
        return out


def add_items(
    bundle: str | Path,
    new: Sequence[NewItem],
    db_url: str,
    wardrobe: str = DEFAULT_WARDROBE,
    **tag_options: Any,
) -> AddSummary:
    """Tag ``new``'s photos with ``bundle`` into ``db_url`` (``catalog.tag.tag``; ``tag_options`` go to it) and
    record them as items of ``wardrobe``."""
    from fashattr.catalog.tag import tag

    if not wardrobe.strip():
        raise WardrobeError("--wardrobe: empty name")
    tagged = tag(bundle, [str(n.path) for n in new], db_url, **tag_options)
    summary = AddSummary(tagged.model_id, wardrobe, tag_lines=tagged.lines())
    paths = [os.path.abspath(n.path) for n in new]  # as `tag` records them in image_paths
    t = db.wardrobe_items
    engine = db.open_db(db_url)
    try:
        with engine.begin() as conn:
            content = _contents(conn, paths)  # what tag just hashed: no file is read twice
            done = db.done_keys(conn, tagged.model_id, content.values())
            failed = _errors(conn, tagged.model_id, paths, list(content.values()))
            have = set(conn.execute(sa.select(t.c.item).where(t.c.wardrobe == wardrobe)).scalars())
            now = db.now()
            for n, path in zip(new, paths, strict=True):
                sha = content.get(path)
                # By content; by path only for a file that could not even be hashed (an old error on a path that
                # now holds other content is not this photo's).
                reason = failed.get(sha) if sha else failed.get(path)
                if reason or sha is None or sha not in done:
                    summary.failed.append((n.item, str(n.path), reason or "not tagged"))
                    continue
                conn.execute(sa.delete(t).where((t.c.wardrobe == wardrobe) & (t.c.item == n.item)))
                row = {"wardrobe": wardrobe, "item": n.item, "sha256": sha, "path": path, "category": n.category}
                conn.execute(sa.insert(t).values(**row, added=now))
                (summary.replaced if n.item in have else summary.added).append(n.item)
    finally:
        engine.dispose()
    return summary


def _contents(conn: sa.Connection, paths: Sequence[str]) -> dict[str, str]:
    """The content each path held when it was last seen (image_paths)."""
    out: dict[str, tuple[Any, str]] = {}
    for i in range(0, len(paths), 500):
        q = sa.select(db.image_paths.c.path, db.image_paths.c.sha256, db.image_paths.c.last_seen).where(
            db.image_paths.c.path.in_(list(paths[i : i + 500]))
        )
        for r in conn.execute(q):
            if r.path not in out or r.last_seen > out[r.path][0]:
                out[r.path] = (r.last_seen, r.sha256)
    return {p: sha for p, (_, sha) in out.items()}


def _errors(conn: sa.Connection, model_id: str, paths: Sequence[str], shas: Sequence[str]) -> dict[str, str]:
    """The model's error reasons, by content and by path (a file that could not even be read has no content)."""
    out: dict[str, str] = {}
    e = db.errors
    for keys, column in ((shas, e.c.sha256), (paths, e.c.path)):
        for i in range(0, len(keys), 500):
            q = sa.select(column, e.c.reason).where(e.c.model_id == model_id, column.in_(list(keys[i : i + 500])))
            out.update({str(k): str(r) for k, r in conn.execute(q)})
    return out


@dataclass
class Wardrobe:
    """A wardrobe as one model sees it: per item (sorted by name) its content, photo, category, the predicted class
    and probability per group, whether that answer was unsure, and its unit embedding."""

    name: str
    model_id: str
    schema: dict[str, Any]
    items: list[str]
    sha256: list[str]
    paths: list[str]
    categories: list[str | None]
    classes: dict[str, list[str]]
    probs: dict[str, np.ndarray]
    unsure: dict[str, np.ndarray]
    vectors: np.ndarray

    @property
    def groups(self) -> list[str]:
        return [g["name"] for g in self.schema["groups"]]

    def __len__(self) -> int:
        return len(self.items)

    def index(self, item: str) -> int:
        """The row of ``item``; an unknown name is an error naming the closest ones."""
        try:
            return self.items.index(item)
        except ValueError:
            raise WardrobeError(f"no item {item!r} in wardrobe {self.name!r}{closest_hint(item, self.items)}") from None


def closest_hint(name: str, names: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def wardrobe_names(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(db.wardrobe_items.c.wardrobe).distinct().order_by("wardrobe")).scalars())


def load_wardrobe(engine: Engine, wardrobe: str = DEFAULT_WARDROBE, model: str | None = None) -> Wardrobe:
    """Every item of ``wardrobe`` with ``model``'s answers and embeddings (default: the catalog's latest model).

    Raises:
        WardrobeError: an empty or unknown wardrobe, items that model has not tagged or has no embedding of.
    """
    t = db.wardrobe_items
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.item, t.c.sha256, t.c.path, t.c.category).where(t.c.wardrobe == wardrobe).order_by(t.c.item)
        ).all()
        if not rows:
            known = wardrobe_names(engine)
            raise WardrobeError(
                f"wardrobe {wardrobe!r} has no items; add photos with `fashattr wardrobe add`"
                + (f" (wardrobes in this catalog: {known})" if known else "")
            )
        model_id, schema = resolve_model(conn, model)
        shas = [r.sha256 for r in rows]
        answers: dict[str, dict[str, tuple[str, float, bool]]] = {s: {} for s in shas}
        vectors: dict[str, np.ndarray] = {}
        p, e = db.predictions, db.embeddings
        for i in range(0, len(shas), 500):
            part = shas[i : i + 500]
            q = sa.select(p.c.sha256, p.c.group_name, p.c.class_name, p.c.probability, p.c.unsure).where(
                p.c.model_id == model_id, p.c.sha256.in_(part)
            )
            for r in conn.execute(q):
                answers[r.sha256][r.group_name] = (r.class_name, float(r.probability), bool(r.unsure))
            q2 = sa.select(e.c.sha256, e.c.vector).where(e.c.model_id == model_id, e.c.sha256.in_(part))
            vectors.update({r.sha256: np.frombuffer(r.vector, dtype="<f4") for r in conn.execute(q2)})
    groups = [g["name"] for g in schema["groups"]]
    untagged = [r.item for r in rows if set(answers[r.sha256]) != set(groups) or r.sha256 not in vectors]
    if untagged:
        shown = ", ".join(repr(x) for x in untagged[:5]) + (
            f" and {len(untagged) - 5} more" if len(untagged) > 5 else ""
        )
        raise WardrobeError(
            f"model {model_id[:12]} has not tagged (or stored no embedding of) {len(untagged)} item(s) of wardrobe "
            f"{wardrobe!r}: {shown}; run `fashattr wardrobe add` with that model's bundle on their photos"
        )
    from fashattr.catalog.index import normalise

    return Wardrobe(
        name=wardrobe,
        model_id=model_id,
        schema=schema,
        items=[r.item for r in rows],
        sha256=shas,
        paths=[r.path for r in rows],
        categories=[r.category for r in rows],
        classes={g: [answers[s][g][0] for s in shas] for g in groups},
        probs={g: np.array([answers[s][g][1] for s in shas]) for g in groups},
        unsure={g: np.array([answers[s][g][2] for s in shas], dtype=bool) for g in groups},
        vectors=normalise(np.stack([vectors[s] for s in shas]).astype(np.float32)),
    )
