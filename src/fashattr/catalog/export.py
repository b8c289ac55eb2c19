"""Predictions out of the catalog: Label Studio pre-annotations for review, and plain CSV / Parquet tables.

``fashattr export-labels --db URL --format label-studio|csv|parquet [--out FILE] [--model ID]``

- ``label-studio``: a JSON list of tasks, one per image, each ``{"data": {"image": ..., "sha256": ...},
  "predictions": [{"model_version": MODEL_ID, "score": mean probability, "result": [one "choices" region
  per group]}]}`` (Label Studio's pre-annotation import format), and beside it ``<name>.label_config.xml``:
  the labeling configuration those results match (an ``Image`` named ``image`` and one ``Choices`` per
  group, ``choice="multiple"`` for multi-label groups). Import the tasks into a project created with that
  config and the predictions appear as pre-filled answers a person accepts or corrects.
- ``csv`` / ``parquet``: one row per image: ``path``, ``sha256``, then per group its class and
  ``<group>_prob`` (multi-label: the predicted classes joined by ``|``).

Rows are streamed from the database in content-hash order (constant memory for any catalog).
Label Studio reads local images through its local-files storage: with ``image_root`` (the folder set as
``LOCAL_FILES_DOCUMENT_ROOT``) each path becomes ``/data/local-files/?d=<path relative to it>``; without it
the task holds the path as stored.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from fashattr.catalog.db import image_paths, predictions
from fashattr.catalog.search import SearchError, resolve_model

FORMATS = ("label-studio", "csv", "parquet")
LOCAL_FILES_PREFIX = "/data/local-files/?d="
SUFFIX = {"label-studio": ".json", "csv": ".csv", "parquet": ".parquet"}


def images_with_predictions(engine: Engine, model_id: str, chunk: int = 5000) -> Iterator[dict[str, Any]]:
    """Per image tagged by ``model_id``, in content-hash order: ``{"sha256", "path", "groups": {group:
    (class_name, probability)}}`` (path: the one seen most recently)."""
    path = (
        sa.select(image_paths.c.path)
        .where(image_paths.c.sha256 == predictions.c.sha256)
        .order_by(image_paths.c.last_seen.desc(), image_paths.c.path)
        .limit(1)
        .scalar_subquery()
    )
    cols = (predictions.c.sha256, predictions.c.group_name, predictions.c.class_name, predictions.c.probability)
    q = (
        sa.select(*cols, path.label("path"))
        .where(predictions.c.model_id == model_id)
        .order_by(predictions.c.sha256, predictions.c.group_name)
    )
    current: dict[str, Any] | None = None
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk).execute(q)
        for row in result:
            if current is None or row.sha256 != current["sha256"]:
                if current is not None:
                    yield current
                current = {"sha256": row.sha256, "path": row.path, "groups": {}}
            current["groups"][row.group_name] = (row.class_name, float(row.probability))
    if current is not None:
        yield current


def label_config(schema: dict[str, Any]) -> str:
    """Label Studio's labeling configuration (XML) for a model's schema: the image and one Choices per group."""
    lines = ["<View>", '  <Image name="image" value="$image" zoom="true"/>']
    for g in schema["groups"]:
        multiple = g.get("kind", "single") != "single"
        lines.append(f"  <Header value={quoteattr(g['name'])}/>")
        lines.append(
            f'  <Choices name={quoteattr(g["name"])} toName="image" choice="{"multiple" if multiple else "single"}"'
            ' showInline="true">'
        )
        lines += [f"    <Choice value={quoteattr(c)}/>" for c in g["classes"]]
        lines.append("  </Choices>")
    lines.append("</View>")
    return "\n".join(lines) + "\n"


def image_ref(path: str | None, sha256: str, image_root: str | Path | None) -> str:
    """What a task's ``data.image`` holds for ``path`` (see the module docstring).

    Raises:
        SearchError: a path outside ``image_root``, or an image with no path recorded.
    """
    if path is None:
        raise SearchError(f"image {sha256} has no path in the catalog; re-run `fashattr tag` on its folder")
    if image_root is None:
        return path
    root = os.path.abspath(image_root)
    rel = os.path.relpath(os.path.abspath(path), root)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise SearchError(f"{path} is outside --image-root {root}; give the folder that holds every image")
    return LOCAL_FILES_PREFIX + quote(Path(rel).as_posix())


def label_studio_task(
    image: dict[str, Any], schema: dict[str, Any], model_id: str, image_root: str | Path | None
) -> dict[str, Any]:
    """One Label Studio task with the model's predictions as a pre-annotation."""
    result, probs = [], []
    for g in schema["groups"]:
        if g["name"] not in image["groups"]:
            continue
        cls, prob = image["groups"][g["name"]]
        choices = [c for c in cls.split("|") if c] if g.get("kind", "single") != "single" else [cls]
        probs.append(prob)
        if not choices:
            continue  # a multi-label group with nothing predicted: no region to pre-fill
        result.append(
            {
                "id": f"{image['sha256'][:10]}-{g['name']}",
                "from_name": g["name"],
                "to_name": "image",
                "type": "choices",
                "value": {"choices": choices},
                "score": round(prob, 6),
            }
        )
    score = round(sum(probs) / len(probs), 6) if probs else 0.0
    return {
        "data": {"image": image_ref(image["path"], image["sha256"], image_root), "sha256": image["sha256"]},
        "predictions": [{"model_version": model_id, "score": score, "result": result}],
    }


