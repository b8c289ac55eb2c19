"""One batch of catalog work: the sources read (hashed, looked up, deduplicated, decoded) and the results
written in one transaction; shared by both engines (:mod:`fashattr.catalog.engines`).

Every insert is keyed (ON CONFLICT DO NOTHING), so a batch written twice (a Ray task retried, two taggers on
one database) leaves one copy, and a killed run leaves whole batches only.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import hashlib
import itertools
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from fashattr.catalog import db
from fashattr.catalog.work import Work

IMAGE_COLUMNS = ("sha256", "bytes", "width", "height", "first_seen", "last_seen")
PATH_COLUMNS = ("sha256", "path", "first_seen", "last_seen")
PRED_COLUMNS = (
    "sha256",
    "model_id",
    "group_name",
    "class_name",
    "class_index",
    "probability",
    "top_k",
    "decoding",
    "unsure",
    "created",
)
HASH_CHUNK = 256  # files hashed (and looked up in the database) per step


@dataclass
class TagSummary:
    """What a run did. ``duplicates``: paths whose content this run had already tagged under another name."""

    model_id: str
    tagged: int = 0
    skipped_done: int = 0
    duplicates: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    seconds: float = 0.0
    peak_in_flight: int = 0  # most contents between hashing and commit at once (bounded: constant memory)
    # Seconds from the start (the local engine's model already loaded) to the first committed predictions:
    # the first batch, and on Ray the actor pool's start (a process per actor, each loading the model); a
    # fixed cost that a large catalog amortises. None when nothing was tagged.
    first_result_s: float | None = None
    # Seconds on the driver thread: read (list, hash, look up), decode_wait, model, write.
    timings: collections.defaultdict[str, float] = field(default_factory=lambda: collections.defaultdict(float))

    @property
    def images_per_s(self) -> float:
        return self.tagged / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        out = [
            f"model {self.model_id[:16]}: {self.tagged} tagged, {self.skipped_done} skipped as done, "
            f"{self.duplicates} duplicate(s), {sum(self.errors.values())} error(s) "
            f"in {self.seconds:.1f} s ({self.images_per_s:.1f} images/s)"
        ]
        out += [f"  {n:>6}  {reason}" for reason, n in self.errors.most_common()]
        return out


def prediction_values(record: dict[str, Any]) -> Iterator[tuple[str, str, int, float, list[dict[str, Any]]]]:
    """``(group, class_name, class_index, probability, top_k)`` per group of one decoded image (see
    db's docstring: multi-label groups join their classes with ``|``, index -1)."""
    for group, v in record["groups"].items():
        if isinstance(v, list):  # multi-label: every predicted class
            cls, idx, prob, top = "|".join(x["class"] for x in v), -1, max((x["prob"] for x in v), default=0.0), v
        else:
            cls, idx, prob = v["class"], v["index"], v["prob"]
            top = [{k: x[k] for k in ("class", "index", "prob")} for x in v.get("top", [v])]
        yield group, cls, int(idx), float(prob), top


def unsure_of(record: dict[str, Any], group: str) -> bool | None:
    """A single-label answer's ``unsure`` flag (decoding.decode); None for a multi-label group."""
    v = record["groups"][group]
    return bool(v.get("unsure")) if isinstance(v, dict) and "unsure" in v else None


def prediction_rows(sha256: str, model_id: str, record: dict[str, Any], now: Any) -> list[dict[str, Any]]:
    """The ``predictions`` rows of one decoded image (one per group; see db's docstring)."""
    return [
        {
            "sha256": sha256,
            "model_id": model_id,
            "group_name": group,
            "class_name": cls,
            "class_index": idx,
            "probability": prob,
            "top_k": top,
            "decoding": record.get("decoding"),
            "unsure": unsure_of(record, group),
            "created": now,
        }
        for group, cls, idx, prob, top in prediction_values(record)
    ]


# --- reading: hash, skip, dedupe, decode ------------------------------------------------------------


def hash_file(path: str) -> tuple[str, int] | str:
    """``(sha256 hex, bytes)`` of a file, or the reason it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            size = 0
            while chunk := f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        return "file not found"
    except IsADirectoryError:
        return "is a directory, not an image"
    except OSError as e:
        return f"cannot read: {e.strerror or e}"
    return h.hexdigest(), size


@dataclass
class Plan:
    """The reading side's output, a chunk at a time: new work, paths already done, unreadable files."""

    todo: list[Work]
    done: list[tuple[str, str, int]]  # (sha256, path, bytes) of contents the database has
    unreadable: list[tuple[str, str]]  # (path, reason)
    duplicates: int = 0
    dup_done: int = 0


class Reader:
    """Hashes sources a chunk at a time and sorts them into new work / already done / duplicates.

    ``inflight`` maps the contents handed out and not yet committed to their Work, so a second name
    for the same bytes joins the first (and is counted as a duplicate); the writer drops them after
    committing. Contents the database has are "done"; those committed by this run are duplicates.
    """

    def __init__(self, engine: sa.Engine, model_id: str, pool: cf.Executor, started: Any) -> None:
        self.engine, self.model_id, self.pool, self.started = engine, model_id, pool, started
        self.inflight: dict[str, Work] = {}
        self.seconds = 0.0  # spent listing, hashing and looking up (the driver's reading side)
        self.peak = 0  # most contents in flight at once (the memory bound, observed)

    def chunks(self, paths: Iterable[Path]) -> Iterator[Plan]:
        """Plans a chunk at a time; the next chunk is hashed (on ``pool``) while the caller works on this
        one, so the model never waits for a chunk's hashes."""
        it = iter(paths)

        def start() -> tuple[list[str], list[cf.Future[tuple[str, int] | str]]]:
            chunk = [str(p) for p in itertools.islice(it, HASH_CHUNK)]
            return chunk, [self.pool.submit(hash_file, p) for p in chunk]

        t = time.perf_counter()
        ahead = start()
        self.seconds += time.perf_counter() - t
        while ahead[0]:
            t = time.perf_counter()
            chunk, futures = ahead
            hashed = [f.result() for f in futures]
            ahead = start()
            plan = self._plan(chunk, hashed)
            self.seconds += time.perf_counter() - t
            yield plan

    def _plan(self, chunk: list[str], hashed: list[tuple[str, int] | str]) -> Plan:
        plan = Plan([], [], [])
        known = self._known([h[0] for h in hashed if isinstance(h, tuple)])
        for path, h in zip(chunk, hashed, strict=True):
            if isinstance(h, str):
                plan.unreadable.append((path, h))
                continue
            sha, size = h
            if sha in self.inflight:
                self.inflight[sha].more_paths.append(path)
                plan.duplicates += 1
            elif sha in known:
                plan.done.append((sha, path, size))
                plan.dup_done += int(known[sha])
            else:
                work = self.inflight[sha] = Work(sha, path, size)
                plan.todo.append(work)
        self.peak = max(self.peak, len(self.inflight))
        return plan

    def _known(self, shas: list[str]) -> dict[str, bool]:
        """Contents the database has for this model -> whether this run wrote them."""
        out: dict[str, bool] = {}
        if not shas:
            return out
        with self.engine.connect() as conn:
            for table, ts in ((db.predictions, db.predictions.c.created), (db.errors, db.errors.c.seen)):
                q = sa.select(table.c.sha256, sa.func.max(ts)).where(
                    table.c.model_id == self.model_id, table.c.sha256.in_(sorted(set(shas)))
                )
                for sha, when in conn.execute(q.group_by(table.c.sha256)):
                    out[sha] = _as_utc(when) >= self.started
        return out


def _as_utc(when: Any) -> Any:
    """SQLite hands timestamps back naive (stored as UTC text); PostgreSQL aware."""
    import datetime as dt

    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when


# --- writing ----------------------------------------------------------------------------------------


def write_batch(
    engine: sa.Engine,
    model_id: str,
    works: list[Work],
    records: dict[str, tuple[dict[str, Any], np.ndarray | None]],
    done: list[tuple[str, str, int]] = (),  # type: ignore[assignment]
    unreadable: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> None:
    """One transaction: images and their paths, predictions and embeddings of ``records`` (keyed by
    sha256; a Work without a record is an error row), paths of already-done contents, unreadable files."""
    now = db.now()
    # Plain tuples through the DBAPI's executemany (db.insert_many): SQLAlchemy's per-row parameter
    # processing was most of the writer's CPU. The shared timestamp is converted once.
    ts = db.driver_value(engine.dialect, db.predictions.c.created, now)
    images: dict[str, tuple[Any, ...]] = {}
    paths: dict[tuple[str, str], None] = {}
    preds: list[tuple[Any, ...]] = []
    embs: list[tuple[Any, ...]] = []
    errs = []
    for w in works:
        images[w.sha256] = (w.sha256, w.size, w.width, w.height, ts, ts)
        for p in w.paths:
            paths[(w.sha256, p)] = None
        if w.sha256 in records:
            record, emb = records[w.sha256]
            mode = record.get("decoding")
            for group, cls, idx, prob, top in prediction_values(record):
                flag = unsure_of(record, group)
                preds.append((w.sha256, model_id, group, cls, idx, prob, json.dumps(top), mode, flag, ts))
            if emb is not None:
                vec = np.ascontiguousarray(emb, dtype="<f4")
                embs.append((w.sha256, model_id, vec.size, vec.tobytes()))
        else:
            reason = w.error or "not tagged"
            errs.append({"sha256": w.sha256, "path": w.path, "model_id": model_id, "reason": reason, "seen": now})
    for sha, p, size in done:
        images.setdefault(sha, (sha, size, None, None, ts, ts))
        paths[(sha, p)] = None
    with engine.begin() as conn:
        # Sorted keys: two writers touching the same rows lock them in the same order (no deadlock).
        db.insert_many(conn, db.images, IMAGE_COLUMNS, [images[k] for k in sorted(images)], ["sha256"])
        path_rows = [(sha, p, ts, ts) for sha, p in sorted(paths)]
        db.insert_many(conn, db.image_paths, PATH_COLUMNS, path_rows, ["sha256", "path"])
        db.insert_many(conn, db.predictions, PRED_COLUMNS, preds)
        db.insert_many(conn, db.embeddings, ("sha256", "model_id", "dim", "vector"), embs)
        db.insert_ignore(conn, db.errors, errs)
        for path, reason in unreadable:  # no content hash: keyed by path, by hand
            hit = sa.select(db.errors.c.id).where(
                db.errors.c.model_id == model_id, db.errors.c.sha256.is_(None), db.errors.c.path == path
            )
            if conn.execute(hit).first() is None:
                row = {"sha256": None, "path": path, "model_id": model_id, "reason": reason, "seen": now}
                conn.execute(sa.insert(db.errors), [row])