def export_labels(
    engine: Engine,
    fmt: str,
    out: str | Path | None = None,
    model: str | None = None,
    image_root: str | Path | None = None,
) -> dict[str, Any]:
    """Write a model's predictions (see the module docstring). Returns ``{"out", "images", "model_id"}``
    plus ``"config"`` (the XML's path) for Label Studio.

    Raises:
        SearchError: an unknown format or model, no model in the database, a path outside ``image_root``.
    """
    if fmt not in FORMATS:
        raise SearchError(f"unknown export format {fmt!r}; choose from {list(FORMATS)}")
    with engine.connect() as conn:
        model_id, schema = resolve_model(conn, model)
    out = Path(out) if out else Path(f"labels{SUFFIX[fmt]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = images_with_predictions(engine, model_id)
    info: dict[str, Any] = {"out": str(out), "model_id": model_id}
    if fmt == "label-studio":
        n = 0
        with open(out, "w", encoding="utf-8") as f:
            f.write("[")
            for image in rows:
                f.write(",\n" if n else "\n")
                f.write(json.dumps(label_studio_task(image, schema, model_id, image_root)))
                n += 1
            f.write("\n]\n")
        config = out.with_name(out.name.removesuffix(out.suffix) + ".label_config.xml")
        config.write_text(label_config(schema), encoding="utf-8")
        info["config"] = str(config)
    else:
        n = _write_table(rows, [g["name"] for g in schema["groups"]], out, fmt)
    info["images"] = n
    return info


def _table_row(image: dict[str, Any], groups: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"path": image["path"], "sha256": image["sha256"]}
    for g in groups:
        cls, prob = image["groups"].get(g, (None, None))
        row[g], row[f"{g}_prob"] = cls, prob
    return row


def _write_table(rows: Iterator[dict[str, Any]], groups: list[str], out: Path, fmt: str, batch: int = 10_000) -> int:
    columns = ["path", "sha256", *(c for g in groups for c in (g, f"{g}_prob"))]
    n = 0
    if fmt == "csv":
        with open(out, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, columns, lineterminator="\n")
            w.writeheader()
            for image in rows:
                w.writerow(_table_row(image, groups))
                n += 1
        return n
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("Parquet export needs pyarrow: pip install pyarrow") from None
    types = [pa.string(), pa.string(), *(t for _ in groups for t in (pa.string(), pa.float64()))]
    schema = pa.schema(list(zip(columns, types, strict=True)))
    with pq.ParquetWriter(str(out), schema) as writer:
        chunk: list[dict[str, Any]] = []
        for image in rows:
            chunk.append(_table_row(image, groups))
            n += 1
            if len(chunk) >= batch:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                chunk = []
        if chunk or not n:
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
    return n
